//! Every ISA path this CPU has against a plain f64 product, over edge shapes and every way B
//! can be given.

use super::*;

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 - 500.0) / 250.0)
        .collect()
}

/// `x[m, k] @ w[k, n] + bias`, in f64.
fn naive(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |b| f64::from(b[j]));
            for p in 0..k {
                s += f64::from(x[i * k + p]) * f64::from(w[p * n + j]);
            }
            out[i * n + j] = s;
        }
    }
    out
}

fn close(got: &[f32], want: &[f64], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * (k as f64).sqrt().max(1.0) * w.abs().max(4.0);
        assert!((f64::from(*g) - w).abs() <= tol, "{what}: [{i}] {g} vs {w}");
    }
}

fn transpose(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    (0..n * k).map(|i| w[(i % k) * n + i / k]).collect()
}

/// Edge panels of half a panel (n = 48 and 80 on AVX-512, 8, 24 and 40 on AVX2), over one and
/// several K blocks, run the half-width tile; so do narrower edges of one K block (n = 7, 65
/// and 300 on AVX-512), and an edge just over half a panel (n = 50) runs the whole tile.
const SHAPES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (3, 5, 7),
    (16, 384, 96),
    (9, 33, 300),
    (70, 40, 65),
    (128, 64, 48),
    (5, 0, 8),
    (130, 257, 33),
    (2, 600, 31),
    (33, 300, 80),
    (20, 300, 24),
    (9, 40, 50),
];

#[test]
fn linear_matches_f64_for_every_isa_and_weight_form() {
    let pool = crate::cpu::thread_pool(Some(3)).unwrap();
    for isa in Isa::available() {
        let nr = kernel(isa).nr;
        for (m, k, n) in SHAPES {
            let (x, w, b) = (data(m * k, 1), data(k * n, 2), data(n, 3));
            let want = naive(&x, &w, Some(&b), m, k, n);
            let wt = transpose(&w, k, n);
            let packed = PackedB::new(&w, k, n, false, nr).unwrap();
            let packed_t = PackedB::new(&wt, k, n, true, nr).unwrap();
            let forms = [
                (
                    "raw",
                    Weight::Raw {
                        w: &w,
                        transposed: false,
                    },
                ),
                (
                    "raw^T",
                    Weight::Raw {
                        w: &wt,
                        transposed: true,
                    },
                ),
                ("packed", Weight::Packed(&packed)),
                ("packed^T", Weight::Packed(&packed_t)),
            ];
            for (name, wf) in forms {
                let mut out = vec![f32::NAN; m * n];
                let spec = LinearSpec { k, n, act: None };
                pool.install(|| linear(isa, &x, wf, Some(&b), &spec, &mut out))
                    .unwrap();
                close(&out, &want, k, &format!("{isa} {name} {m}x{k}x{n}"));
            }
        }
    }
}

