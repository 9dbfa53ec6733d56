//! Reductions (sum, mean, max) over any set of axes.

use rayon::prelude::*;
use rlx_ir::ReduceOp;

use super::PAR_GRAIN;
use super::isa::Isa;
use super::types::Num;

/// `T::binary(Max, acc, v)` (NaN when either is) as one select, which the loops vectorize:
/// a NaN `acc` stays (no `v` is greater), a NaN `v` is taken.
#[inline(always)]
fn max_keeping_nan<T: Num>(acc: T, v: T) -> T {
    #[allow(clippy::eq_op)] // NaN is the one value unequal to itself
    let nan = v != v;
    if v > acc || nan { v } else { acc }
}

/// Reduces `x` of `shape` over `axes` into `out` (one element per kept-index combination).
/// `isa`: the vector unit the row folds are compiled for (the same steps on every one).
pub fn reduce<T: Num + std::ops::Add<Output = T>>(
    isa: Isa,
    op: ReduceOp,
    x: &[T],
    shape: &[usize],
    axes: &[usize],
    out: &mut [T],
) {
    let rank = shape.len();
    let bop = match op {
        ReduceOp::Max => rlx_ir::BinaryOp::Max,
        _ => rlx_ir::BinaryOp::Add,
    };
    let init = if op == ReduceOp::Max {
        T::LOWEST
    } else {
        T::default()
    };
    match contiguous_axes(shape, axes) {
        Some((outer, count, inner)) if inner > 1 => {
            return reduce_rows(isa, (init, bop), x, (outer, count, inner), out);
        }
        // Trailing axes (a global pool): each output folds one contiguous run.
        Some((_, count, _)) => {
            let per_task = PAR_GRAIN.div_ceil(count.max(1)).max(1);
            out.par_chunks_mut(per_task).enumerate().for_each(|(t, o)| {
                for (i, o) in o.iter_mut().enumerate() {
                    let at = (t * per_task + i) * count;
                    let run = &x[at..at + count];
                    // The op a constant in each closure (see reduce_rows).
                    *o = match bop {
                        rlx_ir::BinaryOp::Add => fold_lanes(run, init, |a, b| a + b),
                        rlx_ir::BinaryOp::Max => fold_lanes(run, init, max_keeping_nan),
                        op => fold_lanes(run, init, |a, b| T::binary(op, a, b)),
                    };
                }
            });
            return;
        }
        None => {}
    }
    let mut strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let red_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
    let red_strides: Vec<usize> = axes.iter().map(|&a| strides[a]).collect();
    let count: usize = red_shape.iter().product();
    let chunk = PAR_GRAIN.div_ceil(count.max(1)).max(1);
    out.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
        for (oi, o) in o.iter_mut().enumerate() {
            // Input offset of this output element's first reduced element.
            let (mut base, mut rem) = (0, ci * chunk + oi);
            for &k in kept.iter().rev() {
                base += (rem % shape[k]) * strides[k];
                rem /= shape[k];
            }
            // In blocks, as `fold_rows` does.
            let (mut acc, mut block) = (init, init);
            for j in 0..count {
                let (mut off, mut r) = (base, j);
                for d in (0..red_shape.len()).rev() {
                    off += (r % red_shape[d]) * red_strides[d];
                    r /= red_shape[d];
                }
                block = T::binary(bop, block, x[off]);
                if (j + 1) % BLOCK_ROWS == 0 || j + 1 == count {
                    acc = T::binary(bop, acc, block);
                    block = init;
                }
            }
            *o = acc;
        }
    });
}

/// Folds `run` from `init` with `f` in 32 interleaved partial results, combined at the end: a
/// loop the compiler vectorizes (a sequential fold is one long dependency chain; 32 lanes are
/// eight independent vectors on the SSE2 baseline, 8 were two and waited on their latency).
/// An f32 sum rounds differently from the sequential order, as numpy's pairwise sum does.
#[inline]
fn fold_lanes<T: Num>(run: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    const LANES: usize = 32;
    let mut acc = [init; LANES];
    let chunks = run.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = f(*a, *v);
        }
    }
    let folded = acc.iter().fold(init, |r, a| f(r, *a));
    rest.iter().fold(folded, |r, v| f(r, *v))
}

