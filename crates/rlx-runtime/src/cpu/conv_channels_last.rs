//! 2-D convolutions over channels-last `[batch, h, w, c]` tensors (`ConvAttrs::channels_last`,
//! set by the optimizer's `channels_last` pass), the residual and output laid out the same way.
//!
//! - One group with packed weights: an unpadded 1x1 kernel is one linear over every position
//!   of the batch; other kernels are the implicit GEMM of `conv_positions` (positions as rows,
//!   kernel rows or taps as K pieces), reading the input in place when the window needs no
//!   padding and writing the output in place when the channels fill whole panels. No
//!   transposes. A 3x3 kernel of stride 1 with enough channels and positions runs as
//!   Winograd's F(2x2, 3x3) instead (`winograd.rs`).
//! - Depthwise: each position's channels as vectors (`vmath::depthwise_rows`), 3x3 rows in
//!   groups that share their input rows.
//! - A grouped unpadded 1x1 kernel of stride 1 (ShuffleNet's): a linear per group over every
//!   position, its inputs a slice of each position's channels, its outputs another.
//! - Anything else (weights not packed, e.g. computed weights or `prepack` off): the
//!   channel-major kernel between transposes.
//!
//! The epilogue (bias, residual, activation) is applied as the results are stored: by the
//! GEMM's tiles or blocks, by the implicit GEMM per output row, by the depthwise kernel.

use std::cell::RefCell;

use rayon::prelude::*;
use rlx_ir::ConvAttrs;

use super::OutPtr;
use super::conv::{self, Epilogue};
use super::conv_positions::{self, RowEpilogue};
use super::gemm::{self, BSource, GemmJob, PackedB};
use super::isa::Isa;
use super::layout::transpose;
use super::vmath::{self, DepthwiseRows, Residual, RowShift, StoreAct};
use super::winograd;
use crate::Result;
use crate::fallible::{grow, try_copy, try_zeroed, with_scratch};

/// f32s of padded images (and product) one block of a channels-last convolution aims for.
const L2_BLOCK: usize = 1 << 18;

thread_local! {
    /// A block of padded images and the product when it cannot be written in place; reused.
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// `[n, h, w, c]` as `[n, c, h, w]` (a shape).
fn first(s: &[usize]) -> [usize; 4] {
    [s[0], s[3], s[1], s[2]]
}

/// The input's shape `[n, c, h, w]`, whichever layout it has (`input_channel_major`).
pub fn input_first(xs: &[usize], c: &ConvAttrs) -> [usize; 4] {
    match c.input_channel_major {
        true => [xs[0], xs[1], xs[2], xs[3]],
        false => first(xs),
    }
}

/// Whether the input is read in place: the window reaches no padding.
fn in_place(xs: &[usize], ws: &[usize], os: &[usize], c: &ConvAttrs) -> bool {
    let (xf, of) = (first(xs), first(os));
    let (rows, cols) = conv_positions::padded(&xf, ws, &of, c);
    c.window.pads[..2].iter().all(|p| *p == 0) && rows == xs[1] && cols == xs[2]
}

/// Scratch f32s a channels-last convolution may hold (a bound for the memory budget).
pub fn scratch(xs: &[usize], ws: &[usize], os: &[usize], c: &ConvAttrs, nr: usize) -> usize {
    let xf = input_first(xs, c);
    let n_pad = ws[0].div_ceil(nr.max(1)).saturating_mul(nr);
    let gemm = conv_positions::block(&xf, ws, &first(os), c, n_pad).1;
    // The transposing fallback: input, residual and output channel-major (and a channel-major
    // input first made channels-last).
    let numel = |s: &[usize]| s.iter().fold(1usize, |a, d| a.saturating_mul(*d));
    let inputs = numel(xs).saturating_mul(1 + usize::from(c.input_channel_major));
    let fallback = inputs.saturating_add(numel(os).saturating_mul(2));
    // A strided 1x1 kernel: the subsampled batch.
    let subsampled = numel(&os[..3]).saturating_mul(xf[1]);
    let transformed = match winograd::chosen(xs, ws, os, c) {
        true => winograd::scratch(xs, ws, os, nr),
        false => 0,
    };
    gemm.max(fallback).max(subsampled).max(transformed)
}

/// `out = epi(conv(x, w))` in channels-last layout. `packed`: the weight's panels (`[k = kh *
/// kw * c, n = m]`, K in (ky, kx, c) order) when the executable packed it; `w` the raw weight.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    packed: Option<&PackedB>,
    w: &[f32],
    ws: &[usize],
    epi: &Epilogue,
    c: &ConvAttrs,
    out: &mut [f32],
    os: &[usize],
) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let pointwise = ws[2] == 1 && ws[3] == 1 && c.window.pads.iter().all(|p| *p == 0);
    if c.input_channel_major {
        let xl = [xs[0], xs[2], xs[3], xs[1]];
        if let Some(p) = packed.filter(|_| c.groups == 1 && !pointwise) {
            return gemm_conv(isa, x, &xl, p, ws, epi, c, out, os);
        }
        // Every other kernel reads the channels-last input it expects.
        let mut xt = try_zeroed::<f32>("a channels-last convolution input", x.len())?;
        transpose(x, xs, &[0, 2, 3, 1], &mut xt);
        let c = ConvAttrs {
            input_channel_major: false,
            ..c.clone()
        };
        return self::conv(isa, &xt, &xl, packed, w, ws, epi, &c, out, os);
    }
    match packed {
        Some(p) if c.groups == 1 && pointwise => linear(isa, x, xs, p, epi, c, out, os, false),
        Some(p) if winograd::chosen(xs, ws, os, c) => {
            winograd::conv(isa, x, xs, p, ws, epi, c, out, os)
        }
        Some(p) if c.groups == 1 => gemm_conv(isa, x, xs, p, ws, epi, c, out, os),
        _ if ws[1] == 1 && c.groups == ws[0] && c.groups == xs[3] => {
            depthwise(isa, x, xs, w, ws, epi, c, out, os)
        }
        _ if c.grouped_pointwise(ws) => {
            grouped_linear(isa, x, xs, packed, w, epi, c, out, os, false);
            Ok(())
        }
        _ => transposed(isa, x, xs, w, ws, epi, c, out, os),
    }
}

