//! The data transforms of Winograd's F(2x2, 3x3) on channels-last tensors, a vector of channels
//! at a time (`cpu/winograd.rs` runs the products between them).
//!
//! A tile is a 4x4 input patch `d` (stride 2) giving a 2x2 output patch. Its 16 points are
//! `B^T d B` with `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`; after the products, the
//! outputs are `A^T m A` with `A^T = [1 1 1 0; 0 1 -1 -1]`. Point `(i, j)` of a tile is row
//! `(4 i + j) * stride + tile` of the point-major buffers.

use super::lanes::{F32s, Scalar};
use super::per_isa;
use crate::cpu::isa::Isa;

/// One image's geometry as the transforms see it (channels-last, tiles of 2x2 outputs).
#[derive(Clone, Copy, Debug)]
pub struct WinogradTiles {
    /// Input rows, columns and channels.
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Top and left pads.
    pub ph: usize,
    pub pw: usize,
    /// Output rows, columns and channels.
    pub oh: usize,
    pub ow: usize,
    pub m: usize,
}

impl WinogradTiles {
    /// Tiles per tile row.
    pub fn tw(&self) -> usize {
        self.ow.div_ceil(2)
    }
}

/// Where a block's points live: element `(point, tile, channel)` at
/// `ptr + point * stride + tile * ld + channel`.
#[derive(Clone, Copy)]
pub struct Points {
    pub ptr: *mut f32,
    pub stride: usize,
    pub ld: usize,
}

per_isa!(
    /// The points of every tile of tile row `ty` of one image (`image`: its `[h, w, c]`
    /// input), tile `tx` as tile `tx` of `dst`. Reads outside the image read `zeros`.
    ///
    /// # Safety
    /// `image` holds `h * w * c` floats, `zeros` `c` zeros, `dst` 16 points of `tw` tiles of
    /// `c` channels; `ty` is a tile row of the output.
    pub unsafe fn winograd_input(g: &WinogradTiles, image: *const f32, zeros: *const f32, ty: usize, dst: Points) => input_v
);

per_isa!(
    /// The outputs of every tile of tile row `ty` of one image from their points `src`, plus
    /// `bias`, into `out` (the image's `[oh, ow, m]` output); positions past the output's
    /// edge are not written.
    ///
    /// # Safety
    /// `src` holds 16 points of `tw` tiles of `m` channels, `out` `oh * ow * m` floats, a
    /// bias `m`; `ty` is a tile row of the output.
    pub unsafe fn winograd_output(g: &WinogradTiles, src: Points, bias: Option<&[f32]>, ty: usize, out: *mut f32) => output_v
);

#[inline(always)]
unsafe fn input_v<V: F32s>(
    g: &WinogradTiles,
    image: *const f32,
    zeros: *const f32,
    ty: usize,
    dst: Points,
) {
    let body = g.c - g.c % V::N;
    for tx in 0..g.tw() {
        let mut rows = [zeros; 16];
        for i in 0..4 {
            let iy = (2 * ty + i).checked_sub(g.ph).filter(|y| *y < g.h);
            for j in 0..4 {
                let ix = (2 * tx + j).checked_sub(g.pw).filter(|x| *x < g.w);
                if let (Some(y), Some(x)) = (iy, ix) {
                    // SAFETY: (y, x) is a pixel of the image.
                    rows[4 * i + j] = unsafe { image.add((y * g.w + x) * g.c) };
                }
            }
        }
        // SAFETY: forwarded; each tile's points are its own rows of dst.
        unsafe {
            let to = dst.ptr.add(tx * dst.ld);
            input_channels::<V>(&rows, 0..body, to, dst.stride);
            input_channels::<Scalar>(&rows, body..g.c, to, dst.stride);
        }
    }
}

/// `B^T d B` for channels `range` of one tile (`d[k]` starts at `rows[k]`).
#[inline(always)]
unsafe fn input_channels<V: F32s>(
    rows: &[*const f32; 16],
    range: std::ops::Range<usize>,
    to: *mut f32,
    stride: usize,
) {
    let mut ch = range.start;
    while ch < range.end {
        // SAFETY: every row holds the channels of `range` (the caller's contract).
        unsafe {
            let d = |k: usize| V::load(rows[k].add(ch));
            // B^T d, a column at a time.
            let cols: [[V; 4]; 4] = std::array::from_fn(|j| {
                let (d0, d1, d2, d3) = (d(j), d(4 + j), d(8 + j), d(12 + j));
                [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
            });
            // Its rows times B.
            for i in 0..4 {
                let r = cols.map(|c| c[i]);
                let at = |j: usize| to.add((4 * i + j) * stride + ch);
                r[0].sub(r[2]).store(at(0));
                r[1].add(r[2]).store(at(1));
                r[2].sub(r[1]).store(at(2));
                r[1].sub(r[3]).store(at(3));
            }
        }
        ch += V::N;
    }
}

#[inline(always)]
unsafe fn output_v<V: F32s>(
    g: &WinogradTiles,
    src: Points,
    bias: Option<&[f32]>,
    ty: usize,
    out: *mut f32,
) {
    let body = g.m - g.m % V::N;
    let rows = (g.oh - 2 * ty).min(2);
    for tx in 0..g.tw() {
        let cols = (g.ow - 2 * tx).min(2);
        let mut to = [std::ptr::null_mut(); 4];
        for i in 0..rows {
            for j in 0..cols {
                // SAFETY: (2 ty + i, 2 tx + j) is an output position.
                to[2 * i + j] = unsafe { out.add(((2 * ty + i) * g.ow + 2 * tx + j) * g.m) };
            }
        }
        // SAFETY: forwarded.
        unsafe {
            let from = src.ptr.add(tx * src.ld);
            output_channels::<V>(from, src.stride, 0..body, bias, &to);
            output_channels::<Scalar>(from, src.stride, body..g.m, bias, &to);
        }
    }
}

/// `A^T m A + bias` for channels `range` of one tile into the positions `to` (null: past the
/// output's edge).
#[inline(always)]
unsafe fn output_channels<V: F32s>(
    from: *const f32,
    stride: usize,
    range: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    to: &[*mut f32; 4],
) {
    let mut ch = range.start;
    while ch < range.end {
        // SAFETY: the points and positions hold the channels of `range`.
        unsafe {
            let p = |k: usize| V::load(from.add(k * stride + ch));
            // A^T m, a column at a time.
            let cols: [[V; 2]; 4] = std::array::from_fn(|j| {
                let (m0, m1, m2, m3) = (p(j), p(4 + j), p(8 + j), p(12 + j));
                [m0.add(m1).add(m2), m1.sub(m2).sub(m3)]
            });
            let b = match bias {
                Some(b) => V::load(b.as_ptr().add(ch)),
                None => V::splat(0.0),
            };
            // Its rows times A.
            for i in 0..2 {
                let r = cols.map(|c| c[i]);
                let y = [
                    r[0].add(r[1]).add(r[2]).add(b),
                    r[1].sub(r[2]).sub(r[3]).add(b),
                ];
                for (j, v) in y.into_iter().enumerate() {
                    let at = to[2 * i + j];
                    if !at.is_null() {
                        v.store(at.add(ch));
                    }
                }
            }
        }
        ch += V::N;
    }
}
