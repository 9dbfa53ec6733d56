//! Batches run sample by sample (`CompileOptions::per_sample`): a convolutional graph whose
//! activations dwarf its weights runs its one-sample variant once per sample, with the
//! reference's results and the batch-at-once results; graphs that mix samples, and small
//! ones, run their batch as one.

mod support;

use rlx_ir::{DType, Dim, DimBinding, HirModule, HirMut, ReduceOp, Shape, UnaryOp};
use rlx_runtime::CompileOptions;
use rlx_runtime::cpu::Isa;
use support::Named;

/// `x = [batch, 16, side, side]`: conv 3x3 (32), relu, depthwise 3x3, mean over the image,
/// linear to 10; `mix` puts a softmax over the batch axis last.
fn convnet(side: usize, mix: bool) -> (HirModule, Vec<Named>) {
    let mut m = HirModule::new("convnet");
    let mut g = HirMut::new(&mut m);
    let b = g.dim("batch", 1, 16).unwrap();
    let s = Dim::constant(side as i64);
    let x = g
        .input(
            "x",
            DType::F32,
            Shape(vec![b, Dim::constant(16), s.clone(), s]),
        )
        .unwrap();
    let w1 = g
        .param("w1", DType::F32, Shape::new(&[32, 16, 3, 3]))
        .unwrap();
    let w2 = g
        .param("w2", DType::F32, Shape::new(&[32, 1, 3, 3]))
        .unwrap();
    let fc = g.param("fc", DType::F32, Shape::new(&[32, 10])).unwrap();
    let y = g.conv(x, w1, None, &[], &[1, 1, 1, 1], &[], 1).unwrap();
    let y = g.unary(UnaryOp::Relu, y).unwrap();
    let y = g.conv(y, w2, None, &[], &[1, 1, 1, 1], &[], 32).unwrap();
    let p = g.reduce(ReduceOp::Mean, y, &[2, 3], false).unwrap();
    let mut z = g.linear(p, fc, None, None).unwrap();
    if mix {
        z = g.softmax(z, 0).unwrap();
    }
    g.output("z", z).unwrap();
    let params = vec![
        ("w1".into(), support::spread(32 * 16 * 9, 3, 0.3)),
        ("w2".into(), support::spread(32 * 9, 5, 0.5)),
        ("fc".into(), support::spread(320, 7, 0.5)),
    ];
    let params = params
        .into_iter()
        .map(|(n, v)| (n, rlx_ir::TensorData::F32(v)))
        .collect();
    (m, params)
}

/// Runs `batch` samples with `per_sample` on and off on every kernel path: both match the
/// reference; returns whether the batch ran sample by sample.
fn run(hir: &HirModule, params: &[Named], side: usize, batch: usize) -> Option<usize> {
    let x = support::spread(batch * 16 * side * side, 11, 1.0);
    let inputs: Vec<Named> = vec![("x".into(), rlx_ir::TensorData::F32(x))];
    let binding = DimBinding::new().with("batch", batch as i64);
    let want = support::reference(hir, &binding, &inputs, params).unwrap();
    let mut apart = None;
    for isa in Isa::available() {
        for per_sample in [true, false] {
            let mut pipe = support::pipeline(hir, true, params).unwrap();
            let opts = CompileOptions {
                isa: Some(isa),
                per_sample,
                ..support::options(true)
            };
            let graph = pipe
                .get_or_compile(&binding, || hir.clone(), &opts)
                .unwrap();
            let got = graph.run(&support::refs(&inputs)).unwrap();
            support::compare(&got, &want, &[false])
                .unwrap_or_else(|e| panic!("isa={isa} per_sample={per_sample}: {e}"));
            assert_eq!(got[0].shape, [batch, 10]);
            if per_sample {
                apart = graph.samples_apart();
                // The one-sample variant is cached beside the batch variant, which holds no
                // arena of its own.
                assert_eq!(pipe.len(), 1 + usize::from(apart.is_some()));
                let arena = graph.lir().arena.as_ref().map_or(0, |a| a.size);
                assert_eq!(graph.memory_bytes() < arena, apart.is_some());
            } else {
                assert_eq!(graph.samples_apart(), None);
            }
        }
    }
    apart
}

#[test]
fn large_activations_run_sample_by_sample_with_the_same_results() {
    let (hir, params) = convnet(56, false);
    // 6 images of 32 x 56 x 56 activations: 2.3 MiB per buffer, weights of 20 KiB.
    assert_eq!(run(&hir, &params, 56, 6), Some(6));
    // One image stays one run.
    assert_eq!(run(&hir, &params, 56, 1), None);
}

#[test]
fn small_batches_and_graphs_that_mix_samples_run_as_one() {
    let (hir, params) = convnet(8, false);
    assert_eq!(run(&hir, &params, 8, 4), None);
    let (mixed, params) = convnet(56, true);
    assert_eq!(run(&mixed, &params, 56, 5), None);
}