/// `out = act(conv(x, w) + bias + out)`: the output holds the residual (the arena plan put it
/// over the residual's memory, `ConvAttrs::sums_onto_residual`; `epi` has no residual). The
/// pointwise product adds its sums onto it; any other path (weights not packed) reads a copy.
#[allow(clippy::too_many_arguments)]
pub fn conv_onto_residual(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    packed: Option<&PackedB>,
    w: &[f32],
    ws: &[usize],
    epi: &Epilogue,
    c: &ConvAttrs,
    out: &mut [f32],
    os: &[usize],
) -> Result<()> {
    match packed {
        Some(p) if c.sums_onto_residual() && c.groups == 1 => {
            linear(isa, x, xs, p, epi, c, out, os, true)
        }
        _ if c.sums_onto_residual() && c.grouped_pointwise(ws) => {
            grouped_linear(isa, x, xs, packed, w, epi, c, out, os, true);
            Ok(())
        }
        _ => {
            let residual = try_copy("a convolution residual", out)?;
            let epi = Epilogue {
                residual: Some(&residual),
                ..*epi
            };
            conv(isa, x, xs, packed, w, ws, &epi, c, out, os)
        }
    }
}

/// An unpadded 1x1 kernel is a linear over positions: `out[p, m] = x[p, c] @ w[c, m]` for every
/// position of the batch as one product (a strided kernel reads a subsampled copy first).
/// `onto_out`: `out` holds the residual, which the product adds its sums onto.
#[allow(clippy::too_many_arguments)]
fn linear(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    packed: &PackedB,
    epi: &Epilogue,
    c: &ConvAttrs,
    out: &mut [f32],
    os: &[usize],
    onto_out: bool,
) -> Result<()> {
    let (cin, m) = (xs[3], os[3]);
    let positions = os[0] * os[1] * os[2];
    let (sh, sw) = (c.window.strides[0], c.window.strides[1]);
    let run = |a: &[f32], out: &mut [f32]| {
        // A residual at c itself is one the product adds onto (`GemmJob::residual`).
        let residual = match onto_out {
            true => Some(Residual {
                ptr: out.as_ptr(),
                ld: m,
            }),
            false => epi.residual.map(|r| Residual {
                ptr: r.as_ptr(),
                ld: m,
            }),
        };
        let job = GemmJob {
            m: positions,
            n: m,
            k: cin,
            a: a.as_ptr(),
            lda: cin,
            b: BSource::Packed(packed),
            c: out.as_mut_ptr(),
            ldc: m,
            bias: epi.bias,
            act: epi.act,
            residual,
        };
        // SAFETY: a holds positions rows of cin, the panels k = cin rows of m columns, out
        // positions rows of m; nothing else touches out during the call.
        unsafe { gemm::driver::run(gemm::kernel(isa), &[job]) };
    };
    if sh == 1 && sw == 1 {
        run(x, out);
        return Ok(());
    }
    with_scratch(&SCRATCH, |[sub, _]| {
        grow(sub, positions * cin, "a subsampled channels-last image")?;
        let (ih, iw, ow) = (xs[1], xs[2], os[2]);
        let sub = &mut sub[..positions * cin];
        sub.par_chunks_mut(ow * cin)
            .enumerate()
            .for_each(|(r, row)| {
                let (img, oy) = (r / os[1], r % os[1]);
                let line = &x[(img * ih + oy * sh) * iw * cin..];
                for (ox, dst) in row.chunks_exact_mut(cin).enumerate() {
                    dst.copy_from_slice(&line[ox * sw * cin..ox * sw * cin + cin]);
                }
            });
        run(sub, out);
        Ok(())
    })
}

