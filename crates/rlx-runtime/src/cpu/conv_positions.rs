//! A 2-D convolution with the output positions as the GEMM's rows: `out[p, m] = patches[p, k]
//! @ weights[k, m]`, the weights packed once into panels like a linear's (K in `(ky, kx, c)`
//! order). The patch matrix is never built: the image is copied once to a zero-padded
//! channels-last layout `[h, w, c]`, where tap `(ky, kx)` of a run of output positions along a
//! row is a row-major block of `c`-long rows (`sw * c` apart) at a fixed offset. Each tap is one
//! K segment of the product, read in place; the micro-kernel (`MicroKernel::segs`) keeps its
//! sums in registers across the taps, and the position-major product goes back to `[channel,
//! position]` with the epilogue.

use std::cell::RefCell;

use rayon::prelude::*;
use rlx_ir::{ConvAttrs, UnaryOp};

use super::OutPtr;
use super::conv::Epilogue;
use super::gemm::{self, PackedB};
use super::isa::Isa;
use super::vmath::{self, Residual};
use crate::Result;
use crate::fallible::{grow, with_scratch};

/// Scratch f32s one block of images may hold (padded images and products): whole images per
/// block, at least one (small in unit tests, so they run several blocks).
const BLOCK_ELEMS: usize = if cfg!(test) { 1 << 8 } else { 1 << 21 };
/// Channels per task when the product goes back to `[channel, position]`.
const CHANNEL_BLOCK: usize = 16;
/// Tasks per thread the product aims for.
const TASKS_PER_THREAD: usize = 4;
/// Input channels up to which a channel-major image is made channels-last by an interleaving
/// kernel (a stem's RGB) rather than 8-channel blocks of scalar copies.
const SMALL_CHANNELS: usize = 4;

thread_local! {
    /// One block of images: padded channels-last images and the `[p, m]` product; reused.
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Whether a convolution runs position-major: 2-D, one group, no empty axis, a kernel larger
/// than 1x1, at least 16 input channels (one tap's K segment), and no more output positions
/// per image than output channels.
pub fn chosen(xs: &[usize], ws: &[usize], os: &[usize], groups: usize) -> bool {
    let nonempty = xs[1..].iter().chain(ws).all(|d| *d > 0);
    xs.len() == 4
        && groups == 1
        && nonempty
        && xs[1] >= 16
        && os[2] * os[3] <= ws[0]
        && ws[2] * ws[3] > 1
}

/// The padded channels-last geometry: rows and columns the window reaches.
pub(super) fn padded(xs: &[usize], ws: &[usize], os: &[usize], c: &ConvAttrs) -> (usize, usize) {
    let w = &c.window;
    let reach = |o: usize, s: usize, k: usize, d: usize| {
        o.saturating_sub(1) * s + k.saturating_sub(1) * d + 1
    };
    let rows = (w.pads[0] + xs[2]).max(reach(os[2], w.strides[0], ws[2], w.dilations[0]));
    let cols = (w.pads[1] + xs[3]).max(reach(os[3], w.strides[1], ws[3], w.dilations[1]));
    (rows, cols)
}

/// Images per block and the f32 scratch one block needs: padded image and product
/// (`n_pad` = `m` rounded up to whole panels).
pub fn block(
    xs: &[usize],
    ws: &[usize],
    os: &[usize],
    c: &ConvAttrs,
    n_pad: usize,
) -> (usize, usize) {
    let (rows, cols) = padded(xs, ws, os, c);
    // Saturating: the memory budget calls this on shapes no run has checked yet.
    let per_image = rows
        .saturating_mul(cols)
        .saturating_mul(xs[1])
        .saturating_add(os[2].saturating_mul(os[3]).saturating_mul(n_pad));
    let images = (BLOCK_ELEMS / per_image.max(1)).clamp(1, xs[0].max(1));
    (images, images.saturating_mul(per_image))
}

/// `out = epi(conv(x, w))` with `w`'s panels `packed` (`[k = kh * kw * c, n = m]`).
#[allow(clippy::too_many_arguments)]
pub fn conv(
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
    let (batch, m, cin, plane) = (xs[0], ws[0], xs[1], xs[2] * xs[3]);
    let p = os[2] * os[3];
    if out.is_empty() {
        return Ok(());
    }
    let kern = gemm::kernel(isa);
    let n_pad = packed.panels() * kern.nr;
    let (rows, cols) = padded(xs, ws, os, c);
    let image_len = rows * cols * cin;
    let (images, _) = block(xs, ws, os, c, n_pad);
    with_scratch(&SCRATCH, |[hwc, prod]| {
        grow(hwc, images * image_len, "a padded channels-last image")?;
        grow(prod, images * p * n_pad, "a position-major product")?;
        for first in (0..batch).step_by(images) {
            let n_img = images.min(batch - first);
            let src = &x[first * cin * plane..(first + n_img) * cin * plane];
            let hwc = &mut hwc[..n_img * image_len];
            channels_last_padded(src, xs, (rows, cols), c, hwc);
            let prod = &mut prod[..n_img * p * n_pad];
            product(
                kern,
                hwc,
                (rows, cols),
                packed,
                (xs, ws, os, c),
                (prod, n_pad),
                None,
            );
            // Position-major back to [image, channel, position], a block of channels per task
            // (each position's block is one read), with the epilogue.
            let (dst, src) = (OutPtr(out.as_mut_ptr()), &prod[..]);
            let blocks = m.div_ceil(CHANNEL_BLOCK);
            (0..n_img * blocks).into_par_iter().for_each(|ib| {
                let (img, ch0) = (ib / blocks, (ib % blocks) * CHANNEL_BLOCK);
                let ch1 = (ch0 + CHANNEL_BLOCK).min(m);
                // SAFETY: planes (first + img, ch0..ch1) of out belong to this task alone.
                let planes = unsafe {
                    let at = ((first + img) * m + ch0) * p;
                    std::slice::from_raw_parts_mut(dst.get().add(at), (ch1 - ch0) * p)
                };
                let rows = &src[img * p * n_pad..(img + 1) * p * n_pad];
                for (q, row) in rows.chunks_exact(n_pad).enumerate() {
                    for (i, v) in row[ch0..ch1].iter().enumerate() {
                        planes[i * p + q] = *v;
                    }
                }
                for (i, plane) in planes.chunks_exact_mut(p).enumerate() {
                    epi.plane(isa, (first + img) * m + ch0 + i, m, plane);
                }
            });
        }
        Ok(())
    })
}

/// What `product` does to each output row of a panel once its tiles are done (a channels-last
/// output, whose rows are whole positions): `act(sum + bias[channel] + residual)`, the residual
/// laid out `[images, positions, m]` as the block's output. The row is still in cache.
pub(super) struct RowEpilogue<'a> {
    pub isa: Isa,
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub m: usize,
    pub act: Option<UnaryOp>,
}

