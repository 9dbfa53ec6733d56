//! One test per op family: compiled (with and without passes, 2 threads) against the reference
//! interpreter on hand-picked shapes, zero-sized and broadcast ones included; then the errors a
//! user can provoke (gather out of range, slices out of range at specialize) and a 10^5-op chain.

mod support;

use rlx_ir::{
    BinaryOp, CompareOp, DType, Dim, DimBinding, HirModule, HirMut, ReduceOp, Shape, TensorData,
    UnaryOp, ValueId,
};
use rlx_runtime::{Error, Tensor};
use support::Named;

fn f32s(name: &str, n: usize, seed: u32) -> Named {
    let v = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 33) as f32 / 8.0 - 2.0)
        .collect();
    (name.to_string(), TensorData::F32(v))
}

fn s(dims: &[i64]) -> Shape {
    Shape::new(dims)
}

/// Builds a graph with `build`, runs it on `inputs` (no params, empty binding) both ways and
/// returns the reference outputs after checking the compiled ones against them.
fn check(build: impl Fn(&mut HirMut) -> Vec<ValueId>, inputs: Vec<Named>) -> Vec<Tensor> {
    check_with(build, inputs, DimBinding::new(), false)
}

fn check_with(
    build: impl Fn(&mut HirMut) -> Vec<ValueId>,
    inputs: Vec<Named>,
    binding: DimBinding,
    exact: bool,
) -> Vec<Tensor> {
    let mut hir = HirModule::new("op");
    let mut g = HirMut::new(&mut hir);
    let outs = build(&mut g);
    let named = outs
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("y{i}"), *v))
        .collect();
    g.set_outputs(named).unwrap();
    let exact = vec![exact; outs.len()];
    support::check(&hir, &[], &[(binding, inputs)], &exact)
}

#[test]
fn matmul_broadcasts_batches_and_handles_empty() {
    let out = check(
        |g| {
            let a = g.input("a", DType::F32, s(&[2, 1, 3, 4])).unwrap();
            let b = g.input("b", DType::F32, s(&[5, 4, 2])).unwrap();
            let z = g.input("z", DType::F32, s(&[0, 3, 4])).unwrap();
            let k0 = g.input("k0", DType::F32, s(&[2, 3, 0])).unwrap();
            let k0b = g.input("k0b", DType::F32, s(&[0, 4])).unwrap();
            let w = g.input("w", DType::F32, s(&[4, 2])).unwrap();
            vec![
                g.matmul(a, b).unwrap(),
                g.matmul(z, w).unwrap(),
                g.matmul(k0, k0b).unwrap(),
            ]
        },
        vec![
            f32s("a", 24, 1),
            f32s("b", 40, 2),
            f32s("z", 0, 0),
            f32s("k0", 0, 0),
            f32s("k0b", 0, 0),
            f32s("w", 8, 3),
        ],
    );
    assert_eq!(out[0].shape, vec![2, 5, 3, 2]);
    assert_eq!(out[1].shape, vec![0, 3, 2]);
    assert_eq!(out[2].as_f32().unwrap(), &[0.0; 24]);
}

#[test]
fn linear_with_bias_activation_and_transposed_weight() {
    check(
        |g| {
            let x = g.input("x", DType::F32, s(&[3, 5])).unwrap();
            let w = g.input("w", DType::F32, s(&[5, 4])).unwrap();
            let wt = g.input("wt", DType::F32, s(&[4, 5])).unwrap();
            let b = g.input("b", DType::F32, s(&[4])).unwrap();
            let e = g.input("e", DType::F32, s(&[0, 5])).unwrap();
            vec![
                g.linear(x, w, Some(b), Some(UnaryOp::Gelu)).unwrap(),
                g.linear_t(x, wt, None, Some(UnaryOp::Silu)).unwrap(),
                g.linear(e, w, Some(b), None).unwrap(),
            ]
        },
        vec![
            f32s("x", 15, 1),
            f32s("w", 20, 2),
            f32s("wt", 20, 3),
            f32s("b", 4, 4),
            f32s("e", 0, 0),
        ],
    );
}

