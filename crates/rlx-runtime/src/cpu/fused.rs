//! Kernels of the fused ops: elementwise programs and add + layer norm. (Grouped linears live
//! in `gemm.rs`, packed attention in `attention.rs`.)

use rayon::prelude::*;
use rlx_ir::{BinaryOp, EwProgram, EwStep, UnaryOp};

use super::isa::{Isa, default_isa};
use super::vmath::unary_map_default as unary_map;
use super::vmath::{self, add_norm_row};
use super::{OutPtr, PAR_GRAIN};
use crate::fallible::with_scratch;

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
    if let Some((first, links)) = row_chain(program, out_shape, &strides) {
        // SAFETY: the caller's contract.
        unsafe { run_chain(isa, inputs, first, &links, out, (out_shape, &strides)) };
        return;
    }
    // Work in blocks of up to EW_COLS values: a part of one long row (the registers stay
    // L1-sized and a single long row still splits across threads), or whole short rows (a
    // per-channel operand over channels-last positions: each step then runs over the block,
    // not over one row of a few vectors at a time).
    let width = last.min(EW_COLS);
    let blocks_per_row = last.div_ceil(width);
    let rows_per_unit = (EW_COLS / last).max(1);
    let units = rows.div_ceil(rows_per_unit) * blocks_per_row;
    let units_per_task = (PAR_GRAIN / (width * rows_per_unit)).max(1);
    let block = width * rows_per_unit;
    let steps = program.steps.len();
    (0..units.div_ceil(units_per_task))
        .into_par_iter()
        .for_each(|t| {
            // The registers are the thread's, kept between tasks and runs: made and zeroed
            // per task (or per split of the range), they cost more than the program's steps.
            with_scratch(&REGS, |regs| {
                if regs.len() < steps * block {
                    regs.resize(steps * block, 0.0);
                }
                for u in t * units_per_task..((t + 1) * units_per_task).min(units) {
                    let (ru, col0) = (u / blocks_per_row, (u % blocks_per_row) * width);
                    let r0 = ru * rows_per_unit;
                    let (n_rows, w) = (rows_per_unit.min(rows - r0), width.min(last - col0));
                    let len = n_rows * w;
                    for (i, step) in program.steps.iter().enumerate() {
                        let (done, rest) = regs.split_at_mut(i * block);
                        let reg = |a: usize| &done[a * block..a * block + len];
                        let dst = &mut rest[..len];
                        match *step {
                            EwStep::Load(n) => {
                                let st = &strides[n];
                                let step = if rank > 0 { st[rank - 1] } else { 0 };
                                for (i, dst) in dst.chunks_exact_mut(w).enumerate() {
                                    let off = row_offset(out_shape, st, r0 + i);
                                    // SAFETY: offsets stay inside the operand (broadcast
                                    // strides).
                                    unsafe {
                                        load(inputs[n].ptr.add(off + col0 * step), step, dst)
                                    };
                                }
                            }
                            EwStep::Const(c) => dst.fill(c),
                            EwStep::Unary(op, a) => unary_map(op, reg(a), dst),
                            // SAFETY: the ISA is this CPU's (default_isa).
                            EwStep::Binary(op, a, b) => unsafe {
                                vmath::binary_map(isa, op, reg(a), reg(b), dst)
                            },
                        }
                    }
                    // SAFETY: this block (rows r0.. of one block of columns, contiguous in the
                    // output: several rows only when whole) belongs to this task; its inputs
                    // (the same elements, where an input shares the output's memory) were read
                    // above.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            regs[(steps - 1) * block..].as_ptr(),
                            out.get().add(r0 * last + col0),
                            len,
                        )
                    };
                }
            })
        });
}

thread_local! {
    /// An elementwise program's registers (`steps` blocks of `EW_COLS` values).
    static REGS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The other operand of a row chain's link.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Operand {
    /// A constant of the program itself (`EwStep::Const`).
    Value(f32),
    /// An input's one value for the row.
    Row(usize),
    /// An input's one row, the same for every row (a per-channel operand of channels-last
    /// data).
    Vector(usize),
}

/// One step of a row chain (`row_chain`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    /// `value = op(value, operand)` (`op(operand, value)` when `!value_first`).
    Binary {
        op: BinaryOp,
        operand: Operand,
        value_first: bool,
    },
    /// `value = max(value, value * k)`, `k` a `Value` or a `Row`: a LeakyRelu (a link that
    /// reads the chain's value twice, fused as `v`, `k`, mul, max).
    ScaledMax(Operand),
    Unary(UnaryOp),
}