/// `prod[img, p, 0..ldc] = patches @ packed` for every image of the block, tap by tap, one
/// task per (image, block of output rows, panel). `ldc` is the product's row length: whole
/// panels (`n_pad`), whose edge panel's zero columns land in the padding, or the channels
/// themselves (`m`), an edge panel's tiles then storing only its channels
/// (`TileEpilogue::cols`).
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    kern: &gemm::MicroKernel,
    hwc: &[f32],
    (rows, cols): (usize, usize),
    packed: &PackedB,
    (xs, ws, os, c): (&[usize], &[usize], &[usize], &ConvAttrs),
    (prod, ldc): (&mut [f32], usize),
    epi: Option<&RowEpilogue>,
) {
    let (cin, kh, kw) = (xs[1], ws[2], ws[3]);
    let (oh, ow) = (os[2], os[3]);
    let w = &c.window;
    let (sh, sw, dh, dw) = (w.strides[0], w.strides[1], w.dilations[0], w.dilations[1]);
    let (nr, mr, panels) = (kern.nr, kern.mr, packed.panels());
    debug_assert!(ldc > (panels - 1) * nr && ldc <= panels * nr);
    let n_img = prod.len() / (oh * ow * ldc);
    // Whole images per task where there are enough (image, panel) pairs: each task streams
    // its weight panel once, and a deep layer's weights are the bulk of its memory traffic.
    let want = TASKS_PER_THREAD * rayon::current_num_threads();
    let row_blocks = want.div_ceil(n_img * panels).clamp(1, oh.max(1));
    let rows_per_task = oh.div_ceil(row_blocks);
    // K in pieces read in place (see `k_pieces`), all in one call per tile: the sums stay in
    // registers across every piece and the weight panel streams from L2 in order. (In blocks
    // of 256 K rows, a block's slice of B stayed in L1 but the sums went to memory and back
    // between blocks: ResNet-50's 3x3 layers ran 1-10% slower.)
    let (pieces, len) = k_pieces((kh, kw), cin, (dh, dw), cols);
    let out = OutPtr(prod.as_mut_ptr());
    let image_len = rows * cols * cin;
    (0..n_img * row_blocks * panels)
        .into_par_iter()
        .for_each(|t| {
            let (j, rb, img) = (
                t % panels,
                (t / panels) % row_blocks,
                t / (panels * row_blocks),
            );
            let image = &hwc[img * image_len..(img + 1) * image_len];
            let bp = packed.panel(j);
            // Columns of this panel in the product: fewer than nr in an edge panel of a
            // product as wide as its channels, whose tiles store only those.
            let width = nr.min(ldc - j * nr);
            // An edge panel of half the width or less: one vector per row (a 16-channel
            // stem computed 32 columns, half of them thrown away).
            let segs = match kern.half_segs {
                Some(half) if 2 * width <= nr => half,
                _ => kern.segs,
            };
            // The next panel streams in a piece per output row while this one is computed (a
            // deep layer's weights come from memory; the GEMM driver does the same).
            let next = (j + 1 < panels).then(|| packed.panel(j + 1));
            let task_rows = rb * rows_per_task..((rb + 1) * rows_per_task).min(oh);
            let panel_len = packed.k * nr;
            let piece = panel_len.div_ceil(task_rows.len().max(1));
            let mut fetched = 0;
            // The epilogue goes in the tile stores where it can (no activation but relu / relu6,
            // and a whole panel or no residual); else over each row after its tiles. (A 24-channel
            // stem's last 8 channels, scalar per row, took a third of its time.)
            let in_tiles = epi.filter(|e| {
                gemm::StoreAct::of(e.act).is_some() && (width == nr || e.residual.is_none())
            });
            // An edge panel's bias, padded to the tile's width.
            let edge_bias: Vec<f32> = match in_tiles.and_then(|e| e.bias) {
                Some(b) if width < nr => (0..nr)
                    .map(|i| if i < width { b[j * nr + i] } else { 0.0 })
                    .collect(),
                _ => Vec::new(),
            };
            for oy in task_rows {
                // At most BURST floats of the piece at the row's start; the rest from
                // inside its first tile's steps (7x7 layers' pieces are 73 lines).
                let mut rest = (std::ptr::null(), 0);
                if let Some(n) = next
                    && fetched < panel_len
                {
                    let here = piece.min(panel_len - fetched);
                    let burst = here.min(gemm::driver::BURST);
                    // SAFETY: the next panel holds panel_len floats; fetched < that.
                    gemm::driver::prefetch(unsafe { n.add(fetched) }, burst);
                    if here > burst {
                        let chunks = pieces.len() * len.div_ceil(16);
                        rest = (
                            n.wrapping_add(fetched + burst),
                            (here - burst)
                                .div_ceil(16)
                                .div_ceil(chunks.max(1))
                                .min(gemm::driver::STREAM_LINES),
                        );
                    }
                    fetched += here;
                }
                let q0 = (img * oh + oy) * ow;
                for (ox, h) in gemm::driver::row_tiles(0..ow, mr) {
                    let (next_b, next_b_lines) =
                        std::mem::replace(&mut rest, (std::ptr::null(), 0));
                    let tile_epi = match in_tiles {
                        Some(e) => gemm::TileEpilogue {
                            bias: match (e.bias, width < nr) {
                                (None, _) => std::ptr::null(),
                                (Some(_), true) => edge_bias.as_ptr(),
                                (Some(b), false) => b[j * nr..].as_ptr(),
                            },
                            res: e.residual.map_or(std::ptr::null(), |r| {
                                r[(q0 + ox) * e.m + j * nr..].as_ptr()
                            }),
                            ld_res: e.m,
                            act: gemm::StoreAct::fused(e.act, true),
                            next_a: std::ptr::null(),
                            next_b,
                            next_b_lines,
                            cols: width,
                        },
                        None => gemm::TileEpilogue {
                            next_b,
                            next_b_lines,
                            cols: width,
                            ..gemm::TileEpilogue::NONE
                        },
                    };
                    // The tile's first position reads padded (oy * sh, ox * sw).
                    let a0 = (oy * sh * cols + ox * sw) * cin;
                    debug_assert!(
                        a0 + pieces[pieces.len() - 1] + (h - 1) * sw * cin + len <= image.len()
                    );
                    // SAFETY: rows a0 + piece + r * sw * cin (r < h) of len floats lie in
                    // the padded image (the window reaches inside it); panel j holds K rows;
                    // the product tile (img, oy, ox.., the panel's `width` columns) belongs
                    // to this task.
                    unsafe {
                        segs(
                            h,
                            &pieces,
                            len,
                            image.as_ptr().add(a0),
                            sw * cin,
                            bp,
                            nr,
                            out.get().add((q0 + ox) * ldc + j * nr),
                            ldc,
                            false,
                            &tile_epi,
                        );
                    }
                }
                if let Some(e) = epi.filter(|_| in_tiles.is_none()) {
                    let cols_here = width.min(e.m.saturating_sub(j * nr));
                    // SAFETY: row oy of panel j (ow positions of cols_here channels, ldc
                    // apart) belongs to this task; the residual holds the block's
                    // positions.
                    unsafe {
                        let res = e.residual.map(|r| Residual {
                            ptr: r.as_ptr().add(q0 * e.m + j * nr),
                            ld: e.m,
                        });
                        vmath::bias_residual_act_block(
                            e.isa,
                            out.get().add(q0 * ldc + j * nr),
                            ow,
                            cols_here,
                            ldc,
                            e.bias.map(|b| &b[j * nr..j * nr + cols_here]),
                            res,
                            e.act,
                        );
                    }
                }
            }
        });
}

