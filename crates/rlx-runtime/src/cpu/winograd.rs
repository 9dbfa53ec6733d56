//! 3x3 convolutions of stride 1 over channels-last tensors by Winograd's minimal filtering
//! F(2x2, 3x3): each 2x2 patch of outputs costs 16 multiplies per (input, output) channel
//! pair where the direct product costs 36.
//!
//! The weight is transformed once, at pack time, into 16 `[c, m]` matrices (`G g G^T`, one
//! per point of a tile) packed side by side as one `[c, 16 * m_pad]` operand. A run then goes
//! through the output a block of tile rows at a time:
//! 1. the input tiles of the block become 16 point-major `[tiles, c]` matrices (`vmath`);
//! 2. 16 products `[tiles, c] @ [c, m]`, one GEMM call;
//! 3. each tile's 16 product rows become its 2x2 outputs, with the bias, then the residual
//!    and the activation as each output row pair is finished.
//!
//! The transforms add and subtract only, and `G`'s halves are exact: the sums differ from the
//! direct product's by rounding (a few ulp of the largest terms), not by any approximation.

use std::cell::RefCell;

use rayon::prelude::*;
use rlx_ir::ConvAttrs;

use super::OutPtr;
use super::conv::Epilogue;
use super::gemm::{self, BSource, GemmJob, PackedB};
use super::isa::Isa;
use super::vmath::{self, Points, Residual, WinogradTiles};
use crate::fallible::{grow, try_zeroed, with_scratch};
use crate::{Error, Result};

/// Points of a tile (4x4).
const POINTS: usize = 16;
/// f32s of points and products one block of tile rows aims for (2 MiB; a few tile rows in
/// unit tests, so they run several blocks).
const BLOCK_FLOATS: usize = if cfg!(test) { 1 << 12 } else { 1 << 19 };
/// Input and output channels below which the direct product stays (its K is 9x longer).
const MIN_CHANNELS: usize = 16;
/// Tiles per image below which the direct product stays: the transformed weight is 16/9 as
/// large as the direct one, and few tiles do not reuse it enough.
const MIN_TILES: usize = 16;

