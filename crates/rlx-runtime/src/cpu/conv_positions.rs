//! A 2-D convolution with the output positions as the GEMM's rows: `out[p, m] = patches[p, k]
//! @ weights[k, m]`, the weights packed once into panels like a linear's. Chosen where an image
//! has no more output positions than output channels (the deep layers of a CNN): each patch
//! element is built once and then used by every output channel, and the weights stream from
//! their panels once per block of positions, where the channel-major product would re-read
//! them in place for every few positions. The image is first transposed to `[h, w, c]`, so a
//! patch row is `kh * kw` copies of `c` contiguous values (K in `(ky, kx, c)` order, the order
//! the weights are packed in).

use std::cell::RefCell;

use rayon::prelude::*;
use rlx_ir::ConvAttrs;

use super::OutPtr;
use super::conv::Epilogue;
use super::gemm::{self, BSource, GemmJob, PackedB};
use super::isa::Isa;
use crate::Result;
use crate::fallible::{grow, with_scratch};

/// Patch elements (f32) one block of images may hold: whole images per block, at least one
/// (small in unit tests, so they run several blocks).
const BLOCK_ELEMS: usize = if cfg!(test) { 1 << 8 } else { 1 << 21 };

thread_local! {
    /// One block of images: channels-last, patch rows and the `[p, m]` product; reused.
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Whether a convolution runs position-major: 2-D, one group, no empty axis, a kernel larger
/// than 1x1, and no more output positions per image than output channels.
pub fn chosen(xs: &[usize], ws: &[usize], os: &[usize], groups: usize) -> bool {
    let nonempty = xs[1..].iter().chain(ws).all(|d| *d > 0);
    xs.len() == 4 && groups == 1 && nonempty && os[2] * os[3] <= ws[0] && ws[2] * ws[3] > 1
}

/// Images per block and the f32 scratch one block needs: channels-last image (`input`
/// elements each), patches and product.
pub fn block(input: usize, p: usize, k: usize, m: usize, batch: usize) -> (usize, usize) {
    let images = (BLOCK_ELEMS / (p * k).max(1)).clamp(1, batch.max(1));
    (images, images * (input + p * (k + m)))
}

/// `out = epi(conv(x, w))` with `w`'s panels `packed` (`[k = c * kh * kw, n = m]`).
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
    let (batch, m, cin) = (xs[0], ws[0], xs[1]);
    let (p, k, plane) = (os[2] * os[3], ws[1] * ws[2] * ws[3], xs[2] * xs[3]);
    if out.is_empty() {
        return Ok(());
    }
    let (images, _) = block(cin * plane, p, k, m, batch);
    with_scratch(&SCRATCH, |[hwc, patches, prod]| {
        grow(hwc, images * cin * plane, "a channels-last image")?;
        grow(patches, images * p * k, "convolution patches")?;
        grow(prod, images * p * m, "a position-major product")?;
        for first in (0..batch).step_by(images) {
            let n_img = images.min(batch - first);
            let rows = n_img * p;
            let src = &x[first * cin * plane..(first + n_img) * cin * plane];
            channels_last(src, cin, plane, &mut hwc[..n_img * cin * plane]);
            let hwc = &hwc[..n_img * cin * plane];
            patches[..rows * k]
                .par_chunks_mut(k)
                .enumerate()
                .for_each(|(r, row)| {
                    let image = &hwc[(r / p) * cin * plane..(r / p + 1) * cin * plane];
                    patch_row(image, xs, ws, os, c, r % p, row);
                });
            let job = GemmJob {
                m: rows,
                n: m,
                k,
                a: patches.as_ptr(),
                lda: k,
                b: BSource::Packed(packed),
                c: prod.as_mut_ptr(),
                ldc: m,
                bias: epi.bias,
                act: None,
            };
            // SAFETY: patches hold rows x k; packed is [k, m]; prod holds rows x m.
            unsafe { gemm::driver::run(gemm::kernel(isa), &[job]) };
            // Position-major back to [image, channel, position].
            let (dst, src) = (OutPtr(out.as_mut_ptr()), &prod[..rows * m]);
            (0..n_img * m).into_par_iter().for_each(|im| {
                let (img, ch) = (im / m, im % m);
                // SAFETY: plane (first + img, ch) of out belongs to this task alone.
                let plane = unsafe {
                    std::slice::from_raw_parts_mut(dst.get().add(((first + img) * m + ch) * p), p)
                };
                let base = img * p * m + ch;
                plane
                    .iter_mut()
                    .enumerate()
                    .for_each(|(q, v)| *v = src[base + q * m]);
                // The bias is in the product already.
                let rest = Epilogue { bias: None, ..*epi };
                rest.plane(isa, (first + img) * m + ch, m, plane);
            });
        }
        Ok(())
    })
}