#[test]
fn binary_ops_broadcast_with_float_and_int_semantics() {
    for op in BinaryOp::ALL.iter().copied() {
        let out = check(
            |g| {
                let a = g.input("a", DType::F32, s(&[2, 1, 3])).unwrap();
                let b = g.input("b", DType::F32, s(&[4, 1])).unwrap();
                let i = g.input("i", DType::I64, s(&[4])).unwrap();
                let j = g.input("j", DType::I64, s(&[1])).unwrap();
                vec![g.binary(op, a, b).unwrap(), g.binary(op, i, j).unwrap()]
            },
            vec![
                (
                    "a".into(),
                    TensorData::F32(vec![1.0, -2.0, f32::NAN, 0.5, 0.0, 3.0]),
                ),
                (
                    "b".into(),
                    TensorData::F32(vec![2.0, 0.0, -1.5, f32::INFINITY]),
                ),
                ("i".into(), TensorData::I64(vec![i64::MAX, -7, 3, 0])),
                (
                    "j".into(),
                    TensorData::I64(vec![if op == BinaryOp::Pow { -1 } else { 0 }]),
                ),
            ],
        );
        assert_eq!(out[0].shape, vec![2, 4, 3]);
        if op == BinaryOp::Div || op == BinaryOp::Pow {
            // x / 0 and x^-1 are 0 for integers.
            assert_eq!(out[1].data, TensorData::I64(vec![0; 4]), "{op}");
        }
    }
}

#[test]
fn unary_ops_on_special_values() {
    for op in UnaryOp::ALL.iter().copied() {
        check(
            |g| {
                let x = g.input("x", DType::F32, s(&[9])).unwrap();
                let e = g.input("e", DType::F32, s(&[0])).unwrap();
                vec![g.unary(op, x).unwrap(), g.unary(op, e).unwrap()]
            },
            vec![
                (
                    "x".into(),
                    TensorData::F32(vec![
                        0.0,
                        -0.0,
                        1.5,
                        -3.0,
                        7.0,
                        f32::NAN,
                        f32::INFINITY,
                        f32::NEG_INFINITY,
                        1e-3,
                    ]),
                ),
                f32s("e", 0, 0),
            ],
        );
    }
}

#[test]
fn compare_and_where_broadcast() {
    for op in CompareOp::ALL.iter().copied() {
        check_with(
            |g| {
                let a = g.input("a", DType::I32, s(&[2, 3])).unwrap();
                let b = g.input("b", DType::I32, s(&[3])).unwrap();
                let c = g.compare(op, a, b).unwrap();
                let x = g.input("x", DType::F32, s(&[2, 1])).unwrap();
                let y = g.input("y", DType::F32, s(&[1, 3])).unwrap();
                vec![c, g.where_(c, x, y).unwrap()]
            },
            vec![
                ("a".into(), TensorData::I32(vec![1, 2, 3, -1, 5, 3])),
                ("b".into(), TensorData::I32(vec![1, 5, -3])),
                f32s("x", 2, 1),
                f32s("y", 3, 2),
            ],
            DimBinding::new(),
            true,
        );
    }
}

#[test]
fn softmax_on_every_axis_and_empty() {
    for axis in [0, 1, 2, -1] {
        check(
            |g| {
                let x = g.input("x", DType::F32, s(&[2, 3, 4])).unwrap();
                let e = g.input("e", DType::F32, s(&[2, 0, 4])).unwrap();
                vec![g.softmax(x, axis).unwrap(), g.softmax(e, axis).unwrap()]
            },
            vec![f32s("x", 24, 5), f32s("e", 0, 0)],
        );
    }
}

#[test]
fn layer_norm_and_rms_norm() {
    check(
        |g| {
            let x = g.input("x", DType::F32, s(&[3, 2, 8])).unwrap();
            let gm = g.input("g", DType::F32, s(&[8])).unwrap();
            let bt = g.input("b", DType::F32, s(&[8])).unwrap();
            let e = g.input("e", DType::F32, s(&[0, 8])).unwrap();
            vec![
                g.layer_norm(x, gm, bt, 1e-5).unwrap(),
                g.rms_norm(x, gm, 1e-6).unwrap(),
                g.layer_norm(e, gm, bt, 1e-5).unwrap(),
            ]
        },
        vec![
            f32s("x", 48, 1),
            f32s("g", 8, 2),
            f32s("b", 8, 3),
            f32s("e", 0, 0),
        ],
    );
}

