//! The three-step pipeline on two small models: a 2-layer MLP with symbolic batch and a
//! transformer-style block with symbolic batch and seq. Prints manifests, then for each
//! variant the specialize / compile / run times and a summary of the result.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{block, block_weights, mlp, mlp_weights, weights};
use rlx_ir::{DimBinding, HirModule};
use rlx_runtime::{CompileOptions, Device, ModelCompilePipeline, Result};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn demo(
    name: &str,
    build: fn() -> HirModule,
    params: &[(&str, Vec<f32>)],
    variants: &[DimBinding],
) -> Result<()> {
    let opts = CompileOptions::new();
    let mut pipe = ModelCompilePipeline::with_capacity(Device::Cpu, 8)?;
    let t = Instant::now();
    let template = pipe.build_template(build, &opts)?;
    println!(
        "== {name}: template compiled once in {:.2?} ({} kernels)",
        t.elapsed(),
        template.lir.kernels.len()
    );
    println!("{}", pipe.template_binding_manifest()?);
    for (n, w) in params {
        pipe.set_param(n, w)?; // bound once, shared by every variant below
    }
    println!(
        "  {:<22} {:>12} {:>14} {:>12} {:>12} {:>14}  output",
        "variant", "specialize", "get_or_compile", "run (med)", "arena", "temps (no reuse)"
    );
    for binding in variants {
        let t = Instant::now();
        let spec = pipe.specialize_template(binding, &opts)?;
        let t_spec = t.elapsed();
        let plan = spec.lir.arena.clone().unwrap_or_default();
        let t = Instant::now();
        let graph = pipe.get_or_compile(binding, build, &opts)?;
        let t_compile = t.elapsed();
        let numel: usize = graph.input_shape(0).iter().product();
        let x = weights(42, numel);
        let runs: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let _ = graph.run(&[("x", (&x).into())]);
                t.elapsed()
            })
            .collect();
        let out = graph.run(&[("x", (&x).into())])?;
        let data = out[0].as_f32().unwrap_or(&[]);
        let mean = data.iter().map(|v| f64::from(*v)).sum::<f64>() / data.len().max(1) as f64;
        println!(
            "  {:<22} {:>12.1?} {:>14.1?} {:>12.1?} {:>11}B {:>13}B  {} {:?} mean={mean:.5}",
            binding.to_string(),
            t_spec,
            t_compile,
            median(runs),
            plan.size,
            plan.temp_bytes,
            out[0].name,
            out[0].shape
        );
    }
    let s = pipe.stats();
    println!(
        "  cache: {} variants, {} hits, {} misses, {} evictions\n",
        pipe.len(),
        s.hits,
        s.misses,
        s.evictions
    );
    Ok(())
}

fn main() -> Result<()> {
    let b = |batch: i64| DimBinding::new().with("batch", batch);
    let bs = |batch: i64, seq: i64| b(batch).with("seq", seq);
    demo(
        "mlp (symbolic batch)",
        mlp,
        &mlp_weights(),
        &[b(1), b(32), b(1000)],
    )?;
    demo(
        "block (symbolic batch, seq)",
        block,
        &block_weights(),
        &[bs(1, 8), bs(4, 128), bs(3, 17)],
    )?;

    // Specialization cost: the median over 1,000 specializations of the block's template.
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let opts = CompileOptions {
        verify: false,
        ..CompileOptions::new()
    };
    pipe.build_template(block, &opts)?;
    let times: Vec<Duration> = (0..1000)
        .map(|i| {
            let t = Instant::now();
            let _ = pipe.specialize_template(&bs(1 + i % 8, 16 + (i % 100) * 4), &opts);
            t.elapsed()
        })
        .collect();
    println!(
        "block specialize: median {:.1?} over 1000 specializations (verifier off)",
        median(times)
    );
    Ok(())
}