/// `program` as a chain over one operand read along each row: every step after the first load
/// combines the chain's value with an operand constant along the row (a per-channel scale or
/// shift of channel-major data: a BatchNorm that could not be folded), or with one row every
/// row reads (the same of channels-last data), or maps it. Such a program runs in place over
/// blocks of output rows, one pass per step, instead of through L1-sized registers (three
/// times faster: DenseNet's BatchNorm + Relu programs). `(first operand, links)`, or None for
/// any other program.
///
/// No link reads an operand laid out as the output: that may be the operand whose memory the
/// output took over (the arena's in-place pairs), overwritten by the links before it. (One row
/// of same-shape operands is "the same row for every row" too: `x + exp(x)` in place read
/// `exp(x)` for `x`; the differential generator found it.)
fn row_chain(
    program: &EwProgram,
    out_shape: &[usize],
    strides: &[Vec<usize>],
) -> Option<(usize, Vec<Link>)> {
    let along_row = |n: usize| strides[n].last().copied().unwrap_or(0);
    let dense = super::elementwise::broadcast_strides(out_shape, out_shape);
    let across_rows =
        |n: usize| strides[n].iter().rev().skip(1).all(|s| *s == 0) && strides[n] != dense;
    // Registers holding a link's other operand: a constant of the program, an operand
    // constant along the row, or the same row for every row.
    let mut operand: Vec<Option<Operand>> = vec![None; program.steps.len()];
    // The chain's operand (read along the row) and the register holding its value so far; the
    // program may load constants before it (`x * k` fused as `k`, `x`, mul).
    let (mut first, mut value, mut links) = (None, 0, Vec::new());
    // The register the last link read (the chain's value before it), the first operand's
    // register, and the registers that load that operand again (the program may load an
    // operand once per use).
    let mut before = usize::MAX;
    let mut first_reg = usize::MAX;
    let mut reload = vec![false; program.steps.len()];
    for (i, step) in program.steps.iter().enumerate() {
        // A reload of the operand is the chain's value while no link has run yet.
        let norm = |r: usize| match reload[r] && value == first_reg {
            true => value,
            false => r,
        };
        let step = match *step {
            EwStep::Binary(op, a, b) => EwStep::Binary(op, norm(a), norm(b)),
            EwStep::Unary(op, a) => EwStep::Unary(op, norm(a)),
            ref other => other.clone(),
        };
        // The operand as it was before the last link (max(x, x * k) reads x again).
        let was_before = |r: usize| r == before || (reload[r] && before == first_reg);
        match step {
            // max(v, v * k) right after the mul by k: one link reading v once.
            EwStep::Binary(BinaryOp::Max, a, b)
                if first.is_some()
                    && ((a == value && was_before(b)) || (b == value && was_before(a))) =>
            {
                let Some(Link::Binary {
                    op: BinaryOp::Mul,
                    operand: k @ (Operand::Value(_) | Operand::Row(_)),
                    ..
                }) = links.last().copied()
                else {
                    return None;
                };
                links.pop();
                links.push(Link::ScaledMax(k));
                value = i;
            }
            EwStep::Load(n) if along_row(n) == 0 && strides[n] != dense => {
                operand[i] = Some(Operand::Row(n))
            }
            EwStep::Load(n) if along_row(n) == 1 && across_rows(n) => {
                operand[i] = Some(Operand::Vector(n))
            }
            EwStep::Load(n) if first.is_none() && along_row(n) == 1 => {
                first = Some(n);
                (value, first_reg) = (i, i);
            }
            EwStep::Const(c) => operand[i] = Some(Operand::Value(c)),
            EwStep::Load(n) if first == Some(n) => reload[i] = true,
            _ if first.is_none() => return None,
            EwStep::Binary(op, a, b) if (a == value) != (b == value) => {
                let (value_first, other) = if a == value { (true, b) } else { (false, a) };
                links.push(Link::Binary {
                    op,
                    operand: operand[other]?,
                    value_first,
                });
                (before, value) = (value, i);
            }
            EwStep::Unary(op, a) if a == value => {
                links.push(Link::Unary(op));
                value = i;
            }
            _ => return None,
        }
    }
    let first = first?;
    (value == program.steps.len() - 1 && !links.is_empty()).then_some((first, links))
}

