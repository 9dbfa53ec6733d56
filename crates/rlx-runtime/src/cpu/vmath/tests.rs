//! The vector functions against the scalar ones and f64 references, on every ISA this CPU has.

use super::*;

#[test]
fn softmax_rows_match_f64_on_every_isa() {
    let n = 75;
    let x: Vec<f32> = (0..n).map(|i| ((i * 29 % 17) as f32 - 8.0) * 1.7).collect();
    let mut mask = vec![0.0f32; n];
    mask[3] = f32::NEG_INFINITY;
    mask[40] = f32::NEG_INFINITY;
    mask[73] = f32::NEG_INFINITY;
    for isa in Isa::available() {
        for (live, add) in [
            (n, None),
            (n, Some(&mask[..])),
            (50, Some(&mask[..])),
            (1, None),
        ] {
            let mut row = x.clone();
            softmax_row(isa, &mut row, live, add, 0.5);
            let e: Vec<f64> = (0..live)
                .map(|j| f64::from(x[j]) * 0.5 + add.map_or(0.0, |a| f64::from(a[j])))
                .collect();
            let max = e.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = e.iter().map(|v| (v - max).exp()).sum();
            for j in 0..n {
                let want = if j < live {
                    (e[j] - max).exp() / sum
                } else {
                    0.0
                };
                assert!(
                    (f64::from(row[j]) - want).abs() < 1e-6,
                    "{isa} live={live} [{j}] {} vs {want}",
                    row[j]
                );
            }
        }
        // Every key masked: zeros, not NaN; a NaN score: NaN.
        let mut row = x.clone();
        softmax_row(isa, &mut row, n, Some(&vec![f32::NEG_INFINITY; n]), 1.0);
        assert!(row.iter().all(|v| *v == 0.0), "{isa}");
        let mut row = x.clone();
        row[7] = f32::NAN;
        softmax_row(isa, &mut row, n, None, 1.0);
        assert!(row.iter().all(|v| v.is_nan()), "{isa}");
        // A masked key's NaN or +inf score is dropped with the key (every vector lane and
        // the tail): the row equals the softmax with those keys' scores left finite.
        let mut want = x.clone();
        softmax_row(isa, &mut want, n, Some(&mask), 1.0);
        for bad in [f32::NAN, f32::INFINITY] {
            let mut row = x.clone();
            (row[3], row[40], row[73]) = (bad, bad, bad);
            softmax_row(isa, &mut row, n, Some(&mask), 1.0);
            assert_eq!(row, want, "{isa} {bad}");
        }
    }
}

#[test]
fn add_norm_rows_match_f64_on_every_isa() {
    for d in [1usize, 7, 16, 37, 384] {
        let a: Vec<f32> = (0..d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3 + 100.0)
            .collect();
        let b: Vec<f32> = (0..d).map(|i| (i % 5) as f32 * 0.1).collect();
        let g: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 * 0.01).collect();
        let bt: Vec<f32> = (0..d).map(|i| i as f32 * -0.02).collect();
        let x: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(a, b)| f64::from(*a) + f64::from(*b))
            .collect();
        let mean = x.iter().sum::<f64>() / d as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        for isa in Isa::available() {
            let mut out = a.clone();
            // In place over a, as add_layer_norm may run.
            unsafe {
                add_norm_row(
                    isa,
                    out.as_ptr(),
                    Some(b.as_ptr()),
                    out.as_mut_ptr(),
                    &g,
                    &bt,
                    1e-5,
                    d,
                )
            };
            for i in 0..d {
                let want = (x[i] - mean) / (var + 1e-5).sqrt() * f64::from(g[i]) + f64::from(bt[i]);
                assert!(
                    (f64::from(out[i]) - want).abs() < 2e-4,
                    "{isa} d={d} [{i}] {} vs {want}",
                    out[i]
                );
            }
        }
    }
}