#[test]
fn rotary_at_offsets_per_batch_shared_and_large() {
    // Per-batch offsets (i64), one shared offset (i32) deep into a long context, an empty seq.
    check(
        |g| {
            let x = g.input("x", DType::F32, s(&[2, 3, 5, 8])).unwrap();
            let off = g.input("off", DType::I64, s(&[2])).unwrap();
            let one = g.input("one", DType::I32, s(&[1])).unwrap();
            let e = g.input("e", DType::F32, s(&[1, 2, 0, 4])).unwrap();
            vec![
                g.rotary(x, off, 10_000.0).unwrap(),
                g.rotary(x, one, 1_000_000.0).unwrap(),
                g.rotary(e, one, 10_000.0).unwrap(),
            ]
        },
        vec![
            f32s("x", 2 * 3 * 5 * 8, 4),
            ("off".to_string(), TensorData::I64(vec![0, 17])),
            ("one".to_string(), TensorData::I32(vec![100_000])),
            f32s("e", 0, 0),
        ],
    );
}

#[test]
fn rotary_refuses_odd_dims_and_bad_offsets() {
    let mut hir = HirModule::new("rope");
    let mut g = HirMut::new(&mut hir);
    let x = g.input("x", DType::F32, s(&[1, 2, 3, 5])).unwrap();
    let x4 = g.input("x4", DType::F32, s(&[2, 2, 3, 4])).unwrap();
    let off = g.input("off", DType::I64, s(&[1])).unwrap();
    let off3 = g.input("off3", DType::I64, s(&[3])).unwrap();
    let fl = g.input("fl", DType::F32, s(&[1])).unwrap();
    assert!(g.rotary(x, off, 10_000.0).is_err(), "odd head dim");
    assert!(
        g.rotary(x4, off3, 10_000.0).is_err(),
        "3 offsets for a batch of 2"
    );
    assert!(g.rotary(x4, fl, 10_000.0).is_err(), "float offsets");
    assert!(g.rotary(x4, off, f32::NAN).is_err(), "theta NaN");
    assert!(g.rotary(x4, off, 10_000.0).is_ok());
}

#[test]
fn reductions_with_and_without_keep_dim() {
    for op in ReduceOp::ALL.iter().copied() {
        // Inner axis, split axes, none, and trailing axes (a global pool: contiguous runs).
        for (axes, keep) in [
            (vec![1], true),
            (vec![0, 2], false),
            (vec![], false),
            (vec![2], false),
            (vec![1, 2], true),
        ] {
            check(
                |g| {
                    let x = g.input("x", DType::F32, s(&[2, 3, 4])).unwrap();
                    let e = g.input("e", DType::F32, s(&[2, 0, 4])).unwrap();
                    let mut outs = vec![
                        g.reduce(op, x, &axes, keep).unwrap(),
                        g.reduce(op, e, &axes, keep).unwrap(),
                    ];
                    if op != ReduceOp::Mean {
                        let i = g.input("i", DType::I32, s(&[2, 3, 4])).unwrap();
                        outs.push(g.reduce(op, i, &axes, keep).unwrap());
                    }
                    outs
                },
                vec![
                    f32s("x", 24, 4),
                    f32s("e", 0, 0),
                    (
                        "i".into(),
                        TensorData::I32((0..24).map(|v| v * 7 % 11 - 5).collect()),
                    ),
                ]
                .into_iter()
                .filter(|(n, _)| op != ReduceOp::Mean || n != "i")
                .collect(),
            );
        }
    }
}

