//! Depthwise 2-D convolution over channels-last rows: an output position's channels are whole
//! vectors, summed over the taps in registers. Taps outside the image are skipped (no padded
//! copy); 3x3 rows whose kernel rows are all inside go in groups (`depthwise_groups`), 5x5 and
//! 7x7 rows whole (`depthwise_wide`), other rows' interior positions a few at a time, sharing
//! each weight vector.

use super::StoreAct;
use super::lanes::F32s;
use super::{depthwise_groups, depthwise_wide, per_isa};
use crate::cpu::isa::Isa;

/// Geometry of one channels-last depthwise convolution: input `[ih, iw, c]` per image, kernel
/// `kh x kw`, strides, dilations, begin pads, and `ow` output columns.
#[derive(Clone, Copy, Debug)]
pub struct DepthwiseRows {
    pub ih: usize,
    pub iw: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
    pub ow: usize,
}

/// What `depthwise_rows` does to each output position before storing it: adds `c` biases,
/// then applies a relu or relu6.
#[derive(Clone, Copy, Debug, Default)]
pub struct RowShift<'a> {
    pub bias: Option<&'a [f32]>,
    pub act: StoreAct,
}

impl DepthwiseRows {
    /// Output columns `lo..hi` whose every tap lies inside the image's columns.
    pub(super) fn interior(&self) -> (usize, usize) {
        let lo = self.pw.div_ceil(self.sw).min(self.ow);
        let reach = (self.kw - 1) * self.dw + 1;
        let hi = (self.iw + self.pw)
            .checked_sub(reach)
            .map_or(0, |v| v / self.sw + 1)
            .min(self.ow);
        (lo, hi.max(lo))
    }
}

per_isa!(
    /// Output rows `first..first + count` of one image (`out` holds them, `ow * c` floats
    /// each), as `depthwise_row_v` makes each: four or two at a time where every kernel row of
    /// a 3x3 kernel is inside the image (`depthwise_groups`), sharing their input rows. The
    /// groups make the sums one row alone makes: any cut of an image gives the same values.
    ///
    /// # Safety
    /// `isa` is available on this CPU; `x` holds `ih * iw * c` floats, `w` `kh * kw * c`,
    /// `out` `count * ow * c`, a bias `c`, `first + count <= oh`, and `kh, kw, sw >= 1` (a
    /// window inference accepted).
    pub unsafe fn depthwise_rows(g: &DepthwiseRows, x: &[f32], w: &[f32], first: usize, count: usize, shift: RowShift, taps: &mut Vec<(usize, usize)>, out: &mut [f32]) => depthwise_rows_v
);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_rows_v<V: F32s>(
    g: &DepthwiseRows,
    x: &[f32],
    w: &[f32],
    first: usize,
    count: usize,
    shift: RowShift,
    taps: &mut Vec<(usize, usize)>,
    out: &mut [f32],
) {
    let row_len = g.ow * g.c;
    if let Some(b) = shift.bias {
        assert!(b.len() >= g.c, "a depthwise bias holds every channel");
    }
    if depthwise_wide::fits(g, V::N) {
        // SAFETY: forwarded (the geometry fits).
        return unsafe {
            depthwise_wide::depthwise_wide_rows::<V>(g, x, w, (first, count), shift, out)
        };
    }
    let (mut oy, end) = (first, first + count);
    // SAFETY: forwarded; a group's rows are inside the image (`top_row`).
    unsafe {
        while oy < end {
            let rows = &mut out[(oy - first) * row_len..];
            let fits = |r: usize| g.c >= V::N && oy + r <= end;
            // Four rows at row stride 2 (9 input rows for 4 outputs: 5-8% faster than pairs
            // there, level at stride 1).
            let quad = depthwise_groups::top_row::<4>(g, oy).filter(|_| g.sh == 2 && fits(4));
            let n = if let Some(top) = quad {
                depthwise_groups::group::<V, 4>(g, x, w, top, shift, rows);
                4
            } else if let Some(top) = depthwise_groups::top_row::<2>(g, oy).filter(|_| fits(2)) {
                depthwise_groups::group::<V, 2>(g, x, w, top, shift, rows);
                2
            } else {
                depthwise_row_v::<V>(g, x, w, oy, shift, taps, &mut rows[..row_len]);
                oy += 1;
                continue;
            };
            for r in 0..n {
                let row = &mut rows[r * row_len..(r + 1) * row_len];
                edge_columns::<V>(g, x, w, oy + r, shift, taps, row);
            }
            oy += n;
        }
    }
}