/// Runs a row chain: per block of output rows (or piece of a long row), the first link reads
/// the chain's operand into the block, the others update it in place (the block stays in L1
/// between passes).
///
/// # Safety
/// As `elementwise`; `first` is read with step 1 along the rows, the binary links' operands
/// with step 0 (or, `vector`, step 1 and the same row for every row).
unsafe fn run_chain(
    isa: Isa,
    inputs: &[EwInput],
    first: usize,
    links: &[Link],
    out: OutPtr,
    (out_shape, strides): (&[usize], &[Vec<usize>]),
) {
    let rank = out_shape.len();
    let last = out_shape.last().copied().unwrap_or(1).max(1);
    let rows = out_shape.iter().product::<usize>() / last;
    let offset = |n: usize, r: usize| row_offset(out_shape, &strides[n], r);
    // Blocks of whole rows that stay in L1 from the first link to the last; a row longer
    // than a block goes in pieces of EW_COLS columns (a same-shape chain collapses to one row
    // of the whole tensor: in one piece, each link was a pass over memory on one thread).
    let width = last.min(EW_COLS);
    let pieces = last.div_ceil(width);
    let block = (EW_COLS / last).max(1);
    // A block of whole rows is one run of the output, and of the first operand when it is
    // laid out as the output.
    let dense = (0..rank).all(|d| strides[first][d] == out_shape[d + 1..].iter().product());
    let blocks_per_task = (PAR_GRAIN / (block * width)).max(1);
    let n_blocks = rows.div_ceil(block) * pieces;
    (0..n_blocks.div_ceil(blocks_per_task))
        .into_par_iter()
        .for_each(|t| {
            for b in t * blocks_per_task..((t + 1) * blocks_per_task).min(n_blocks) {
                let (rb, c0) = (b / pieces, (b % pieces) * width);
                let (r0, nr) = (rb * block, block.min(rows - rb * block));
                let w = width.min(last - c0);
                // SAFETY: columns c0..c0 + w of rows r0.. of the output belong to this task;
                // the first operand's (the output's own memory when they share it: same
                // shape) are read by the first link before or as they are written; the other
                // operands hold a value per row or one row.
                unsafe {
                    let dst = out.get().add(r0 * last + c0);
                    for (k, link) in links.iter().enumerate() {
                        // The link's source rows: the first operand's for the first link, else
                        // the block itself (in place).
                        let src = |i: usize| match k {
                            0 => inputs[first].ptr.add(offset(first, r0 + i) + c0),
                            _ => dst.add(i * last) as *const f32,
                        };
                        // Rows one run: whole rows, in place or of a dense first operand.
                        let whole = w == last && (k > 0 || dense);
                        // A `Value` or `Row` operand's value for row r0 + i.
                        let scalar = |k: Operand, i: usize| match k {
                            Operand::Value(c) => c,
                            Operand::Row(n) | Operand::Vector(n) => {
                                *inputs[n].ptr.add(offset(n, r0 + i))
                            }
                        };
                        match *link {
                            Link::Binary {
                                op,
                                operand: Operand::Vector(input),
                                value_first,
                            } => {
                                let v = inputs[input].ptr.add(offset(input, 0) + c0);
                                match whole {
                                    true => vmath::vector_op(
                                        isa,
                                        op,
                                        v,
                                        last,
                                        value_first,
                                        src(0),
                                        dst,
                                        nr,
                                    ),
                                    false => (0..nr).for_each(|i| {
                                        vmath::vector_op(
                                            isa,
                                            op,
                                            v,
                                            w,
                                            value_first,
                                            src(i),
                                            dst.add(i * last),
                                            1,
                                        )
                                    }),
                                }
                            }
                            // A constant: the block's whole rows as one run.
                            Link::Binary {
                                op,
                                operand: Operand::Value(c),
                                value_first,
                            } if whole => {
                                vmath::scalar_op(isa, op, c, value_first, src(0), dst, nr * last)
                            }
                            Link::Binary {
                                op,
                                operand,
                                value_first,
                            } => (0..nr).for_each(|i| {
                                let c = scalar(operand, i);
                                vmath::scalar_op(
                                    isa,
                                    op,
                                    c,
                                    value_first,
                                    src(i),
                                    dst.add(i * last),
                                    w,
                                );
                            }),
                            Link::ScaledMax(k) => (0..nr).for_each(|i| {
                                vmath::scaled_max(isa, scalar(k, i), src(i), dst.add(i * last), w);
                            }),
                            // Whole rows as one run, the first link's too (row by row, a
                            // 32-channel image's relu was 12,544 calls).
                            Link::Unary(op) if whole => {
                                let from = src(0);
                                let run = std::slice::from_raw_parts_mut(dst, nr * last);
                                if std::ptr::eq(from, dst) {
                                    vmath::unary_in_place(isa, op, run);
                                } else {
                                    let from = std::slice::from_raw_parts(from, nr * last);
                                    vmath::unary_map(isa, op, from, run);
                                }
                            }
                            Link::Unary(op) => (0..nr).for_each(|i| {
                                let from = std::slice::from_raw_parts(src(i), w);
                                let row = std::slice::from_raw_parts_mut(dst.add(i * last), w);
                                if std::ptr::eq(from.as_ptr(), row.as_ptr()) {
                                    vmath::unary_in_place(isa, op, row);
                                } else {
                                    vmath::unary_map(isa, op, from, row);
                                }
                            }),
                        }
                    }
                }
            }
        });
}

