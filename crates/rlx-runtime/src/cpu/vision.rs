//! Convolution, pooling and LRN over `[batch, c, spatial..]` tensors.
//!
//! A convolution lowers each image onto the packed GEMM: its patches are laid out as the rows
//! of a `[c / groups * kernel, out positions]` matrix (im2col, or the image itself for a 1x1
//! stride-1 unpadded kernel), and each group's weights `[m / groups, c / groups * kernel]`,
//! read in place, multiply it into the NCHW output. Depthwise convolutions (one input channel per
//! group) run directly, one channel per task. Pooling and LRN are direct loops, one
//! `(image, channel)` plane per task.

use rayon::prelude::*;
use rlx_ir::{ConvAttrs, PoolAttrs, PoolKind, Window};

use super::OutPtr;
use super::gemm::{self, BSource, GemmJob};
use super::isa::Isa;
use super::vmath;
use crate::Result;
use crate::fallible::try_zeroed;

thread_local! {
    /// One row of the patch matrix before it is split into panels.
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// For each spatial axis, the input coordinate of (output position, kernel offset), or None
/// in the padding: `table[i][o * kernel[i] + k]`.
fn source_tables(w: &Window, input: &[usize], output: &[usize]) -> Vec<Vec<Option<usize>>> {
    (0..input.len())
        .map(|i| {
            (0..output[i] * w.kernel[i])
                .map(|ok| {
                    let (o, k) = (ok / w.kernel[i], ok % w.kernel[i]);
                    let at = (o * w.strides[i] + k * w.dilations[i]).checked_sub(w.pads[i])?;
                    (at < input[i]).then_some(at)
                })
                .collect()
        })
        .collect()
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Splits flat index `f` of `shape` into `idx`.
fn unflatten(mut f: usize, shape: &[usize], idx: &mut [usize]) {
    for i in (0..shape.len()).rev() {
        idx[i] = f % shape[i];
        f /= shape[i];
    }
}

/// Calls `each(o, src)` for every output position `o` with the flat input offset of kernel
/// offset `kidx` (None in the padding).
fn for_each_source(
    tables: &[Vec<Option<usize>>],
    kernel: &[usize],
    kidx: &[usize],
    out_sp: &[usize],
    in_strides: &[usize],
    mut each: impl FnMut(usize, Option<usize>),
) {
    let r = out_sp.len();
    let mut o = vec![0usize; r];
    let p: usize = out_sp.iter().product();
    for flat in 0..p {
        let mut off = Some(0usize);
        for i in 0..r {
            off = match (off, tables[i][o[i] * kernel[i] + kidx[i]]) {
                (Some(a), Some(c)) => Some(a + c * in_strides[i]),
                _ => None,
            };
        }
        each(flat, off);
        // Odometer over the output positions.
        for i in (0..r).rev() {
            o[i] += 1;
            if o[i] < out_sp[i] {
                break;
            }
            o[i] = 0;
        }
    }
}

/// `out = conv(x, w) + bias`; shapes as inference gave them.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    bias: Option<&[f32]>,
    c: &ConvAttrs,
    out: &mut [f32],
    os: &[usize],
) -> Result<()> {
    let (batch, cin, m, cg) = (xs[0], xs[1], ws[0], ws[1]);
    let (groups, mg) = (c.groups, ws[0] / c.groups.max(1));
    let (in_sp, out_sp, kernel) = (&xs[2..], &os[2..], &ws[2..]);
    let (p, ksize): (usize, usize) = (out_sp.iter().product(), kernel.iter().product());
    let plane: usize = in_sp.iter().product();
    if out.is_empty() {
        return Ok(());
    }
    let tables = source_tables(&c.window, in_sp, out_sp);
    let in_strides = strides(in_sp);
    if cg == 1 && mg == 1 {
        let sizes = (cin, plane, ksize, p);
        depthwise(
            isa,
            x,
            w,
            &c.window,
            &tables,
            &in_strides,
            sizes,
            (in_sp, kernel, out_sp),
            out,
        );
    } else {
        let ck = cg * ksize;
        let direct = ksize == 1
            && c.window.strides.iter().all(|s| *s == 1)
            && c.window.pads.iter().all(|p| *p == 0);
        if ksize == 1 && !direct && c.window.pads.iter().all(|p| *p == 0) {
            // A strided 1x1 kernel reads a subsampled image: gather it once, then read it in
            // place like an unstrided one.
            let mut sub = try_zeroed("subsampled convolution input", batch * cin * p)?;
            let kidx = vec![0; kernel.len()];
            sub.par_chunks_mut(p.max(1))
                .zip(x.par_chunks(plane.max(1)))
                .for_each(|(dst, src)| {
                    for_each_source(&tables, kernel, &kidx, out_sp, &in_strides, |o, at| {
                        dst[o] = at.map_or(0.0, |a| src[a]);
                    })
                });
            let mut xs1 = xs.to_vec();
            xs1[2..].copy_from_slice(out_sp);
            let mut c1 = c.clone();
            c1.window.strides.iter_mut().for_each(|s| *s = 1);
            return conv(isa, &sub, &xs1, w, ws, bias, &c1, out, os);
        }
        if !direct && kernel.len() == 2 {
            conv_2d_patches(isa, x, xs, w, ws, c, out, os);
            return add_bias(out, bias, m, p);
        }
        // The patch matrix is written straight in the GEMM's panel layout: per group,
        // `[panels][ck][nr]` (the last panel zero-padded), so the product streams it.
        let nr = gemm::kernel(isa).nr;
        let per_group = p.div_ceil(nr) * ck * nr;
        let mut col: Vec<f32> = if direct {
            Vec::new()
        } else {
            try_zeroed("convolution patches", groups * per_group)?
        };
        for img in 0..batch {
            let xi = &x[img * cin * plane..(img + 1) * cin * plane];
            if !direct {
                let dst = OutPtr(col.as_mut_ptr());
                // Row (group, channel, kernel offset) of the patch matrix, one task per row.
                (0..groups * ck).into_par_iter().for_each(|row| {
                    ROW.with_borrow_mut(|buf| {
                        buf.resize(p, 0.0);
                        let (ch, kk) = (row / ksize, row % ksize);
                        let mut kidx = vec![0usize; kernel.len()];
                        unflatten(kk, kernel, &mut kidx);
                        let src = &xi[ch * plane..(ch + 1) * plane];
                        if kernel.len() == 2 {
                            patch_row_2d(src, in_sp, out_sp, &c.window, &kidx, buf);
                        } else {
                            for_each_source(
                                &tables,
                                kernel,
                                &kidx,
                                out_sp,
                                &in_strides,
                                |o, at| {
                                    buf[o] = at.map_or(0.0, |a| src[a]);
                                },
                            );
                        }
                        let base = (row / ck) * per_group + (row % ck) * nr;
                        for (j, piece) in buf.chunks(nr).enumerate() {
                            // SAFETY: row r owns element r % ck of every panel of its group.
                            unsafe {
                                let at = dst.get().add(base + j * ck * nr);
                                std::ptr::copy_nonoverlapping(piece.as_ptr(), at, piece.len());
                            }
                        }
                    })
                });
            }
            let o = out[img * m * p..(img + 1) * m * p].as_mut_ptr();
            let jobs: Vec<GemmJob> = (0..groups)
                .map(|g| GemmJob {
                    m: mg,
                    n: p,
                    k: ck,
                    a: w[g * mg * ck..].as_ptr(),
                    lda: ck,
                    b: if direct {
                        BSource::Rows {
                            ptr: xi[g * ck * p..].as_ptr(),
                            ld: p,
                        }
                    } else {
                        BSource::Panels {
                            ptr: col[g * per_group..].as_ptr(),
                        }
                    },
                    // SAFETY: group g writes rows g * mg .. (g + 1) * mg of this image.
                    c: unsafe { o.add(g * mg * p) },
                    ldc: p,
                    bias: None,
                    act: None,
                })
                .collect();
            // SAFETY: w is [m, ck]; b holds groups x [ck, p]; each job writes its own rows.
            unsafe { gemm::driver::run(gemm::kernel(isa), &jobs) };
        }
    }
    add_bias(out, bias, m, p)
}

/// `out[.., ch, ..] += bias[ch]` over `[batch, m, p]`.
fn add_bias(out: &mut [f32], bias: Option<&[f32]>, m: usize, p: usize) -> Result<()> {
    if let Some(bias) = bias {
        out.par_chunks_mut(p.max(1))
            .enumerate()
            .for_each(|(row, dst)| dst.iter_mut().for_each(|v| *v += bias[row % m]));
    }
    Ok(())
}

/// A 2-D convolution whose patch panels are built as the GEMM reaches them, so the patch
/// matrix (kernel-size times the input) never exists whole.
#[allow(clippy::too_many_arguments)]
fn conv_2d_patches(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    c: &ConvAttrs,
    out: &mut [f32],
    os: &[usize],
) {
    let (batch, cin, m, cg) = (xs[0], xs[1], ws[0], ws[1]);
    let (groups, mg) = (c.groups, m / c.groups.max(1));
    let (plane, p) = (xs[2] * xs[3], os[2] * os[3]);
    let ck = cg * ws[2] * ws[3];
    let kern = gemm::kernel(isa);
    let sources: Vec<Patches> = (0..batch * groups)
        .map(|ig| {
            let (img, g) = (ig / groups, ig % groups);
            let at = (img * cin + g * cg) * plane;
            Patches::new(
                &x[at..at + cg * plane],
                cg,
                &xs[2..],
                &ws[2..],
                &os[2..],
                &c.window,
                kern.nr,
            )
        })
        .collect();
    let o = out.as_mut_ptr();
    let jobs: Vec<GemmJob> = sources
        .iter()
        .enumerate()
        .map(|(ig, src)| {
            let (img, g) = (ig / groups, ig % groups);
            GemmJob {
                m: mg,
                n: p,
                k: ck,
                a: w[g * mg * ck..].as_ptr(),
                lda: ck,
                b: BSource::Built(src),
                // SAFETY: job (img, g) writes rows g * mg .. (g + 1) * mg of image img.
                c: unsafe { o.add((img * m + g * mg) * p) },
                ldc: p,
                bias: None,
                act: None,
            }
        })
        .collect();
    // SAFETY: w is [m, ck]; every job's panels come from its own patches; each job writes
    // its own rows of out.
    unsafe { gemm::driver::run(kern, &jobs) };
}

/// The 2-D patch matrix `[channels * kh * kw, oh * ow]` of one image group, built a panel at a
/// time: row `(ch, ky, kx)`, column `(oy, ox)` holds input `(ch, oy * sh + ky * dh - ph,
/// ox * sw + kx * dw - pw)`, or zero in the padding.
struct Patches<'a> {
    x: &'a [f32],
    channels: usize,
    input: [usize; 2],
    kernel: [usize; 2],
    output: [usize; 2],
    window: &'a Window,
    /// Per kernel column `kx`: the output columns whose tap lands inside the input.
    cols: Vec<(usize, usize)>,
    nr: usize,
}