/// Output row `oy`'s positions outside the interior columns, each over the taps inside the
/// image.
///
/// # Safety
/// As `depthwise_row_v`.
#[inline(always)]
unsafe fn edge_columns<V: F32s>(
    g: &DepthwiseRows,
    x: &[f32],
    w: &[f32],
    oy: usize,
    shift: RowShift,
    taps: &mut Vec<(usize, usize)>,
    out: &mut [f32],
) {
    let c = g.c;
    let (lo, hi) = g.interior();
    // (x offset, w offset) of each tap inside the image.
    for ox in (0..lo).chain(hi..g.ow) {
        taps.clear();
        for ky in 0..g.kh {
            let Some(iy) = (oy * g.sh + ky * g.dh)
                .checked_sub(g.ph)
                .filter(|iy| *iy < g.ih)
            else {
                continue;
            };
            for kx in 0..g.kw {
                let ix = (ox * g.sw + kx * g.dw).checked_sub(g.pw);
                if let Some(ix) = ix.filter(|ix| *ix < g.iw) {
                    taps.push(((iy * g.iw + ix) * c, (ky * g.kw + kx) * c));
                }
            }
        }
        // SAFETY: every tap is inside x and w (checked above); the position is inside out.
        unsafe {
            positions::<V, 1, 3>(x, w, taps, (0, 0), c, shift, &mut out[ox * c..(ox + 1) * c])
        };
    }
}

/// Output row `oy` of one image: `out[ox * c + ch] = sum over the taps inside the image of
/// x[(iy * iw + ix) * c + ch] * w[(ky * kw + kx) * c + ch]` (`w`: the weights as `[kh * kw,
/// c]`), plus `shift`.
///
/// # Safety
/// `V`'s ISA is available on this CPU; `x` holds `ih * iw * c` floats, `w` `kh * kw * c`,
/// `out` `ow * c`, a bias `c`, and `kh, kw, sw >= 1` (a window inference accepted).
#[inline(always)]
unsafe fn depthwise_row_v<V: F32s>(
    g: &DepthwiseRows,
    x: &[f32],
    w: &[f32],
    oy: usize,
    shift: RowShift,
    taps: &mut Vec<(usize, usize)>,
    out: &mut [f32],
) {
    let c = g.c;
    if let Some(b) = shift.bias {
        assert!(b.len() >= c, "a depthwise bias holds every channel");
    }
    debug_assert!(x.len() >= g.ih * g.iw * c && w.len() >= g.kh * g.kw * c);
    debug_assert!(out.len() >= g.ow * c);
    // The kernel rows inside the image, with their input rows.
    let rows = || {
        (0..g.kh).filter_map(move |ky| {
            let iy = (oy * g.sh + ky * g.dh).checked_sub(g.ph)?;
            (iy < g.ih).then_some((ky, iy))
        })
    };
    // SAFETY: forwarded.
    unsafe { edge_columns::<V>(g, x, w, oy, shift, taps, out) };
    let (lo, hi) = g.interior();
    // A 3x3 kernel whose rows are all inside: the nine weight vectors stay in registers.
    let (mut inside, mut n) = ([0; 3], 0);
    for (_, iy) in rows() {
        if n < 3 {
            inside[n] = iy * g.iw * c;
        }
        n += 1;
    }
    if g.kh == 3 && g.kw == 3 && n == 3 && c >= V::N {
        // SAFETY: positions lo..hi read only inside the image (interior columns, rows inside).
        unsafe { rows3x3::<V>(g, x, w, inside, (lo, hi), shift, out) };
        return;
    }
    taps.clear();
    for (ky, iy) in rows() {
        for kx in 0..g.kw {
            taps.push(((iy * g.iw + kx * g.dw) * c, (ky * g.kw + kx) * c));
        }
    }
    let mut ox = lo;
    while ox < hi {
        let base = (ox * g.sw - g.pw) * c;
        let run = &mut out[ox * c..];
        // SAFETY: positions ox.. (< hi) read only inside the image's rows and columns.
        unsafe {
            if ox + 4 <= hi {
                positions::<V, 4, 1>(x, w, taps, (base, g.sw * c), c, shift, run);
                ox += 4;
            } else {
                positions::<V, 1, 3>(x, w, taps, (base, 0), c, shift, run);
                ox += 1;
            }
        }
    }
}