/// `[outer, count, inner]` when `axes` are consecutive (sorted) dims of `shape`.
fn contiguous_axes(shape: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let (&first, &last) = (axes.first()?, axes.last()?);
    if axes.windows(2).any(|w| w[1] != w[0] + 1) || last >= shape.len() {
        return None;
    }
    let outer = shape[..first].iter().product();
    let count = shape[first..=last].iter().product();
    let inner = shape[last + 1..].iter().product();
    Some((outer, count, inner))
}

/// Reduces the middle axis of `[outer, count, inner]` data a whole row at a time (starting
/// from `init`, combining with `bop`): each output row accumulates `count` input rows with a
/// loop that vectorizes.
fn reduce_rows<T: Num + std::ops::Add<Output = T>>(
    isa: Isa,
    (init, bop): (T, rlx_ir::BinaryOp),
    x: &[T],
    shape: (usize, usize, usize),
    out: &mut [T],
) {
    // The op chosen once, outside the loops: a `T::binary` per element keeps the compiler
    // from vectorizing them (a 112x112x32 global mean took 290 us).
    match bop {
        rlx_ir::BinaryOp::Add => fold_rows(isa, init, |a, b| a + b, x, shape, out),
        rlx_ir::BinaryOp::Max => fold_rows(isa, init, max_keeping_nan, x, shape, out),
        op => fold_rows(isa, init, |a, b| T::binary(op, a, b), x, shape, out),
    }
}

fn fold_rows<T: Num>(
    isa: Isa,
    init: T,
    f: impl Fn(T, T) -> T + Sync,
    x: &[T],
    (outer, count, inner): (usize, usize, usize),
    out: &mut [T],
) {
    if let Some(per_task) = block_split(outer, count, inner) {
        return fold_blocks_split(isa, init, f, x, (outer, count, inner), per_task, out);
    }
    let per_task = PAR_GRAIN.div_ceil((count * inner).max(1)).max(1);
    out.par_chunks_mut(inner * per_task)
        .enumerate()
        .for_each_init(Vec::new, |block_sums, (t, o)| {
            for (i, o) in o.chunks_mut(inner).enumerate() {
                let o0 = t * per_task + i;
                let rows = &x[o0 * count * inner..(o0 + 1) * count * inner];
                // Rows fold in order within blocks of BLOCK_ROWS, each block's result then
                // folded into the total: a sum of 2,100 rows one after another lost 1e-4 of
                // its value to rounding; blocks keep it near 1e-5. The blocks start at fixed
                // rows, so a padded bucket's extra zero rows still leave every sum bit for bit
                // as it was. A few channels' sums stay in registers across the rows: in
                // memory, each row's load of them waits for the last row's store (a 112 x 112
                // x 32 global mean: 43 -> 12 us).
                o.fill(init);
                for block in rows.chunks(BLOCK_ROWS * inner) {
                    fold_block(isa, init, &f, block, (inner, 0..inner), o, block_sums);
                }
            }
        });
    debug_assert_eq!(out.len(), outer * inner);
}

/// Rows a sum folds one after another before its result joins the total.
const BLOCK_ROWS: usize = 256;

/// Blocks of rows per task where fewer outputs than threads would leave threads idle (a
/// batch-1 global pool of a channels-last image is one output row: a 56 x 56 x 144 mean took
/// 48 us on one thread of two): about two tasks per thread.
fn block_split(outer: usize, count: usize, inner: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    let large = count.saturating_mul(inner) >= 2 * PAR_GRAIN;
    let blocks = count.div_ceil(BLOCK_ROWS);
    if outer >= threads || !large || blocks < 2 {
        return None;
    }
    Some(blocks.div_ceil((2 * threads).div_ceil(outer.max(1))))
}