impl<'a> Patches<'a> {
    fn new(
        x: &'a [f32],
        channels: usize,
        input: &[usize],
        kernel: &[usize],
        output: &[usize],
        window: &'a Window,
        nr: usize,
    ) -> Self {
        let (iw, ow) = (input[1], output[1]);
        let (sw, dw, pw) = (window.strides[1], window.dilations[1], window.pads[1]);
        let cols = (0..kernel[1])
            .map(|kx| {
                let shift = kx * dw;
                let first = pw.saturating_sub(shift).div_ceil(sw).min(ow);
                let last = (iw + pw).saturating_sub(shift).div_ceil(sw).min(ow);
                (first, last.max(first))
            })
            .collect();
        Patches {
            x,
            channels,
            input: [input[0], input[1]],
            kernel: [kernel[0], kernel[1]],
            output: [output[0], output[1]],
            window,
            cols,
            nr,
        }
    }
}

impl gemm::driver::PanelSource for Patches<'_> {
    fn fill(&self, j: usize, buf: &mut [f32]) {
        let [ih, iw] = self.input;
        let [kh, kw] = self.kernel;
        let ow = self.output[1];
        let (w, nr) = (self.window, self.nr);
        let (sh, sw, dh, dw) = (w.strides[0], w.strides[1], w.dilations[0], w.dilations[1]);
        let (ph, pw) = (w.pads[0], w.pads[1]);
        let p = self.output[0] * ow;
        let c0 = j * nr;
        let cols = (p - c0).min(nr);
        for row in buf.chunks_exact_mut(nr) {
            row[cols..].fill(0.0);
        }
        // The panel's columns as runs within one output row: (first column, oy, ox, length).
        let mut at = c0;
        while at < c0 + cols {
            let (oy, ox) = (at / ow, at % ow);
            let len = (ow - ox).min(c0 + cols - at);
            let off = at - c0;
            let mut r = 0;
            for ch in 0..self.channels {
                let src = &self.x[ch * ih * iw..(ch + 1) * ih * iw];
                for ky in 0..kh {
                    let y = (oy * sh + ky * dh).checked_sub(ph).filter(|y| *y < ih);
                    for kx in 0..kw {
                        let dst = &mut buf[r * nr + off..r * nr + off + len];
                        r += 1;
                        let Some(y) = y else {
                            dst.fill(0.0);
                            continue;
                        };
                        // Inside the input: output columns first..last of this tap.
                        let (first, last) = self.cols[kx];
                        let (lo, hi) = (first.clamp(ox, ox + len), last.clamp(ox, ox + len));
                        dst[..lo - ox].fill(0.0);
                        dst[hi - ox..].fill(0.0);
                        if lo < hi {
                            let line = &src[y * iw..(y + 1) * iw];
                            let x0 = lo * sw + kx * dw - pw;
                            let seg = &mut dst[lo - ox..hi - ox];
                            if sw == 1 {
                                seg.copy_from_slice(&line[x0..x0 + seg.len()]);
                            } else {
                                seg.iter_mut()
                                    .enumerate()
                                    .for_each(|(i, v)| *v = line[x0 + i * sw]);
                            }
                        }
                    }
                }
            }
            at += len;
        }
    }
}

