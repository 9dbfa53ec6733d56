//! Matrix products: batched matmul with broadcast batch dims, and linear with a fused
//! bias + activation epilogue. The inner product is `matrixmultiply`'s packed sgemm; rayon
//! splits batches and row blocks across threads.

use rayon::prelude::*;
use rlx_ir::UnaryOp;

use super::elementwise::broadcast_strides;
use super::math::unary_in_place;

/// `c[m, n] = a[m, k] @ b[k, n]` for one row-major block.
fn sgemm_block(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    sgemm_strided(m, k, n, a, b, b_strides(k, n, false), c)
}

/// Row and column strides of a `[k, n]` operand stored as is, or stored `[n, k]` (transposed).
pub fn b_strides(k: usize, n: usize, transposed: bool) -> (isize, isize) {
    if transposed {
        (1, k as isize)
    } else {
        (n as isize, 1)
    }
}

/// `c[m, n] = a[m, k] @ b` where `b`'s `[k, n]` view has strides `bs` (in elements).
fn sgemm_strided(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    bs: (isize, isize),
    c: &mut [f32],
) {
    debug_assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if k == 0 {
        c.fill(0.0);
        return;
    }
    // SAFETY: the slices hold m*k, k*n and m*n elements laid out row-major (checked above in
    // debug builds, guaranteed by the callers' shape arithmetic).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            bs.0,
            bs.1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Rows per task so that each task does at least ~PAR_GRAIN multiply-adds per column block.
fn rows_per_task(m: usize, k: usize, n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let work_per_row = (k * n).max(1);
    let min_rows = (super::PAR_GRAIN * 8).div_ceil(work_per_row).max(1);
    m.div_ceil(threads * 2).max(min_rows).max(1)
}

/// Batched `a[..., m, k] @ b[..., k, n]` into `out[..., m, n]`, batch dims broadcast.
pub fn matmul(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = a_shape[a_shape.len() - 1];
    if m * n == 0 {
        return;
    }
    let batch_shape = &out_shape[..r - 2];
    let a_batch = broadcast_strides(&a_shape[..a_shape.len() - 2], batch_shape);
    let b_batch = broadcast_strides(&b_shape[..b_shape.len() - 2], batch_shape);
    let rows = rows_per_task(m, k, n);
    out.par_chunks_mut(m * n).enumerate().for_each(|(bi, c)| {
        // Offsets of this batch in a and b (in matrices), through the broadcast strides.
        let (mut ao, mut bo, mut rem) = (0, 0, bi);
        for d in (0..batch_shape.len()).rev() {
            let idx = rem % batch_shape[d];
            rem /= batch_shape[d];
            ao += idx * a_batch[d];
            bo += idx * b_batch[d];
        }
        let (a_mat, b_mat) = (
            &a[ao * m * k..(ao + 1) * m * k],
            &b[bo * k * n..(bo + 1) * k * n],
        );
        c.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(ri, block)| {
                let r0 = ri * rows;
                let mr = block.len() / n;
                sgemm_block(mr, k, n, &a_mat[r0 * k..(r0 + mr) * k], b_mat, block);
            });
    });
}

/// `out[r, n] = act(x[r, k] @ w + bias[n])` over all leading rows of `x`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, spec: &LinearSpec, out: &mut [f32]) {
    let (k, n) = (spec.k, spec.n);
    if n == 0 {
        return;
    }
    let m = out.len() / n;
    let rows = rows_per_task(m, k, n);
    let bs = b_strides(k, n, spec.transpose_w);
    out.par_chunks_mut(rows * n)
        .enumerate()
        .for_each(|(ri, block)| {
            let r0 = ri * rows;
            let mr = block.len() / n;
            sgemm_strided(mr, k, n, &x[r0 * k..(r0 + mr) * k], w, bs, block);
            // Epilogue on the block just written, while it is still in cache.
            for row in block.chunks_exact_mut(n) {
                if let Some(b) = bias {
                    row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                }
                if let Some(op) = spec.act {
                    unary_in_place(op, row);
                }
            }
        });
}

/// Sizes and layout of one linear: `x[.., k] @ w -> [.., n]`.
pub struct LinearSpec {
    pub k: usize,
    pub n: usize,
    /// `w` is stored `[n, k]` and read transposed.
    pub transpose_w: bool,
    pub act: Option<UnaryOp>,
}