/// A grouped unpadded 1x1 kernel of stride 1: per group a linear over every position of the
/// batch, `out[p, g * mg..][..mg] = x[p, g * cg..][..cg] @ w[g]^T` (`cg` = `c / groups` input,
/// `mg` = `m / groups` output channels), all groups' products in one parallel call. `packed`:
/// the weight's panels, each group's rows whole panels of their own
/// (`executor_plan::grouped_padded`); else the weight `[m, cg, 1, 1]` is read in place, each
/// group's rows as B transposed. `onto_out`: `out` holds the residual, which the products add
/// their sums onto.
#[allow(clippy::too_many_arguments)]
fn grouped_linear(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    packed: Option<&PackedB>,
    w: &[f32],
    epi: &Epilogue,
    c: &ConvAttrs,
    out: &mut [f32],
    os: &[usize],
    onto_out: bool,
) {
    let (cin, m, groups) = (xs[3], os[3], c.groups);
    let (cg, mg) = (cin / groups, m / groups);
    let positions = os[0] * os[1] * os[2];
    if positions == 0 || mg == 0 {
        // An empty batch (x empty: no group's slice to point into) or no outputs.
        return;
    }
    let dst = out.as_mut_ptr();
    let jobs: Vec<GemmJob> = (0..groups)
        .map(|g| GemmJob {
            m: positions,
            n: mg,
            k: cg,
            a: x[g * cg..].as_ptr(),
            lda: cin,
            b: match packed {
                Some(p) => BSource::Panels {
                    ptr: p.panel(g * mg.div_ceil(p.nr)),
                },
                None => BSource::Cols {
                    ptr: w[g * mg * cg..].as_ptr(),
                    ld: cg,
                },
            },
            c: dst.wrapping_add(g * mg),
            ldc: m,
            bias: epi.bias.map(|b| &b[g * mg..(g + 1) * mg]),
            act: epi.act,
            // A residual at c itself is one the product adds onto (`GemmJob::residual`).
            residual: match onto_out {
                true => Some(Residual {
                    ptr: dst.wrapping_add(g * mg),
                    ld: m,
                }),
                false => epi.residual.map(|r| Residual {
                    ptr: r[g * mg..].as_ptr(),
                    ld: m,
                }),
            },
        })
        .collect();
    // SAFETY: each job reads positions rows of cg inputs (cin apart) and mg weight rows of cg,
    // and writes its own mg columns of out (m apart); the residual is laid out as out.
    unsafe { gemm::driver::run(gemm::kernel(isa), &jobs) };
}

