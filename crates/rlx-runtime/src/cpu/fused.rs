//! Kernels of the fused ops: elementwise programs, add + layer norm, grouped linears and
//! attention reading heads in place from packed `[batch, seq, width]` sources.

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

/// Output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of elements (documented at each use).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Used inside tasks so closures capture the whole `OutPtr` (which is `Send`), not its field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Geometry of a packed attention call: sources are `[batch, seq, width]` row-major.
pub struct Packed {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub sq: usize,
    pub sk: usize,
    /// (width, column offset) of the q, k and v sources.
    pub src: [(usize, usize); 3],
    pub scale: f32,
    pub causal: bool,
}

/// Attention with heads read in place; `mask` is an additive `[b, j]` term (a bias, or -inf
/// for a key not to attend); `None` keeps all keys. Output `[batch, sq, heads*head_dim]`.
pub fn attention_packed(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    g: &Packed,
    out: &mut [f32],
) {
    let (sq, sk, d, scale, causal) = (g.sq, g.sk, g.head_dim, g.scale, g.causal);
    let width_out = g.heads * d;
    if out.is_empty() {
        return;
    }
    let ptr = OutPtr(out.as_mut_ptr());
    (0..g.batch * g.heads).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / g.heads, bh % g.heads);
        let at = |i: usize, len: usize| (b * len * g.src[i].0 + g.src[i].1 + h * d) as isize;
        let mut p = vec![0.0f32; sq * sk];
        // SAFETY: q/k/v head views lie inside their sources (checked by shape inference:
        // offset + heads*head_dim <= width); p is [sq, sk]; this task writes only columns
        // h*d..(h+1)*d of the rows of batch b in `out`, disjoint from every other task.
        unsafe {
            if d > 0 && sk > 0 && sq > 0 {
                let (wq, wk) = (g.src[0].0 as isize, g.src[1].0 as isize);
                matrixmultiply::sgemm(
                    sq,
                    d,
                    sk,
                    scale,
                    q.as_ptr().offset(at(0, sq)),
                    wq,
                    1,
                    k.as_ptr().offset(at(1, sk)),
                    1,
                    wk,
                    0.0,
                    p.as_mut_ptr(),
                    sk as isize,
                    1,
                );
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
            let o = ptr.get().add(b * sq * width_out + h * d);
            if sk == 0 {
                for i in 0..sq {
                    std::slice::from_raw_parts_mut(o.add(i * width_out), d).fill(0.0);
                }
            } else if d > 0 && sq > 0 {
                let wv = g.src[2].0 as isize;
                matrixmultiply::sgemm(
                    sq,
                    sk,
                    d,
                    1.0,
                    p.as_ptr(),
                    sk as isize,
                    1,
                    v.as_ptr().offset(at(2, sk)),
                    wv,
                    1,
                    0.0,
                    o,
                    width_out as isize,
                    1,
                );
            }
        }
    });
}
