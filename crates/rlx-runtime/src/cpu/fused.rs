//! Kernels of the fused ops: elementwise programs and add + layer norm. (Grouped linears live
//! in `gemm.rs`, packed attention in `attention.rs`.)

use rayon::prelude::*;
use rlx_ir::{EwProgram, EwStep};

use super::isa::{Isa, default_isa};
use super::vmath::unary_map_default as unary_map;
use super::vmath::{self, add_norm_row};
use super::{OutPtr, PAR_GRAIN};

/// One operand of an elementwise program: where its f32 values are, and broadcast strides.
/// A raw pointer, not a slice: the output may reuse an operand's memory (in-place), and a slice
/// beside the output's would be an aliasing violation. Rows are read before they are written.
pub struct EwInput {
    pub ptr: *const f32,
    /// Keeps converted (non-f32) data alive while `ptr` points into it; never read directly.
    #[allow(dead_code)]
    pub owned: Option<Vec<f32>>,
    pub strides: Vec<usize>,
}

// SAFETY: the pointers are only read, and the executor keeps their memory alive for the run.
unsafe impl Send for EwInput {}
unsafe impl Sync for EwInput {}

/// Runs `program` for every element of the `out_len`-element output (shape `out_shape`), a
/// block of a row at a time so each step is a tight loop.
///
/// # Safety
/// Each input must cover its broadcast shape; an input that shares memory with `out` must have
/// the output's shape (so row `r` is read only by the task that writes row `r`).
pub unsafe fn elementwise(
    program: &EwProgram,
    inputs: &[EwInput],
    out: OutPtr,
    out_len: usize,
    out_shape: &[usize],
) {
    if out_len == 0 {
        return;
    }
    // Adjacent axes every operand steps through as one (the usual case: same-shape operands,
    // or a bias broadcast along whole rows) merge, so the rows are long and the loads dense.
    let (out_shape, strides) = collapse(out_shape, inputs);
    let isa = default_isa().unwrap_or(Isa::Scalar);
    let out_shape = &out_shape[..];
    let rank = out_shape.len();
    let last = if rank == 0 {
        1
    } else {
        out_shape[rank - 1].max(1)
    };
    let rows = out_len / last;
    // Work in blocks of up to EW_COLS columns of one row: the registers stay small (L1-sized,
    // whatever the row length) and a single long row still splits across threads.
    let width = last.min(EW_COLS);
    let blocks_per_row = last.div_ceil(width);
    let units = rows * blocks_per_row;
    let units_per_task = (PAR_GRAIN / width).max(1);
    (0..units.div_ceil(units_per_task))
        .into_par_iter()
        .for_each(|t| {
            let mut regs: Vec<Vec<f32>> = vec![vec![0.0; width]; program.steps.len()];
            for u in t * units_per_task..((t + 1) * units_per_task).min(units) {
                let (r, col0) = (u / blocks_per_row, (u % blocks_per_row) * width);
                let w = width.min(last - col0);
                for (i, step) in program.steps.iter().enumerate() {
                    let (done, rest) = regs.split_at_mut(i);
                    let dst = &mut rest[0][..w];
                    match *step {
                        EwStep::Load(n) => {
                            let st = &strides[n];
                            let (mut off, mut rem) = (0, r);
                            for d in (0..rank.saturating_sub(1)).rev() {
                                off += (rem % out_shape[d]) * st[d];
                                rem /= out_shape[d];
                            }
                            let step = if rank > 0 { st[rank - 1] } else { 0 };
                            // SAFETY: offsets stay inside the operand (broadcast strides).
                            unsafe { load(inputs[n].ptr.add(off + col0 * step), step, dst) };
                        }
                        EwStep::Const(c) => dst.fill(c),
                        EwStep::Unary(op, a) => unary_map(op, &done[a][..w], dst),
                        // SAFETY: the ISA is this CPU's (default_isa).
                        EwStep::Binary(op, a, b) => unsafe {
                            vmath::binary_map(isa, op, &done[a][..w], &done[b][..w], dst)
                        },
                    }
                }
                // SAFETY: this block of row r belongs to this task; its inputs (the same
                // elements, where an input shares the output's memory) were read above.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        regs[program.steps.len() - 1].as_ptr(),
                        out.get().add(r * last + col0),
                        w,
                    )
                };
            }
        });
}

