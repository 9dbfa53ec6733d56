//! Max / average pooling and LRN over `[batch, c, spatial..]` tensors: direct loops, one
//! `(image, channel)` plane per task (2-D windows over whole runs of each output row).

use rayon::prelude::*;
use rlx_ir::{PoolAttrs, PoolKind, Window};

use super::OutPtr;
use super::isa::Isa;
use super::vmath;
use super::window::{for_each_source, source_tables, strides, unflatten};

/// Max or average pooling; shapes as inference gave them.
pub fn pool(x: &[f32], xs: &[usize], a: &PoolAttrs, out: &mut [f32], os: &[usize]) {
    let (in_sp, out_sp, w) = (&xs[2..], &os[2..], &a.window);
    let (plane, p): (usize, usize) = (in_sp.iter().product(), out_sp.iter().product());
    if out.is_empty() {
        return;
    }
    let tables = source_tables(w, in_sp, out_sp);
    let in_strides = strides(in_sp);
    let ksize: usize = w.kernel.iter().product();
    // Average pooling with count_include_pad divides by the window's positions inside the
    // padded input; without, by the real ones.
    let inside_pads = |o_flat: usize, kidx: &[usize], o: &mut [usize]| {
        unflatten(o_flat, out_sp, o);
        (0..o.len()).all(|i| {
            o[i] * w.strides[i] + kidx[i] * w.dilations[i]
                < in_sp[i] + w.pads[i] + w.pads[o.len() + i]
        })
    };
    if in_sp.len() == 2 {
        let cols: Vec<(usize, usize, usize)> =
            (0..out_sp[1]).map(|ox| taps(ox, 1, in_sp[1], w)).collect();
        // The padded line (begin pad, input, the end the window reaches) and its windowed
        // reduction at every column.
        let (k1, s1, d1, p1) = (w.kernel[1], w.strides[1], w.dilations[1], w.pads[1]);
        let reach = (out_sp[1].max(1) - 1) * s1 + (k1.max(1) - 1) * d1 + 1;
        let len = (p1 + in_sp[1]).max(reach);
        out.par_chunks_mut(p.max(1)).enumerate().for_each_init(
            || vec![0.0f32; len + reach],
            |line, (nc, dst)| {
                let src = &x[nc * plane..(nc + 1) * plane];
                pool_plane_2d(src, in_sp, out_sp, a, &cols, line, dst)
            },
        );
        return;
    }
    out.par_chunks_mut(p.max(1))
        .enumerate()
        .for_each(|(nc, dst)| {
            let src = &x[nc * plane..(nc + 1) * plane];
            let mut count = vec![0u32; p];
            match a.kind {
                PoolKind::Max => dst.fill(f32::NEG_INFINITY),
                PoolKind::Avg => dst.fill(0.0),
            }
            let (mut kidx, mut o) = (vec![0usize; w.kernel.len()], vec![0usize; out_sp.len()]);
            for kk in 0..ksize {
                unflatten(kk, &w.kernel, &mut kidx);
                for_each_source(
                    &tables,
                    &w.kernel,
                    &kidx,
                    out_sp,
                    &in_strides,
                    |i, at| match (a.kind, at) {
                        (PoolKind::Max, Some(at)) => {
                            let v = src[at];
                            if v > dst[i] || v.is_nan() {
                                dst[i] = v;
                            }
                        }
                        (PoolKind::Avg, Some(at)) => {
                            dst[i] += src[at];
                            count[i] += 1;
                        }
                        (PoolKind::Avg, None) if a.count_include_pad => {
                            count[i] += u32::from(inside_pads(i, &kidx, &mut o));
                        }
                        _ => {}
                    },
                );
            }
            if a.kind == PoolKind::Avg {
                dst.iter_mut()
                    .zip(&count)
                    .for_each(|(v, n)| *v /= (*n).max(1) as f32);
            }
        });
}

/// Max or average 2-D pooling over channels-last `[batch, h, w, c]` (`PoolAttrs::
/// channels_last`), one output row per task.
pub fn pool_channels_last(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    a: &PoolAttrs,
    out: &mut [f32],
    os: &[usize],
) {
    let (ih, iw, c) = (xs[1], xs[2], xs[3]);
    let (oh, ow) = (os[1], os[2]);
    let w = &a.window;
    if out.is_empty() || c == 0 {
        return;
    }
    let cols: Vec<vmath::AxisTaps> = (0..ow).map(|ox| taps(ox, 1, iw, w)).collect();
    let image = ih * iw * c;
    out.par_chunks_mut(ow * c).enumerate().for_each(|(r, dst)| {
        let (img, oy) = (r / oh, r % oh);
        let row = vmath::PoolRow {
            iw,
            c,
            oy,
            rows: taps(oy, 0, ih, w),
            cols: &cols,
            row_step: (w.strides[0], w.dilations[0], w.pads[0]),
            col_step: (w.strides[1], w.dilations[1], w.pads[1]),
            max: a.kind == PoolKind::Max,
            count_include_pad: a.count_include_pad,
        };
        // SAFETY: the ISA is this CPU's; the taps lie inside the image; dst holds ow * c.
        unsafe { vmath::pool_row(isa, &row, &x[img * image..(img + 1) * image], dst) };
    });
}