/// `fold_rows` with each output row's blocks of rows folded `per_task` blocks to a task, each
/// block's result kept, then every row's results folded in block order: the same steps, in the
/// same order, as one task folding the blocks one after another, so the sums do not depend on
/// the split. (Split by columns instead, two threads each read every row's lines: slower than
/// one thread.)
fn fold_blocks_split<T: Num>(
    isa: Isa,
    init: T,
    f: impl Fn(T, T) -> T + Sync,
    x: &[T],
    (outer, count, inner): (usize, usize, usize),
    per_task: usize,
    out: &mut [T],
) {
    let blocks = count.div_ceil(BLOCK_ROWS);
    let mut folded = vec![init; outer * blocks * inner];
    let span = BLOCK_ROWS * inner;
    folded
        .par_chunks_mut(per_task * inner)
        .enumerate()
        .for_each_init(Vec::new, |sums, (t, results)| {
            for (i, o) in results.chunks_mut(inner).enumerate() {
                let (o0, b) = ((t * per_task + i) / blocks, (t * per_task + i) % blocks);
                let rows = &x[o0 * count * inner..(o0 + 1) * count * inner];
                let block = &rows[b * span..((b + 1) * span).min(rows.len())];
                fold_block(isa, init, &f, block, (inner, 0..inner), o, sums);
            }
        });
    for (o, results) in out.chunks_mut(inner).zip(folded.chunks(blocks * inner)) {
        o.fill(init);
        for r in results.chunks(inner) {
            for (a, v) in o.iter_mut().zip(r) {
                *a = f(*a, *v);
            }
        }
    }
}

/// `fold_columns` compiled for `isa`'s vector registers: the same loops (each column folds its
/// rows in order), but a strip's 64 sums fit in 4 or 8 registers, where the 16 of the x86-64
/// baseline held them only by spilling (a 56 x 56 x 144 global mean: 48 us on one thread).
#[allow(clippy::too_many_arguments)]
fn fold_block<T: Num>(
    isa: Isa,
    init: T,
    f: &impl Fn(T, T) -> T,
    rows: &[T],
    at: (usize, std::ops::Range<usize>),
    o: &mut [T],
    sums: &mut Vec<T>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        /// `fold_columns` with `$feature`'s registers.
        macro_rules! compiled_for {
            ($name:ident, $feature:literal) => {
                #[target_feature(enable = $feature)]
                fn $name<T: Num>(
                    init: T,
                    f: &impl Fn(T, T) -> T,
                    rows: &[T],
                    at: (usize, std::ops::Range<usize>),
                    o: &mut [T],
                    sums: &mut Vec<T>,
                ) {
                    fold_columns(init, f, rows, at, o, sums)
                }
            };
        }
        compiled_for!(avx512, "avx512f");
        compiled_for!(avx2, "avx2");
        // SAFETY: an ISA is only chosen on a CPU that has it (`Isa::resolve`).
        match isa {
            Isa::Avx512 => return unsafe { avx512(init, f, rows, at, o, sums) },
            Isa::Avx2 => return unsafe { avx2(init, f, rows, at, o, sums) },
            Isa::Scalar => {}
        }
    }
    fold_columns(init, f, rows, at, o, sums)
}

