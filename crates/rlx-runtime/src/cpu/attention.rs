//! Scaled dot-product attention: for each (batch, head) pair, `softmax(q k^T * scale + mask) v`
//! with the two products done by sgemm on a per-task score buffer. Heads are addressed through
//! strides, so the same kernel reads `[b, h, s, d]` tensors and heads packed side by side in the
//! columns of `[b, s, width]` sources (the fused `attention_packed`), without copies.

use rayon::prelude::*;

use super::OutPtr;
use super::norm::{causal_live, softmax_row};

/// Where head `h` of batch `b` starts in one operand, and the stride between its rows.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    pub batch_stride: usize,
    pub head_stride: usize,
    pub offset: usize,
    pub row_stride: usize,
}

impl HeadLayout {
    /// A contiguous `[batch, heads, seq, dim]` tensor.
    pub fn bhsd(heads: usize, seq: usize, dim: usize) -> HeadLayout {
        HeadLayout {
            batch_stride: heads * seq * dim,
            head_stride: seq * dim,
            offset: 0,
            row_stride: dim,
        }
    }

    /// Heads of size `dim` side by side from column `offset` of a `[batch, seq, width]` tensor.
    pub fn packed(seq: usize, width: usize, offset: usize, dim: usize) -> HeadLayout {
        HeadLayout {
            batch_stride: seq * width,
            head_stride: dim,
            offset,
            row_stride: width,
        }
    }

    fn at(&self, b: usize, h: usize) -> usize {
        b * self.batch_stride + h * self.head_stride + self.offset
    }
}

/// Sizes, options and operand layouts of one attention call.
pub struct AttnSpec {
    pub batch: usize,
    pub heads: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
    pub causal: bool,
    /// Layouts of q, k, v and the output.
    pub layout: [HeadLayout; 4],
}

/// `out[b, h, i, :] = sum_j p[i, j] v[b, h, j, :]` with `p = softmax(scale q_i . k_j + mask[b, j])`
/// over the keys `j` allowed by the additive mask (0 keeps a key, -inf drops it) and, if causal,
/// `j + sq <= i + sk` (aligned to the last keys). A query with no key to attend gets zeros.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    s: &AttnSpec,
    out: &mut [f32],
) {
    let (sq, sk, d, dv) = (s.sq, s.sk, s.d, s.dv);
    if out.is_empty() || sq * dv == 0 {
        return;
    }
    let [lq, lk, lv, lo] = s.layout;
    let ptr = OutPtr(out.as_mut_ptr());
    (0..s.batch * s.heads).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / s.heads, bh % s.heads);
        let mut p = vec![0.0f32; sq * sk];
        // SAFETY: the layouts address heads inside q, k, v and out (shape inference checked
        // the sizes); p is [sq, sk]; this task writes only head h of batch b of `out`, which
        // no other task touches.
        unsafe {
            if d > 0 && sk > 0 {
                let (qp, kp) = (q.as_ptr().add(lq.at(b, h)), k.as_ptr().add(lk.at(b, h)));
                // k is read transposed: its [d, sk] view has row stride 1, column stride row_stride.
                matrixmultiply::sgemm(
                    sq,
                    d,
                    sk,
                    s.scale,
                    qp,
                    lq.row_stride as isize,
                    1,
                    kp,
                    1,
                    lk.row_stride as isize,
                    0.0,
                    p.as_mut_ptr(),
                    sk as isize,
                    1,
                );
            }
            let add = mask.map(|m| &m[b * sk..(b + 1) * sk]);
            for (i, row) in p.chunks_mut(sk.max(1)).enumerate().take(sq) {
                softmax_row(row, if s.causal { causal_live(i, sq, sk) } else { sk }, add);
            }
            let o = ptr.get().add(lo.at(b, h));
            if sk == 0 {
                for i in 0..sq {
                    std::slice::from_raw_parts_mut(o.add(i * lo.row_stride), dv).fill(0.0);
                }
            } else {
                let vp = v.as_ptr().add(lv.at(b, h));
                matrixmultiply::sgemm(
                    sq,
                    sk,
                    dv,
                    1.0,
                    p.as_ptr(),
                    sk as isize,
                    1,
                    vp,
                    lv.row_stride as isize,
                    1,
                    0.0,
                    o,
                    lo.row_stride as isize,
                    1,
                );
            }
        }
    });
}