/// `[images, c, plane]` to `[images, plane, c]`, one block of positions of an image per task
/// (a single image still spreads over the threads).
fn channels_last(src: &[f32], c: usize, plane: usize, dst: &mut [f32]) {
    const POSITIONS: usize = 16;
    let blocks = plane.div_ceil(POSITIONS).max(1);
    let out = OutPtr(dst.as_mut_ptr());
    (0..dst.len() / (c * plane).max(1) * blocks)
        .into_par_iter()
        .for_each(|t| {
            let (img, q0) = (t / blocks, (t % blocks) * POSITIONS);
            let q1 = (q0 + POSITIONS).min(plane);
            let s = &src[img * c * plane..(img + 1) * c * plane];
            // SAFETY: positions q0..q1 of image img (c values each) belong to this task alone.
            let d = unsafe {
                std::slice::from_raw_parts_mut(out.get().add((img * plane + q0) * c), (q1 - q0) * c)
            };
            // Blocks of 8 channels x positions keep the reads and writes in few cache lines.
            for c0 in (0..c).step_by(8) {
                let c1 = (c0 + 8).min(c);
                for q in q0..q1 {
                    for ch in c0..c1 {
                        d[(q - q0) * c + ch] = s[ch * plane + q];
                    }
                }
            }
        });
}

/// Patch row of output position `pos` from a channels-last image: tap `(ky, kx)` is the `c`
/// channels of the input it reads, zeros in the padding.
fn patch_row(
    image: &[f32],
    xs: &[usize],
    ws: &[usize],
    os: &[usize],
    c: &ConvAttrs,
    pos: usize,
    row: &mut [f32],
) {
    let (cin, ih, iw) = (xs[1], xs[2], xs[3]);
    let (kh, kw) = (ws[2], ws[3]);
    let w = &c.window;
    let (oy, ox) = (pos / os[3], pos % os[3]);
    for (t, taps) in row.chunks_exact_mut(cin).enumerate() {
        let (ky, kx) = (t / kw, t % kw);
        let y = (oy * w.strides[0] + ky * w.dilations[0])
            .checked_sub(w.pads[0])
            .filter(|y| *y < ih);
        let xx = (ox * w.strides[1] + kx * w.dilations[1])
            .checked_sub(w.pads[1])
            .filter(|xx| *xx < iw);
        match (y, xx) {
            (Some(y), Some(xx)) => {
                let at = (y * iw + xx) * cin;
                taps.copy_from_slice(&image[at..at + cin]);
            }
            _ => taps.fill(0.0),
        }
    }
    debug_assert_eq!(row.len(), cin * kh * kw);
}

#[cfg(test)]
mod tests {
    use rlx_ir::{ConvAttrs, Window};

    use super::super::gemm::PackedB;
    use super::super::isa::Isa;

    #[test]
    fn blocks_of_images_match_the_channel_major_conv() {
        // 3 images of 16 patches of k = 18 for 20 channels: several blocks (BLOCK_ELEMS in tests).
        let (xs, ws, os) = ([3usize, 2, 5, 4], [20usize, 2, 3, 3], [3usize, 20, 4, 4]);
        let window = Window {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 0, 1],
        };
        let c = ConvAttrs::new(window, 1);
        assert!(super::chosen(&xs, &ws, &os, 1));
        assert!(super::block(2 * 20, 16, 18, 20, 3).0 < 3);
        let x: Vec<f32> = (0..3 * 2 * 20)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let w: Vec<f32> = (0..20 * 18)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let bias: Vec<f32> = (0..20).map(|i| i as f32 / 4.0).collect();
        for isa in Isa::available() {
            let nr = super::gemm::kernel(isa).nr;
            let reordered = super::super::executor_plan::taps_major(&w, 20, 2, 9).unwrap();
            let packed = PackedB::new(&reordered, 18, 20, true, nr).unwrap();
            let mut got = vec![0.0; 3 * 20 * 16];
            let epi = super::Epilogue {
                bias: Some(&bias),
                ..Default::default()
            };
            super::conv(isa, &x, &xs, &packed, &ws, &epi, &c, &mut got, &os).unwrap();
            let mut want = vec![0.0; 3 * 20 * 16];
            super::super::conv::conv(isa, &x, &xs, &w, &ws, &epi, &c, &mut want, &os).unwrap();
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{isa} [{i}]: {g} vs {e}"
                );
            }
        }
    }
}
