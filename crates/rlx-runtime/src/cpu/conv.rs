//! Convolutions over `[batch, c, spatial..]` tensors on the shared GEMM.
//!
//! - A 1x1 stride-1 unpadded kernel reads the image in place as B, or of fewer positions than
//!   two panels with a partial one, a copy in panels made once per image (a strided unpadded
//!   1x1 kernel reads a subsampled copy).
//! - A 2-D kernel multiplies the weights (read in place) by patch panels the GEMM driver has
//!   built on demand (`Patches`) from a padded copy of the input, so the patch matrix never
//!   exists whole.
//! - Where an image has fewer output positions than output channels, the executable packs the
//!   weights and runs `conv_positions` instead.
//! - Other ranks write each image's patch matrix (im2col) in panel layout.
//! - Depthwise kernels (one input channel per group) run direct (`depthwise.rs`).
//!
//! Every path ends with the fused `Epilogue` (bias, residual, activation) over each output
//! plane.

use rayon::prelude::*;
use rlx_ir::{ConvAttrs, UnaryOp};

use super::OutPtr;
use super::depthwise::depthwise;
use super::gemm::{self, BSource, GemmJob};
use super::isa::Isa;
use super::padded::Padded;
use super::vmath;
use super::window::{for_each_source, source_tables, strides, unflatten};
use crate::Result;
use crate::fallible::{grow, try_zeroed, with_scratch};

