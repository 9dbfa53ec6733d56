//! The three-step pipeline end to end: template → specialize → compile → run, against a naive
//! dense evaluation; cache behaviour; shared weights; errors instead of panics.

mod common;

use std::sync::Arc;

use common::*;
use rlx_ir::{
    BindingManifest, DType, DimBinding, HirModule, HirMut, IrError, ModelComponent, ModelVariant,
    Shape,
};
use rlx_runtime::{CompileOptions, CompiledGraph, Device, Error, ModelCompilePipeline};

fn bind(batch: i64, seq: i64) -> DimBinding {
    DimBinding::new().with("batch", batch).with("seq", seq)
}

fn bound_pipeline(build: fn() -> HirModule, weights: &[(&str, Vec<f32>)]) -> ModelCompilePipeline {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    pipe.build_template(build, &CompileOptions::new()).unwrap();
    for (name, w) in weights {
        pipe.set_param(name, w).unwrap();
    }
    pipe
}

/// The seed's smoke test in our API.
#[test]
fn template_specialize_compile_smoke() {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let opts = CompileOptions::new();
    let build = || {
        let mut hir = HirModule::new("dyn");
        let mut gb = HirMut::new(&mut hir);
        let x = gb.input("x", DType::F32, Shape::new(&[1, 8, 4])).unwrap();
        let w = gb.param("w", DType::F32, Shape::new(&[4, 2])).unwrap();
        let y = gb.linear(x, w, None, None).unwrap();
        gb.output("y", y).unwrap();
        hir
    };
    pipe.build_template(build, &opts).unwrap();
    let spec = pipe.specialize_template(&DimBinding::new(), &opts).unwrap();
    let manifest = BindingManifest::from_lir(&spec.lir).unwrap();
    assert_eq!(manifest.params[0].name, "w");
    let compiled = pipe.compile_lir(spec, &opts).unwrap();
    compiled.set_param("w", &[0.5f32; 8]).unwrap();
    let outs = compiled.run(&[("x", (&[1.0f32; 32]).into())]).unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].shape, vec![1, 8, 2]);
    assert!(outs[0].as_f32().unwrap().iter().all(|v| *v == 2.0));
}

#[test]
fn block_variants_match_naive_evaluation() {
    let w = block_weights();
    let mut pipe = bound_pipeline(block, &w);
    for (batch, seq) in [(1usize, 8usize), (4, 128), (3, 17)] {
        let g = pipe
            .get_or_compile(
                &bind(batch as i64, seq as i64),
                block,
                &CompileOptions::new(),
            )
            .unwrap();
        let x = weights(7 + seq as u64, batch * seq * HIDDEN);
        let out = g.run(&[("x", (&x).into())]).unwrap();
        assert_eq!(out[0].shape, vec![batch, seq, HIDDEN]);
        let want = naive_block(&x, batch, seq, &w);
        let err = max_abs_diff(out[0].as_f32().unwrap(), &want);
        assert!(err < 1e-4, "({batch}, {seq}): max abs error {err}");
    }
    assert_eq!(pipe.len(), 3);
}

#[test]
fn mlp_variants_match_naive_evaluation() {
    let w = mlp_weights();
    let mut pipe = bound_pipeline(mlp, &w);
    for batch in [1usize, 33, 1000] {
        let g = pipe
            .get_or_compile(
                &DimBinding::new().with("batch", batch as i64),
                mlp,
                &CompileOptions::new(),
            )
            .unwrap();
        let x = weights(batch as u64, batch * 16);
        let out = g.run(&[("x", (&x).into())]).unwrap();
        assert_eq!(out[0].shape, vec![batch, 8]);
        let err = max_abs_diff(out[0].as_f32().unwrap(), &naive_mlp(&x, &w));
        assert!(err < 1e-5, "batch {batch}: max abs error {err}");
    }
}

#[test]
fn arena_reuses_memory() {
    let pipe = bound_pipeline(block, &block_weights());
    let spec = pipe
        .specialize_template(&bind(4, 128), &CompileOptions::new())
        .unwrap();
    let plan = spec.lir.arena.as_ref().unwrap();
    assert!(
        plan.size < plan.temp_bytes,
        "arena {} vs temps {}",
        plan.size,
        plan.temp_bytes
    );
    assert!(plan.size >= plan.max_live_bytes);
    spec.lir.verify().unwrap();
    let manifest = BindingManifest::from_lir(&spec.lir).unwrap();
    assert_eq!(manifest.arena_bytes, Some(plan.size));
}

