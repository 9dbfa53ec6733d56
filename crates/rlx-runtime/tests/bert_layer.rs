//! A BERT encoder layer built with the builder: fused to a handful of kernels, equal to the
//! unfused compile, and planned into an arena close to its lower bound.

mod common;

use common::bert::{H, encoder, encoder_weights, padding_mask};
use common::weights;
use rlx_ir::DimBinding;
use rlx_runtime::{CompileOptions, Device, ModelCompilePipeline, Tensor};

fn bind(b: i64, s: i64) -> DimBinding {
    DimBinding::new().with("batch", b).with("seq", s)
}

fn run(layers: usize, optimize: bool, b: usize, s: usize) -> (Tensor, usize) {
    let opts = CompileOptions {
        optimize,
        ..CompileOptions::new()
    };
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let build = move || encoder(layers);
    pipe.build_template(build, &opts).unwrap();
    for (n, w) in encoder_weights(layers) {
        pipe.set_param(&n, &w).unwrap();
    }
    let g = pipe
        .get_or_compile(&bind(b as i64, s as i64), build, &opts)
        .unwrap();
    let x = weights(9, b * s * H as usize);
    let mask = padding_mask(b, s);
    let out = g
        .run(&[("x", (&x).into()), ("mask", (&mask).into())])
        .unwrap();
    (out.into_iter().next().unwrap(), g.lir().kernels.len())
}

#[test]
fn layer_fuses_to_at_most_eight_kernels() {
    let opts = CompileOptions::new();
    let kernels = |layers: usize| {
        let mut pipe = ModelCompilePipeline::new(Device::Cpu);
        let t = pipe.build_template(move || encoder(layers), &opts).unwrap();
        (t.lir.kernels.len(), t.report.to_string())
    };
    let ((one, report), (two, _)) = (kernels(1), kernels(2));
    assert!(one <= 8, "one layer runs in {one} kernels:\n{report}");
    assert!(
        two - one <= 8,
        "each extra layer adds {} kernels",
        two - one
    );
    assert!(
        report.contains("attention") && report.contains("qkv"),
        "{report}"
    );
}

#[test]
fn fused_equals_unfused() {
    for (b, s) in [(1, 7), (2, 16)] {
        let (fused, nf) = run(2, true, b, s);
        let (plain, np) = run(2, false, b, s);
        assert!(nf < np, "fusion should reduce kernels: {nf} vs {np}");
        assert_eq!(fused.shape, vec![b, s, H as usize]);
        let (a, p) = (fused.as_f32().unwrap(), plain.as_f32().unwrap());
        let err = a
            .iter()
            .zip(p)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            err < 1e-4,
            "({b}, {s}): fused vs unfused max abs diff {err}"
        );
    }
}

#[test]
fn arena_is_close_to_its_lower_bound() {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let opts = CompileOptions::new();
    pipe.build_template(|| encoder(1), &opts).unwrap();
    for (b, s) in [(8, 128), (1, 512), (3, 17)] {
        let spec = pipe.specialize_template(&bind(b, s), &opts).unwrap();
        let plan = spec.lir.arena.unwrap();
        let ratio = plan.size as f64 / plan.max_live_bytes as f64;
        assert!(
            ratio <= 1.25,
            "({b}, {s}): arena {} vs max live {} = {ratio:.3}",
            plan.size,
            plan.max_live_bytes
        );
    }
}

#[test]
fn torch_layout_weights_bind_without_transposing() {
    use common::bert::{encoder_with, layer_params, transposed};
    let (b, s) = (2usize, 9usize);
    let x = weights(9, b * s * H as usize);
    let mask = padding_mask(b, s);
    let mut outs = Vec::new();
    for torch in [false, true] {
        let opts = CompileOptions {
            optimize: torch,
            ..CompileOptions::new()
        };
        let mut pipe = ModelCompilePipeline::new(Device::Cpu);
        let build = move || encoder_with(1, torch);
        pipe.build_template(build, &opts).unwrap();
        let shapes = layer_params(0);
        for ((n, w), (_, shape)) in encoder_weights(1).into_iter().zip(shapes) {
            let w = if torch && shape.len() == 2 {
                transposed(&w, shape[0] as usize, shape[1] as usize)
            } else {
                w
            };
            pipe.set_param(&n, &w).unwrap();
        }
        let g = pipe
            .get_or_compile(&bind(b as i64, s as i64), build, &opts)
            .unwrap();
        if torch {
            let text = g.lir().to_string();
            assert!(
                text.contains("linear_group") && text.contains("w=[out, in]"),
                "{text}"
            );
        }
        outs.push(
            g.run(&[("x", (&x).into()), ("mask", (&mask).into())])
                .unwrap()
                .remove(0),
        );
    }
    let err = outs[0]
        .as_f32()
        .unwrap()
        .iter()
        .zip(outs[1].as_f32().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        err < 1e-4,
        "[out, in] weights differ from [in, out] by {err}"
    );
}

#[test]
fn fused_encoder_equals_the_reference_interpreter() {
    let layers = 2;
    let ws = encoder_weights(layers);
    let params: Vec<(&str, rlx_runtime::TensorRef)> =
        ws.iter().map(|(n, w)| (n.as_str(), w.into())).collect();
    for (b, s) in [(1usize, 5usize), (2, 12)] {
        let (fused, kernels) = run(layers, true, b, s);
        assert!(kernels <= 1 + 7 * layers, "{kernels} kernels");
        let x = weights(9, b * s * H as usize);
        let mask = padding_mask(b, s);
        let want = rlx_runtime::reference::evaluate(
            &encoder(layers),
            &bind(b as i64, s as i64),
            &[("x", (&x).into()), ("mask", (&mask).into())],
            &params,
        )
        .unwrap();
        let (a, r) = (fused.as_f32().unwrap(), want[0].as_f32().unwrap());
        let err = a
            .iter()
            .zip(r)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            err < 1e-4,
            "({b}, {s}): fused vs reference max abs diff {err}"
        );
    }
}