/// `o[j] = f(o[j], init folded with column cols.start + j of every width-wide row of rows, in
/// order)`: strips of 64 columns with their sums in registers (a 14 x 14 x 256 global mean
/// folded in memory took 4.8 us), then a rest of 16 to 48 in registers or any other in `sums`
/// (reused). Wider than `STRIPPED`, the columns fold in memory, in order: a block of such rows
/// would not stay in L2 while the strips pass over it again and again.
#[inline(always)]
fn fold_columns<T: Num>(
    init: T,
    f: &impl Fn(T, T) -> T,
    rows: &[T],
    (width, cols): (usize, std::ops::Range<usize>),
    o: &mut [T],
    sums: &mut Vec<T>,
) {
    const STRIP: usize = 64;
    const STRIPPED: usize = 1024;
    let whole = match cols.len() <= STRIPPED {
        true => cols.len() / STRIP * STRIP,
        false => 0,
    };
    for s in (0..whole).step_by(STRIP) {
        let strip = &mut o[s..s + STRIP];
        fold_rows_in_registers::<T, STRIP>(init, f, rows, (width, cols.start + s), strip);
    }
    // A rest of whole vectors in registers too (a task's 16 or 48 columns of a split pool).
    let (at, rest) = (cols.start + whole, &mut o[whole..]);
    match rest.len() {
        _ if whole == 0 && cols.len() > STRIPPED => {}
        16 => return fold_rows_in_registers::<T, 16>(init, f, rows, (width, at), rest),
        24 => return fold_rows_in_registers::<T, 24>(init, f, rows, (width, at), rest),
        32 => return fold_rows_in_registers::<T, 32>(init, f, rows, (width, at), rest),
        48 => return fold_rows_in_registers::<T, 48>(init, f, rows, (width, at), rest),
        _ => {}
    }
    if whole < cols.len() {
        let rest = cols.start + whole..cols.end;
        sums.clear();
        sums.resize(rest.len(), init);
        for row in rows.chunks_exact(width) {
            for (a, v) in sums.iter_mut().zip(&row[rest.clone()]) {
                *a = f(*a, *v);
            }
        }
        for (o, a) in o[whole..].iter_mut().zip(sums.iter()) {
            *o = f(*o, *a);
        }
    }
}

/// `o[j] = f(o[j], init folded with column s + j of every width-wide row of rows, in order)`
/// for the `N` columns from `s`, the block's sums in a local array.
#[inline(always)]
fn fold_rows_in_registers<T: Num, const N: usize>(
    init: T,
    f: &impl Fn(T, T) -> T,
    rows: &[T],
    (width, s): (usize, usize),
    o: &mut [T],
) {
    let mut acc = [init; N];
    for row in rows.chunks_exact(width) {
        for (a, v) in acc.iter_mut().zip(&row[s..s + N]) {
            *a = f(*a, *v);
        }
    }
    for (o, a) in o.iter_mut().zip(&acc) {
        *o = f(*o, *a);
    }
}

/// Mean is the f32 sum divided by the count.
pub fn mean(isa: Isa, x: &[f32], shape: &[usize], axes: &[usize], out: &mut [f32]) {
    reduce(isa, ReduceOp::Sum, x, shape, axes, out);
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let inv = 1.0 / count as f32;
    out.iter_mut().for_each(|v| *v *= inv);
}

/// `out[o, i]` = the index along the middle axis (of `n`) of the extreme element of
/// `x[o, :, i]` (`[outer, n, inner]`): the largest with `max`, else the smallest; a NaN is the
/// extreme (the first one); among equals the first, or the last with `last`.
pub fn arg_reduce<T: Copy + PartialOrd>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    max: bool,
    last: bool,
    out: &mut [i64],
) {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    if n == 0 {
        out.fill(0);
        return;
    }
    #[allow(clippy::eq_op)] // `v != v` is the NaN test of any PartialOrd type
    let is_nan = |v: T| v != v;
    for (r, o) in out.iter_mut().enumerate() {
        let (outer, i) = (r / inner.max(1), r % inner.max(1));
        let at = |j: usize| x[(outer * n + j) * inner + i];
        let mut best = (0usize, at(0));
        for j in 1..n {
            let v = at(j);
            if is_nan(best.1) {
                break;
            }
            let strictly = if max { v > best.1 } else { v < best.1 };
            if is_nan(v) || strictly || (last && v == best.1) {
                best = (j, v);
            }
        }
        *o = best.0 as i64;
    }
}