/// Row `(kh, kw)` of one channel's 2-D patch matrix: for each output row, the input row it
/// reads (or zeros in the padding), copied whole where the stride is 1.
fn patch_row_2d(
    src: &[f32],
    input: &[usize],
    output: &[usize],
    w: &Window,
    k: &[usize],
    dst: &mut [f32],
) {
    let (ih, iw, oh, ow) = (input[0], input[1], output[0], output[1]);
    let (sh, sw) = (w.strides[0], w.strides[1]);
    let (dh, dw) = (w.dilations[0], w.dilations[1]);
    let (ph, pw) = (w.pads[0], w.pads[1]);
    // Output columns whose input column `o * sw + k * dw - pw` lies in [0, iw).
    let shift = k[1] * dw;
    let first = pw.saturating_sub(shift).div_ceil(sw).min(ow);
    let last = (iw + pw).saturating_sub(shift).div_ceil(sw).min(ow);
    for (o, out) in dst.chunks_mut(ow.max(1)).enumerate().take(oh) {
        let y = (o * sh + k[0] * dh).checked_sub(ph).filter(|y| *y < ih);
        let Some(y) = y.filter(|_| first < last) else {
            out.fill(0.0);
            continue;
        };
        out[..first].fill(0.0);
        out[last..].fill(0.0);
        let row = &src[y * iw..(y + 1) * iw];
        let x0 = first * sw + shift - pw;
        if sw == 1 {
            out[first..last].copy_from_slice(&row[x0..x0 + last - first]);
        } else {
            for (i, v) in out[first..last].iter_mut().enumerate() {
                *v = row[x0 + i * sw];
            }
        }
    }
}

