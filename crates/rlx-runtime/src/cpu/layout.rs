//! Data movement: transpose by any permutation, and plain copies.

use rayon::prelude::*;

use super::PAR_GRAIN;

/// `out = x.transpose(perm)`, `shape` being the shape of `x`.
pub fn transpose(x: &[f32], shape: &[usize], perm: &[usize], out: &mut [f32]) {
    let rank = shape.len();
    if out.is_empty() {
        return;
    }
    if rank == 0 {
        out.copy_from_slice(x);
        return;
    }
    let mut in_strides = vec![1; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    // Strides of x, visited in output order.
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let last = out_shape[rank - 1];
    let rows_per_task = PAR_GRAIN.div_ceil(last.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * last)
        .enumerate()
        .for_each(|(ci, chunk)| {
            for (ri, row) in chunk.chunks_mut(last).enumerate() {
                let (mut off, mut rem) = (0, ci * rows_per_task + ri);
                for d in (0..rank - 1).rev() {
                    off += (rem % out_shape[d]) * strides[d];
                    rem /= out_shape[d];
                }
                let s = strides[rank - 1];
                for (j, o) in row.iter_mut().enumerate() {
                    *o = x[off + j * s];
                }
            }
        });
}

pub fn copy_bytes(x: &[u8], out: &mut [u8]) {
    out.par_chunks_mut(PAR_GRAIN * 4)
        .zip(x.par_chunks(PAR_GRAIN * 4))
        .for_each(|(o, x)| o.copy_from_slice(x));
}