#[test]
fn vectors_match_the_scalar_functions_on_every_isa() {
    // Within 2e-5 relative: in gelu's far tail (x < -10) the erfc argument -z^2 is large
    // and one rounding of it moves the result by a few 1e-6 in either implementation.
    let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 20.0).collect();
    xs.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        1e-30,
        -1e-30,
        87.5,
        -87.5,
        88.5,
        88.72,
        88.73,
        -95.0,
        -103.9,
        -104.5,
    ]);
    for isa in Isa::available() {
        for op in [
            UnaryOp::Relu,
            UnaryOp::Exp,
            UnaryOp::Gelu,
            UnaryOp::Sigmoid,
            UnaryOp::Silu,
            UnaryOp::GeluTanh,
            UnaryOp::Relu6,
            UnaryOp::HardSwish,
        ] {
            let mut got = vec![0.0; xs.len()];
            unary_map(isa, op, &xs, &mut got);
            for (x, g) in xs.iter().zip(&got) {
                let want = math::unary(op, *x);
                let ok = (want.is_nan() && g.is_nan())
                    || want == *g
                    || (want - g).abs() <= 2e-5 * want.abs() + 1e-30;
                assert!(ok, "{isa} {op}({x}) = {g}, scalar {want}");
            }
        }
        // Relu in place, bit for bit (-0.0 and NaN kept, as the scalar form keeps them).
        let mut got = xs.clone();
        unary_in_place(isa, UnaryOp::Relu, &mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = math::unary(UnaryOp::Relu, *x);
            assert_eq!(g.to_bits(), want.to_bits(), "{isa} relu({x}) = {g}");
        }
    }
}

#[test]
fn sigmoid_and_silu_never_make_a_subnormal() {
    // Subnormal results cost a microcode assist per vector: sigmoid flushes to 0 below
    // x = -87 and takes e^-x at -87 above x = 87 (where 1 + e^-x is 1 either way), SiLU
    // divides x by 1 + e^-x; NaN stays.
    let xs: Vec<f32> = (-2000..=2000)
        .map(|i| i as f32 / 10.0)
        .chain([-87.0, -87.01, 86.99, 87.01, f32::MAX, f32::MIN])
        .collect();
    for isa in Isa::available() {
        for op in [UnaryOp::Sigmoid, UnaryOp::Silu] {
            let mut got = vec![0.0; xs.len()];
            unary_map(isa, op, &xs, &mut got);
            for (x, g) in xs.iter().zip(&got) {
                let want = math::unary(op, *x);
                assert!(
                    !g.is_subnormal() && !want.is_subnormal(),
                    "{isa} {op}({x}) = {g:e}"
                );
                assert!(
                    (want - g).abs() <= 2e-5 * want.abs(),
                    "{isa} {op}({x}) = {g:e}, {want:e}"
                );
            }
        }
        let mut got = [0.0f32; 6];
        let xs = [-87.5f32, -88.7, -86.9, 90.0, 200.0, f32::NAN];
        unary_map(isa, UnaryOp::Sigmoid, &xs, &mut got);
        assert_eq!(&got[..2], &[0.0, 0.0], "{isa}");
        assert!(
            got[2] >= f32::MIN_POSITIVE,
            "{isa}: sigmoid(-86.9) = {:e}",
            got[2]
        );
        assert_eq!(&got[3..5], &[1.0, 1.0], "{isa}");
        assert!(got[5].is_nan(), "{isa}");
        // SiLU is not flushed where its value is a normal number: -87.5 / (1 + e^87.5).
        let mut got = [0.0f32; 1];
        unary_map(isa, UnaryOp::Silu, &[-87.5], &mut got);
        let want = -87.5 / (1.0 + 87.5f64.exp());
        assert!(
            (f64::from(got[0]) - want).abs() <= 1e-5 * want.abs(),
            "{isa}: {:e}",
            got[0]
        );
    }
}