#[test]
fn reductions_of_wide_rows() {
    // Rows wider than 64 (folded in strips of 64 columns): a whole number of strips, and two
    // strips with a remainder, over the middle axis; and rows too wide for strips.
    for op in ReduceOp::ALL.iter().copied() {
        for inner in [128usize, 150, 1100] {
            let n = 2 * 5 * inner;
            check(
                |g| {
                    let x = g.input("x", DType::F32, s(&[2, 5, inner as i64])).unwrap();
                    let i = g.input("i", DType::I32, s(&[2, 5, inner as i64])).unwrap();
                    let mut outs = vec![g.reduce(op, x, &[1], false).unwrap()];
                    if op != ReduceOp::Mean {
                        outs.push(g.reduce(op, i, &[1], false).unwrap());
                    }
                    outs
                },
                vec![
                    f32s("x", n, 4),
                    (
                        "i".into(),
                        TensorData::I32((0..n as i32).map(|v| v * 7 % 11 - 5).collect()),
                    ),
                ],
            );
        }
    }
}

#[test]
fn data_movement_with_symbolic_dims() {
    let bind = DimBinding::new().with("b", 2).with("s", 3);
    let out = check_with(
        |g| {
            let b = g.dim("b", 0, 4).unwrap();
            let sd = g.dim("s", 1, 8).unwrap();
            let x = g
                .input(
                    "x",
                    DType::I64,
                    Shape(vec![b.clone(), sd.clone(), Dim::constant(2)]),
                )
                .unwrap();
            let flat = g
                .reshape(x, Shape(vec![&b * &sd, Dim::constant(2)]))
                .unwrap();
            let t = g.transpose(x, &[2, 0, 1]).unwrap();
            let cat = g.concat(&[x, x], 1).unwrap();
            let sl = g.slice(x, 1, Dim::constant(1), None).unwrap();
            let tail = g
                .slice(x, 1, Dim::constant(-2), Some(Dim::constant(-1)))
                .unwrap();
            vec![flat, t, cat, sl, tail]
        },
        vec![("x".into(), TensorData::I64((0..12).collect()))],
        bind,
        true,
    );
    assert_eq!(out[2].shape, vec![2, 6, 2]);
    assert_eq!(out[3].data, TensorData::I64(vec![2, 3, 4, 5, 8, 9, 10, 11]));
    assert_eq!(out[4].data, TensorData::I64(vec![2, 3, 8, 9]));
}

#[test]
fn gather_with_negative_and_i32_indices() {
    let out = check_with(
        |g| {
            let d = g.input("d", DType::F32, s(&[4, 3])).unwrap();
            let i = g.input("i", DType::I64, s(&[2, 2])).unwrap();
            let j = g.input("j", DType::I32, s(&[0])).unwrap();
            vec![g.gather(d, i, 0).unwrap(), g.gather(d, j, 1).unwrap()]
        },
        vec![
            f32s("d", 12, 1),
            ("i".into(), TensorData::I64(vec![0, -1, 3, -4])),
            ("j".into(), TensorData::I32(vec![])),
        ],
        DimBinding::new(),
        true,
    );
    assert_eq!(out[0].shape, vec![2, 2, 3]);
    assert_eq!(out[1].shape, vec![4, 0]);
}

#[test]
fn cast_between_every_dtype() {
    for from in DType::ALL {
        for to in DType::ALL {
            let data = match from {
                DType::F32 => TensorData::F32(vec![1.7, -2.5, 0.0, f32::NAN, 1e20]),
                DType::I64 => TensorData::I64(vec![1, -2, 0, i64::MAX, 3]),
                DType::I32 => TensorData::I32(vec![1, -2, 0, i32::MIN, 3]),
                DType::Bool => TensorData::Bool(vec![true, false, true, true, false]),
            };
            check_with(
                |g| {
                    let x = g.input("x", from, s(&[5])).unwrap();
                    vec![g.cast(x, to).unwrap()]
                },
                vec![("x".into(), data)],
                DimBinding::new(),
                true,
            );
        }
    }
}

