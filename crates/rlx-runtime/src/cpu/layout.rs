//! Data movement: transpose, concat, slice, gather and copies. Apart from transpose these
//! move contiguous runs of bytes, so one implementation serves every dtype.

use rayon::prelude::*;

use super::PAR_GRAIN;
use crate::{Error, Result};

/// `out = x.transpose(perm)`, `shape` being the shape of `x`.
pub fn transpose<T: Copy + Send + Sync>(x: &[T], shape: &[usize], perm: &[usize], out: &mut [T]) {
    let rank = shape.len();
    if out.is_empty() {
        return;
    }
    if rank == 0 {
        out.copy_from_slice(x);
        return;
    }
    let mut in_strides = vec![1; rank];
    for i in (0..rank - 1).rev() {
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

pub fn copy_f32(x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(PAR_GRAIN)
        .zip(x.par_chunks(PAR_GRAIN))
        .for_each(|(o, x)| o.copy_from_slice(x));
}

pub fn copy_bytes(x: &[u8], out: &mut [u8]) {
    out.par_chunks_mut(PAR_GRAIN * 4)
        .zip(x.par_chunks(PAR_GRAIN * 4))
        .for_each(|(o, x)| o.copy_from_slice(x));
}

/// Concatenates byte tensors viewed as `[outer, run_i]`: each part contributes `run_i` bytes
/// per outer index.
pub fn concat(parts: &[(&[u8], usize)], outer: usize, out: &mut [u8]) {
    let total: usize = parts.iter().map(|p| p.1).sum();
    if total == 0 {
        return;
    }
    out.par_chunks_mut(total)
        .take(outer)
        .enumerate()
        .for_each(|(o, row)| {
            let mut at = 0;
            for (data, run) in parts {
                row[at..at + run].copy_from_slice(&data[o * run..(o + 1) * run]);
                at += run;
            }
        });
}

/// `x` viewed as `[outer, dim * inner]` bytes; keeps `[start, end)` of `dim` in every row.
pub fn slice(
    x: &[u8],
    outer: usize,
    dim: usize,
    inner: usize,
    start: usize,
    end: usize,
    out: &mut [u8],
) {
    let run = (end - start) * inner;
    if run == 0 {
        return;
    }
    out.par_chunks_mut(run)
        .take(outer)
        .enumerate()
        .for_each(|(o, row)| {
            let src = o * dim * inner + start * inner;
            row.copy_from_slice(&x[src..src + run]);
        });
}

/// `data` viewed as `[outer, dim, inner]` (inner in bytes); out = `[outer, n, inner]` with
/// row `i` taken from `indices[i]`. Every index is checked before any byte moves.
pub fn gather(
    data: &[u8],
    outer: usize,
    dim: usize,
    inner: usize,
    indices: &[i64],
    out: &mut [u8],
) -> Result<()> {
    let mut rows = Vec::with_capacity(indices.len());
    for (pos, &i) in indices.iter().enumerate() {
        let j = if i < 0 { i + dim as i64 } else { i };
        if j < 0 || j >= dim as i64 {
            return Err(Error::Index(format!(
                "gather index {i} at position {pos} is out of range for an axis of size {dim}"
            )));
        }
        rows.push(j as usize);
    }
    let n = indices.len();
    if inner == 0 || n == 0 {
        return Ok(());
    }
    out.par_chunks_mut(n * inner)
        .take(outer)
        .enumerate()
        .for_each(|(o, block)| {
            for (i, dst) in block.chunks_mut(inner).enumerate() {
                let src = (o * dim + rows[i]) * inner;
                dst.copy_from_slice(&data[src..src + inner]);
            }
        });
    Ok(())
}