thread_local! {
    /// The padded batch of a 2-D convolution's patch panels; a strided 1x1 kernel's
    /// subsampled batch. Kept between calls, taken out for the call (`with_scratch`).
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SUBSAMPLED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// One row of the patch matrix before it is split into panels.
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// An image of a 1x1 kernel in the GEMM's panel layout (`direct_panels`).
    static PANELS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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
    /// Whether the epilogue leaves the sums as they are.
    pub(super) fn is_identity(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && self.act.is_none()
    }

    /// Applies the epilogue to plane `r` (image `r / m`, channel `r % m`) of the output.
    pub fn plane(&self, isa: Isa, r: usize, m: usize, dst: &mut [f32]) {
        if self.is_identity() {
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
        if self.is_identity() {
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
        if ksize == 1 && !direct && c.window.pads.iter().all(|p| *p == 0) {
            // A strided 1x1 kernel reads a subsampled image: gather it once (2-D: a strided
            // run per output row), then read it in place like an unstrided one.
            let mut sub = SUBSAMPLED.take();
            grow(&mut sub, batch * cin * p, "a subsampled convolution input")?;
            let kidx = vec![0; kernel.len()];
            sub.par_chunks_mut(p.max(1))
                .zip(x.par_chunks(plane.max(1)))
                .for_each(|(dst, src)| {
                    if let ([sh, sw], [_, iw], [_, ow]) = (&c.window.strides[..], in_sp, out_sp) {
                        for (oy, row) in dst.chunks_exact_mut((*ow).max(1)).enumerate() {
                            let line = src[oy * sh * iw..].iter().step_by(*sw);
                            row.iter_mut().zip(line).for_each(|(d, v)| *d = *v);
                        }
                        return;
                    }
                    for_each_source(&tables, kernel, &kidx, out_sp, &in_strides, |o, at| {
                        dst[o] = at.map_or(0.0, |a| src[a]);
                    })
                });
            let mut xs1 = xs.to_vec();
            xs1[2..].copy_from_slice(out_sp);
            let mut c1 = c.clone();
            c1.window.strides.iter_mut().for_each(|s| *s = 1);
            let done = conv(isa, &sub[..batch * cin * p], &xs1, w, ws, epi, &c1, out, os);
            SUBSAMPLED.set(sub);
            return done;
        }
        if !direct && kernel.len() == 2 {
            conv_2d_patches(isa, x, xs, w, ws, c, out, os)?;
            epi.all(isa, out, m, p);
            return Ok(());
        }
        // The patch matrix is written straight in the GEMM's panel layout: per group,
        // `[panels][ck][nr]` (the last panel zero-padded), so the product streams it. A
        // direct kernel of fewer positions than two panels, the last one partial, gets the
        // image in that layout too (`direct_panels`): each task of the product would copy the
        // edge panel for itself, about as much as the whole image. Larger images are read in
        // place (copying them cost more than the tasks' edge copies: ShuffleNet's 14x14 and
        // 28x28 grouped layers, one thread, 4.1-4.3 -> 4.3-4.6 ms for the model).
        let nr = gemm::kernel(isa).nr;
        let per_group = p.div_ceil(nr) * ck * nr;
        let in_place = direct && (p % nr == 0 || p >= 2 * nr);
        let copied = direct && !in_place;
        let mut col: Vec<f32> = if direct {
            Vec::new()
        } else {
            try_zeroed("convolution patches", groups * per_group)?
        };
        with_scratch(&PANELS, |panels| {
            if copied {
                grow(panels, groups * per_group, "a convolution input in panels")?;
            }
            for img in 0..batch {
                let xi = &x[img * cin * plane..(img + 1) * cin * plane];
                if copied {
                    direct_panels(xi, (ck, p, nr), &mut panels[..groups * per_group]);
                } else if !direct {
                    let sizes = (ck, ksize, plane, p, nr);
                    patch_panels(xi, sizes, (&tables, kernel, out_sp, &in_strides), &mut col);
                }
                let o = out[img * m * p..(img + 1) * m * p].as_mut_ptr();
                // Panels: the copied image's or the patch matrix's.
                let built = if copied { &panels[..] } else { &col[..] };
                let jobs: Vec<GemmJob> = (0..groups)
                    .map(|g| GemmJob {
                        m: mg,
                        n: p,
                        k: ck,
                        a: w[g * mg * ck..].as_ptr(),
                        lda: ck,
                        b: match in_place {
                            true => BSource::Rows {
                                ptr: xi[g * ck * p..].as_ptr(),
                                ld: p,
                            },
                            false => BSource::Panels {
                                ptr: built[g * per_group..].as_ptr(),
                            },
                        },
                        // SAFETY: group g writes rows g * mg .. (g + 1) * mg of this image.
                        c: unsafe { o.add(g * mg * p) },
                        ldc: p,
                        bias: None,
                        act: None,
                        residual: None,
                    })
                    .collect();
                // SAFETY: w is [m, ck]; b holds groups x [ck, p]; each job writes its own rows.
                unsafe { gemm::driver::run(gemm::kernel(isa), &jobs) };
            }
            Ok::<(), crate::Error>(())
        })?;
    }
    epi.all(isa, out, m, p);
    Ok(())
}

/// An image's channels (`k` rows of `p` positions) as GEMM panels, group after group:
/// `[panels][k][nr]`, the last panel's columns past `p` zero. Every task of a product would
/// copy an edge panel of rows read in place for itself (ShuffleNet's grouped 1x1 layers, 49
/// positions: four jobs of about five tasks each on two threads).
fn direct_panels(xi: &[f32], (k, p, nr): (usize, usize, usize), dst: &mut [f32]) {
    let per_group = p.div_ceil(nr) * k * nr;
    let at = OutPtr(dst.as_mut_ptr());
    // One task per group of rows (a row is one channel: p floats).
    xi.par_chunks(p.max(1))
        .enumerate()
        .with_min_len(64)
        .for_each(|(row, src)| {
            let base = (row / k) * per_group + (row % k) * nr;
            for (j, piece) in src.chunks(nr).enumerate() {
                // SAFETY: row `row` owns element `row % k` of every panel of its group, nr
                // floats each, inside dst (groups x per_group).
                unsafe {
                    let d = at.get().add(base + j * k * nr);
                    std::ptr::copy_nonoverlapping(piece.as_ptr(), d, piece.len());
                    std::ptr::write_bytes(d.add(piece.len()), 0, nr - piece.len());
                }
            }
        });
}

/// Row (group, channel, kernel offset) of each group's patch matrix (`ck` rows of `p` per
/// group) into `col`'s panels (`[panels][ck][nr]` per group), one task per row.
#[allow(clippy::type_complexity)]
fn patch_panels(
    xi: &[f32],
    (ck, ksize, plane, p, nr): (usize, usize, usize, usize, usize),
    (tables, kernel, out_sp, in_strides): (&[Vec<Option<usize>>], &[usize], &[usize], &[usize]),
    col: &mut [f32],
) {
    let per_group = p.div_ceil(nr) * ck * nr;
    let dst = OutPtr(col.as_mut_ptr());
    (0..col.len() / per_group * ck)
        .into_par_iter()
        .for_each(|row| {
            ROW.with_borrow_mut(|buf| {
                buf.resize(p, 0.0);
                let (ch, kk) = (row / ksize, row % ksize);
                let mut kidx = vec![0usize; kernel.len()];
                unflatten(kk, kernel, &mut kidx);
                let src = &xi[ch * plane..(ch + 1) * plane];
                for_each_source(tables, kernel, &kidx, out_sp, in_strides, |o, at| {
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

/// A 2-D convolution whose patch panels are built as the GEMM reaches them, so the patch
/// matrix (kernel-size times the input) never exists whole. The panels copy runs of a padded
/// copy of the input (`Padded`, made once per call), so building one is plain copies.
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
) -> Result<()> {
    let (batch, cin, plane) = (xs[0], xs[1], xs[2] * xs[3]);
    let pad = Padded::new(&xs[2..], &os[2..], &ws[2..], &c.window);
    let plen = pad.plane_len();
    // The padded batch lives in this thread's scratch (kept between calls: a fresh buffer of
    // this size would be page-faulted in on every call); every element is written.
    with_scratch(&PADDED, |padded| {
        grow(padded, batch * cin * plen, "a padded convolution input")?;
        let padded = &mut padded[..batch * cin * plen];
        // By index: an empty input plane still writes its (all zero) padded plane.
        padded
            .par_chunks_mut(plen.max(1))
            .enumerate()
            .for_each(|(i, dst)| pad.fill_all(&x[i * plane..(i + 1) * plane], dst));
        patch_product(isa, padded, &pad, xs, w, ws, c, out, os);
        Ok(())
    })
}

/// The product of `conv_2d_patches` over the padded batch.
#[allow(clippy::too_many_arguments)]
fn patch_product(
    isa: Isa,
    padded: &[f32],
    pad: &Padded,
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    c: &ConvAttrs,
    out: &mut [f32],
    os: &[usize],
) {
    let (batch, cin, m, cg) = (xs[0], xs[1], ws[0], ws[1]);
    let (groups, mg) = (c.groups, m / c.groups.max(1));
    let (plen, p) = (pad.plane_len(), os[2] * os[3]);
    let ck = cg * ws[2] * ws[3];
    let kern = gemm::kernel(isa);
    let sources: Vec<Patches> = (0..batch * groups)
        .map(|ig| {
            let at = ((ig / groups) * cin + (ig % groups) * cg) * plen;
            Patches {
                planes: &padded[at..at + cg * plen],
                pad,
                channels: cg,
                kernel: [ws[2], ws[3]],
                output: [os[2], os[3]],
                rows: (c.window.strides[0], c.window.dilations[0]),
                nr: kern.nr,
            }
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
                residual: None,
            }
        })
        .collect();
    // SAFETY: w is [m, ck]; every job's panels come from its own patches; each job writes
    // its own rows of out.
    unsafe { gemm::driver::run(kern, &jobs) };
}

/// The 2-D patch matrix `[channels * kh * kw, oh * ow]` of one image group, built a panel at a
/// time: row `(ch, ky, kx)`, column `(oy, ox)` holds padded input `(ch, oy * sh + ky * dh,
/// ox * sw + kx * dw)` (zero in the padding), a run of a padded row per output row.
struct Patches<'a> {
    /// The group's `channels` padded planes.
    planes: &'a [f32],
    pad: &'a Padded,
    channels: usize,
    kernel: [usize; 2],
    output: [usize; 2],
    /// Row stride and dilation.
    rows: (usize, usize),
    nr: usize,
}

impl gemm::driver::PanelSource for Patches<'_> {
    fn fill(&self, j: usize, buf: &mut [f32]) {
        let [oh, ow] = self.output;
        let (sh, dh) = self.rows;
        let (nr, row_len, plen) = (self.nr, self.pad.row_len, self.pad.plane_len());
        let c0 = j * nr;
        let cols = (oh * ow - c0).min(nr);
        if cols < nr {
            for row in buf.chunks_exact_mut(nr) {
                row[cols..].fill(0.0);
            }
        }
        // The panel's columns as runs within one output row.
        let mut at = c0;
        while at < c0 + cols {
            let (oy, ox) = (at / ow, at % ow);
            let len = (ow - ox).min(c0 + cols - at);
            let mut r = at - c0;
            for ch in 0..self.channels {
                let plane = &self.planes[ch * plen..(ch + 1) * plen];
                for ky in 0..self.kernel[0] {
                    let line = &plane[(oy * sh + ky * dh) * row_len..][..row_len];
                    for &off in &self.pad.offsets {
                        buf[r..r + len].copy_from_slice(&line[off + ox..off + ox + len]);
                        r += nr;
                    }
                }
            }
            at += len;
        }
    }
}