#[test]
fn cache_is_fifo_and_counts() {
    let mut pipe = ModelCompilePipeline::with_capacity(Device::Cpu, 2).unwrap();
    let opts = CompileOptions::new();
    let b = |n| DimBinding::new().with("batch", n);
    let g1 = pipe.get_or_compile(&b(1), mlp, &opts).unwrap();
    pipe.get_or_compile(&b(2), mlp, &opts).unwrap();
    let again = pipe.get_or_compile(&b(1), mlp, &opts).unwrap();
    assert!(Arc::ptr_eq(&g1, &again), "a hit returns the cached graph");
    pipe.get_or_compile(&b(3), mlp, &opts).unwrap();
    // FIFO, not LRU: batch=1 was inserted first, so it leaves first despite the recent hit.
    let key = |n| pipe.key_for(&b(n), &opts).unwrap();
    assert!(!pipe.contains(key(1)));
    assert!(pipe.contains(key(2)) && pipe.contains(key(3)));
    assert_eq!(pipe.keys().collect::<Vec<_>>(), vec![key(2), key(3)]);
    let s = pipe.stats();
    assert_eq!(
        (s.hits, s.misses, s.evictions, s.specializations),
        (1, 3, 1, 3)
    );
    // The evicted graph still runs for whoever holds it.
    pipe.set_param("w1", &weights(1, 16 * 24)).unwrap();
    for (n, w) in mlp_weights().iter().skip(1) {
        pipe.set_param(n, w).unwrap();
    }
    assert_eq!(
        g1.run(&[("x", (&[0.1f32; 16]).into())]).unwrap()[0].shape,
        vec![1, 8]
    );
}

#[test]
fn weight_bound_once_serves_every_variant() {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let opts = CompileOptions::new();
    let graphs: Vec<Arc<CompiledGraph>> = [1, 5]
        .iter()
        .map(|&n| {
            pipe.get_or_compile(&DimBinding::new().with("batch", n), mlp, &opts)
                .unwrap()
        })
        .collect();
    let w = mlp_weights();
    // Bind through the first variant only.
    for (name, data) in &w {
        graphs[0].set_param(name, data).unwrap();
    }
    let late = pipe
        .get_or_compile(&DimBinding::new().with("batch", 9), mlp, &opts)
        .unwrap();
    for g in graphs.iter().chain([&late]) {
        let n = g.input_shape(0)[0];
        let x = weights(3, n * 16);
        let out = g.run(&[("x", (&x).into())]).unwrap();
        assert!(max_abs_diff(out[0].as_f32().unwrap(), &naive_mlp(&x, &w)) < 1e-5);
        assert_eq!(g.params().data_ptr("w1"), graphs[0].params().data_ptr("w1"));
    }
}

#[test]
fn component_keys_and_manifests() {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let opts = CompileOptions::new();
    let comp = ModelComponent::new("toy", "block", ModelVariant::new("b2_s16", bind(2, 16)));
    let (g, manifest) = pipe.get_or_compile_component(&comp, block, &opts).unwrap();
    assert_eq!(
        manifest.inputs[0].shape,
        Shape::new(&[2, 16, HIDDEN as i64])
    );
    assert_eq!(&manifest, g.manifest());
    assert_eq!(
        pipe.binding_manifest_for_component(&comp, &opts).unwrap(),
        manifest
    );
    let template = pipe.template_binding_manifest().unwrap();
    assert_eq!(
        template.inputs[0].shape.to_string(),
        format!("[batch, seq, {HIDDEN}]")
    );
    let diff = template.diff(&manifest);
    assert!(diff.params_compatible(), "{diff}");
    assert!(diff.changed.iter().any(|c| c.name == "x"));
    let other = pipe
        .binding_manifest_for_binding(&bind(3, 16), &opts)
        .unwrap();
    assert!(!manifest.diff(&other).is_empty());
}

/// The child half of `cache_key_is_stable_across_processes`: prints the keys. Ignored in a
/// normal run (it asserts nothing by itself); the parent runs it with `--ignored`.
#[test]
#[ignore = "run by cache_key_is_stable_across_processes in a child process"]
fn print_cache_key_for_parent() {
    {
        let comp = ModelComponent::new("bert", "encoder", ModelVariant::new("v", bind(8, 128)));
        println!("KEY={}", comp.cache_key());
        let mut pipe = ModelCompilePipeline::new(Device::Cpu);
        pipe.build_template(block, &CompileOptions::new()).unwrap();
        println!(
            "VARIANT={}",
            pipe.key_for(&bind(8, 128), &CompileOptions::new()).unwrap()
        );
    }
}