/// One input channel per output channel: each output plane is a weighted sum of shifted
/// copies of its input plane (2-D: whole runs of each output row at once).
#[allow(clippy::too_many_arguments)]
fn depthwise(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    window: &Window,
    tables: &[Vec<Option<usize>>],
    in_strides: &[usize],
    (channels, plane, ksize, p): (usize, usize, usize, usize),
    (in_sp, kernel, out_sp): (&[usize], &[usize], &[usize]),
    out: &mut [f32],
) {
    out.par_chunks_mut(p.max(1))
        .enumerate()
        .for_each(|(nc, dst)| {
            let ch = nc % channels;
            let src = &x[nc * plane..(nc + 1) * plane];
            if kernel.len() == 2 {
                let taps = &w[ch * ksize..(ch + 1) * ksize];
                return depthwise_plane_2d(isa, src, in_sp, out_sp, kernel, window, taps, dst);
            }
            dst.fill(0.0);
            let mut kidx = vec![0usize; kernel.len()];
            for kk in 0..ksize {
                unflatten(kk, kernel, &mut kidx);
                let wk = w[ch * ksize + kk];
                for_each_source(tables, kernel, &kidx, out_sp, in_strides, |o, at| {
                    if let Some(a) = at {
                        dst[o] += wk * src[a];
                    }
                });
            }
        });
}

