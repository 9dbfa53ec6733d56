//! Scaled dot-product attention: for each (batch, head) pair, `softmax(q k^T * scale + mask) v`
//! with the two products done by sgemm on a per-task score buffer.

use rayon::prelude::*;

/// Shapes of one attention call, in elements.
pub struct AttnDims {
    pub scale: f32,
    pub causal: bool,
    pub heads: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
}

/// `out[b, h, i, :] = sum_j p[i, j] v[b, h, j, :]` with `p = softmax(scale q_i . k_j + mask[b, j])`
/// (the mask is additive: 0 keeps a key, -inf drops it) over the keys and (if causal) `j <= i + sk - sq`. A query with no key to
/// attend gets zeros.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    n: &AttnDims,
    out: &mut [f32],
) {
    let (sq, sk, d, dv, scale, causal) = (n.sq, n.sk, n.d, n.dv, n.scale, n.causal);
    if sq * dv == 0 {
        return;
    }
    out.par_chunks_mut(sq * dv).enumerate().for_each(|(bh, o)| {
        let b = bh / n.heads.max(1);
        let (qm, km, vm) = (
            &q[bh * sq * d..(bh + 1) * sq * d],
            &k[bh * sk * d..(bh + 1) * sk * d],
            &v[bh * sk * dv..(bh + 1) * sk * dv],
        );
        let mut p = vec![0.0f32; sq * sk];
        if d > 0 && sk > 0 {
            // SAFETY: qm is [sq, d], km is [sk, d] read transposed (row stride 1, col stride d),
            // p is [sq, sk]; all row-major and sized above.
            unsafe {
                matrixmultiply::sgemm(
                    sq,
                    d,
                    sk,
                    scale,
                    qm.as_ptr(),
                    d as isize,
                    1,
                    km.as_ptr(),
                    1,
                    d as isize,
                    0.0,
                    p.as_mut_ptr(),
                    sk as isize,
                    1,
                );
            }
        }
        let add = mask.map(|m| &m[b * sk..(b + 1) * sk]);
        for (i, row) in p.chunks_mut(sk.max(1)).enumerate().take(sq) {
            let live = if causal {
                super::norm::causal_live(i, sq, sk)
            } else {
                sk
            };
            super::norm::softmax_row(row, live, add);
        }
        if sk == 0 {
            o.fill(0.0);
            return;
        }
        // SAFETY: p is [sq, sk], vm is [sk, dv], o is [sq, dv], all row-major.
        unsafe {
            matrixmultiply::sgemm(
                sq,
                sk,
                dv,
                1.0,
                p.as_ptr(),
                sk as isize,
                1,
                vm.as_ptr(),
                dv as isize,
                1,
                0.0,
                o.as_mut_ptr(),
                dv as isize,
                1,
            );
        }
    });
}
