//! bf16 linears against the reference interpreter under the exact rounding model: on the
//! AVX512-BF16 path the reference sees the input rows and the weights rounded to bf16; on the
//! fallback paths (bf16 weights on the f32 kernels) only the weights. Shapes cover edge panels,
//! odd K, K blocks, one row and many, grouped linears and epilogues, on every kernel path.

mod support;

use rlx_ir::{DimBinding, TensorData};
use rlx_runtime::cpu::gemm::bf16::{round_bf16, supported};
use rlx_runtime::{CompileOptions, Precision, Tensor};
use support::{Isa, Named, compare, options, pipeline, reference, tref};

use support::{linears as graph, spread as data};

fn rounded(named: &[Named], which: &[&str]) -> Vec<Named> {
    named
        .iter()
        .map(|(name, d)| match d {
            TensorData::F32(v) if which.contains(&name.as_str()) => (
                name.clone(),
                TensorData::F32(v.iter().map(|x| round_bf16(*x)).collect()),
            ),
            _ => (name.clone(), d.clone()),
        })
        .collect()
}

#[test]
fn bf16_linears_match_the_reference_on_rounded_operands() {
    for (k, n) in [(1usize, 5usize), (3, 32), (64, 33), (300, 100), (513, 64)] {
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
        for optimize in [false, true] {
            let mut pipe = pipeline(&hir, optimize, &params).unwrap();
            for (isa, _) in support::kernel_paths() {
                let native = isa == Isa::Avx512 && supported();
                let opts = CompileOptions {
                    isa: Some(isa),
                    precision: Precision::Bf16,
                    ..options(optimize)
                };
                for rows in [1usize, 7, 130] {
                    let binding = DimBinding::new().with("rows", rows as i64);
                    let x = vec![("x".to_string(), TensorData::F32(data(rows * k, 5, 2.0)))];
                    let want_x = if native {
                        rounded(&x, &["x"])
                    } else {
                        x.clone()
                    };
                    let want_p = rounded(&params, &["w0", "wg", "wu"]);
                    let want = reference(&hir, &binding, &want_x, &want_p).unwrap();
                    let g = pipe
                        .get_or_compile(&binding, || hir.clone(), &opts)
                        .unwrap();
                    let refs: Vec<(&str, _)> =
                        x.iter().map(|(n, d)| (n.as_str(), tref(d))).collect();
                    let got: Vec<Tensor> = g.run(&refs).unwrap();
                    let path = format!(
                        "k={k} n={n} rows={rows} isa={isa} native={native} optimize={optimize}"
                    );
                    compare(&got, &want, &[false, false]).unwrap_or_else(|e| panic!("{path}: {e}"));
                    // The f32 reference on unrounded operands differs: the rounding is real.
                    if native && k >= 64 {
                        let exact = reference(&hir, &binding, &x, &params).unwrap();
                        assert!(
                            compare(&got, &exact, &[false, false]).is_err(),
                            "{path}: not rounded?"
                        );
                    }
                    let (_, gemm) = g.kernel_paths();
                    let expect = if native { "vdpbf16ps" } else { "f32 compute" };
                    assert!(gemm.is_some_and(|s| s.contains(expect)), "{path}: {gemm:?}");
                }
            }
        }
    }
}

#[test]
fn bf16_needs_packed_weights_and_f32_variants_stay_f32() {
    let hir = graph(8, 8);
    let params: Vec<Named> = ["w0", "b0", "wg", "wu"]
        .iter()
        .map(|name| {
            let len = if *name == "b0" { 8 } else { 64 };
            (name.to_string(), TensorData::F32(data(len, 3, 1.0)))
        })
        .collect();
    let mut pipe = pipeline(&hir, true, &params).unwrap();
    let binding = DimBinding::new().with("rows", 2);
    let no_pack = CompileOptions {
        prepack: false,
        precision: Precision::Bf16,
        ..options(true)
    };
    assert!(
        pipe.get_or_compile(&binding, || hir.clone(), &no_pack)
            .is_err()
    );
    // f32 and bf16 variants of one pipeline share the store, each with its own packed copy.
    let f32 = pipe
        .get_or_compile(&binding, || hir.clone(), &options(true))
        .unwrap();
    assert_eq!(f32.kernel_paths().1, Some("f32"));
    let bf = CompileOptions {
        precision: Precision::Bf16,
        ..options(true)
    };
    let g = pipe.get_or_compile(&binding, || hir.clone(), &bf).unwrap();
    assert_ne!(g.kernel_paths().1, Some("f32"));
    assert!(
        !std::ptr::eq(&*f32, &*g),
        "a bf16 variant is cached apart from the f32 one"
    );
}
