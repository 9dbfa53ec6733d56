//! Decoder ops against the reference interpreter: the in-place KV-cache write and attention
//! over a cache, through several steps at per-row positions (states compared after each
//! step), on both attention paths (direct at decode, blocked at prefill) and every kernel
//! path; SwiGLU; and the errors a caller can provoke.

mod support;

use rlx_ir::{DType, Dim, DimBinding, HirModule, HirMut, Shape, TensorData};
use rlx_runtime::{CompileOptions, Error, StateMut, reference};
use support::{Named, compare, options, pipeline, tref};

const HEADS: i64 = 4;
const KV: i64 = 2;
const D: i64 = 8;
const DV: i64 = 6;

/// `o = kv_attention(q, cache_write(kc, k, pos), cache_write(vc, v, pos), pos)`.
fn cached_attention() -> HirModule {
    let mut m = HirModule::new("kv");
    let mut g = HirMut::new(&mut m);
    let b = g.dim("batch", 1, 4).unwrap();
    let s = g.dim("seq", 1, 64).unwrap();
    let ctx = g.dim("ctx", 1, 256).unwrap();
    let c = Dim::constant;
    let shape = |dims: Vec<Dim>| Shape(dims);
    let q = g
        .input(
            "q",
            DType::F32,
            shape(vec![b.clone(), c(HEADS), s.clone(), c(D)]),
        )
        .unwrap();
    let k = g
        .input(
            "k",
            DType::F32,
            shape(vec![b.clone(), c(KV), s.clone(), c(D)]),
        )
        .unwrap();
    let v = g
        .input(
            "v",
            DType::F32,
            shape(vec![b.clone(), c(KV), s.clone(), c(DV)]),
        )
        .unwrap();
    let pos = g.input("pos", DType::I64, shape(vec![b.clone()])).unwrap();
    let kc = g
        .state(
            "kc",
            DType::F32,
            shape(vec![b.clone(), c(KV), ctx.clone(), c(D)]),
        )
        .unwrap();
    let vc = g
        .state("vc", DType::F32, shape(vec![b, c(KV), ctx, c(DV)]))
        .unwrap();
    let kc = g.cache_write(kc, k, pos).unwrap();
    let vc = g.cache_write(vc, v, pos).unwrap();
    let o = g.kv_attention(q, kc, vc, pos, None).unwrap();
    g.output("o", o).unwrap();
    m
}

fn data(n: i64, seed: u32) -> TensorData {
    TensorData::F32(
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 41) as f32 / 10.0 - 2.0)
            .collect(),
    )
}

fn step_inputs(batch: i64, seq: i64, pos: &[i64], seed: u32) -> Vec<Named> {
    vec![
        ("q".into(), data(batch * HEADS * seq * D, seed)),
        ("k".into(), data(batch * KV * seq * D, seed + 1)),
        ("v".into(), data(batch * KV * seq * DV, seed + 2)),
        ("pos".into(), TensorData::I64(pos.to_vec())),
    ]
}

fn binding(batch: i64, seq: i64, ctx: i64) -> DimBinding {
    DimBinding::new()
        .with("batch", batch)
        .with("seq", seq)
        .with("ctx", ctx)
}

#[test]
fn cache_steps_match_the_reference_on_every_path() {
    let hir = cached_attention();
    // Batch 2, and batch 1 (where decode splits a kv head's group across tasks).
    for batch in [2i64, 1] {
        check_cache_steps(&hir, batch);
    }
}

