//! Depthwise convolutions (one input channel per group): each output plane is a weighted sum of
//! shifted copies of its input plane, computed direct, one plane per task.

use rayon::prelude::*;
use rlx_ir::Window;

use super::conv::Epilogue;
use super::isa::Isa;
use super::padded::Padded;
use super::vmath;
use super::window::{for_each_source, unflatten};

/// Output elements one task of 2-D depthwise planes should at least compute.
const PLANE_WORK: usize = 4096;

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
    if kernel.len() == 2 {
        let pad = Padded::new(in_sp, out_sp, kernel, window);
        // Small planes go several to a task: per-task overhead would outweigh their work.
        let per_task = (PLANE_WORK / p.max(1)).max(1);
        out.par_chunks_mut(p.max(1))
            .enumerate()
            .with_min_len(per_task)
            .for_each_init(
                || vec![0.0f32; pad.plane_len() + vmath::DEPTHWISE_SLACK],
                |buf, (nc, dst)| {
                    let ch = nc % channels;
                    let src = &x[nc * plane..(nc + 1) * plane];
                    pad.fill(src, buf);
                    let plane = vmath::DepthwisePlane {
                        rows: buf,
                        row_len: pad.row_len,
                        ow: out_sp[1],
                        sh: window.strides[0],
                        dh: window.dilations[0],
                        kh: kernel[0],
                        offsets: &pad.offsets,
                        taps: &w[ch * ksize..(ch + 1) * ksize],
                    };
                    // SAFETY: the ISA is this CPU's; `buf` holds the padded rows and the slack.
                    unsafe { vmath::depthwise_plane(isa, &plane, dst) };
                    epi.plane(isa, nc, channels, dst);
                },
            );
        return;
    }
    out.par_chunks_mut(p.max(1))
        .enumerate()
        .for_each(|(nc, dst)| {
            let ch = nc % channels;
            let src = &x[nc * plane..(nc + 1) * plane];
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