thread_local! {
    /// A plane's rows split by column phase for a strided depthwise kernel (see below).
    static PHASED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One 2-D depthwise plane: each output row accumulates, tap by tap, a weighted run of an input
/// row. With a column stride `s` the input rows are first split into `s` phases (phase `q`
/// holds columns `q, q + s, ..`), so every tap reads a contiguous run and the loop vectorizes.
#[allow(clippy::too_many_arguments)]
fn depthwise_plane_2d(
    isa: Isa,
    src: &[f32],
    input: &[usize],
    output: &[usize],
    kernel: &[usize],
    w: &Window,
    taps: &[f32],
    dst: &mut [f32],
) {
    let (ih, iw, ow) = (input[0], input[1], output[1]);
    let (sh, sw, dh, dw) = (w.strides[0], w.strides[1], w.dilations[0], w.dilations[1]);
    let (ph, pw) = (w.pads[0], w.pads[1]);
    let (kh, kw) = (kernel[0], kernel[1]);
    // Per kernel column: the output columns it reaches inside the input, and where its run
    // starts in its phase row.
    let phase_len = iw.div_ceil(sw);
    let cols: Vec<(usize, usize, usize)> = (0..kw)
        .map(|kx| {
            let shift = kx * dw;
            let first = pw.saturating_sub(shift).div_ceil(sw).min(ow);
            let last = (iw + pw)
                .saturating_sub(shift)
                .div_ceil(sw)
                .min(ow)
                .max(first);
            let x0 = (first * sw + shift).saturating_sub(pw);
            (first, last, (x0 % sw) * phase_len + x0 / sw)
        })
        .collect();
    PHASED.with_borrow_mut(|phased| {
        let rows: &[f32] = if sw == 1 {
            src
        } else {
            phased.clear();
            phased.resize(ih * sw * phase_len, 0.0);
            for (y, row) in src.chunks_exact(iw).enumerate() {
                let out = &mut phased[y * sw * phase_len..(y + 1) * sw * phase_len];
                for (q, phase) in out.chunks_exact_mut(phase_len).enumerate() {
                    phase
                        .iter_mut()
                        .zip(row[q.min(iw)..].iter().step_by(sw))
                        .for_each(|(o, v)| *o = *v);
                }
            }
            phased
        };
        let plane = vmath::DepthwisePlane {
            rows,
            row_len: sw * phase_len,
            ih,
            ow,
            sh,
            dh,
            ph,
            kh,
            cols: &cols,
            taps,
        };
        // SAFETY: the ISA is this CPU's (resolved by the executable).
        unsafe { vmath::depthwise_plane(isa, &plane, dst) };
    });
}

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
        out.par_chunks_mut(p.max(1))
            .enumerate()
            .for_each(|(nc, dst)| {
                pool_plane_2d(&x[nc * plane..(nc + 1) * plane], in_sp, out_sp, a, dst)
            });
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

/// One `[h, w]` plane of a 2-D max or average pool, a window row and column at a time over
/// whole runs of each output row (taps in the same order as the N-d loop).
fn pool_plane_2d(src: &[f32], input: &[usize], output: &[usize], a: &PoolAttrs, dst: &mut [f32]) {
    let w = &a.window;
    let (iw, ow) = (input[1], output[1]);
    let (sw, dw, pw) = (w.strides[1], w.dilations[1], w.pads[1]);
    let cols: Vec<(usize, usize, usize)> = (0..ow).map(|ox| taps(ox, 1, iw, w)).collect();
    let max = a.kind == PoolKind::Max;
    for (oy, row) in dst.chunks_mut(ow.max(1)).enumerate() {
        row.fill(if max { f32::NEG_INFINITY } else { 0.0 });
        let (ty, ny, py) = taps(oy, 0, input[0], w);
        for i in ty..ty + ny {
            let y = oy * w.strides[0] + i * w.dilations[0] - w.pads[0];
            let line = &src[y * iw..(y + 1) * iw];
            for kx in 0..w.kernel[1] {
                // Output columns whose tap kx lands inside the input row.
                let shift = kx * dw;
                let first = pw.saturating_sub(shift).div_ceil(sw).min(ow);
                let last = (iw + pw).saturating_sub(shift).div_ceil(sw).min(ow);
                let (run, x0) = (&mut row[first..last.max(first)], first * sw + shift - pw);
                let taps = line[x0..].iter().step_by(sw);
                if max {
                    // NaN wins, as in the N-d loop (a select, so the loop has no branch).
                    run.iter_mut()
                        .zip(taps)
                        .for_each(|(v, &t)| *v = if t > *v || t.is_nan() { t } else { *v });
                } else {
                    run.iter_mut().zip(taps).for_each(|(v, &t)| *v += t);
                }
            }
        }
        if !max {
            for (v, &(_, nx, px)) in row.iter_mut().zip(&cols) {
                let n = if a.count_include_pad {
                    py * px
                } else {
                    ny * nx
                };
                *v /= n.max(1) as f32;
            }
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
