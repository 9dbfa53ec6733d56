//! Times a fused BERT encoder (random weights) per variant: `RLX_PROFILE=1` adds per-kernel times.
//!
//!     cargo run --release -p rlx-runtime --example encoder_bench -- [layers] [batch] [seq]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::bert::{H, encoder, encoder_weights, padding_mask};
use common::weights;
use rlx_ir::DimBinding;
use rlx_runtime::{CompileOptions, Device, ModelCompilePipeline, Result};

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (layers, b, s) = (
        *args.first().unwrap_or(&6),
        *args.get(1).unwrap_or(&8),
        *args.get(2).unwrap_or(&128),
    );
    let opts = CompileOptions {
        verify: false,
        ..CompileOptions::new()
    };
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let build = move || encoder(layers);
    pipe.build_template(build, &opts)?;
    for (n, w) in encoder_weights(layers) {
        pipe.set_param(&n, &w)?;
    }
    let g = pipe.get_or_compile(
        &DimBinding::new()
            .with("batch", b as i64)
            .with("seq", s as i64),
        build,
        &opts,
    )?;
    let x = weights(1, b * s * H as usize);
    let mask = padding_mask(b, s);
    let inputs = [("x", (&x).into()), ("mask", (&mask).into())];
    g.run(&inputs)?;
    let mut times: Vec<f64> = (0..10)
        .map(|_| {
            let t = Instant::now();
            let _ = g.run(&inputs);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (h, f) = (H as f64, 1536.0);
    let tokens = (b * s) as f64;
    let flops =
        layers as f64 * (2.0 * tokens * (4.0 * h * h + 2.0 * h * f) + 4.0 * tokens * s as f64 * h);
    let med = times[times.len() / 2];
    println!(
        "{layers} layers, batch {b}, seq {s}: median {:.2} ms, {:.1} GFLOP/s",
        med * 1e3,
        flops / med / 1e9
    );
    Ok(())
}