/// One group: the position-major implicit GEMM, written in place (an edge panel narrower than
/// the kernel's through a tile buffer), its epilogue applied per finished row. `xs` is the
/// input's channels-last shape even when it is laid out channel-major.
#[allow(clippy::too_many_arguments)]
fn gemm_conv(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    packed: &PackedB,
    ws: &[usize],
    epi: &Epilogue,
    c: &ConvAttrs,
    out: &mut [f32],
    os: &[usize],
) -> Result<()> {
    let (xf, of) = (first(xs), first(os));
    let (batch, ih, iw, cin) = (xs[0], xs[1], xs[2], xs[3]);
    let (p, m) = (os[1] * os[2], os[3]);
    let kern = gemm::kernel(isa);
    let n_pad = packed.panels() * kern.nr;
    let (rows, cols) = conv_positions::padded(&xf, ws, &of, c);
    let read_in_place = !c.input_channel_major && in_place(xs, ws, os, c);
    let image_len = rows * cols * cin;
    let images = if read_in_place {
        batch
    } else {
        // Few enough images that the block's padded copies are still in L2 when the product
        // reads them (5 images of ResNet-50's 56x56 layers were 4.3 MiB).
        (L2_BLOCK / image_len.max(1)).clamp(1, conv_positions::block(&xf, ws, &of, c, n_pad).0)
    };
    with_scratch(&SCRATCH, |[hwc, _]| {
        for first in (0..batch).step_by(images.max(1)) {
            let n_img = images.min(batch - first);
            let src = &x[first * ih * iw * cin..(first + n_img) * ih * iw * cin];
            let image: &[f32] = if read_in_place {
                src
            } else {
                grow(hwc, n_img * image_len, "a padded channels-last image")?;
                let hwc = &mut hwc[..n_img * image_len];
                match c.input_channel_major {
                    true => conv_positions::channels_last_padded(src, &xf, (rows, cols), c, hwc),
                    false => pad(src, xs, (rows, cols), c, hwc),
                }
                &hwc[..n_img * image_len]
            };
            let dst = &mut out[first * p * m..(first + n_img) * p * m];
            // Applied by the product to each finished row while it is in cache.
            let rows_epi = RowEpilogue {
                isa,
                bias: epi.bias,
                residual: epi
                    .residual
                    .map(|r| &r[first * p * m..(first + n_img) * p * m]),
                m,
                act: epi.act,
            };
            let rows_epi = (!epi.is_identity()).then_some(&rows_epi);
            let geometry = (&xf[..], ws, &of[..], c);
            conv_positions::product(
                kern,
                image,
                (rows, cols),
                packed,
                geometry,
                (dst, m),
                rows_epi,
            );
        }
        Ok(())
    })
}

/// `[images, ih, iw, c]` to zero-padded `[images, rows, cols, c]` (the image at row `pads[0]`,
/// column `pads[1]`), one padded row per task.
fn pad(src: &[f32], xs: &[usize], (rows, cols): (usize, usize), c: &ConvAttrs, dst: &mut [f32]) {
    let (ih, iw, cin) = (xs[1], xs[2], xs[3]);
    let (ph, pw) = (c.window.pads[0], c.window.pads[1]);
    dst.par_chunks_mut(cols * cin)
        .enumerate()
        .for_each(|(r, row)| {
            let (img, y) = (r / rows, r % rows);
            let Some(yy) = y.checked_sub(ph).filter(|yy| *yy < ih) else {
                row.fill(0.0);
                return;
            };
            let line = &src[((img * ih + yy) * iw) * cin..((img * ih + yy + 1) * iw) * cin];
            row[..pw * cin].fill(0.0);
            row[pw * cin..(pw + iw) * cin].copy_from_slice(line);
            row[(pw + iw) * cin..].fill(0.0);
        });
}