fn check_cache_steps(hir: &HirModule, batch: i64) {
    let ctx = 40i64;
    // Prefill of unequal rows, decode steps at per-row positions, a long (blocked) chunk.
    let steps: [(i64, [i64; 2]); 5] = [
        (5, [0, 0]),
        (1, [5, 3]),
        (1, [6, 4]),
        (20, [7, 5]),
        (3, [27, 37]),
    ];
    for optimize in [false, true] {
        let mut pipe = pipeline(hir, optimize, &[]).unwrap();
        for (isa, prepack) in support::kernel_paths() {
            let opts = CompileOptions {
                isa: Some(isa),
                prepack,
                ..options(optimize)
            };
            let zeros = |d: i64| TensorData::F32(vec![0.0; (batch * KV * ctx * d) as usize]);
            let mut want_states = vec![zeros(D), zeros(DV)];
            let mut got_states = want_states.clone();
            for (i, (seq, pos)) in steps.iter().enumerate() {
                let b = binding(batch, *seq, ctx);
                let inputs = step_inputs(batch, *seq, &pos[..batch as usize], 7 * i as u32);
                let refs: Vec<(&str, _)> =
                    inputs.iter().map(|(n, d)| (n.as_str(), tref(d))).collect();
                let prev: Vec<(&str, _)> = ["kc", "vc"]
                    .into_iter()
                    .zip(want_states.iter().map(tref))
                    .collect();
                let (want, after) =
                    reference::evaluate_stateful(hir, &b, &refs, &[], &prev).unwrap();
                let g = pipe.get_or_compile(&b, || hir.clone(), &opts).unwrap();
                let (kc, vc) = got_states.split_at_mut(1);
                let mut states = [
                    ("kc", StateMut::from(&mut kc[0])),
                    ("vc", StateMut::from(&mut vc[0])),
                ];
                let got = g.run_stateful(&refs, &mut states, None).unwrap();
                let path =
                    format!("optimize={optimize} isa={isa} step {i} (seq {seq}, pos {pos:?})");
                compare(&got, &want, &[false]).unwrap_or_else(|e| panic!("{path}: {e}"));
                // The caches hold exactly what the reference wrote (copies: bit for bit).
                let as_tensor = |name: &str, d: &TensorData| rlx_runtime::Tensor {
                    name: name.into(),
                    shape: after[0].shape.clone(),
                    data: d.clone(),
                };
                let got_k = [as_tensor("kc", &got_states[0])];
                compare(&got_k, &after[..1], &[true]).unwrap_or_else(|e| panic!("{path}: {e}"));
                want_states = after.into_iter().map(|t| t.data).collect();
                assert_eq!(got_states, want_states, "{path}: states differ");
            }
        }
    }
}

#[test]
fn positions_past_the_context_are_errors_and_the_graph_stays_usable() {
    let hir = cached_attention();
    let mut pipe = pipeline(&hir, true, &[]).unwrap();
    let b = binding(1, 2, 8);
    let g = pipe
        .get_or_compile(&b, || hir.clone(), &options(true))
        .unwrap();
    let mut kc = TensorData::F32(vec![0.0; (KV * 8 * D) as usize]);
    let mut vc = TensorData::F32(vec![0.0; (KV * 8 * DV) as usize]);
    for (pos, ok) in [(7i64, false), (-1, false), (i64::MAX, false), (6, true)] {
        let inputs = step_inputs(1, 2, &[pos], 3);
        let refs: Vec<(&str, _)> = inputs.iter().map(|(n, d)| (n.as_str(), tref(d))).collect();
        let mut states = [
            ("kc", StateMut::from(&mut kc)),
            ("vc", StateMut::from(&mut vc)),
        ];
        match g.run_stateful(&refs, &mut states, None) {
            Ok(_) => assert!(ok, "position {pos} should fail"),
            Err(Error::Shape(msg)) => assert!(!ok && msg.contains("context"), "{pos}: {msg}"),
            Err(e) => panic!("position {pos}: {e}"),
        }
    }
    // Missing, foreign and wrongly sized states are refused before any kernel runs.
    let inputs = step_inputs(1, 2, &[0], 3);
    let refs: Vec<(&str, _)> = inputs.iter().map(|(n, d)| (n.as_str(), tref(d))).collect();
    assert!(g.run(&refs).is_err(), "no states");
    let mut small = TensorData::F32(vec![0.0; 3]);
    let mut states = [
        ("kc", StateMut::from(&mut small)),
        ("vc", StateMut::from(&mut vc)),
    ];
    assert!(matches!(
        g.run_stateful(&refs, &mut states, None),
        Err(Error::Shape(_))
    ));
}