/// Where row `r` of `out_shape` (its last axis the row) starts in an operand of broadcast
/// `strides`.
fn row_offset(out_shape: &[usize], strides: &[usize], r: usize) -> usize {
    let (mut off, mut rem) = (0, r);
    for d in (0..out_shape.len().saturating_sub(1)).rev() {
        off += (rem % out_shape[d]) * strides[d];
        rem /= out_shape[d];
    }
    off
}

/// `out_shape` with adjacent axes merged wherever every operand's strides let it read the pair
/// as one axis; with each operand's strides over the merged shape.
fn collapse(out_shape: &[usize], inputs: &[EwInput]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut shape: Vec<usize> = Vec::with_capacity(out_shape.len());
    let mut strides: Vec<Vec<usize>> = vec![Vec::new(); inputs.len()];
    for (d, &n) in out_shape.iter().enumerate() {
        // An axis of one never steps: dropped, whatever an operand's stride along it (a
        // leading batch of one kept `[1, h * w, c]` apart from its per-channel operand, whose
        // stride there is not 0, and the program missed its row chain: 3x slower).
        if n == 1 {
            continue;
        }
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
pub const EW_COLS: usize = 1024;

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

#[cfg(test)]
mod tests {
    use super::super::types::Num;
    use super::*;

    /// Each program over `[2, 3, 37]` data (x along the rows, a and b one value per `[., c]`
    /// row), against the same arithmetic one element at a time; `chain`: whether `row_chain`
    /// takes it.
    #[test]
    fn row_chains_match_the_program_and_others_are_left_to_the_registers() {
        use BinaryOp::{Add, Div, Max, Min, Mul, Sub};
        use EwStep::{Binary, Load, Unary};
        let (shape, n) = ([2usize, 3, 37], 2 * 3 * 37);
        let x: Vec<f32> = (0..n).map(|i| (i as f32 - 100.0) / 7.0).collect();
        let (a, b) = ([0.5f32, -2.0, 3.0], [1.0f32, 0.25, -4.0]);
        // One value per column, the same for every row (a per-channel operand, channels-last).
        let v: Vec<f32> = (0..37).map(|j| (j as f32 - 18.5) / 5.0).collect();
        let cases: Vec<(Vec<EwStep>, bool)> = vec![
            // (x * a + b) then relu: a BatchNorm and its activation.
            (
                vec![
                    Load(0),
                    Load(1),
                    Binary(Mul, 0, 1),
                    Load(2),
                    Binary(Add, 2, 3),
                    Unary(UnaryOp::Relu, 4),
                ],
                true,
            ),
            // a - x, then b / that: the operand first.
            (
                vec![
                    Load(0),
                    Load(1),
                    Binary(Sub, 1, 0),
                    Load(2),
                    Binary(Div, 3, 2),
                ],
                true,
            ),
            // x * v + a, relu: a vector and a row constant; v - x, then that / v.
            (
                vec![
                    Load(0),
                    Load(3),
                    Binary(Mul, 0, 1),
                    Load(1),
                    Binary(Add, 2, 3),
                    Unary(UnaryOp::Relu, 4),
                ],
                true,
            ),
            (
                vec![
                    Load(0),
                    Load(3),
                    Binary(Sub, 1, 0),
                    Load(3),
                    Binary(Div, 2, 3),
                ],
                true,
            ),
            // Constants loaded before the operand (a Clip fused as lo, x, max, hi, min).
            (
                vec![
                    Load(1),
                    Load(0),
                    Binary(Max, 1, 0),
                    Load(2),
                    Binary(Min, 2, 3),
                ],
                true,
            ),
            // Constants of the program: (x - 3) * a, clamped below at 0.5.
            (
                vec![
                    Load(0),
                    EwStep::Const(3.0),
                    Binary(Sub, 0, 1),
                    Load(1),
                    Binary(Mul, 3, 2),
                    EwStep::Const(0.5),
                    Binary(Max, 5, 4),
                ],
                true,
            ),
            // LeakyRelu as max(x, x * 0.1), either operand order, then a per-row scale.
            (
                vec![
                    Load(0),
                    EwStep::Const(0.1),
                    Binary(Mul, 0, 1),
                    Binary(Max, 0, 2),
                    Load(1),
                    Binary(Mul, 3, 4),
                ],
                true,
            ),
            (
                vec![
                    Load(0),
                    EwStep::Const(0.1),
                    Binary(Mul, 1, 0),
                    Binary(Max, 2, 0),
                ],
                true,
            ),
            // The operand loaded once per use, before the mul and after it.
            (
                vec![
                    Load(0),
                    EwStep::Const(0.1),
                    Load(0),
                    Binary(Mul, 2, 1),
                    Binary(Max, 0, 3),
                ],
                true,
            ),
            (
                vec![
                    Load(0),
                    EwStep::Const(0.1),
                    Binary(Mul, 0, 1),
                    Load(0),
                    Binary(Max, 3, 2),
                ],
                true,
            ),
            // The slope an operand's value per row (a PRelu of channel-major data).
            (
                vec![Load(0), Load(1), Binary(Mul, 0, 1), Binary(Max, 2, 0)],
                true,
            ),
            // max(x * 0.1, a) is max with a constant, not with x: no scaled max.
            (
                vec![
                    Load(0),
                    EwStep::Const(0.1),
                    Binary(Mul, 0, 1),
                    Load(1),
                    Binary(Max, 2, 3),
                ],
                true,
            ),
            // x * x is not a chain over constants.
            (
                vec![Load(0), Binary(Mul, 0, 0), Load(1), Binary(Add, 1, 2)],
                false,
            ),
        ];
        let eval = |steps: &[EwStep], i: usize| {
            let row = i / 37;
            let mut r = vec![0.0f32; steps.len()];
            for (k, s) in steps.iter().enumerate() {
                r[k] = match *s {
                    Load(0) => x[i],
                    Load(1) => a[row % 3],
                    Load(2) => b[row % 3],
                    Load(_) => v[i % 37],
                    Binary(op, p, q) => f32::binary(op, r[p], r[q]),
                    Unary(op, p) => super::super::math::unary(op, r[p]),
                    EwStep::Const(c) => c,
                };
            }
            r[steps.len() - 1]
        };
        for (steps, chain) in cases {
            let program = EwProgram {
                steps: steps.clone(),
            };
            let ins = vec![
                EwInput {
                    ptr: x.as_ptr(),
                    owned: None,
                    strides: vec![111, 37, 1],
                },
                EwInput {
                    ptr: a.as_ptr(),
                    owned: None,
                    strides: vec![0, 1, 0],
                },
                EwInput {
                    ptr: b.as_ptr(),
                    owned: None,
                    strides: vec![0, 1, 0],
                },
                EwInput {
                    ptr: v.as_ptr(),
                    owned: None,
                    strides: vec![0, 0, 1],
                },
            ];
            let (cs, st) = collapse(&shape, &ins);
            assert_eq!(cs, [2, 3, 37]);
            assert_eq!(row_chain(&program, &cs, &st).is_some(), chain, "{program}");
            let mut out = vec![f32::NAN; n];
            // SAFETY: every operand covers its broadcast shape; out holds n values.
            unsafe { elementwise(&program, &ins, OutPtr(out.as_mut_ptr()), n, &shape) };
            for (i, o) in out.iter().enumerate() {
                let want = eval(&steps, i);
                assert!(
                    (o - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{program} [{i}]: {o} vs {want}"
                );
            }
        }
    }

    #[test]
    fn a_batch_of_one_keeps_a_per_channel_operand_on_the_row_chain() {
        // relu(x) * v, relu, over [1, 6, 5, 8] with v [1, 1, 1, 8]: v's stride along the
        // batch axis of one is not 0, and the axis must not keep the rows apart.
        use EwStep::{Binary, Load, Unary};
        let (shape, n) = ([1usize, 6, 5, 8], 240);
        let x: Vec<f32> = (0..n).map(|i| (i as f32 - 120.0) / 9.0).collect();
        let v: Vec<f32> = (0..8).map(|j| j as f32 - 3.5).collect();
        let steps = vec![
            Load(0),
            Unary(UnaryOp::Relu, 0),
            Load(1),
            Binary(BinaryOp::Mul, 1, 2),
            Unary(UnaryOp::Relu, 3),
        ];
        let program = EwProgram { steps };
        let ins = [
            (
                x.as_ptr(),
                super::super::elementwise::broadcast_strides(&shape, &shape),
            ),
            (
                v.as_ptr(),
                super::super::elementwise::broadcast_strides(&[1, 1, 1, 8], &shape),
            ),
        ]
        .map(|(ptr, strides)| EwInput {
            ptr,
            owned: None,
            strides,
        });
        let (cs, st) = collapse(&shape, &ins);
        assert_eq!(cs, [30, 8]);
        assert!(row_chain(&program, &cs, &st).is_some());
        let mut out = vec![f32::NAN; n];
        // SAFETY: every operand covers its broadcast shape; out holds n values.
        unsafe { elementwise(&program, &ins, OutPtr(out.as_mut_ptr()), n, &shape) };
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, (x[i].max(0.0) * v[i % 8]).max(0.0), "[{i}]");
        }
    }

    #[test]
    fn long_rows_run_in_pieces() {
        // Rows of 2,500 (EW_COLS pieces and a tail): a per-row constant first, the operand,
        // then a per-column vector and a relu; NaN through the NaN-propagating max.
        use EwStep::{Binary, Load, Unary};
        let (rows, cols) = (2usize, 2500usize);
        let mut x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
            .collect();
        x[1234] = f32::NAN;
        let a = [0.5f32, -1.5];
        let v: Vec<f32> = (0..cols).map(|j| (j % 13) as f32 - 6.0).collect();
        let program = EwProgram {
            steps: vec![
                Load(1),
                Load(0),
                Binary(BinaryOp::Max, 1, 0),
                Load(2),
                Binary(BinaryOp::Mul, 2, 3),
                Unary(UnaryOp::Relu, 4),
            ],
        };
        let ins = [
            EwInput {
                ptr: x.as_ptr(),
                owned: None,
                strides: vec![cols, 1],
            },
            EwInput {
                ptr: a.as_ptr(),
                owned: None,
                strides: vec![1, 0],
            },
            EwInput {
                ptr: v.as_ptr(),
                owned: None,
                strides: vec![0, 1],
            },
        ];
        let (cs, st) = collapse(&[rows, cols], &ins);
        assert!(row_chain(&program, &cs, &st).is_some());
        let mut out = vec![0.0f32; rows * cols];
        // SAFETY: every operand covers its broadcast shape; out holds rows * cols values.
        unsafe {
            elementwise(
                &program,
                &ins,
                OutPtr(out.as_mut_ptr()),
                out.len(),
                &[rows, cols],
            )
        };
        for (i, o) in out.iter().enumerate() {
            let m = f32::binary(BinaryOp::Max, a[i / cols], x[i]);
            let want = super::super::math::unary(UnaryOp::Relu, m * v[i % cols]);
            assert!(
                o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()),
                "[{i}]: {o} vs {want}"
            );
        }
        assert!(out[1234].is_nan());
    }

    #[test]
    fn a_program_in_place_over_its_operand_reads_it_before_writing() {
        // x + exp(x) over one row, the output over x (an arena in-place pair): not a row
        // chain (its second link would read x after the first overwrote it).
        use EwStep::{Binary, Load, Unary};
        let program = EwProgram {
            steps: vec![
                Load(0),
                Unary(UnaryOp::Exp, 0),
                Load(0),
                Binary(BinaryOp::Add, 1, 2),
            ],
        };
        let shape = [1usize, 40];
        let mut x: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) / 9.0).collect();
        let want: Vec<f32> = x.iter().map(|v| v.exp() + v).collect();
        let ins = [EwInput {
            ptr: x.as_ptr(),
            owned: None,
            strides: vec![40, 1],
        }];
        let (cs, st) = collapse(&shape, &ins);
        assert!(row_chain(&program, &cs, &st).is_none());
        // SAFETY: x holds the 40 values; the output is x itself, as an in-place pair is.
        unsafe { elementwise(&program, &ins, OutPtr(x.as_mut_ptr()), 40, &shape) };
        for (g, w) in x.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
}
