//! Elementwise kernels: unary maps, casts, and broadcasting binary / compare / where.

use rayon::prelude::*;
use rlx_ir::{BinaryOp, CompareOp, UnaryOp};

use super::PAR_GRAIN;
use super::types::{CastTo, Num};
use super::vmath::unary_map_default as unary_map;

/// Row-major strides of `shape` in elements, right-aligned against `out`, with 0 for dims
/// that broadcast (size 1 in `shape`, larger in `out`).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[pad + i] = if shape[i] == 1 && out[pad + i] != 1 {
            0
        } else {
            s
        };
        s *= shape[i];
    }
    strides
}

/// Iterates `out` by rows of its last dim, in parallel chunks, handing `f` the row, its index
/// and, per input, the offset of the row's first element and the step along the row.
fn for_rows<O: Send, const K: usize>(
    out: &mut [O],
    out_shape: &[usize],
    strides: [&[usize]; K],
    f: impl Fn(&mut [O], [(usize, usize); K]) + Sync,
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
            for (ri, row) in chunk.chunks_mut(last).enumerate() {
                let mut offs = [(0usize, 0usize); K];
                let mut rem = ci * rows_per_chunk + ri;
                for d in (0..rank.saturating_sub(1)).rev() {
                    let idx = rem % out_shape[d];
                    rem /= out_shape[d];
                    for k in 0..K {
                        offs[k].0 += idx * strides[k][d];
                    }
                }
                if rank > 0 {
                    for k in 0..K {
                        offs[k].1 = strides[k][rank - 1];
                    }
                }
                f(row, offs);
            }
        });
}

/// `out[i] = f(a[i'], b[i''])` with numpy broadcasting.
fn map2<A: Copy + Sync, B: Copy + Sync, O: Send>(
    a: &[A],
    sa: &[usize],
    b: &[B],
    sb: &[usize],
    out: &mut [O],
    so: &[usize],
    f: impl Fn(A, B) -> O + Sync,
) {
    if a.len() == out.len() && b.len() == out.len() {
        out.par_chunks_mut(PAR_GRAIN)
            .enumerate()
            .for_each(|(ci, o)| {
                let s = ci * PAR_GRAIN;
                o.iter_mut()
                    .enumerate()
                    .for_each(|(i, o)| *o = f(a[s + i], b[s + i]));
            });
        return;
    }
    let (ta, tb) = (broadcast_strides(sa, so), broadcast_strides(sb, so));
    for_rows(out, so, [&ta, &tb], |row, [(ao, ai), (bo, bi)]| {
        let n = row.len();
        // Contiguous or broadcast rows as plain slices, so the loops vectorize.
        match (ai, bi) {
            (1, 1) => row
                .iter_mut()
                .zip(&a[ao..ao + n])
                .zip(&b[bo..bo + n])
                .for_each(|((o, x), y)| *o = f(*x, *y)),
            (1, 0) => {
                let y = b[bo];
                row.iter_mut()
                    .zip(&a[ao..ao + n])
                    .for_each(|(o, x)| *o = f(*x, y))
            }
            (0, 1) => {
                let x = a[ao];
                row.iter_mut()
                    .zip(&b[bo..bo + n])
                    .for_each(|(o, y)| *o = f(x, *y))
            }
            _ => row
                .iter_mut()
                .enumerate()
                .for_each(|(j, o)| *o = f(a[ao + j * ai], b[bo + j * bi])),
        }
    });
}

/// `out = x * scale + b`, `b` broadcast to `x`'s shape.
pub fn scale_add(x: &[f32], scale: f32, b: &[f32], sb: &[usize], out: &mut [f32], shape: &[usize]) {
    map2(x, shape, b, sb, out, shape, |x, b| x * scale + b);
}

pub fn binary<T: Num>(
    op: BinaryOp,
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out: &mut [T],
    so: &[usize],
) {
    // One instance per op, so the op is a constant inside the loop rather than a per-element
    // match.
    macro_rules! per_op {
        ($($op:ident),*) => {
            match op {
                $(BinaryOp::$op => map2(a, sa, b, sb, out, so, |x, y| T::binary(BinaryOp::$op, x, y)),)*
            }
        };
    }
    per_op!(Add, Sub, Mul, Div, Pow, Max, Min);
}

pub fn compare<T: Num>(
    op: CompareOp,
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out: &mut [bool],
    so: &[usize],
) {
    map2(a, sa, b, sb, out, so, |x, y| T::compare(op, x, y));
}

/// Equality on bools (the only comparisons bool supports meaningfully besides order).
pub fn compare_bool(
    op: CompareOp,
    a: &[bool],
    sa: &[usize],
    b: &[bool],
    sb: &[usize],
    out: &mut [bool],
    so: &[usize],
) {
    map2(a, sa, b, sb, out, so, |x, y| match op {
        CompareOp::Eq => x == y,
        CompareOp::Ne => x != y,
        CompareOp::Lt => !x & y,
        CompareOp::Le => x <= y,
        CompareOp::Gt => x & !y,
        CompareOp::Ge => x >= y,
    });
}

#[allow(clippy::too_many_arguments)]
pub fn where_<T: Copy + Send + Sync>(
    c: &[bool],
    sc: &[usize],
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    out: &mut [T],
    so: &[usize],
) {
    let (tc, ta, tb) = (
        broadcast_strides(sc, so),
        broadcast_strides(sa, so),
        broadcast_strides(sb, so),
    );
    for_rows(
        out,
        so,
        [&tc, &ta, &tb],
        |row, [(co, ci), (ao, ai), (bo, bi)]| {
            for (j, o) in row.iter_mut().enumerate() {
                *o = if c[co + j * ci] {
                    a[ao + j * ai]
                } else {
                    b[bo + j * bi]
                };
            }
        },
    );
}

pub fn unary(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(PAR_GRAIN)
        .zip(x.par_chunks(PAR_GRAIN))
        .for_each(|(o, x)| {
            unary_map(op, x, o);
        });
}

pub fn cast<A: CastTo<B> + Copy + Sync, B: Send>(x: &[A], out: &mut [B]) {
    out.par_chunks_mut(PAR_GRAIN)
        .zip(x.par_chunks(PAR_GRAIN))
        .for_each(|(o, x)| {
            o.iter_mut().zip(x).for_each(|(o, x)| *o = x.cast());
        });
}