#[test]
fn rational_gelu_is_within_its_bound_on_every_isa() {
    // Against f64 GELU: absolute error <= 1.5e-6 everywhere, vectors equal to the scalar
    // function within 1e-6.
    fn erf64(x: f64) -> f64 {
        let z = x.abs();
        let erf = if z < 3.0 {
            // The Taylor series (its terms stay below e^9: no cancellation to speak of).
            let (mut term, mut sum, z2) = (z, z, z * z);
            for n in 1..80 {
                term *= -z2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // 1 - erfc, erfc from its asymptotic series (truncation < 1e-8 absolute here).
            let w = 1.0 / (2.0 * z * z);
            let series = 1.0 - w + 3.0 * w * w - 15.0 * w.powi(3) + 105.0 * w.powi(4);
            1.0 - (-z * z).exp() / (z * std::f64::consts::PI.sqrt()) * series
        };
        erf.copysign(x)
    }
    let xs: Vec<f32> = (-1600..=1600).map(|i| i as f32 / 100.0).collect();
    for isa in Isa::available() {
        for cols in [xs.len(), 37] {
            let mut got: Vec<f32> = xs[..cols].to_vec();
            // SAFETY: one row of `cols` elements.
            unsafe {
                super::bias_act_block(
                    isa,
                    got.as_mut_ptr(),
                    1,
                    cols,
                    cols,
                    None,
                    Some(UnaryOp::Gelu),
                    true,
                )
            };
            for (x, g) in xs.iter().zip(&got) {
                let x64 = f64::from(*x);
                let want = 0.5 * x64 * (1.0 + erf64(x64 / std::f64::consts::SQRT_2));
                assert!(
                    (f64::from(*g) - want).abs() <= 1.5e-6,
                    "{isa} gelu({x}) = {g}, {want}"
                );
                let scalar = math::gelu_rational(*x);
                assert!(
                    (g - scalar).abs() <= 1e-6,
                    "{isa} gelu({x}) = {g}, scalar {scalar}"
                );
            }
        }
    }
}

#[test]
#[ignore = "timing probe: cargo test --release -p rlx-runtime --lib vmath -- --ignored --nocapture"]
fn probe_vector_speed() {
    let xs: Vec<f32> = (0..1 << 16).map(|i| (i as f32 / 4096.0) - 8.0).collect();
    let mut out = vec![0.0; xs.len()];
    for isa in Isa::available() {
        for op in [UnaryOp::Exp, UnaryOp::Gelu] {
            let t = std::time::Instant::now();
            for _ in 0..200 {
                unary_map(isa, op, &xs, &mut out);
            }
            let ns = t.elapsed().as_nanos() as f64 / (200.0 * xs.len() as f64);
            println!("{isa} {op}: {ns:.3} ns/elem");
        }
    }
}

#[test]
#[ignore = "timing probe"]
fn probe_softmax_rows() {
    for n in [128usize, 512] {
        let x: Vec<f32> = (0..64 * n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 100.0)
            .collect();
        let mut p = x.clone();
        let reps = 2000;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            p.copy_from_slice(&x);
            for row in p.chunks_mut(n) {
                std::hint::black_box(softmax_row_unnormalized(Isa::best(), row, n, None, 1.0));
            }
        }
        let el = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for _ in 0..reps {
            p.copy_from_slice(&x);
            std::hint::black_box(&p);
        }
        let copy = t.elapsed().as_secs_f64();
        println!(
            "n={n}: {:.3} ns/elem ({:.1} ns/row)",
            (el - copy) * 1e9 / (reps * 64 * n) as f64,
            (el - copy) * 1e9 / (reps * 64) as f64
        );
    }
}

#[test]
fn channels_last_max_pools_propagate_nan_on_every_isa() {
    // One output position over a 2x1 window of 101 channels (blocks of four vectors, single
    // vectors and a tail): channel j is NaN in the first tap when j % 3 == 1, in the second
    // when j % 3 == 2.
    let c = 101;
    let mut x: Vec<f32> = (0..2 * c).map(|i| (i % 11) as f32 - 5.0).collect();
    for j in 0..c {
        match j % 3 {
            1 => x[j] = f32::NAN,
            2 => x[c + j] = f32::NAN,
            _ => {}
        }
    }
    let cols = [(0, 1, 1)];
    let row = PoolRow {
        iw: 1,
        c,
        oy: 0,
        rows: (0, 2, 2),
        cols: &cols,
        row_step: (1, 1, 0),
        col_step: (1, 1, 0),
        max: true,
        count_include_pad: false,
    };
    for isa in Isa::available() {
        let mut out = vec![0.0f32; c];
        // SAFETY: the taps index the 2 x 1 image of c channels; out holds c.
        unsafe { pool_row(isa, &row, &x, &mut out) };
        for j in 0..c {
            if j % 3 == 0 {
                assert_eq!(out[j], x[j].max(x[c + j]), "{isa} [{j}]");
            } else {
                assert!(out[j].is_nan(), "{isa} [{j}] = {}", out[j]);
            }
        }
    }
}