/// `out_shape` with adjacent axes merged wherever every operand's strides let it read the pair
/// as one axis; with each operand's strides over the merged shape.
fn collapse(out_shape: &[usize], inputs: &[EwInput]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut shape: Vec<usize> = Vec::with_capacity(out_shape.len());
    let mut strides: Vec<Vec<usize>> = vec![Vec::new(); inputs.len()];
    for (d, &n) in out_shape.iter().enumerate() {
        // Axis d joins the previous (merged) axis when, for every operand, stepping the
        // previous one equals stepping d through its whole length.
        let merges = !shape.is_empty()
            && inputs
                .iter()
                .zip(&strides)
                .all(|(inp, st)| st.last() == Some(&(inp.strides[d] * n)));
        let at = shape.len().saturating_sub(1);
        if merges {
            shape[at] *= n;
        } else {
            shape.push(n);
        }
        for (inp, st) in inputs.iter().zip(strides.iter_mut()) {
            if merges {
                st[at] = inp.strides[d];
            } else {
                st.push(inp.strides[d]);
            }
        }
    }
    (shape, strides)
}

/// `dst[j] = src[j * step]`.
///
/// # Safety
/// `src` must be readable at every `j * step` for `j < dst.len()`.
unsafe fn load(src: *const f32, step: usize, dst: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe {
        match step {
            0 => dst.fill(*src),
            1 => dst.copy_from_slice(std::slice::from_raw_parts(src, dst.len())),
            _ => dst
                .iter_mut()
                .enumerate()
                .for_each(|(j, x)| *x = *src.add(j * step)),
        }
    }
}

/// Columns per register block of an elementwise program (16 KiB of f32 per step).
pub const EW_COLS: usize = 4096;

/// `layer_norm(a + b)` over `rows` rows of length `d`.
///
/// # Safety
/// `a`, `b` and `out` hold `rows * d` elements; `out` may be `a` or `b` (each row is read
/// whole before it is written).
#[allow(clippy::too_many_arguments)]
pub unsafe fn add_layer_norm(
    a: *const f32,
    b: *const f32,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    d: usize,
    rows: usize,
    out: OutPtr,
) {
    if d == 0 || rows == 0 {
        return;
    }
    let (a, b) = (SharedIn(a), SharedIn(b));
    let per_task = PAR_GRAIN.div_ceil(d).max(1);
    let isa = default_isa().unwrap_or(Isa::Scalar);
    (0..rows.div_ceil(per_task)).into_par_iter().for_each(|t| {
        for r in t * per_task..((t + 1) * per_task).min(rows) {
            // SAFETY: row r of a, b and out lies inside them; each element of a and b is read
            // before the same element of out is written (out may be a or b), and this task
            // alone touches row r; the slice of out is made once the reads are done.
            unsafe {
                let (ar, br, or) = (a.get().add(r * d), b.get().add(r * d), out.get().add(r * d));
                add_norm_row(isa, ar, Some(br), or, gamma, beta, eps, d);
            }
        }
    });
}

/// A read-only pointer shared by tasks.
#[derive(Clone, Copy)]
struct SharedIn(*const f32);
// SAFETY: only read, and alive for the whole kernel call.
unsafe impl Send for SharedIn {}
unsafe impl Sync for SharedIn {}

impl SharedIn {
    /// Used inside tasks so closures capture the whole wrapper (which is `Send`), not its field.
    fn get(self) -> *const f32 {
        self.0
    }
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