/// `out` (`[.., k, ..]`): the indices of the `k` largest (or smallest) elements of each lane of
/// `x` along `axis`, in order, the lower index first among equal ones, NaN above every number
/// (ONNX TopK). A `k` beyond the axis is an error (the axis may be sized only at run time).
pub fn top_k<T: Copy + PartialOrd + Send + Sync>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    k: usize,
    largest: bool,
    out: &mut [i64],
) -> crate::Result<()> {
    let n = shape[axis];
    if k > n {
        return Err(crate::Error::Shape(format!(
            "top_k: k = {k} is larger than axis {axis} of size {n}"
        )));
    }
    let inner: usize = shape[axis + 1..].iter().product();
    if k == 0 || out.is_empty() {
        return Ok(());
    }
    #[allow(clippy::eq_op)] // `v != v` is the NaN test of any PartialOrd type
    let is_nan = |v: T| v != v;
    // Before: ranks first in the output order; the index breaks ties.
    let before = |(i, a): (usize, T), (j, b): (usize, T)| {
        let by_value = match (is_nan(a), is_nan(b)) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
        };
        let by_value = if largest {
            by_value.reverse()
        } else {
            by_value
        };
        by_value.then(i.cmp(&j))
    };
    out.par_chunks_mut(k * inner.max(1))
        .enumerate()
        .for_each_init(Vec::new, |lane: &mut Vec<(usize, T)>, (outer, block)| {
            for i in 0..inner {
                lane.clear();
                lane.extend((0..n).map(|j| (j, x[(outer * n + j) * inner + i])));
                if k < n {
                    lane.select_nth_unstable_by(k - 1, |p, q| before(*p, *q));
                }
                lane[..k].sort_unstable_by(|p, q| before(*p, *q));
                for (r, (j, _)) in lane[..k].iter().enumerate() {
                    block[r * inner + i] = *j as i64;
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use rlx_ir::ReduceOp;

    #[test]
    fn a_global_pool_sums_alike_on_every_vector_unit_and_split() {
        // One output row of 144 (strips and a rest), 40 (a rest alone), 1,100 (past the
        // strips) and 64 columns over blocks of rows, the last one short; two rows of 144 on
        // four threads.
        let cases = [
            (1, 300, 144),
            (1, 900, 40),
            (1, 600, 1100),
            (1, 1100, 64),
            (2, 300, 144),
        ];
        for (outer, count, inner) in cases {
            let x: Vec<f32> = (0..outer * count * inner)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
                .collect();
            let shape = [outer, count, inner];
            let run = |threads: usize, op: ReduceOp, isa: super::Isa| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = vec![0.0f32; outer * inner];
                let split = pool.install(|| {
                    super::reduce(isa, op, &x, &shape, &[1], &mut out);
                    super::block_split(outer, count, inner).is_some()
                });
                // Split wherever threads outnumber the rows (the path under test).
                assert_eq!(split, threads > outer, "{shape:?} on {threads} threads");
                out
            };
            for op in [ReduceOp::Sum, ReduceOp::Max] {
                // Every vector unit and split folds the same steps: equal bit for bit.
                let one = run(1, op, super::Isa::Scalar);
                for isa in super::Isa::available() {
                    for threads in [1, 2, 4] {
                        let got = run(threads, op, isa);
                        assert_eq!(got, one, "{op:?} {shape:?} {isa} on {threads} threads");
                    }
                }
                for (j, v) in one.iter().enumerate() {
                    let (o, c) = (j / inner, j % inner);
                    let col = (0..count).map(|r| x[(o * count + r) * inner + c] as f64);
                    let want = match op {
                        ReduceOp::Max => col.fold(f64::MIN, f64::max),
                        _ => col.sum(),
                    };
                    assert!((*v as f64 - want).abs() <= 1e-3, "{op:?} {shape:?} [{j}]");
                }
            }
        }
    }
}