#[test]
fn cache_key_is_stable_across_processes() {
    let exe = std::env::current_exe().unwrap();
    let run = || {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "print_cache_key_for_parent",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let grab = |tag: &str| {
            text.lines()
                .find_map(|l| l.split_once(tag))
                .map(|(_, v)| v.trim().to_string())
        };
        (
            grab("KEY=").expect("child printed KEY"),
            grab("VARIANT=").expect("child printed VARIANT"),
        )
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    let comp = ModelComponent::new("bert", "encoder", ModelVariant::new("v", bind(8, 128)));
    assert_eq!(a.0, comp.cache_key().to_string());
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    pipe.build_template(block, &CompileOptions::new()).unwrap();
    let here = pipe.key_for(&bind(8, 128), &CompileOptions::new()).unwrap();
    assert_eq!(a.1, here.to_string());
}

#[test]
fn user_mistakes_are_errors() {
    assert!(
        matches!(ModelCompilePipeline::with_capacity(Device::Cpu, 0), Err(Error::Compile(m)) if m.contains("capacity"))
    );
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let opts = CompileOptions::new();
    let e = pipe.specialize_template(&bind(1, 1), &opts).unwrap_err();
    assert!(e.to_string().contains("build_template"), "{e}");
    assert!(pipe.template_binding_manifest().is_err());
    assert!(pipe.set_param("wq", &[0.0f32]).is_err());

    pipe.build_template(block, &opts).unwrap();
    let unbound = pipe
        .specialize_template(&DimBinding::new().with("batch", 2), &opts)
        .unwrap_err();
    assert!(
        matches!(&unbound, Error::Ir(IrError::Binding(m)) if m.contains("seq")),
        "{unbound}"
    );
    let oob = pipe
        .get_or_compile(&bind(2, 513), block, &opts)
        .unwrap_err();
    assert!(
        matches!(&oob, Error::Ir(IrError::Binding(m)) if m.contains("seq") && m.contains("513")),
        "{oob}"
    );
    let neg = pipe.specialize_template(&bind(-1, 4), &opts).unwrap_err();
    assert!(neg.to_string().contains("batch"), "{neg}");
    let unknown = pipe
        .specialize_template(&bind(1, 4).with("heads", 2), &opts)
        .unwrap_err();
    assert!(unknown.to_string().contains("heads"), "{unknown}");

    let g = pipe.get_or_compile(&bind(1, 4), block, &opts).unwrap();
    let missing = g
        .run(&[("x", (&vec![0.0f32; 4 * HIDDEN]).into())])
        .unwrap_err();
    assert!(
        matches!(&missing, Error::Binding(m) if m.contains("wq")),
        "{missing}"
    );
    for (n, w) in block_weights() {
        g.set_param(n, &w).unwrap();
    }
    let wrong_len = g.run(&[("x", (&[0.0f32; 3]).into())]).unwrap_err();
    assert!(matches!(wrong_len, Error::Shape(_)));
    let unknown_in = g.run(&[("y", (&[0.0f32; 3]).into())]).unwrap_err();
    assert!(
        unknown_in.to_string().contains("unknown input `y`")
            && unknown_in.to_string().contains("missing input")
    );
    let wrong_dtype = g
        .run(&[("x", (&vec![0i64; 4 * HIDDEN]).into())])
        .unwrap_err();
    assert!(matches!(wrong_dtype, Error::DType(_)));
    let bad_param = g.set_param("wq", &[1.0f32; 3]).unwrap_err();
    assert!(matches!(bad_param, Error::Shape(_)));
    let typo = g.set_param("w_q", &[1.0f32; 3]).unwrap_err();
    assert!(typo.to_string().contains("did you mean `wq`"), "{typo}");
    // The pipeline still works after every mistake.
    assert_eq!(
        g.run(&[("x", (&vec![0.1f32; 4 * HIDDEN]).into())]).unwrap()[0].shape,
        vec![1, 4, HIDDEN]
    );
}

#[test]
fn concurrent_runs_are_bit_identical() {
    let w = block_weights();
    let mut pipe = bound_pipeline(block, &w);
    let g = pipe
        .get_or_compile(&bind(2, 33), block, &CompileOptions::new())
        .unwrap();
    let x = weights(5, 2 * 33 * HIDDEN);
    let want = g.run(&[("x", (&x).into())]).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    assert_eq!(g.run(&[("x", (&x).into())]).unwrap(), want);
                }
            });
        }
    });
}

