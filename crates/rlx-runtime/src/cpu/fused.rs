//! Kernels of the fused ops: elementwise programs and add + layer norm. (Grouped linears live
//! in `gemm.rs`, packed attention in `attention.rs`.)

use rayon::prelude::*;
use rlx_ir::{BinaryOp, EwProgram, EwStep};

use super::PAR_GRAIN;
use super::math::unary_map;
use super::types::Num;

/// One operand of an elementwise program: its values (already f32) and broadcast strides.
pub struct EwInput<'a> {
    pub data: std::borrow::Cow<'a, [f32]>,
    pub strides: Vec<usize>,
}

/// Runs `program` for every element of `out` (shape `out_shape`), a row at a time so each
/// step is a tight loop over the row.
pub fn elementwise(
    program: &EwProgram,
    inputs: &[EwInput<'_>],
    out: &mut [f32],
    out_shape: &[usize],
) {
    if out.is_empty() {
        return;
    }
    let rank = out_shape.len();
    let last = if rank == 0 {
        1
    } else {
        out_shape[rank - 1].max(1)
    };
    let rows_per_chunk = PAR_GRAIN.div_ceil(last).max(1);
    out.par_chunks_mut(rows_per_chunk * last)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let mut regs: Vec<Vec<f32>> = vec![vec![0.0; last]; program.steps.len()];
            for (ri, row) in chunk.chunks_mut(last).enumerate() {
                let r = ci * rows_per_chunk + ri;
                for (i, step) in program.steps.iter().enumerate() {
                    let (done, rest) = regs.split_at_mut(i);
                    let dst = &mut rest[0][..row.len()];
                    match *step {
                        EwStep::Load(n) => {
                            let inp = &inputs[n];
                            let (mut off, mut rem) = (0, r);
                            for d in (0..rank.saturating_sub(1)).rev() {
                                off += (rem % out_shape[d]) * inp.strides[d];
                                rem /= out_shape[d];
                            }
                            let step = if rank > 0 { inp.strides[rank - 1] } else { 0 };
                            dst.iter_mut()
                                .enumerate()
                                .for_each(|(j, x)| *x = inp.data[off + j * step]);
                        }
                        EwStep::Const(c) => dst.fill(c),
                        EwStep::Unary(op, a) => unary_map(op, &done[a][..dst.len()], dst),
                        EwStep::Binary(op, a, b) => {
                            let (a, b) = (&done[a], &done[b]);
                            dst.iter_mut()
                                .enumerate()
                                .for_each(|(j, x)| *x = f32::binary(op, a[j], b[j]));
                        }
                    }
                }
                row.copy_from_slice(&regs[program.steps.len() - 1][..row.len()]);
            }
        });
}

/// `layer_norm(a + b)` over rows of length `d`.
pub fn add_layer_norm(
    a: &[f32],
    b: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    d: usize,
    out: &mut [f32],
) {
    if d == 0 || out.is_empty() {
        return;
    }
    let rows = PAR_GRAIN.div_ceil(d).max(1);
    out.par_chunks_mut(d * rows)
        .enumerate()
        .for_each(|(ci, o)| {
            let base = ci * rows * d;
            for (ri, o) in o.chunks_mut(d).enumerate() {
                let s = base + ri * d;
                for i in 0..d {
                    o[i] = f32::binary(BinaryOp::Add, a[s + i], b[s + i]);
                }
                let mean = o.iter().sum::<f32>() / d as f32;
                let var = o.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for i in 0..d {
                    o[i] = (o[i] - mean) * inv * gamma[i] + beta[i];
                }
            }
        });
}

/// `softmax(x * scale + bias)` over the axis of length `n` of `[outer, n, inner]` data; `bias`
/// (with its shape) broadcasts to `shape`.
pub fn scaled_softmax(
    x: &[f32],
    bias: Option<(&[f32], &[usize])>,
    scale: f32,
    shape: &[usize],
    n: usize,
    inner: usize,
    out: &mut [f32],
) {
    match bias {
        Some((b, bs)) => super::elementwise::scale_add(x, scale, b, bs, out, shape),
        None => out
            .par_chunks_mut(PAR_GRAIN)
            .zip(x.par_chunks(PAR_GRAIN))
            .for_each(|(o, x)| {
                o.iter_mut().zip(x).for_each(|(o, x)| *o = x * scale);
            }),
    }
    super::norm::softmax_in_place(out, n, inner);
}