#[test]
fn states_are_only_written_by_one_cache_write() {
    let build = |f: &dyn Fn(&mut HirMut, rlx_ir::ValueId, rlx_ir::ValueId, rlx_ir::ValueId)| {
        let mut m = HirModule::new("bad");
        let mut g = HirMut::new(&mut m);
        let st = g
            .state("st", DType::F32, Shape::new(&[1, 1, 4, 2]))
            .unwrap();
        let new = g
            .input("new", DType::F32, Shape::new(&[1, 1, 1, 2]))
            .unwrap();
        let pos = g.input("pos", DType::I64, Shape::new(&[1])).unwrap();
        f(&mut g, st, new, pos);
        m.verify()
    };
    // Read directly (not through its cache write).
    assert!(
        build(&|g, st, _, _| {
            let y = g.unary(rlx_ir::UnaryOp::Neg, st).unwrap();
            g.output("y", y).unwrap();
        })
        .is_err()
    );
    // Written twice.
    assert!(
        build(&|g, st, new, pos| {
            let a = g.cache_write(st, new, pos).unwrap();
            let b = g.cache_write(st, new, pos).unwrap();
            g.output("a", a).unwrap();
            g.output("b", b).unwrap();
        })
        .is_err()
    );
    // A cache write into something that is not a state.
    assert!(
        build(&|g, _, new, pos| {
            let x = g.input("x", DType::F32, Shape::new(&[1, 1, 4, 2])).unwrap();
            let y = g.cache_write(x, new, pos).unwrap();
            g.output("y", y).unwrap();
        })
        .is_err()
    );
    // The well-formed graph verifies.
    assert!(
        build(&|g, st, new, pos| {
            let y = g.cache_write(st, new, pos).unwrap();
            g.output("y", y).unwrap();
        })
        .is_ok()
    );
}

#[test]
fn swiglu_matches_the_reference() {
    for (rows, n) in [(3i64, 5i64), (1, 40), (64, 300), (0, 4)] {
        let mut m = HirModule::new("swiglu");
        let mut g = HirMut::new(&mut m);
        let x = g
            .input("x", DType::F32, Shape::new(&[rows, 2 * n]))
            .unwrap();
        let y = g.swiglu(x).unwrap();
        g.output("y", y).unwrap();
        support::check(
            &m,
            &[],
            &[(DimBinding::new(), vec![("x".into(), data(rows * 2 * n, 5))])],
            &[false],
        );
    }
    let mut m = HirModule::new("odd");
    let mut g = HirMut::new(&mut m);
    let x = g.input("x", DType::F32, Shape::new(&[2, 7])).unwrap();
    assert!(g.swiglu(x).is_err(), "odd width");
}

#[test]
fn fused_swiglu_mlp_matches_the_reference() {
    let mut m = HirModule::new("mlp");
    let mut g = HirMut::new(&mut m);
    let b = g.dim("rows", 1, 64).unwrap();
    let x = g
        .input("x", DType::F32, Shape(vec![b, Dim::constant(16)]))
        .unwrap();
    let wg = g.param("wg", DType::F32, Shape::new(&[40, 16])).unwrap();
    let wu = g.param("wu", DType::F32, Shape::new(&[40, 16])).unwrap();
    let gate = g.linear_t(x, wg, None, None).unwrap();
    let gate = g.unary(rlx_ir::UnaryOp::Silu, gate).unwrap();
    let up = g.linear_t(x, wu, None, None).unwrap();
    let h = g.binary(rlx_ir::BinaryOp::Mul, gate, up).unwrap();
    g.output("h", h).unwrap();
    let params = vec![("wg".into(), data(640, 1)), ("wu".into(), data(640, 2))];
    let runs: Vec<_> = [1i64, 7, 64]
        .into_iter()
        .map(|r| {
            let bind = DimBinding::new().with("rows", r);
            (bind, vec![("x".to_string(), data(r * 16, 3))])
        })
        .collect();
    support::check(&m, &params, &runs, &[false]);
    let pipe = pipeline(&m, true, &params).unwrap();
    let lir = pipe.template_result().unwrap().lir.to_string();
    assert!(
        lir.contains("linear_group") && lir.contains("swiglu"),
        "not fused:\n{lir}"
    );
}
