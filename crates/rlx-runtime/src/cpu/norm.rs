//! Row-wise kernels: softmax on any axis and layer norm over the last axis.

use rayon::prelude::*;

use super::PAR_GRAIN;
use super::isa::Isa;

/// Softmax over the axis of length `n` in a tensor viewed as `[outer, n, inner]`.
pub fn softmax(x: &[f32], n: usize, inner: usize, out: &mut [f32]) {
    super::layout::copy_f32(x, out);
    softmax_in_place(out, n, inner);
}

/// Softmax in place over the axis of length `n` of `[outer, n, inner]` data.
pub fn softmax_in_place(data: &mut [f32], n: usize, inner: usize) {
    if n == 0 || inner == 0 || data.is_empty() {
        return;
    }
    let group = n * inner;
    let isa = super::isa::default_isa().unwrap_or(Isa::Scalar);
    let groups_per_task = PAR_GRAIN.div_ceil(group).max(1);
    data.par_chunks_mut(group * groups_per_task).for_each(|o| {
        for o in o.chunks_mut(group) {
            if inner == 1 {
                softmax_row(isa, o, n, None);
                continue;
            }
            for j in 0..inner {
                let max = (0..n)
                    .map(|i| o[i * inner + j])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for i in 0..n {
                    let e = super::math::exp(o[i * inner + j] - max);
                    o[i * inner + j] = e;
                    sum += e;
                }
                let inv = 1.0 / sum;
                for i in 0..n {
                    o[i * inner + j] *= inv;
                }
            }
        }
    });
}

/// `(x - mean) / sqrt(var + eps) * gamma + beta` over rows of length `d`.
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, d: usize, out: &mut [f32]) {
    if d == 0 || out.is_empty() {
        return;
    }
    let rows_per_task = PAR_GRAIN.div_ceil(d).max(1);
    out.par_chunks_mut(d * rows_per_task)
        .zip(x.par_chunks(d * rows_per_task))
        .for_each(|(o, x)| {
            let isa = super::isa::default_isa().unwrap_or(Isa::Scalar);
            for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                // SAFETY: both rows hold d elements, as do gamma and beta (shape inference).
                unsafe {
                    super::vmath::add_norm_row(
                        isa,
                        x.as_ptr(),
                        None,
                        o.as_mut_ptr(),
                        gamma,
                        beta,
                        eps,
                        d,
                    )
                };
            }
        });
}

/// `x / sqrt(mean(x^2) + eps) * gamma` over rows of length `d`.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, d: usize, out: &mut [f32]) {
    if d == 0 || out.is_empty() {
        return;
    }
    let rows_per_task = PAR_GRAIN.div_ceil(d).max(1);
    out.par_chunks_mut(d * rows_per_task)
        .zip(x.par_chunks(d * rows_per_task))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
                let inv = 1.0 / (ms + eps).sqrt();
                for i in 0..d {
                    o[i] = x[i] * inv * gamma[i];
                }
            }
        });
}

/// Softmax of one attention row in place (see `vmath::softmax_row`, with scale 1).
pub fn softmax_row(isa: Isa, row: &mut [f32], live: usize, add: Option<&[f32]>) {
    super::vmath::softmax_row(isa, row, live, add, 1.0)
}

/// Keys a causal query `i` of `sq` may see among `sk` (aligned to the last keys): `j + sq <= i + sk`.
pub fn causal_live(i: usize, sq: usize, sk: usize) -> usize {
    (i + sk + 1).saturating_sub(sq).min(sk)
}