/// `Q` consecutive positions (`step` floats apart in `x`, `c` apart in `out`): every channel
/// summed over `taps` read at `base + tap`, then shifted. `K` sums per position, taps dealt
/// round-robin (3 for a lone position: one chain of dependent multiply-adds was
/// latency-bound).
///
/// # Safety
/// Every `base + q * step + x offset + c` and `w offset + c` is in bounds; a bias holds `c`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn positions<V: F32s, const Q: usize, const K: usize>(
    x: &[f32],
    w: &[f32],
    taps: &[(usize, usize)],
    (base, step): (usize, usize),
    c: usize,
    shift: RowShift,
    out: &mut [f32],
) {
    // Channel vectors, the last one ending at channel c (overlapping the one before where c
    // is not a multiple of the lanes: its channels are computed and stored again, the same
    // values). Fewer channels than lanes go one at a time. (The edge columns of MobileNet v3's
    // 3x3 layers over 72, 184 and 200 channels did their last 8 channels one at a time: the
    // layers ran 5-10% slower.)
    let vectors = match c >= V::N {
        true => c.div_ceil(V::N),
        false => 0,
    };
    let (xp, wp, op) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let bias = shift.bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    // SAFETY: the caller's contract bounds every offset formed here.
    unsafe {
        let zero = V::splat(0.0);
        for ch in (0..vectors).map(|v| (v * V::N).min(c - V::N)) {
            let init = if bias.is_null() {
                zero
            } else {
                V::load(bias.add(ch))
            };
            let mut acc = [[zero; Q]; K];
            acc[0] = [init; Q];
            let tap = |acc: &mut [V; Q], (xo, wo): (usize, usize)| {
                let wv = V::load(wp.add(wo + ch));
                for (q, a) in acc.iter_mut().enumerate() {
                    *a = V::load(xp.add(base + q * step + xo + ch)).fma(wv, *a);
                }
            };
            // K taps at a time, each into its own sums (constant indices: the sums stay in
            // registers), the rest into the first.
            let mut groups = taps.chunks_exact(K);
            for g in &mut groups {
                for k in 0..K {
                    tap(&mut acc[k], g[k]);
                }
            }
            for t in groups.remainder() {
                tap(&mut acc[0], *t);
            }
            for (q, first) in acc[0].iter().enumerate() {
                let a = acc[1..].iter().fold(*first, |s, more| s.add(more[q]));
                shift.act.on(a).store(op.add(q * c + ch));
            }
        }
        let scalar = if vectors == 0 { 0 } else { c };
        for ch in scalar..c {
            for q in 0..Q {
                let mut s = if bias.is_null() { 0.0 } else { *bias.add(ch) };
                for &(xo, wo) in taps {
                    s += *xp.add(base + q * step + xo + ch) * *wp.add(wo + ch);
                }
                *op.add(q * c + ch) = shift.act.on_scalar(s);
            }
        }
    }
}