/// A 3x3 depthwise kernel of stride `s` padded by 1 over a `hw x hw` image of `c` channels.
fn square3x3(c: usize, hw: usize, s: usize) -> DepthwiseRows {
    DepthwiseRows {
        ih: hw,
        iw: hw,
        c,
        kh: 3,
        kw: 3,
        sh: s,
        sw: s,
        dh: 1,
        dw: 1,
        ph: 1,
        pw: 1,
        ow: (hw - 1) / s + 1,
    }
}

#[test]
fn depthwise_rows_give_the_same_values_however_an_image_is_cut() {
    // 3x3 kernels at strides 1 and 2 (groups of two and four rows inside), a 5x5, 24 and 40
    // channels (an overlapping last vector), a bias and a relu: the whole image in one call,
    // row by row, and in uneven ranges agree bit for bit on every ISA.
    for (k, c, hw, s) in [
        (3, 24usize, 13usize, 1usize),
        (3, 40, 17, 2),
        (3, 16, 9, 1),
        (5, 24, 9, 1),
    ] {
        let g = square(k, c, hw, s, k / 2);
        let ow = g.ow;
        let x: Vec<f32> = (0..hw * hw * c)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let w: Vec<f32> = (0..k * k * c)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 3.0)
            .collect();
        let bias: Vec<f32> = (0..c).map(|i| i as f32 / 5.0 - 2.0).collect();
        let shift = RowShift {
            bias: Some(&bias),
            act: StoreAct::Relu,
        };
        let row_len = ow * c;
        for isa in Isa::available() {
            let run = |cuts: &[usize]| {
                let mut out = vec![f32::NAN; ow * row_len];
                let mut taps = Vec::new();
                for pair in cuts.windows(2) {
                    let (first, count) = (pair[0], pair[1] - pair[0]);
                    let rows = &mut out[first * row_len..(first + count) * row_len];
                    // SAFETY: the geometry's sizes.
                    unsafe {
                        depthwise_rows(isa, &g, &x, &w, first, count, shift, &mut taps, rows)
                    };
                }
                out
            };
            let whole = run(&[0, ow]);
            assert!(
                whole.iter().all(|v| v.is_finite()),
                "{isa}: every value written"
            );
            // Every row alone, and uneven bands.
            let singles: Vec<usize> = (0..=ow).collect();
            for cuts in [singles, vec![0, 3, 4, ow - 2, ow]] {
                assert!(
                    whole
                        .iter()
                        .zip(run(&cuts))
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa}: cut at {cuts:?}"
                );
            }
        }
    }
}

/// A `k x k` depthwise kernel of stride `s` padded by `pad` before (and as many after as a
/// "same" output needs) over a `hw x hw` image of `c` channels.
fn square(k: usize, c: usize, hw: usize, s: usize, pad: usize) -> DepthwiseRows {
    DepthwiseRows {
        kh: k,
        kw: k,
        ph: pad,
        pw: pad,
        ow: (hw + 2 * pad - k) / s + 1,
        ..square3x3(c, hw, s)
    }
}

