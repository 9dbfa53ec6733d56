//! Elementwise kernels: unary maps, and binary ops with numpy broadcasting.

use rayon::prelude::*;
use rlx_ir::{BinaryOp, UnaryOp};

use super::PAR_GRAIN;
use super::gemm::broadcast_strides;
use super::math::unary as unary_scalar;

#[inline]
fn apply(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
    }
}

pub fn unary(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(PAR_GRAIN)
        .zip(x.par_chunks(PAR_GRAIN))
        .for_each(|(o, x)| {
            o.iter_mut()
                .zip(x)
                .for_each(|(o, x)| *o = unary_scalar(op, *x));
        });
}

/// `out = a op b` with `a`, `b` broadcast to `out_shape`.
pub fn binary(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) {
    let n = out.len();
    if n == 0 {
        return;
    }
    if a.len() == n && b.len() == n {
        out.par_chunks_mut(PAR_GRAIN)
            .enumerate()
            .for_each(|(ci, o)| {
                let s = ci * PAR_GRAIN;
                for (i, o) in o.iter_mut().enumerate() {
                    *o = apply(op, a[s + i], b[s + i]);
                }
            });
        return;
    }
    let rank = out_shape.len();
    let last = out_shape[rank - 1].max(1);
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let rows_per_chunk = PAR_GRAIN.div_ceil(last).max(1);
    out.par_chunks_mut(rows_per_chunk * last)
        .enumerate()
        .for_each(|(ci, chunk)| {
            for (ri, row) in chunk.chunks_mut(last).enumerate() {
                // Offset of this row's first element in a and b.
                let (mut ao, mut bo, mut rem) = (0, 0, ci * rows_per_chunk + ri);
                for d in (0..rank - 1).rev() {
                    let idx = rem % out_shape[d];
                    rem /= out_shape[d];
                    ao += idx * sa[d];
                    bo += idx * sb[d];
                }
                let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
                for (j, o) in row.iter_mut().enumerate() {
                    *o = apply(op, a[ao + j * ia], b[bo + j * ib]);
                }
            }
        });
}