#[test]
fn scaled_softmax_fusion_matches_the_reference() {
    let build = || {
        let mut m = HirModule::new("sm");
        let mut g = HirMut::new(&mut m);
        let b = g.dim("batch", 1, 8).unwrap();
        let s = g.dim("seq", 1, 64).unwrap();
        let one = rlx_ir::Dim::constant(1);
        let x = g
            .input(
                "x",
                DType::F32,
                Shape(vec![
                    b.clone(),
                    rlx_ir::Dim::constant(3),
                    s.clone(),
                    s.clone(),
                ]),
            )
            .unwrap();
        let bias = g
            .input("bias", DType::F32, Shape(vec![b, one.clone(), one, s]))
            .unwrap();
        let c = g.scalar(4.0).unwrap();
        let y = g.binary(rlx_ir::BinaryOp::Div, x, c).unwrap();
        let y = g.add(y, bias).unwrap();
        let y = g.softmax(y, -1).unwrap();
        g.output("y", y).unwrap();
        m
    };
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let (b, s) = (2usize, 19usize);
    let g = pipe
        .get_or_compile(&bind(b as i64, s as i64), build, &CompileOptions::new())
        .unwrap();
    assert_eq!(g.lir().kernels.len(), 1, "{}", g.lir());
    let x = weights(3, b * 3 * s * s)
        .iter()
        .map(|v| v * 20.0)
        .collect::<Vec<_>>();
    let mut bias = weights(4, b * s);
    bias[5] = f32::NEG_INFINITY; // a masked key
    let inputs = [("x", (&x).into()), ("bias", (&bias).into())];
    let got = g.run(&inputs).unwrap();
    let want = rlx_runtime::reference::evaluate(&build(), &bind(b as i64, s as i64), &inputs, &[])
        .unwrap();
    let err = max_abs_diff(
        got[0].as_f32().unwrap(),
        &want[0]
            .as_f32()
            .unwrap()
            .iter()
            .map(|v| f64::from(*v))
            .collect::<Vec<_>>(),
    );
    assert!(err < 1e-6, "max abs diff {err}");
}

#[test]
fn a_variant_larger_than_memory_is_an_error_not_an_abort() {
    let build = || {
        let mut m = HirModule::new("huge");
        let mut g = HirMut::new(&mut m);
        let n = g.dim("n", 1, 1 << 31).unwrap();
        let x = g.input("x", DType::F32, Shape(vec![n.clone(), n])).unwrap();
        let y = g.unary(rlx_ir::UnaryOp::Exp, x).unwrap();
        let y = g.unary(rlx_ir::UnaryOp::Tanh, y).unwrap();
        g.output("y", y).unwrap();
        m
    };
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let opts = CompileOptions::new();
    // 1e6 x 1e6 f32 = 4 TB of temps and outputs: planned fine, refused at compile.
    let e = pipe
        .get_or_compile(&DimBinding::new().with("n", 1_000_000), build, &opts)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Memory(m) if m.contains("budget")),
        "{e}"
    );
    // The pipeline still compiles a size that fits.
    let g = pipe
        .get_or_compile(&DimBinding::new().with("n", 4), build, &opts)
        .unwrap();
    assert_eq!(
        g.run(&[("x", (&[0.0f32; 16]).into())]).unwrap()[0].shape,
        vec![4, 4]
    );
}

#[test]
fn in_place_elementwise_chains_compute_the_same() {
    let build = || {
        let mut m = HirModule::new("chain");
        let mut g = HirMut::new(&mut m);
        let n = g.dim("n", 1, 1 << 20).unwrap();
        let mut v = g
            .input("x", DType::F32, Shape(vec![n, rlx_ir::Dim::constant(7)]))
            .unwrap();
        for i in 0..100 {
            let op = if i % 2 == 0 {
                rlx_ir::UnaryOp::Tanh
            } else {
                rlx_ir::UnaryOp::Sigmoid
            };
            v = g.unary(op, v).unwrap();
        }
        g.output("y", v).unwrap();
        m
    };
    let x = weights(8, 3000 * 7);
    let mut outs = Vec::new();
    for optimize in [true, false] {
        let opts = CompileOptions {
            optimize,
            ..CompileOptions::new()
        };
        let mut pipe = ModelCompilePipeline::new(Device::Cpu);
        let g = pipe
            .get_or_compile(&DimBinding::new().with("n", 3000), build, &opts)
            .unwrap();
        assert_eq!(
            g.lir().arena.as_ref().unwrap().in_place.is_empty(),
            !optimize
        );
        outs.push(g.run(&[("x", (&x).into())]).unwrap().remove(0));
    }
    let err = outs[0]
        .as_f32()
        .unwrap()
        .iter()
        .zip(outs[1].as_f32().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 1e-6, "{err}");
}
