//! Depthwise convolutions (one input channel per group): each output plane is a weighted sum of
//! shifted copies of its input plane, computed direct, one plane per task.

use rayon::prelude::*;
use rlx_ir::Window;

use super::conv::Epilogue;
use super::isa::Isa;
use super::vmath;
use super::window::{column_run, for_each_source, unflatten};

/// One input channel per output channel: each output plane is a weighted sum of shifted
/// copies of its input plane (2-D: whole runs of each output row at once).
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    window: &Window,
    tables: &[Vec<Option<usize>>],
    in_strides: &[usize],
    (channels, plane, ksize, p): (usize, usize, usize, usize),
    (in_sp, kernel, out_sp): (&[usize], &[usize], &[usize]),
    epi: &Epilogue,
    out: &mut [f32],
) {
    out.par_chunks_mut(p.max(1))
        .enumerate()
        .for_each(|(nc, dst)| {
            let ch = nc % channels;
            let src = &x[nc * plane..(nc + 1) * plane];
            if kernel.len() == 2 {
                let taps = &w[ch * ksize..(ch + 1) * ksize];
                depthwise_plane_2d(isa, src, in_sp, out_sp, kernel, window, taps, dst);
                return epi.plane(isa, nc, channels, dst);
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
            epi.plane(isa, nc, channels, dst);
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
    let (sh, sw, dh, ph) = (w.strides[0], w.strides[1], w.dilations[0], w.pads[0]);
    let (kh, kw) = (kernel[0], kernel[1]);
    if ih == 0 || iw == 0 {
        // An empty input plane: every tap is padding.
        dst.fill(0.0);
        return;
    }
    // Per kernel column: the output columns it reaches inside the input, and where its run
    // starts in its phase row.
    let phase_len = iw.div_ceil(sw);
    let cols: Vec<(usize, usize, usize)> = (0..kw)
        .map(|kx| {
            // An empty run (every tap of this column in the padding) reads nothing.
            column_run(kx, iw, ow, w).map_or((0, 0, 0), |(first, last, x0)| {
                (first, last, (x0 % sw) * phase_len + x0 / sw)
            })
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
