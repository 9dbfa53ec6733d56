//! int8 linears against the reference interpreter under the exact quantization model: the
//! reference runs on the dequantized operands (each input row quantized to u8 with its scale
//! and zero point, each weight column to s8 with its scale), which is what the integer product
//! computes up to the rounding of its final f32 multiply. Every kernel path (AVX512-VNNI and
//! the portable loop) must agree with it; and the quantizers themselves stay within half a
//! step of the values they encode.

mod support;

use rlx_ir::{DimBinding, TensorData};
use rlx_runtime::cpu::gemm::PackedI8;
use rlx_runtime::cpu::gemm::int8::{Int8Kernel, quantize_row};
use rlx_runtime::{CompileOptions, Precision};
use support::{Named, compare, options, pipeline, reference, tref};

use support::{linears as graph, spread as data};

/// Each `[n, k]` weight as its dequantized int8 values.
fn dequantized_weight(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let p = PackedI8::new(w, k, n, true).unwrap();
    let out: Vec<f32> = (0..n)
        .flat_map(|c| (0..k).map(move |r| (c, r)))
        .map(|(c, r)| p.dequantized(r, c))
        .collect();
    // Within half a step (max|column| / 254) of the original.
    for c in 0..n {
        let col = &w[c * k..(c + 1) * k];
        let step = col.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        for (a, b) in col.iter().zip(&out[c * k..(c + 1) * k]) {
            assert!((a - b).abs() <= step * 0.5001 + 1e-12, "weight {a} -> {b}");
        }
    }
    out
}

/// Each row of `x` (`[rows, k]`) as its dequantized u8 values.
fn dequantized_rows(x: &[f32], k: usize) -> Vec<f32> {
    let mut words = vec![0u32; k.div_ceil(4)];
    x.chunks(k)
        .flat_map(|row| {
            let q = quantize_row(row, &mut words);
            let codes: Vec<f32> = (0..k)
                .map(|p| ((words[p / 4] >> (8 * (p % 4))) & 0xff) as f32)
                .map(|c| (c - q.zp as f32) * q.scale)
                .collect();
            for (a, b) in row.iter().zip(&codes) {
                assert!(
                    (a - b).abs() <= q.scale * 0.5001 + 1e-12,
                    "activation {a} -> {b}"
                );
            }
            codes
        })
        .collect()
}

#[test]
fn int8_linears_match_the_reference_on_dequantized_operands() {
    for (k, n) in [(1usize, 5usize), (3, 32), (64, 33), (300, 100), (515, 64)] {
        let hir = graph(k, n);
        let params: Vec<Named> = ["w0", "b0", "wg", "wu"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let len = if *name == "b0" { n } else { n * k };
                (
                    name.to_string(),
                    TensorData::F32(data(len, 11 + i as u32, 0.5)),
                )
            })
            .collect();
        let deq: Vec<Named> = params
            .iter()
            .map(|(name, d)| match (name.as_str(), d) {
                ("b0", _) => (name.clone(), d.clone()),
                (_, TensorData::F32(w)) => {
                    (name.clone(), TensorData::F32(dequantized_weight(w, k, n)))
                }
                _ => unreachable!(),
            })
            .collect();
        for optimize in [false, true] {
            let mut pipe = pipeline(&hir, optimize, &params).unwrap();
            for (isa, _) in support::kernel_paths() {
                let opts = CompileOptions {
                    isa: Some(isa),
                    precision: Precision::Int8,
                    ..options(optimize)
                };
                for rows in [1usize, 9, 70] {
                    let binding = DimBinding::new().with("rows", rows as i64);
                    let xs = data(rows * k, 5, 2.0);
                    let x = [("x".to_string(), TensorData::F32(xs.clone()))];
                    let want_x = vec![("x".to_string(), TensorData::F32(dequantized_rows(&xs, k)))];
                    let want = reference(&hir, &binding, &want_x, &deq).unwrap();
                    let g = pipe
                        .get_or_compile(&binding, || hir.clone(), &opts)
                        .unwrap();
                    let refs: Vec<(&str, _)> =
                        x.iter().map(|(n, d)| (n.as_str(), tref(d))).collect();
                    let got = g.run(&refs).unwrap();
                    let path = format!("k={k} n={n} rows={rows} isa={isa} optimize={optimize}");
                    compare(&got, &want, &[false, false]).unwrap_or_else(|e| panic!("{path}: {e}"));
                    let (_, gemm) = g.kernel_paths();
                    let expect = match Int8Kernel::for_isa(isa) {
                        Int8Kernel::Avx512Vnni => "avx512_vnni",
                        Int8Kernel::AvxVnni => "avx_vnni",
                        Int8Kernel::Portable => "portable",
                    };
                    assert!(gemm.is_some_and(|s| s.contains(expect)), "{path}: {gemm:?}");
                }
            }
        }
    }
}

#[test]
fn int8_rows_of_nan_or_zeros() {
    let hir = graph(8, 4);
    let params: Vec<Named> = ["w0", "b0", "wg", "wu"]
        .iter()
        .map(|name| {
            let len = if *name == "b0" { 4 } else { 32 };
            (name.to_string(), TensorData::F32(data(len, 3, 1.0)))
        })
        .collect();
    let mut pipe = pipeline(&hir, true, &params).unwrap();
    let binding = DimBinding::new().with("rows", 3);
    for (isa, _) in support::kernel_paths() {
        let opts = CompileOptions {
            isa: Some(isa),
            precision: Precision::Int8,
            ..options(true)
        };
        let mut x = data(24, 9, 1.0);
        x[..8].fill(0.0);
        x[8 + 3] = f32::NAN;
        x[16 + 5] = f32::INFINITY;
        let xd = TensorData::F32(x);
        let g = pipe
            .get_or_compile(&binding, || hir.clone(), &opts)
            .unwrap();
        let got = g.run(&[("x", tref(&xd))]).unwrap();
        let y = got[1].as_f32().unwrap();
        assert!(y[..4].iter().all(|v| *v == 0.0), "{isa}: zero row {y:?}");
        assert!(
            y[4..].iter().all(|v| v.is_nan()),
            "{isa}: non-finite rows {y:?}"
        );
    }
}