#[test]
fn attention_with_mask_causal_and_no_keys() {
    for (causal, mask_dt) in [
        (false, None),
        (true, None),
        (false, Some(DType::Bool)),
        (true, Some(DType::I64)),
    ] {
        for sk in [5i64, 0] {
            let mut inputs = vec![
                f32s("q", 2 * 2 * 3 * 4, 1),
                f32s("k", (2 * 2 * sk * 4) as usize, 2),
                f32s("v", (2 * 2 * sk * 3) as usize, 3),
            ];
            if let Some(dt) = mask_dt {
                let m: Vec<i64> = (0..2 * sk).map(|j| i64::from(j % 3 != 1)).collect();
                let data = match dt {
                    DType::Bool => TensorData::Bool(m.iter().map(|v| *v != 0).collect()),
                    _ => TensorData::I64(m),
                };
                inputs.push(("m".into(), data));
            }
            check(
                |g| {
                    let q = g.input("q", DType::F32, s(&[2, 2, 3, 4])).unwrap();
                    let k = g.input("k", DType::F32, s(&[2, 2, sk, 4])).unwrap();
                    let v = g.input("v", DType::F32, s(&[2, 2, sk, 3])).unwrap();
                    let m = mask_dt.map(|dt| g.input("m", dt, s(&[2, sk])).unwrap());
                    vec![g.attention(q, k, v, m, None, causal).unwrap()]
                },
                inputs,
            );
        }
    }
}

#[test]
fn grouped_query_attention_over_a_past() {
    // 4 query heads over 2 kv heads (and over 1), 3 new queries against 7 keys (4 past): causal
    // lines the queries up with the last keys; with a padding mask; and 70 keys across panels.
    for (kv, sk, causal, masked) in [
        (2i64, 7i64, true, false),
        (1, 7, true, true),
        (2, 70, false, true),
        (4, 3, true, false),
    ] {
        let mut inputs = vec![
            f32s("q", 2 * 4 * 3 * 8, 1),
            f32s("k", (2 * kv * sk * 8) as usize, 2),
            f32s("v", (2 * kv * sk * 5) as usize, 3),
        ];
        if masked {
            let m: Vec<i64> = (0..2 * sk).map(|j| i64::from(j % 4 != 0)).collect();
            inputs.push(("m".into(), TensorData::I64(m)));
        }
        check(
            |g| {
                let q = g.input("q", DType::F32, s(&[2, 4, 3, 8])).unwrap();
                let k = g.input("k", DType::F32, s(&[2, kv, sk, 8])).unwrap();
                let v = g.input("v", DType::F32, s(&[2, kv, sk, 5])).unwrap();
                let m = masked.then(|| g.input("m", DType::I64, s(&[2, sk])).unwrap());
                vec![g.attention(q, k, v, m, None, causal).unwrap()]
            },
            inputs,
        );
    }
    // 3 kv heads cannot serve 4 query heads.
    let mut hir = HirModule::new("gqa");
    let mut g = HirMut::new(&mut hir);
    let q = g.input("q", DType::F32, s(&[1, 4, 2, 8])).unwrap();
    let k = g.input("k", DType::F32, s(&[1, 3, 2, 8])).unwrap();
    assert!(g.attention(q, k, k, None, None, true).is_err());
}

// ---- errors ----

fn gather_graph() -> HirModule {
    let mut hir = HirModule::new("gather");
    let mut g = HirMut::new(&mut hir);
    let d = g.input("d", DType::F32, s(&[4, 2])).unwrap();
    let i = g.input("i", DType::I64, s(&[3])).unwrap();
    let y = g.gather(d, i, 0).unwrap();
    g.output("y", y).unwrap();
    hir
}

#[test]
fn gather_out_of_range_is_an_index_error_and_the_graph_still_runs() {
    let hir = gather_graph();
    let d = f32s("d", 8, 1);
    for optimize in [false, true] {
        let mut pipe = support::pipeline(&hir, optimize, &[]).unwrap();
        let bad = vec![d.clone(), ("i".into(), TensorData::I64(vec![0, 4, 1]))];
        let err = support::run(&mut pipe, &hir, optimize, &DimBinding::new(), &bad).unwrap_err();
        assert!(matches!(err, Error::Index(_)), "{err}");
        assert!(err.to_string().contains("index 4"), "{err}");
        let err = support::reference(&hir, &DimBinding::new(), &bad, &[]).unwrap_err();
        assert!(matches!(err, Error::Index(_)), "{err}");
        let good = vec![d.clone(), ("i".into(), TensorData::I64(vec![3, -4, 1]))];
        let out = support::run(&mut pipe, &hir, optimize, &DimBinding::new(), &good).unwrap();
        let want = support::reference(&hir, &DimBinding::new(), &good, &[]).unwrap();
        assert_eq!(out, want);
    }
}