#[test]
fn activation_epilogue_and_groups_match() {
    for isa in Isa::available() {
        let (m, k) = (37, 70);
        let x = data(m * k, 4);
        let (w1, w2) = (data(k * 40, 5), data(k * 24, 6));
        let b1 = data(40, 7);
        let mut out = vec![0.0; m * 40];
        let spec = LinearSpec {
            k,
            n: 40,
            act: Some(UnaryOp::Relu),
        };
        let w = Weight::Raw {
            w: &w1,
            transposed: false,
        };
        linear(isa, &x, w, Some(&b1), &spec, &mut out).unwrap();
        let want: Vec<f64> = naive(&x, &w1, Some(&b1), m, k, 40)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        close(&out, &want, k, &format!("{isa} relu"));
        // Relu6 in the stores of two whole panels, on one thread: one task of 37 rows (AVX-512:
        // a run of four 8-row tiles, then the last 5 rows); sums past 6 and below 0.
        let w3 = data(k * 64, 8);
        let packed = PackedB::new(&w3, k, 64, false, kernel(isa).nr).unwrap();
        let mut out6 = vec![0.0; m * 64];
        let spec6 = LinearSpec {
            k,
            n: 64,
            act: Some(UnaryOp::Relu6),
        };
        let b3 = data(64, 9);
        let serial = crate::cpu::thread_pool(Some(1)).unwrap();
        serial
            .install(|| {
                linear(
                    isa,
                    &x,
                    Weight::Packed(&packed),
                    Some(&b3),
                    &spec6,
                    &mut out6,
                )
            })
            .unwrap();
        let want6: Vec<f64> = naive(&x, &w3, Some(&b3), m, k, 64);
        assert!(want6.iter().any(|v| *v > 6.0) && want6.iter().any(|v| *v < 0.0));
        let want6: Vec<f64> = want6.iter().map(|v| v.clamp(0.0, 6.0)).collect();
        close(&out6, &want6, k, &format!("{isa} relu6"));

        let mut grouped = vec![0.0; m * 64];
        let parts = [
            (
                Weight::Raw {
                    w: &w1,
                    transposed: false,
                },
                Some(&b1[..]),
                40,
            ),
            (
                Weight::Raw {
                    w: &w2,
                    transposed: false,
                },
                None,
                24,
            ),
        ];
        linear_group(isa, &x, &parts, k, &mut grouped).unwrap();
        let (p1, p2) = (
            naive(&x, &w1, Some(&b1), m, k, 40),
            naive(&x, &w2, None, m, k, 24),
        );
        for r in 0..m {
            close(
                &grouped[r * 64..r * 64 + 40],
                &p1[r * 40..(r + 1) * 40],
                k,
                "part 1",
            );
            close(
                &grouped[r * 64 + 40..(r + 1) * 64],
                &p2[r * 24..(r + 1) * 24],
                k,
                "part 2",
            );
        }
    }
}

#[test]
fn batched_matmul_broadcasts_batches() {
    for isa in Isa::available() {
        let (m, k, n) = (5, 19, 35);
        let a = data(3 * m * k, 8);
        let b = data(k * n, 9);
        let mut out = vec![0.0; 3 * m * n];
        matmul(isa, &a, &[3, m, k], &b, &[1, k, n], &mut out, &[3, m, n]);
        for i in 0..3 {
            let want = naive(&a[i * m * k..(i + 1) * m * k], &b, None, m, k, n);
            close(
                &out[i * m * n..(i + 1) * m * n],
                &want,
                k,
                &format!("{isa} batch {i}"),
            );
        }
    }
}

#[test]
#[ignore = "timing probe: cargo test --release -p rlx-runtime --lib gemm -- --ignored --nocapture"]
fn probe_linear_speed() {
    let pool = crate::cpu::thread_pool(None).unwrap();
    for isa in Isa::available() {
        for (m, k, n) in [
            (12544, 16, 96),
            (3136, 96, 24),
            (3136, 24, 144),
            (3136, 32, 64),
            (3136, 64, 64),
            (784, 128, 128),
            (196, 256, 256),
            (16, 384, 1536),
            (128, 384, 384),
            (128, 384, 1536),
            (128, 1536, 384),
            (1024, 384, 1152),
            (1024, 1536, 384),
            (4096, 384, 1536),
        ] {
            let (x, w) = (data(m * k, 1), data(k * n, 2));
            let packed = PackedB::new(&w, k, n, false, kernel(isa).nr).unwrap();
            let mut out = vec![0.0f32; m * n];
            // With its activation where K is small (MobileNet v2's expansions: the epilogue
            // weighs there).
            let acts = match k <= 24 {
                true => vec![None, Some(UnaryOp::Relu), Some(UnaryOp::Relu6)],
                false => vec![None],
            };
            for act in acts {
                let spec = LinearSpec { k, n, act };
                let reps = (2_000_000_000 / (2 * m * k * n)).clamp(5, 2000);
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let t = std::time::Instant::now();
                    pool.install(|| {
                        for _ in 0..reps {
                            linear(isa, &x, Weight::Packed(&packed), None, &spec, &mut out)
                                .unwrap();
                        }
                    });
                    best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                }
                println!(
                    "{isa} {m}x{k}x{n} {act:?}: {:.1} GFLOP/s",
                    2.0 * (m * k * n) as f64 / best / 1e9
                );
            }
        }
    }
}