/// The window taps of output coordinate `o` on one axis that land inside the input: the
/// first tap, the tap count, and how many taps (padding included) lie inside the padded input.
fn taps(o: usize, axis: usize, input: usize, w: &Window) -> (usize, usize, usize) {
    let (k, s, d, pad) = (
        w.kernel[axis],
        w.strides[axis],
        w.dilations[axis],
        w.pads[axis],
    );
    let padded = input + pad + w.pads[w.kernel.len() + axis];
    let start = o * s;
    // Tap t reads padded position start + t * d, i.e. input position start + t * d - pad.
    let first = pad.saturating_sub(start).div_ceil(d).min(k);
    let end = (input + pad).saturating_sub(start).div_ceil(d).min(k);
    let in_padded = padded.saturating_sub(start).div_ceil(d).min(k);
    (first, end.saturating_sub(first), in_padded)
}

/// One `[h, w]` plane of a 2-D max or average pool. Per output row, the window's input rows
/// are reduced into one line padded with the reduction's identity; the window's columns are
/// then reduced at every column of that line (whole shifted runs, plain vector loops), and
/// each output column takes its window's value. `cols[ox]` is `taps` of output column `ox`;
/// `buf` holds the padded line and the reduced one.
fn pool_plane_2d(
    src: &[f32],
    input: &[usize],
    output: &[usize],
    a: &PoolAttrs,
    cols: &[(usize, usize, usize)],
    buf: &mut [f32],
    dst: &mut [f32],
) {
    let w = &a.window;
    let (iw, ow) = (input[1], output[1]);
    let (sw, dw, pw, kw) = (w.strides[1], w.dilations[1], w.pads[1], w.kernel[1]);
    let max = a.kind == PoolKind::Max;
    let identity = if max { f32::NEG_INFINITY } else { 0.0 };
    let reach = (ow.max(1) - 1) * sw + (kw.max(1) - 1) * dw + 1;
    let (line, reduced) = buf.split_at_mut(buf.len() - reach);
    let reduced = &mut reduced[..(ow.max(1) - 1) * sw + 1];
    // NaN wins, as in the N-d loop (a select, so the loops have no branch).
    let pick = |v: f32, t: f32| if t > v || t.is_nan() { t } else { v };
    for (oy, row) in dst.chunks_mut(ow.max(1)).enumerate() {
        let (ty, ny, py) = taps(oy, 0, input[0], w);
        let y0 = (oy * w.strides[0] + ty * w.dilations[0]).saturating_sub(w.pads[0]);
        line.fill(identity);
        let inner = &mut line[pw..pw + iw];
        for i in 0..ny {
            let y = y0 + i * w.dilations[0];
            let taps = &src[y * iw..(y + 1) * iw];
            if max {
                inner
                    .iter_mut()
                    .zip(taps)
                    .for_each(|(v, &t)| *v = pick(*v, t));
            } else {
                inner.iter_mut().zip(taps).for_each(|(v, &t)| *v += t);
            }
        }
        let n = reduced.len();
        reduced.copy_from_slice(&line[..n]);
        for kx in 1..kw {
            let taps = &line[kx * dw..kx * dw + n];
            if max {
                reduced
                    .iter_mut()
                    .zip(taps)
                    .for_each(|(v, &t)| *v = pick(*v, t));
            } else {
                reduced.iter_mut().zip(taps).for_each(|(v, &t)| *v += t);
            }
        }
        for (ox, (v, &(_, nx, px))) in row.iter_mut().zip(cols).enumerate() {
            let r = reduced[ox * sw];
            *v = if max {
                r
            } else {
                let n = if a.count_include_pad {
                    py * px
                } else {
                    ny * nx
                };
                r / n.max(1) as f32
            };
        }
    }
}

/// Local response normalization across channels.
pub fn lrn(
    x: &[f32],
    xs: &[usize],
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
    out: &mut [f32],
) {
    let (c, inner) = (xs[1], xs[2..].iter().product::<usize>());
    if out.is_empty() || inner == 0 {
        return;
    }
    let (lo, hi) = ((size - 1) / 2, size / 2);
    let ptr = OutPtr(out.as_mut_ptr());
    (0..xs[0] * c).into_par_iter().for_each(|nc| {
        let (n, ch) = (nc / c, nc % c);
        let base = n * c * inner;
        // SAFETY: this task writes plane nc alone.
        let dst = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(nc * inner), inner) };
        for (r, d) in dst.iter_mut().enumerate() {
            let sq: f32 = (ch.saturating_sub(lo)..(ch + hi + 1).min(c))
                .map(|j| x[base + j * inner + r] * x[base + j * inner + r])
                .sum();
            *d = x[base + ch * inner + r] / (bias + alpha / size as f32 * sq).powf(beta);
        }
    });
}