#[test]
fn symbolic_slice_out_of_range_fails_at_specialize() {
    let mut hir = HirModule::new("slice");
    let mut g = HirMut::new(&mut hir);
    let sd = g.dim("s", 0, 16).unwrap();
    let x = g
        .input("x", DType::F32, Shape(vec![sd.clone(), Dim::constant(2)]))
        .unwrap();
    // [s - 3, s): fine for s >= 3, out of range below.
    let y = g.slice(x, 0, &sd - &Dim::constant(3), None).unwrap();
    g.output("y", y).unwrap();
    for optimize in [false, true] {
        let mut pipe = support::pipeline(&hir, optimize, &[]).unwrap();
        for bad in [0, 2] {
            let bind = DimBinding::new().with("s", bad);
            let x = vec![f32s("x", 2 * bad as usize, 0)];
            let err = support::run(&mut pipe, &hir, optimize, &bind, &x).unwrap_err();
            assert!(err.to_string().contains("slice"), "{err}");
            assert!(support::reference(&hir, &bind, &x, &[]).is_err());
        }
        let bind = DimBinding::new().with("s", 5);
        let x = vec![f32s("x", 10, 0)];
        let out = support::run(&mut pipe, &hir, optimize, &bind, &x).unwrap();
        assert_eq!(out[0].shape, vec![3, 2]);
        assert_eq!(out, support::reference(&hir, &bind, &x, &[]).unwrap());
    }
}

#[test]
fn chain_of_100k_ops_builds_verifies_specializes_and_runs() {
    const N: usize = 100_000;
    let mut hir = HirModule::new("chain");
    let mut g = HirMut::new(&mut hir);
    let sd = g.dim("s", 1, 4).unwrap();
    let mut v = g.input("x", DType::F32, Shape(vec![sd])).unwrap();
    for i in 0..N {
        let op = if i % 2 == 0 {
            UnaryOp::Neg
        } else {
            UnaryOp::Abs
        };
        v = g.unary(op, v).unwrap();
    }
    g.output("y", v).unwrap();
    hir.verify().unwrap();
    let bind = DimBinding::new().with("s", 3);
    let x = vec![("x".to_string(), TensorData::F32(vec![1.5, -2.0, 0.0]))];
    for optimize in [false, true] {
        let mut pipe = support::pipeline(&hir, optimize, &[]).unwrap();
        let out = support::run(&mut pipe, &hir, optimize, &bind, &x).unwrap();
        // neg then abs, 50,000 times: |x|.
        assert_eq!(out[0].as_f32().unwrap(), &[1.5, 2.0, 0.0]);
    }
}

#[test]
fn rounding_ops_and_sign_on_ties_and_negatives() {
    let xs = vec![
        0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 2.49999, -2.7, 3.0, -0.0, 1e30, -1e-30, 8388609.0,
    ];
    let want: [(UnaryOp, [f32; 13]); 4] = [
        (
            UnaryOp::Round,
            [
                0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 2.0, -3.0, 3.0, -0.0, 1e30, -0.0, 8388609.0,
            ],
        ),
        (
            UnaryOp::Floor,
            [
                0.0, 1.0, 2.0, -1.0, -2.0, -3.0, 2.0, -3.0, 3.0, -0.0, 1e30, -1.0, 8388609.0,
            ],
        ),
        (
            UnaryOp::Ceil,
            [
                1.0, 2.0, 3.0, -0.0, -1.0, -2.0, 3.0, -2.0, 3.0, -0.0, 1e30, -0.0, 8388609.0,
            ],
        ),
        (
            UnaryOp::Sign,
            [
                1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -0.0, 1.0, -1.0, 1.0,
            ],
        ),
    ];
    for (op, w) in want {
        let got = check(
            |g| {
                let x = g.input("x", DType::F32, s(&[13])).unwrap();
                vec![g.unary(op, x).unwrap()]
            },
            vec![("x".into(), TensorData::F32(xs.clone()))],
        );
        let got = got[0].as_f32().unwrap();
        for (i, (a, b)) in got.iter().zip(w).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{op}({}) = {a}, expected {b}",
                xs[i]
            );
        }
    }
}