#[test]
#[ignore = "timing probe"]
fn probe_cold_weights() {
    let pool = crate::cpu::thread_pool(None).unwrap();
    let isa = Isa::best();
    let (m, k, n) = (128, 384, 1536);
    let x = data(m * k, 1);
    let ws: Vec<PackedB> = (0..24)
        .map(|s| PackedB::new(&data(k * n, s + 2), k, n, false, kernel(isa).nr).unwrap())
        .collect();
    let mut out = vec![0.0f32; m * n];
    let spec = LinearSpec { k, n, act: None };
    for cold in [false, true] {
        let t = std::time::Instant::now();
        let reps = 240;
        pool.install(|| {
            for r in 0..reps {
                let w = if cold { &ws[r % ws.len()] } else { &ws[0] };
                linear(isa, &x, Weight::Packed(w), None, &spec, &mut out).unwrap();
            }
        });
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "cold={cold}: {:.1} GFLOP/s",
            2.0 * (m * k * n) as f64 / s / 1e9
        );
    }
}

#[test]
#[ignore = "timing probe: cargo test --release -p rlx-runtime --lib probe_precisions -- --ignored --nocapture"]
fn probe_precisions() {
    let pool = crate::cpu::thread_pool(Some(1)).unwrap();
    let isa = Isa::Avx512;
    if !isa.supported() {
        return;
    }
    for (m, k, n) in [
        (128, 384, 1536),
        (1024, 384, 1536),
        (1024, 1536, 384),
        (1, 576, 1536),
    ] {
        let (x, w) = (data(m * k, 1), data(k * n, 2));
        let f32w = PackedB::new(&w, k, n, false, kernel(isa).nr).unwrap();
        let bf = PackedBf16::new(&w, k, n, false).unwrap();
        let i8w = PackedI8::new(&w, k, n, false).unwrap();
        let mut out = vec![0.0f32; m * n];
        let spec = LinearSpec { k, n, act: None };
        let reps = (2_000_000_000 / (2 * m * k * n)).clamp(5, 2000);
        let ws: [(&str, Weight); 3] = [
            ("f32", Weight::Packed(&f32w)),
            ("bf16", Weight::Bf16(&bf)),
            ("int8", Weight::Int8(&i8w)),
        ];
        for (name, w) in ws {
            if name == "bf16" && !bf16::supported() || name == "int8" && !int8::vnni() {
                continue;
            }
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = std::time::Instant::now();
                pool.install(|| {
                    for _ in 0..reps {
                        linear(isa, &x, w, None, &spec, &mut out).unwrap();
                    }
                });
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            println!(
                "{name} {m}x{k}x{n}, 1 thread: {:.1} GFLOP/s ({:.1} us)",
                2.0 * (m * k * n) as f64 / best / 1e9,
                best * 1e6
            );
        }
    }
}

