//! Depthwise 2-D convolution over channels-last rows: an output position's channels are whole
//! vectors, summed over the taps in registers. Taps outside the image are skipped (no padded
//! copy); positions whose every tap is inside go four at a time, sharing each weight vector.

use super::lanes::F32s;
use super::per_isa;
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

/// What `depthwise_row` adds to each output position before storing it: `c` biases, then a
/// relu.
#[derive(Clone, Copy, Debug, Default)]
pub struct RowShift<'a> {
    pub bias: Option<&'a [f32]>,
    pub relu: bool,
}

impl DepthwiseRows {
    /// Output columns `lo..hi` whose every tap lies inside the image's columns.
    fn interior(&self) -> (usize, usize) {
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
    /// Output row `oy` of one image: `out[ox * c + ch] = sum over the taps inside the image of
    /// x[(iy * iw + ix) * c + ch] * w[(ky * kw + kx) * c + ch]` (`w`: the weights as `[kh * kw,
    /// c]`), plus `shift`.
    ///
    /// # Safety
    /// `isa` is available on this CPU; `x` holds `ih * iw * c` floats, `w` `kh * kw * c`, `out`
    /// `ow * c`, a bias `c`, and `kh, kw, sw >= 1` (a window inference accepted).
    pub unsafe fn depthwise_row(g: &DepthwiseRows, x: &[f32], w: &[f32], oy: usize, shift: RowShift, taps: &mut Vec<(usize, usize)>, out: &mut [f32]) => depthwise_row_v
);

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
    let (lo, hi) = g.interior();
    // (x offset, w offset) of each tap: relative to the position's first column for interior
    // positions, absolute for edge ones.
    for ox in (0..lo).chain(hi..g.ow) {
        taps.clear();
        for (ky, iy) in rows() {
            for kx in 0..g.kw {
                let ix = (ox * g.sw + kx * g.dw).checked_sub(g.pw);
                if let Some(ix) = ix.filter(|ix| *ix < g.iw) {
                    taps.push(((iy * g.iw + ix) * c, (ky * g.kw + kx) * c));
                }
            }
        }
        // SAFETY: every tap is inside x and w (checked above); the position is inside out.
        unsafe { positions::<V, 1>(x, w, taps, (0, 0), c, shift, &mut out[ox * c..(ox + 1) * c]) };
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
                positions::<V, 4>(x, w, taps, (base, g.sw * c), c, shift, run);
                ox += 4;
            } else {
                positions::<V, 1>(x, w, taps, (base, 0), c, shift, run);
                ox += 1;
            }
        }
    }
}

/// `Q` consecutive positions (`step` floats apart in `x`, `c` apart in `out`): every channel
/// summed over `taps` read at `base + tap`, then shifted.
///
/// # Safety
/// Every `base + q * step + x offset + c` and `w offset + c` is in bounds; a bias holds `c`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn positions<V: F32s, const Q: usize>(
    x: &[f32],
    w: &[f32],
    taps: &[(usize, usize)],
    (base, step): (usize, usize),
    c: usize,
    shift: RowShift,
    out: &mut [f32],
) {
    let body = c - c % V::N;
    let (xp, wp, op) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
    let bias = shift.bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    // SAFETY: the caller's contract bounds every offset formed here.
    unsafe {
        let zero = V::splat(0.0);
        let mut ch = 0;
        while ch < body {
            let init = if bias.is_null() {
                zero
            } else {
                V::load(bias.add(ch))
            };
            let mut acc = [init; Q];
            for &(xo, wo) in taps {
                let wv = V::load(wp.add(wo + ch));
                for (q, a) in acc.iter_mut().enumerate() {
                    *a = V::load(xp.add(base + q * step + xo + ch)).fma(wv, *a);
                }
            }
            for (q, a) in acc.iter().enumerate() {
                let v = if shift.relu { a.at_least(zero) } else { *a };
                v.store(op.add(q * c + ch));
            }
            ch += V::N;
        }
        for ch in body..c {
            for q in 0..Q {
                let mut s = if bias.is_null() { 0.0 } else { *bias.add(ch) };
                for &(xo, wo) in taps {
                    s += *xp.add(base + q * step + xo + ch) * *wp.add(wo + ch);
                }
                *op.add(q * c + ch) = if shift.relu && s < 0.0 { 0.0 } else { s };
            }
        }
    }
}