#[test]
fn top_k_with_ties_nan_every_axis_and_k() {
    // Rows: ties (3.0 twice), a NaN, a row of equal values.
    let v: Vec<f32> = vec![
        3.0,
        1.0,
        3.0,
        -2.0,
        5.0,
        f32::NAN,
        0.0,
        -7.0,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for largest in [true, false] {
        for axis in [0i64, 1, -1] {
            for k in [0usize, 1, 2, 3] {
                let got = check(
                    |g| {
                        let x = g.input("x", DType::F32, s(&[3, 4])).unwrap();
                        let i = g.input("i", DType::I64, s(&[3, 4])).unwrap();
                        vec![
                            g.top_k(x, axis, k, largest).unwrap(),
                            g.top_k(i, axis, k, largest).unwrap(),
                        ]
                    },
                    vec![
                        ("x".into(), TensorData::F32(v.clone())),
                        (
                            "i".into(),
                            TensorData::I64(vec![2, 2, 1, 0, 4, 9, 9, 4, 0, 0, 0, 0]),
                        ),
                    ],
                );
                if (largest, axis, k) == (true, 1, 2) {
                    // The first 3.0 before the second; the NaN first; equal values by index.
                    assert_eq!(got[0].data, TensorData::I64(vec![0, 2, 1, 0, 0, 1]));
                    assert_eq!(got[1].data, TensorData::I64(vec![0, 1, 1, 2, 0, 1]));
                }
                if (largest, axis, k) == (false, -1, 3) {
                    // Smallest first; the NaN last (not among the 3).
                    assert_eq!(
                        got[0].data,
                        TensorData::I64(vec![3, 1, 0, 3, 2, 0, 0, 1, 2])
                    );
                }
            }
        }
    }
    // k beyond the axis: an error, not a panic.
    let mut m = HirModule::new("top_k");
    let mut g = HirMut::new(&mut m);
    let x = g.input("x", DType::F32, s(&[3, 4])).unwrap();
    assert!(g.top_k(x, 1, 5, true).is_err());
}

#[test]
fn argmax_and_argmin_with_ties_nan_and_every_axis() {
    let v: Vec<f32> = vec![
        3.0,
        1.0,
        3.0,
        -2.0,
        5.0,
        5.0,
        f32::NAN,
        0.0,
        7.0,
        -7.0,
        1.0,
        1.0,
    ];
    for max in [true, false] {
        for last in [false, true] {
            for keep in [true, false] {
                for axis in [0i64, 1, -1] {
                    let got = check(
                        |g| {
                            let x = g.input("x", DType::F32, s(&[3, 4])).unwrap();
                            let i = g.input("i", DType::I32, s(&[3, 4])).unwrap();
                            vec![
                                g.arg_reduce(x, max, axis, keep, last).unwrap(),
                                g.arg_reduce(i, max, axis, keep, last).unwrap(),
                            ]
                        },
                        vec![
                            ("x".into(), TensorData::F32(v.clone())),
                            (
                                "i".into(),
                                TensorData::I32(vec![2, 2, 1, 0, 4, 9, 9, 4, 0, 0, 0, 0]),
                            ),
                        ],
                    );
                    if (max, last, keep, axis) == (true, false, false, 1) {
                        // Row maxima: the first 3.0, the NaN, the 7.0.
                        assert_eq!(got[0].data, TensorData::I64(vec![0, 2, 0]));
                        assert_eq!(got[1].data, TensorData::I64(vec![0, 1, 0]));
                    }
                    if (max, last, keep, axis) == (false, true, true, -1) {
                        assert_eq!(got[0].data, TensorData::I64(vec![3, 2, 1]));
                        assert_eq!(got[1].data, TensorData::I64(vec![3, 3, 3]));
                    }
                }
            }
        }
    }
}