#[test]
fn equal_columns_give_equal_results_in_edge_panels() {
    // A weight whose 1000 columns are equal (the ONNX light models' constant weights): the
    // edge panel must sum in the order full panels do, or equal logits differ by an ulp.
    // Several K blocks (the edge through a buffer) and one (the edge's tiles in place).
    for (m, k, n) in [(3, 600, 1000), (3, 200, 1000)] {
        let x = data(m * k, 1);
        let col = data(k, 2);
        let w: Vec<f32> = (0..k)
            .flat_map(|p| std::iter::repeat_n(col[p], n))
            .collect();
        for isa in Isa::available() {
            let packed = PackedB::new(&w, k, n, false, kernel(isa).nr).unwrap();
            let spec = LinearSpec { k, n, act: None };
            for weight in [
                Weight::Packed(&packed),
                Weight::Raw {
                    w: &w,
                    transposed: false,
                },
            ] {
                let mut out = vec![0.0f32; m * n];
                linear(isa, &x, weight, None, &spec, &mut out).unwrap();
                for row in out.chunks(n) {
                    assert!(
                        row.iter().all(|v| v.to_bits() == row[0].to_bits()),
                        "{isa}: {row:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn edge_panels_add_onto_c_and_touch_nothing_past_it() {
    // A residual held in c itself (an arena in-place pair), edge panels of 24, 8 and 20
    // columns over one K block (tiles reading and storing only the edge's columns) and over
    // several (through a buffer), bias and relu: c + x @ w + b, then relu, and the floats
    // after c untouched.
    for isa in Isa::available() {
        let kern = kernel(isa);
        for (m, k, n) in [(37, 70, 24), (19, 96, 40), (9, 33, 20), (21, 300, 24)] {
            let (x, w, b) = (data(m * k, 11), data(k * n, 12), data(n, 13));
            let packed = PackedB::new(&w, k, n, false, kern.nr).unwrap();
            let res = data(m * n, 14);
            let mut c: Vec<f32> = res.iter().copied().chain([7.5; 16]).collect();
            let job = GemmJob {
                m,
                n,
                k,
                a: x.as_ptr(),
                lda: k,
                b: BSource::Packed(&packed),
                c: c.as_mut_ptr(),
                ldc: n,
                bias: Some(&b),
                act: Some(UnaryOp::Relu),
                residual: Some(crate::cpu::vmath::Residual {
                    ptr: c.as_ptr(),
                    ld: n,
                }),
            };
            // SAFETY: x holds m rows of k, the panels k x n, c m rows of n (and the guard).
            unsafe { driver::run(kern, &[job]) };
            let want: Vec<f64> = naive(&x, &w, Some(&b), m, k, n)
                .iter()
                .zip(&res)
                .map(|(v, r)| (v + f64::from(*r)).max(0.0))
                .collect();
            close(&c[..m * n], &want, k, &format!("{isa} {m}x{k}x{n} onto c"));
            assert!(c[m * n..].iter().all(|v| *v == 7.5), "{isa} {m}x{k}x{n}");
        }
    }
}

#[test]
fn a_tile_stores_only_its_first_columns() {
    // Every ISA's segmented tile with `cols` below the panel width: the first `cols` columns
    // hold what a whole tile stores (bias and relu applied), the rest of each row is untouched.
    for isa in Isa::available() {
        let kern = kernel(isa);
        let (mr, nr, len) = (kern.mr, kern.nr, 5);
        let offsets = [0usize, 7];
        let a = data(mr * 16 + 16, 3);
        let b = data(2 * len * nr, 4);
        let bias = data(nr, 5);
        let whole = |cols: usize, c: &mut [f32]| {
            let epi = TileEpilogue {
                bias: bias.as_ptr(),
                act: StoreAct::Relu,
                cols,
                ..TileEpilogue::NONE
            };
            // SAFETY: mr rows of a (stride 16) hold both segments (offsets 0 and 7, len 5);
            // b holds 2 * len rows of nr; c mr rows of ldc = nr + 3; the bias nr values.
            unsafe {
                (kern.segs)(
                    mr,
                    &offsets,
                    len,
                    a.as_ptr(),
                    16,
                    b.as_ptr(),
                    nr,
                    c.as_mut_ptr(),
                    nr + 3,
                    false,
                    &epi,
                )
            };
        };
        let mut want = vec![f32::NAN; mr * (nr + 3)];
        whole(usize::MAX, &mut want);
        for cols in 1..nr {
            let mut got = vec![-7.0f32; mr * (nr + 3)];
            whole(cols, &mut got);
            for r in 0..mr {
                for j in 0..nr + 3 {
                    let (g, w) = (got[r * (nr + 3) + j], want[r * (nr + 3) + j]);
                    match j < cols {
                        true => assert_eq!(g.to_bits(), w.to_bits(), "{isa} cols={cols} [{r},{j}]"),
                        false => assert_eq!(g, -7.0, "{isa} cols={cols} [{r},{j}] written"),
                    }
                }
            }
        }
    }
}

#[test]
fn tiles_sum_in_k_order_bit_for_bit() {
    // Every SIMD ISA's segmented tile (AVX-512's whole-panel tiles are assembly) against the same
    // sums computed one fused multiply-add at a time in K order, then + bias, + residual, relu or
    // relu6: equal bit for bit. Rows 1 to mr, segment lengths with and without a remainder of the
    // four-step rounds, none or three segments, with and without bias and residual, and sums that
    // are NaN, -0.0 or above 6 for the activations. (The portable kernel rounds each product before
    // adding it; the f64 tests above hold it.)
    for isa in Isa::available().into_iter().filter(|i| *i != Isa::Scalar) {
        let kern = kernel(isa);
        let (mr, nr, lda, ldc) = (kern.mr, kern.nr, 40, kern.nr + 5);
        for (len, offsets) in [(9usize, vec![0usize, 11, 25]), (4, vec![3]), (7, vec![])] {
            let k = len * offsets.len();
            let mut a = data(mr * lda, 6);
            a[0] = f32::NAN;
            let mut b = data(k.max(1) * nr, 7);
            // Column 1 is all zeros: its sums are +0.0, and -0.0 after a bias of -0.0.
            (0..k).for_each(|p| b[p * nr + 1] = 0.0);
            let mut bias = data(nr, 8);
            bias[1] = -0.0;
            let res = data(mr * ldc, 9);
            let mut clamped = 0;
            for rows in 1..=mr {
                for (with_bias, with_res, act) in [
                    (false, false, StoreAct::None),
                    (true, true, StoreAct::Relu),
                    (true, false, StoreAct::Relu),
                    (true, true, StoreAct::Relu6),
                    (false, false, StoreAct::Relu6),
                ] {
                    let epi = TileEpilogue {
                        bias: if with_bias {
                            bias.as_ptr()
                        } else {
                            std::ptr::null()
                        },
                        res: if with_res {
                            res.as_ptr()
                        } else {
                            std::ptr::null()
                        },
                        ld_res: ldc,
                        act,
                        ..TileEpilogue::NONE
                    };
                    let mut got = vec![5.0f32; mr * ldc];
                    // SAFETY: rows rows of a (stride lda) hold every segment (offset + len
                    // <= 34 < lda); b holds k rows of nr; got and res rows rows of ldc.
                    unsafe {
                        (kern.segs)(
                            rows,
                            &offsets,
                            len,
                            a.as_ptr(),
                            lda,
                            b.as_ptr(),
                            nr,
                            got.as_mut_ptr(),
                            ldc,
                            false,
                            &epi,
                        )
                    };
                    for r in 0..mr {
                        for j in 0..ldc {
                            let g = got[r * ldc + j];
                            if r >= rows || j >= nr {
                                assert_eq!(g, 5.0, "{isa} rows={rows} [{r},{j}] written");
                                continue;
                            }
                            let mut s = 0.0f32;
                            for (si, off) in offsets.iter().enumerate() {
                                for p in 0..len {
                                    s = a[r * lda + off + p].mul_add(b[(si * len + p) * nr + j], s);
                                }
                            }
                            s += if with_bias { bias[j] } else { -0.0 };
                            if with_res {
                                s += res[r * ldc + j];
                            }
                            if act != StoreAct::None && s < 0.0 {
                                s = 0.0;
                            }
                            if act == StoreAct::Relu6 && s > 6.0 {
                                s = 6.0;
                                clamped += 1;
                            }
                            assert_eq!(
                                g.to_bits(),
                                s.to_bits(),
                                "{isa} len={len} rows={rows} {act:?} [{r},{j}]: {g} vs {s}"
                            );
                        }
                    }
                }
            }
            assert!(k == 0 || clamped > 0, "{isa} len={len}: no sum above 6");
        }
    }
}