#[test]
fn depthwise_kernels_match_an_f64_reference_and_skip_taps_outside() {
    // 5x5 and 7x7 (and 3x3: row groups, single rows) at strides 1 and 2 over images smaller
    // and larger than the kernel's reach (every group edge or interior), channels with and
    // without a lane tail (the last vector overlapping the one before), fewer than a vector
    // (6: one at a time), a bias and a relu or relu6 in the stores; one weight of the corner
    // tap infinite: it reaches only the positions where that tap is inside the image (a kernel
    // multiplying the padding by it would make NaNs).
    let cases = [
        (3, 24, 9, 1, 1),
        (3, 40, 10, 2, 1),
        (5, 24, 7, 1, 2),
        (5, 40, 14, 1, 2),
        (5, 20, 15, 2, 2),
        (7, 16, 9, 1, 3),
        (7, 24, 11, 2, 3),
        (5, 16, 3, 1, 2),
        (5, 16, 5, 2, 1),
        (5, 6, 7, 2, 2),
        (5, 72, 9, 2, 2),
    ];
    for (k, c, hw, s, pad) in cases {
        let g = square(k, c, hw, s, pad);
        let x: Vec<f32> = (0..hw * hw * c)
            .map(|i| ((i * 37 % 101) as f32 - 50.5) / 7.0)
            .collect();
        let mut w: Vec<f32> = (0..k * k * c)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 3.0)
            .collect();
        w[3] = f32::INFINITY;
        let bias: Vec<f32> = (0..c).map(|i| i as f32 / 5.0 - 2.0).collect();
        let (ow, oh) = (g.ow, g.ow);
        let want = |oy: usize, ox: usize, ch: usize| {
            let mut sum = f64::from(bias[ch]);
            for ky in 0..k {
                for kx in 0..k {
                    let (iy, ix) = (
                        (oy * s + ky).wrapping_sub(pad),
                        (ox * s + kx).wrapping_sub(pad),
                    );
                    if iy < hw && ix < hw {
                        let tap = f64::from(w[(ky * k + kx) * c + ch]);
                        sum += f64::from(x[(iy * hw + ix) * c + ch]) * tap;
                    }
                }
            }
            sum
        };
        for (isa, act) in Isa::available()
            .into_iter()
            .flat_map(|isa| [(isa, StoreAct::Relu), (isa, StoreAct::Relu6)])
        {
            let shift = RowShift {
                bias: Some(&bias),
                act,
            };
            let mut out = vec![f32::NAN; oh * ow * c];
            // SAFETY: the geometry's sizes.
            unsafe { depthwise_rows(isa, &g, &x, &w, 0, oh, shift, &mut Vec::new(), &mut out) };
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let want = match act {
                            StoreAct::Relu6 => want(oy, ox, ch).clamp(0.0, 6.0),
                            _ => want(oy, ox, ch).max(0.0),
                        };
                        let got = out[(oy * ow + ox) * c + ch];
                        let ok = if want.is_finite() {
                            (f64::from(got) - want).abs() <= 1e-4 * want.abs().max(1.0)
                        } else {
                            f64::from(got) == want
                        };
                        assert!(
                            ok,
                            "{isa} {act:?} {k}x{k}/{s} c{c} {hw}x{hw} ({oy},{ox},{ch}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "timing probe: cargo test --release -p rlx-runtime --lib probe_depthwise -- --ignored --nocapture"]
fn probe_depthwise_rows() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (c, hw, s) = (env("C", 64), env("HW", 56), env("S", 1));
    let g = square3x3(c, hw, s);
    let ow = g.ow;
    // 64-byte aligned, as the arena is.
    let aligned = |n: usize, f: &dyn Fn(usize) -> f32| {
        let mut v = vec![0.0f32; n + 16];
        let off = v.as_ptr().align_offset(64);
        for i in 0..n {
            v[off + i] = f(i);
        }
        (v, off)
    };
    let (xv, xo) = aligned(hw * hw * c, &|i| (i % 97) as f32 / 97.0);
    let (wv, wo) = aligned(9 * c, &|i| (i % 13) as f32 / 13.0);
    let (x, w) = (&xv[xo..xo + hw * hw * c], &wv[wo..wo + 9 * c]);
    let (mut ov, oo) = aligned(ow * ow * c, &|_| 0.0);
    let out = &mut ov[oo..oo + ow * ow * c];
    let mut taps = Vec::new();
    for isa in Isa::available() {
        // The best of 20 batches of 100 runs (the machine is noisy).
        let reps = 100;
        let mut us = f64::INFINITY;
        for _ in 0..20 {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                for oy in (0..ow).step_by(4) {
                    // SAFETY: sizes as the geometry says.
                    let n = 4.min(ow - oy);
                    let rows = &mut out[oy * ow * c..(oy + n) * ow * c];
                    let shift = RowShift::default();
                    unsafe { depthwise_rows(isa, &g, x, w, oy, n, shift, &mut taps, rows) };
                }
                std::hint::black_box(&*out);
            }
            us = us.min(t.elapsed().as_secs_f64() * 1e6 / reps as f64);
        }
        let gflops = (ow * ow * c * 9 * 2) as f64 / us / 1e3;
        println!("{isa} depthwise 3x3 / {s} {c} x {hw}x{hw}: {us:.1} us ({gflops:.1} GFLOP/s)");
    }
}
