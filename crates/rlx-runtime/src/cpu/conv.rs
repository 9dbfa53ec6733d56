//! Convolutions over `[batch, c, spatial..]` tensors on the shared GEMM.
//!
//! - A 1x1 stride-1 unpadded kernel reads the image in place as B (a strided 1x1 kernel other
//!   than 2-D reads a subsampled copy).
//! - A 2-D kernel multiplies the weights (read in place) by patch panels the GEMM driver has
//!   built on demand (`Patches`), so the patch matrix never exists whole.
//! - Where an image has fewer output positions than output channels, the executable packs the
//!   weights and runs `conv_positions` instead.
//! - Other ranks write each image's patch matrix (im2col) in panel layout.
//! - Depthwise kernels (one input channel per group) run direct (`depthwise.rs`).

use rayon::prelude::*;
use rlx_ir::{ConvAttrs, UnaryOp, Window};

use super::OutPtr;
use super::depthwise::depthwise;
use super::gemm::{self, BSource, GemmJob};
use super::isa::Isa;
use super::vmath;
use super::window::{column_run, for_each_source, source_tables, strides, unflatten};
use crate::Result;
use crate::fallible::try_zeroed;

thread_local! {
    /// One row of the patch matrix before it is split into panels.
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What a convolution does to its sums: `act(sum + bias[channel] + residual)`, the residual
/// laid out as the output (`[batch, m, positions]`).
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub act: Option<UnaryOp>,
}

impl Epilogue<'_> {
    /// Applies the epilogue to plane `r` (image `r / m`, channel `r % m`) of the output.
    pub fn plane(&self, isa: Isa, r: usize, m: usize, dst: &mut [f32]) {
        if self.bias.is_none() && self.residual.is_none() && self.act.is_none() {
            return;
        }
        let p = dst.len();
        let bias = self.bias.map_or(0.0, |b| b[r % m]);
        let res = self.residual.map(|res| &res[r * p..(r + 1) * p]);
        // SAFETY: the ISA is this CPU's (resolved by the executable).
        unsafe { vmath::channel_epilogue(isa, dst, bias, res, self.act) }
    }

    /// Applies the epilogue to every plane of `out = [batch, m, p]`, one plane per task.
    fn all(&self, isa: Isa, out: &mut [f32], m: usize, p: usize) {
        if self.bias.is_none() && self.residual.is_none() && self.act.is_none() {
            return;
        }
        out.par_chunks_mut(p.max(1))
            .enumerate()
            .for_each(|(r, dst)| self.plane(isa, r, m, dst));
    }
}

/// `out = epi(conv(x, w))`; shapes as inference gave them.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    epi: &Epilogue,
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
            epi,
            out,
        );
        return Ok(());
    } else {
        let ck = cg * ksize;
        let direct = ksize == 1
            && c.window.strides.iter().all(|s| *s == 1)
            && c.window.pads.iter().all(|p| *p == 0);
        if ksize == 1 && !direct && kernel.len() != 2 && c.window.pads.iter().all(|p| *p == 0) {
            // A strided 1x1 kernel (other than 2-D, whose patch panels measured faster) reads a
            // subsampled image: gather it once, then read it in place like an unstrided one.
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
            return conv(isa, &sub, &xs1, w, ws, epi, &c1, out, os);
        }
        if !direct && kernel.len() == 2 {
            conv_2d_patches(isa, x, xs, w, ws, c, out, os);
            epi.all(isa, out, m, p);
            return Ok(());
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
                        for_each_source(&tables, kernel, &kidx, out_sp, &in_strides, |o, at| {
                            buf[o] = at.map_or(0.0, |a| src[a]);
                        });
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
    epi.all(isa, out, m, p);
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
        let cols = (0..kernel[1])
            .map(|kx| {
                column_run(kx, input[1], output[1], window).map_or((0, 0), |(f, l, _)| (f, l))
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