/// The K pieces of a channels-last implicit GEMM: `(offsets in the padded image, length)`. K
/// runs over the taps in order, `cin` rows each, as the weights are packed. Without column
/// dilation a kernel row's taps are adjacent in the image, so a kernel row is one piece of
/// `kw * cin`; else a tap is.
fn k_pieces(
    (kh, kw): (usize, usize),
    cin: usize,
    (dh, dw): (usize, usize),
    cols: usize,
) -> (Vec<usize>, usize) {
    if dw == 1 {
        return ((0..kh).map(|ky| ky * dh * cols * cin).collect(), kw * cin);
    }
    let taps = (0..kh * kw).map(|t| ((t / kw) * dh * cols + (t % kw) * dw) * cin);
    (taps.collect(), cin)
}

/// `[images, c, h, w]` to zero-padded `[images, rows, cols, c]` (the image at row `pads[0]`,
/// column `pads[1]`), one padded row per task; every element is written.
pub(super) fn channels_last_padded(
    src: &[f32],
    xs: &[usize],
    (rows, cols): (usize, usize),
    c: &ConvAttrs,
    dst: &mut [f32],
) {
    let (cin, ih, iw) = (xs[1], xs[2], xs[3]);
    let (ph, pw) = (c.window.pads[0], c.window.pads[1]);
    let plane = ih * iw;
    dst.par_chunks_mut(cols * cin)
        .enumerate()
        .for_each(|(r, row)| {
            let (img, y) = (r / rows, r % rows);
            let Some(yy) = y.checked_sub(ph).filter(|yy| *yy < ih) else {
                row.fill(0.0);
                return;
            };
            row[..pw * cin].fill(0.0);
            row[(pw + iw) * cin..].fill(0.0);
            let s = &src[img * cin * plane..(img + 1) * cin * plane];
            let inner = &mut row[pw * cin..(pw + iw) * cin];
            if cin <= SMALL_CHANNELS {
                super::layout::interleave_planes(&s[yy * iw..], plane, cin, inner);
                return;
            }
            // Blocks of 8 channels x positions keep the reads and writes in few cache lines.
            for c0 in (0..cin).step_by(8) {
                let c1 = (c0 + 8).min(cin);
                for x in 0..iw {
                    for ch in c0..c1 {
                        inner[x * cin + ch] = s[ch * plane + yy * iw + x];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use rlx_ir::{ConvAttrs, Window};

    use super::super::gemm::PackedB;
    use super::super::isa::Isa;

    #[test]
    fn blocks_of_images_match_the_channel_major_conv() {
        // 3 images of 8 positions, 16 input channels, a stride and asymmetric pads: several
        // blocks (BLOCK_ELEMS in tests). Output channels 20, 16 and 40: edge panels of every
        // width class, here computed whole into the product (the channels-last path stores
        // only their channels: tests/vision.rs).
        let xs = [3usize, 16, 5, 4];
        let window = Window {
            kernel: vec![3, 3],
            strides: vec![1, 2],
            dilations: vec![1, 1],
            pads: vec![1, 1, 0, 1],
        };
        let c = ConvAttrs::new(window, 1);
        let x: Vec<f32> = (0..3 * 16 * 20)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        for m in [20usize, 16, 40] {
            let (ws, os) = ([m, 16, 3, 3], [3usize, m, 4, 2]);
            assert!(super::chosen(&xs, &ws, &os, 1));
            assert!(super::block(&xs, &ws, &os, &c, 32).0 < 3);
            let w: Vec<f32> = (0..m * 16 * 9)
                .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
                .collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 / 4.0).collect();
            for isa in Isa::available() {
                let nr = super::gemm::kernel(isa).nr;
                let reordered = super::super::executor_plan::taps_major(&w, m, 16, 9).unwrap();
                let packed = PackedB::new(&reordered, 144, m, true, nr).unwrap();
                let mut got = vec![0.0; 3 * m * 8];
                let epi = super::Epilogue {
                    bias: Some(&bias),
                    ..Default::default()
                };
                super::conv(isa, &x, &xs, &packed, &ws, &epi, &c, &mut got, &os).unwrap();
                let mut want = vec![0.0; 3 * m * 8];
                super::super::conv::conv(isa, &x, &xs, &w, &ws, &epi, &c, &mut want, &os).unwrap();
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{isa} m={m} [{i}]: {g} vs {e}"
                    );
                }
            }
        }
    }
}
