//! Fusion and memory-planning figures for a BERT encoder built with the builder (hidden 384,
//! 12 heads, FFN 1536): kernels per layer without and with fusion, the compile report, the
//! arena against its lower bound for three variants, and the template compile time of a
//! 6-layer encoder (median of 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::bert::encoder;
use rlx_ir::DimBinding;
use rlx_runtime::{CompileOptions, Device, ModelCompilePipeline, Result};

fn kernels(layers: usize, optimize: bool) -> Result<usize> {
    let opts = CompileOptions {
        optimize,
        ..CompileOptions::new()
    };
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    Ok(pipe
        .build_template(move || encoder(layers), &opts)?
        .lir
        .kernels
        .len())
}

fn main() -> Result<()> {
    let per_layer = |o| -> Result<usize> { Ok(kernels(2, o)? - kernels(1, o)?) };
    println!(
        "kernels per encoder layer: {} unfused -> {} fused",
        per_layer(false)?,
        per_layer(true)?
    );
    println!(
        "kernels for 1 layer incl. mask prologue: {} -> {}\n",
        kernels(1, false)?,
        kernels(1, true)?
    );

    let opts = CompileOptions {
        verify: false,
        ..CompileOptions::new()
    };
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    println!("{}", pipe.build_template(|| encoder(1), &opts)?.report);
    println!(
        "{:<16} {:>12} {:>14} {:>8} {:>16}",
        "variant", "arena B", "max live B", "ratio", "no-reuse B"
    );
    for (b, s) in [(8, 128), (1, 512), (32, 64)] {
        let spec =
            pipe.specialize_template(&DimBinding::new().with("batch", b).with("seq", s), &opts)?;
        let a = spec.lir.arena.unwrap_or_default();
        let ratio = a.size as f64 / a.max_live_bytes.max(1) as f64;
        println!(
            "{:<16} {:>12} {:>14} {:>8.3} {:>16}",
            format!("({b}, {s})"),
            a.size,
            a.max_live_bytes,
            ratio,
            a.temp_bytes
        );
    }

    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let mut p = ModelCompilePipeline::new(Device::Cpu);
            let t = Instant::now();
            let _ = p.build_template(|| encoder(6), &opts);
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "\n6-layer encoder template (build HIR + passes + lowering): median {:.2?} over 20",
        times[10]
    );
    Ok(())
}
