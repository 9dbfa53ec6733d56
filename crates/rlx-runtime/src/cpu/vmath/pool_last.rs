//! Max and average pooling over channels-last rows: each output position reduces its window's
//! positions channel by channel (plain loops over contiguous channels, compiled per ISA).

use super::lanes::F32s;
use super::per_isa;
use crate::cpu::isa::Isa;

/// The window of one output position on one axis: first tap inside the input, taps inside
/// the input, taps inside the padded input (`pooling::taps`).
pub type AxisTaps = (usize, usize, usize);

/// One output row of a channels-last pool: `rows` is the row axis' taps, `cols[ox]` each
/// column's, `(s, d, p)` the column stride, dilation and begin pad, `(sy, dy, py)` the row's.
#[derive(Clone, Copy)]
pub struct PoolRow<'a> {
    pub iw: usize,
    pub c: usize,
    pub oy: usize,
    pub rows: AxisTaps,
    pub cols: &'a [AxisTaps],
    pub row_step: (usize, usize, usize),
    pub col_step: (usize, usize, usize),
    pub max: bool,
    pub count_include_pad: bool,
}

per_isa!(
    /// `out[ox * c + ch]`: the max, or the average, of channel `ch` over the window of output
    /// position `(row.oy, ox)`; NaN propagates through a max; an empty window gives -inf
    /// (max) or 0 (average).
    ///
    /// # Safety
    /// `isa` is available on this CPU; `x` holds the image (`[ih, iw, c]`) the taps index and
    /// `out` `cols.len() * c` floats.
    pub unsafe fn pool_row(row: &PoolRow, x: &[f32], out: &mut [f32]) => pool_row_v
);

#[inline(always)]
unsafe fn pool_row_v<V: F32s>(row: &PoolRow, x: &[f32], out: &mut [f32]) {
    let c = row.c;
    let (sy, dy, py) = row.row_step;
    let (sx, dx, px) = row.col_step;
    let (fy, ny, py_in) = row.rows;
    let body = c - c % V::N;
    // The taps of a position whose window lies inside the input across (the most taps), from
    // the window's first column: made once per row, not per position.
    let kw = row.cols.iter().map(|t| t.1).max().unwrap_or(0);
    let inner: Vec<usize> = (fy..fy + ny)
        .flat_map(|ty| {
            let iy = row.oy * sy + ty * dy - py;
            (0..kw).map(move |tx| (iy * row.iw + tx * dx) * c)
        })
        .collect();
    let mut edge: Vec<usize> = Vec::new();
    for (ox, (dst, &(fx, nx, px_in))) in out.chunks_exact_mut(c).zip(row.cols).enumerate() {
        // (offset of the window's first column, taps from there)
        let (base, taps) = if fx == 0 && nx == kw {
            ((ox * sx - px) * c, &inner[..])
        } else {
            edge.clear();
            for ty in fy..fy + ny {
                let iy = row.oy * sy + ty * dy - py;
                for tx in fx..fx + nx {
                    edge.push((iy * row.iw + ox * sx + tx * dx - px) * c);
                }
            }
            (0, &edge[..])
        };
        debug_assert!(taps.iter().all(|t| base + t + c <= x.len()));
        // The rows the next output row adds, at the columns this position is first to read:
        // fetched while this row's taps are reduced (the next rows come from memory).
        let last = (row.oy * sy + (fy + ny.max(1) - 1) * dy).checked_sub(py);
        for k in 1..=sy {
            let Some(iy) = last.map(|l| l + k) else { break };
            let at = (iy * row.iw + (ox * sx).saturating_sub(px)) * c;
            if at + sx * c <= x.len() {
                crate::cpu::gemm::driver::prefetch(x[at..].as_ptr(), sx * c);
            }
        }
        let n = if row.count_include_pad {
            py_in * px_in
        } else {
            ny * nx
        };
        let n = n.max(1) as f32;
        // SAFETY: every tap's c channels lie inside x (the taps are inside the image); whole
        // vectors below body lie inside dst.
        unsafe {
            // Direct calls, not through a function pointer: a pointer's callee is not inlined
            // into this ISA's code and runs its vectors as calls (2-5x slower).
            let (xp, d) = (x.as_ptr().add(base), dst.as_mut_ptr());
            match row.max {
                true => reduce_taps::<V, true>(xp, taps, body, n, d),
                false => reduce_taps::<V, false>(xp, taps, body, n, d),
            }
            // The channels past the whole vectors: the last vector of the position again,
            // overlapping (its channels' values are the same), where there is one; one by one
            // they were most of a 24-channel pool's time.
            if body > 0 && body < c {
                let (xt, dt) = (xp.add(c - V::N), d.add(c - V::N));
                match row.max {
                    true => reduce_taps::<V, true>(xt, taps, V::N, n, dt),
                    false => reduce_taps::<V, false>(xt, taps, V::N, n, dt),
                }
                continue;
            }
        }
        for (j, a) in dst.iter_mut().enumerate().skip(body) {
            *a = if row.max { f32::NEG_INFINITY } else { 0.0 };
            for t in taps {
                let v = x[base + t + j];
                if !row.max {
                    *a += v;
                } else if !a.is_nan() && (v > *a || v.is_nan()) {
                    *a = v;
                }
            }
            if !row.max {
                *a /= n;
            }
        }
    }
}

/// `d[j..j + body]`: the max (`MAX`) or the average (`/ n`) of `x[t + j..]` over the taps `t`,
/// four vectors of channels at a time: four independent chains of the NaN-keeping max, whose
/// one chain over the taps was the kernel's bound (each step waits for the last).
///
/// # Safety
/// `x` holds `body` floats from every tap; `d` holds `body` floats; `body` is whole vectors.
#[inline(always)]
unsafe fn reduce_taps<V: F32s, const MAX: bool>(
    x: *const f32,
    taps: &[usize],
    body: usize,
    n: f32,
    d: *mut f32,
) {
    const U: usize = 4;
    let init = if MAX { f32::NEG_INFINITY } else { 0.0 };
    // SAFETY: the caller's contract bounds every load and store below.
    unsafe {
        let step = |a: V, v: V| if MAX { a.max_nan(v) } else { a.add(v) };
        let finish = |a: V| if MAX { a } else { a.div(V::splat(n)) };
        let mut j = 0;
        while j + U * V::N <= body {
            let mut acc = [V::splat(init); U];
            for t in taps {
                let p = x.add(t + j);
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = step(*a, V::load(p.add(u * V::N)));
                }
            }
            for (u, a) in acc.into_iter().enumerate() {
                finish(a).store(d.add(j + u * V::N));
            }
            j += U * V::N;
        }
        while j < body {
            let mut acc = V::splat(init);
            for t in taps {
                acc = step(acc, V::load(x.add(t + j)));
            }
            finish(acc).store(d.add(j));
            j += V::N;
        }
    }
}