thread_local! {
    /// A block's points and products; reused.
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Whether a channels-last convolution (`xs`, `os`: `[n, h, w, c]`, `ws`: `[m, c, kh, kw]`)
/// runs as F(2x2, 3x3): a 3x3 kernel, stride 1, no dilation, one group, a channels-last input,
/// enough channels and tiles.
pub fn chosen(xs: &[usize], ws: &[usize], os: &[usize], c: &ConvAttrs) -> bool {
    let w = &c.window;
    let tiles = os.get(1).map_or(0, |h| h.div_ceil(2)) * os.get(2).map_or(0, |w| w.div_ceil(2));
    c.channels_last
        && !c.input_channel_major
        && c.groups == 1
        && xs.len() == 4
        && ws.len() == 4
        && os.len() == 4
        && ws[2..] == [3, 3]
        && w.strides[..2] == [1, 1]
        && w.dilations[..2] == [1, 1]
        && xs[3] >= MIN_CHANNELS
        && ws[0] >= MIN_CHANNELS
        && tiles >= MIN_TILES
}

/// Output channels rounded up to whole panels of `nr`: each point's columns start a panel.
pub fn padded_channels(m: usize, nr: usize) -> usize {
    m.div_ceil(nr.max(1)) * nr.max(1)
}

/// The weight `[m, c, 3, 3]` as the product's B operand: `[c, 16 * m_pad]` rows, point `k`'s
/// `G g G^T` in columns `k * m_pad ..` (zeros past `m`), `G = [1 0 0; .5 .5 .5; .5 -.5 .5;
/// 0 0 1]`.
pub fn transformed_weights(w: &[f32], m: usize, c: usize, m_pad: usize) -> Result<Vec<f32>> {
    let len = c.saturating_mul(POINTS).saturating_mul(m_pad);
    if w.len() < m * c * 9 || m_pad < m {
        return Err(Error::Compile(format!(
            "a Winograd weight of {m} x {c} x 3 x 3 cannot be read from {} values",
            w.len()
        )));
    }
    let mut u = try_zeroed::<f32>("a Winograd-transformed weight", len)?;
    // G applied to three values (a kernel row or column).
    let g3 = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    for (mo, filters) in w.chunks_exact(c * 9).take(m).enumerate() {
        for (ch, g) in filters.chunks_exact(9).enumerate() {
            // G g: each kernel column to 4 rows; then each row of that times G^T.
            let cols: Vec<[f32; 4]> = (0..3).map(|kx| g3(g[kx], g[3 + kx], g[6 + kx])).collect();
            for i in 0..4 {
                let row = g3(cols[0][i], cols[1][i], cols[2][i]);
                for (j, v) in row.into_iter().enumerate() {
                    u[ch * POINTS * m_pad + (4 * i + j) * m_pad + mo] = v;
                }
            }
        }
    }
    Ok(u)
}

/// Tile rows of a block (at least one) and the f32 scratch one block needs.
fn block(xs: &[usize], os: &[usize], m_pad: usize) -> (usize, usize) {
    let tw = os[2].div_ceil(2);
    let per_row = POINTS
        .saturating_mul(tw)
        .saturating_mul(xs[3].saturating_add(m_pad));
    let rows = os[0].saturating_mul(os[1].div_ceil(2));
    let block = (BLOCK_FLOATS / per_row.max(1)).clamp(1, rows.max(1));
    (block, block.saturating_mul(per_row))
}

/// Scratch f32s a Winograd convolution holds (a bound for the memory budget).
pub fn scratch(xs: &[usize], ws: &[usize], os: &[usize], nr: usize) -> usize {
    block(xs, os, padded_channels(ws[0], nr))
        .1
        .saturating_add(xs[3])
}

/// `out = epi(conv(x, w))` with `packed` the weight as [`transformed_weights`] lays it out.
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
    let kern = gemm::kernel(isa);
    let (cin, m) = (xs[3], os[3]);
    let m_pad = padded_channels(m, kern.nr);
    if packed.k != cin || packed.n != POINTS * m_pad || ws[0] != m {
        return Err(Error::Compile(format!(
            "a Winograd convolution of {cin} -> {m} channels was given panels of {} x {}",
            packed.k, packed.n
        )));
    }
    let g = WinogradTiles {
        h: xs[1],
        w: xs[2],
        c: cin,
        ph: c.window.pads[0],
        pw: c.window.pads[1],
        oh: os[1],
        ow: os[2],
        m,
    };
    let (tw, th) = (g.tw(), g.oh.div_ceil(2));
    let (per_block, _) = block(xs, os, m_pad);
    let zeros = try_zeroed::<f32>("a row of zeros", cin)?;
    let (image_in, image_out) = (g.h * g.w * cin, g.oh * g.ow * m);
    let out_ptr = OutPtr(out.as_mut_ptr());
    with_scratch(&SCRATCH, |[points, products]| {
        let total_rows = xs[0] * th;
        grow(
            points,
            POINTS * per_block * tw * cin,
            "Winograd input points",
        )?;
        grow(
            products,
            POINTS * per_block * tw * m_pad,
            "Winograd products",
        )?;
        for r0 in (0..total_rows).step_by(per_block) {
            let rows = per_block.min(total_rows - r0);
            let tiles = rows * tw;
            let v = Points {
                ptr: points.as_mut_ptr(),
                stride: tiles * cin,
                ld: cin,
            };
            let p = Points {
                ptr: products.as_mut_ptr(),
                stride: tiles * m_pad,
                ld: m_pad,
            };
            let v_ptr = OutPtr(v.ptr);
            (0..rows).into_par_iter().for_each(|r| {
                let (img, ty) = ((r0 + r) / th, (r0 + r) % th);
                let dst = Points {
                    ptr: v_ptr.get().wrapping_add(r * tw * cin),
                    ..v
                };
                // SAFETY: the image is inside x; tile row r of the block is this task's alone.
                unsafe {
                    let image = x.as_ptr().add(img * image_in);
                    vmath::winograd_input(isa, &g, image, zeros.as_ptr(), ty, dst)
                }
            });
            let jobs: Vec<GemmJob> = (0..POINTS)
                .map(|k| GemmJob {
                    m: tiles,
                    n: m,
                    k: cin,
                    a: v.ptr.wrapping_add(k * v.stride),
                    lda: cin,
                    b: BSource::Panels {
                        ptr: packed.panel(k * m_pad / kern.nr),
                    },
                    c: p.ptr.wrapping_add(k * p.stride),
                    ldc: m_pad,
                    bias: None,
                    act: None,
                    residual: None,
                })
                .collect();
            // SAFETY: point k's A is tiles rows of cin, its panels cin rows of m_pad columns,
            // its C tiles rows of m_pad; the products write disjoint Cs.
            unsafe { gemm::driver::run(kern, &jobs) };
            let p_ptr = OutPtr(p.ptr);
            (0..rows).into_par_iter().for_each(|r| {
                let (img, ty) = ((r0 + r) / th, (r0 + r) % th);
                let src = Points {
                    ptr: p_ptr.get().wrapping_add(r * tw * m_pad),
                    ..p
                };
                // SAFETY: tile row ty's outputs (output rows 2 ty, 2 ty + 1 of the image) are
                // this task's alone; the products are complete.
                unsafe {
                    let image = out_ptr.get().add(img * image_out);
                    vmath::winograd_output(isa, &g, src, epi.bias, ty, image);
                    if epi.residual.is_some() || epi.act.is_some() {
                        let first = img * image_out + 2 * ty * g.ow * m;
                        let positions = (g.oh - 2 * ty).min(2) * g.ow;
                        let residual = epi.residual.map(|res| Residual {
                            ptr: res[first..].as_ptr(),
                            ld: m,
                        });
                        vmath::bias_residual_act_block(
                            isa,
                            out_ptr.get().add(first),
                            positions,
                            m,
                            m,
                            None,
                            residual,
                            epi.act,
                        );
                    }
                }
            });
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlx_ir::Window;

    fn attrs(strides: [usize; 2], dilations: [usize; 2], groups: usize) -> ConvAttrs {
        let window = Window {
            kernel: vec![3, 3],
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            pads: vec![1; 4],
        };
        ConvAttrs {
            channels_last: true,
            ..ConvAttrs::new(window, groups)
        }
    }

    #[test]
    fn only_stride_one_3x3_kernels_with_enough_channels_and_tiles_are_chosen() {
        let (xs, ws, os) = ([1, 8, 8, 16], [32, 16, 3, 3], [1, 8, 8, 32]);
        let one = attrs([1, 1], [1, 1], 1);
        assert!(chosen(&xs, &ws, &os, &one));
        assert!(!chosen(&xs, &ws, &os, &attrs([2, 1], [1, 1], 1)));
        assert!(!chosen(&xs, &ws, &os, &attrs([1, 1], [1, 2], 1)));
        assert!(!chosen(&xs, &[32, 8, 3, 3], &os, &attrs([1, 1], [1, 1], 2)));
        // 8 input channels; a 1x1 kernel; 3x3 outputs (4 tiles).
        assert!(!chosen(&[1, 8, 8, 8], &[32, 8, 3, 3], &os, &one));
        assert!(!chosen(&xs, &[32, 16, 1, 1], &os, &one));
        assert!(!chosen(&[1, 3, 3, 16], &ws, &[1, 3, 3, 32], &one));
        let channel_major = ConvAttrs {
            input_channel_major: true,
            ..one
        };
        assert!(!chosen(&xs, &ws, &os, &channel_major));
    }

    #[test]
    fn a_centre_tap_transforms_to_the_outer_product_of_g_middle_column() {
        // Two output channels of one input channel: the centre tap (1), and every tap 1.
        let mut w = vec![0.0; 18];
        w[4] = 1.0;
        w[9..].fill(1.0);
        let (m_pad, col) = (4, [0.0, 0.5, -0.5, 0.0]);
        let u = transformed_weights(&w, 2, 1, m_pad).unwrap();
        // G's rows summed: 1, 1.5, 0.5, 1.
        let sums = [1.0, 1.5, 0.5, 1.0];
        for i in 0..4 {
            for j in 0..4 {
                let at = (4 * i + j) * m_pad;
                assert_eq!(u[at], col[i] * col[j], "point ({i}, {j})");
                assert_eq!(u[at + 1], sums[i] * sums[j], "point ({i}, {j})");
                assert_eq!(&u[at + 2..at + 4], &[0.0, 0.0]);
            }
        }
        assert!(transformed_weights(&w[..17], 2, 1, m_pad).is_err());
    }
}