/// Depthwise (one channel per group, multiplier 1): one output row per task.
#[allow(clippy::too_many_arguments)]
fn depthwise(
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
    let (ch, (kh, kw)) = (xs[3], (ws[2], ws[3]));
    let win = &c.window;
    let g = DepthwiseRows {
        ih: xs[1],
        iw: xs[2],
        c: ch,
        kh,
        kw,
        sh: win.strides[0],
        sw: win.strides[1],
        dh: win.dilations[0],
        dw: win.dilations[1],
        ph: win.pads[0],
        pw: win.pads[1],
        ow: os[2],
    };
    // The weights as [kh * kw, c]: a tap's channels are one vector run. In this thread's
    // scratch: a fresh buffer each run (115 KiB for a 5x5 over 1,152 channels) faulted its
    // pages in every time.
    with_scratch(&SCRATCH, |[wt, _]| {
        grow(wt, kh * kw * ch, "depthwise weights")?;
        let wt = &mut wt[..kh * kw * ch];
        transpose(&w[..ch * kh * kw], &[ch, kh * kw], &[1, 0], wt);
        depthwise_with(isa, x, xs, wt, epi, &g, out, os);
        Ok(())
    })
}

/// `depthwise` with its weights as `[kh * kw, c]` in `wt`.
#[allow(clippy::too_many_arguments)]
fn depthwise_with(
    isa: Isa,
    x: &[f32],
    xs: &[usize],
    wt: &[f32],
    epi: &Epilogue,
    g: &DepthwiseRows,
    out: &mut [f32],
    os: &[usize],
) {
    let ch = g.c;
    let (oh, image) = (os[1], xs[1] * xs[2] * ch);
    // Bias and a relu or relu6 go in the kernel's stores; a residual or another activation
    // after it.
    let in_stores = StoreAct::of(epi.act)
        .filter(|_| epi.residual.is_none())
        .map(|act| RowShift {
            bias: epi.bias,
            act,
        });
    let row_len = os[2] * ch;
    // Each image's rows in even ranges, two per thread over the batch (a row's values do not
    // depend on where the ranges start). Four rows per task at most left a 14-row image's
    // second thread idle a quarter of the time; a 7-row image in three ranges (two rows at
    // least, for the 3x3 row groups), five rows on one thread of two.
    let parts = (2 * rayon::current_num_threads())
        .div_ceil(os[0].max(1))
        .clamp(1, oh.max(1));
    let dst = OutPtr(out.as_mut_ptr());
    (0..os[0] * parts)
        .into_par_iter()
        .for_each_init(Vec::new, |taps, t| {
            let (img, part) = (t / parts, t % parts);
            let oy = part * oh / parts;
            let count = (part + 1) * oh / parts - oy;
            let r = img * oh + oy;
            let image = &x[img * image..(img + 1) * image];
            // SAFETY: rows r..r + count of out belong to this task alone; the ISA is this
            // CPU's; x holds each image, wt the taps, the bias c values (inference checked).
            unsafe {
                let rows =
                    std::slice::from_raw_parts_mut(dst.get().add(r * row_len), count * row_len);
                if let Some(shift) = in_stores {
                    vmath::depthwise_rows(isa, g, image, wt, oy, count, shift, taps, rows);
                    return;
                }
                let plain = RowShift::default();
                vmath::depthwise_rows(isa, g, image, wt, oy, count, plain, taps, rows);
                let res = epi
                    .residual
                    .map(|res| &res[r * row_len..(r + count) * row_len]);
                vmath::position_epilogue(isa, rows, ch, epi.bias, res, epi.act);
            }
        });
}

/// The channel-major kernel between transposes of the input, residual and output.
#[allow(clippy::too_many_arguments)]
fn transposed(
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
    let to_first = [0, 3, 1, 2];
    let mut xf = try_zeroed::<f32>("a channel-major convolution input", x.len())?;
    transpose(x, xs, &to_first, &mut xf);
    let residual = match epi.residual {
        Some(r) => {
            let mut rf = try_zeroed::<f32>("a channel-major residual", r.len())?;
            transpose(r, os, &to_first, &mut rf);
            Some(rf)
        }
        None => None,
    };
    let mut of = try_zeroed::<f32>("a channel-major convolution output", out.len())?;
    let plain = ConvAttrs {
        channels_last: false,
        ..c.clone()
    };
    let epi = Epilogue {
        residual: residual.as_deref(),
        ..*epi
    };
    conv::conv(
        isa,
        &xf,
        &first(xs),
        w,
        ws,
        &epi,
        &plain,
        &mut of,
        &first(os),
    )?;
    transpose(&of, &first(os), &[0, 2, 3, 1], out);
    Ok(())
}