/// Interior positions `lo..hi` of an output row whose three kernel rows start at `rows` in
/// `x`: for each channel vector the nine weights are loaded once, then the row is swept a few
/// positions at a time. At stride 1 or 2 (dilation 1) the inputs the positions share are
/// loaded once into registers: one load per fused multiply-add made the loop load-bound at
/// ~90 GFLOP/s.
///
/// # Safety
/// `c >= V::N`; every tap of positions `lo..hi` lies inside `x` (interior
/// columns, rows inside the image); `w` holds `9 * c`, `out` `hi * c`, a bias `c`.
#[inline(always)]
unsafe fn rows3x3<V: F32s>(
    g: &DepthwiseRows,
    x: &[f32],
    w: &[f32],
    rows: [usize; 3],
    (lo, hi): (usize, usize),
    shift: RowShift,
    out: &mut [f32],
) {
    let c = g.c;
    let (step, dx) = (g.sw * c, g.dw * c);
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    // Positions per chunk: the chunk's three input row pieces (~16 KiB) stay in L1 while every
    // channel vector sweeps them. (A whole row per channel vector read one line of four per
    // position and lost it before the next vector came back: ONNX Runtime's blocked layout
    // was 20% faster.)
    let chunk = ((4096 / (c * g.sw).max(1)).saturating_sub(2) / 8 * 8).max(8);
    // SAFETY: the caller's contract bounds every offset formed here.
    unsafe {
        let zero = V::splat(0.0);
        for start in (lo..hi).step_by(chunk) {
            let n = chunk.min(hi - start);
            // Channels a vector at a time, the last vector ending at channel c: where c is not
            // a multiple of the lanes it overlaps the one before, and stores the same values
            // again (136 channels took the per-tap path, 2.6x slower).
            for ch in (0..c).step_by(V::N).map(|ch| ch.min(c - V::N)) {
                let wv: [V; 9] = std::array::from_fn(|t| V::load(w.as_ptr().add(t * c + ch)));
                let init = shift.bias.map_or(zero, |b| V::load(b.as_ptr().add(ch)));
                // Position start's first tap in each kernel row.
                let first = rows.map(|r| xp.add(r + (start * g.sw - g.pw) * c + ch));
                let run = Run {
                    wv,
                    init,
                    first,
                    c,
                    out: op.add(start * c + ch),
                    act: shift.act,
                };
                // The widest sweep the registers hold, then narrower ones for the rest of the
                // run.
                let done = match (g.sw, g.dw, V::N) {
                    (1, 1, 16) => {
                        let d = run.sweep::<8, 1>(0, n);
                        let d = run.sweep::<4, 1>(d, n);
                        let d = run.sweep::<2, 1>(d, n);
                        run.sweep::<1, 1>(d, n)
                    }
                    (2, 1, 16) => {
                        let d = run.sweep::<4, 2>(0, n);
                        let d = run.sweep::<2, 2>(d, n);
                        run.sweep::<1, 2>(d, n)
                    }
                    (1, 1, _) => {
                        let d = run.sweep::<4, 1>(0, n);
                        run.sweep::<1, 1>(d, n)
                    }
                    (2, 1, _) => {
                        let d = run.sweep::<2, 2>(0, n);
                        run.sweep::<1, 2>(d, n)
                    }
                    _ => 0,
                };
                for i in done..n {
                    let mut a = init;
                    for (ky, p) in first.iter().enumerate() {
                        let p = p.add(i * step);
                        for kx in 0..3 {
                            a = V::load(p.add(kx * dx)).fma(wv[ky * 3 + kx], a);
                        }
                    }
                    run.store(i, a);
                }
            }
        }
    }
}

/// One channel vector of an interior run of positions.
struct Run<V> {
    wv: [V; 9],
    init: V,
    /// Position 0's first tap in each kernel row.
    first: [*const f32; 3],
    c: usize,
    /// Position 0's output.
    out: *mut f32,
    act: StoreAct,
}

impl<V: F32s> Run<V> {
    /// Position `i`'s sums, shifted, stored.
    #[inline(always)]
    unsafe fn store(&self, i: usize, v: V) {
        // SAFETY: the caller's contract (i is a position of the run).
        unsafe {
            self.act.on(v).store(self.out.add(i * self.c));
        }
    }

    /// Positions `from..` at stride `S`, `Q` at a time while `Q` fit before `n`: each kernel
    /// row's `(Q - 1) * S + 3` inputs loaded once, each used by every position it is a tap
    /// of. Each position's sum runs over the taps in order, as `depthwise_groups` makes it:
    /// a row gives the same values whichever way its image's rows are grouped. Returns the
    /// first position not done.
    #[inline(always)]
    unsafe fn sweep<const Q: usize, const S: usize>(&self, from: usize, n: usize) -> usize {
        let span = (Q - 1) * S + 3;
        let mut i = from;
        // SAFETY: positions i..i + Q < n are inside the run (the caller's contract).
        unsafe {
            while i + Q <= n {
                let mut acc = [self.init; Q];
                for (ky, p) in self.first.iter().enumerate() {
                    let p = p.add(i * S * self.c);
                    let mut xin = [self.init; 17];
                    for (j, v) in xin.iter_mut().enumerate().take(span) {
                        *v = V::load(p.add(j * self.c));
                    }
                    for kx in 0..3 {
                        for (q, a) in acc.iter_mut().enumerate() {
                            *a = xin[q * S + kx].fma(self.wv[ky * 3 + kx], *a);
                        }
                    }
                }
                for (q, sum) in acc.iter().enumerate() {
                    self.store(i + q, *sum);
                }
                i += Q;
            }
        }
        i
    }
}
