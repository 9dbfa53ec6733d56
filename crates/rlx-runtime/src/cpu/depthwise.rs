//! Depthwise convolutions (one input channel per group): each output plane is a weighted sum of
//! shifted copies of its input plane, computed direct, one plane per task.

use rayon::prelude::*;
use rlx_ir::Window;

use super::conv::Epilogue;
use super::isa::Isa;
use super::vmath;
use super::window::{for_each_source, unflatten};

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
        out.par_chunks_mut(p.max(1)).enumerate().for_each_init(
            || vec![0.0f32; pad.len()],
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

/// The zero-padded copy of a 2-D input plane a depthwise kernel reads: rows of `row_len`,
/// each split into `sw` column phases of `phase_len` (phase `q` holds padded columns `q, q +
/// sw, ..`), so every tap of an output row is one contiguous run. The borders stay zero from
/// the buffer's creation: each plane overwrites only the input's own positions.
struct Padded {
    input: [usize; 2],
    /// Begin pads (rows, columns) and the column stride.
    ph: usize,
    pw: usize,
    sw: usize,
    rows: usize,
    phase_len: usize,
    row_len: usize,
    /// Per kernel column: where its tap for output column 0 sits in a row.
    offsets: Vec<usize>,
}

impl Padded {
    fn new(input: &[usize], output: &[usize], kernel: &[usize], w: &Window) -> Padded {
        let (ph, pw) = (w.pads[0], w.pads[1]);
        let (sh, sw, dh, dw) = (w.strides[0], w.strides[1], w.dilations[0], w.dilations[1]);
        // Rows and columns the window reaches (at least the input's own).
        let reach = |o: usize, s: usize, k: usize, d: usize| {
            o.saturating_sub(1) * s + k.saturating_sub(1) * d + 1
        };
        let rows = (ph + input[0]).max(reach(output[0], sh, kernel[0], dh));
        let cols = (pw + input[1]).max(reach(output[1], sw, kernel[1], dw));
        let phase_len = cols.div_ceil(sw);
        let offsets = (0..kernel[1])
            .map(|kx| (kx * dw % sw) * phase_len + kx * dw / sw)
            .collect();
        Padded {
            input: [input[0], input[1]],
            ph,
            pw,
            sw,
            rows,
            phase_len,
            row_len: sw * phase_len,
            offsets,
        }
    }

    /// Floats of the buffer: the rows, and slack for the vector past the last column.
    fn len(&self) -> usize {
        self.rows * self.row_len + vmath::DEPTHWISE_SLACK
    }

    /// Column stride 2: input pairs `(2i, 2i + 1)` go to the two phases side by side (a loop
    /// the compiler turns into vector shuffles).
    fn deinterleave(&self, line: &[f32], row: &mut [f32]) {
        let (even, odd) = row.split_at_mut(self.phase_len);
        let h = self.pw / 2;
        // Padded column x + pw: with an odd pad the even input columns land in the odd phase.
        let (first, second) = if self.pw.is_multiple_of(2) {
            (&mut even[h..], &mut odd[h..])
        } else {
            (&mut odd[h..], &mut even[h + 1..])
        };
        let pairs = line.chunks_exact(2);
        if let [last] = pairs.remainder() {
            first[line.len() / 2] = *last;
        }
        first
            .iter_mut()
            .zip(second.iter_mut())
            .zip(pairs)
            .for_each(|((a, b), pair)| {
                *a = pair[0];
                *b = pair[1];
            });
    }

    /// Copies plane `src` into its place in `buf` (borders untouched).
    fn fill(&self, src: &[f32], buf: &mut [f32]) {
        let [ih, iw] = self.input;
        for (y, line) in src.chunks_exact(iw.max(1)).take(ih).enumerate() {
            let row = &mut buf[(y + self.ph) * self.row_len..(y + self.ph + 1) * self.row_len];
            if self.sw == 1 {
                row[self.pw..self.pw + iw].copy_from_slice(line);
                continue;
            }
            if self.sw == 2 {
                self.deinterleave(line, row);
                continue;
            }
            // Phase q holds padded columns q + j * sw: input columns q + j * sw - pw.
            for (q, phase) in row.chunks_exact_mut(self.phase_len).enumerate() {
                let first = self.pw.saturating_sub(q).div_ceil(self.sw);
                let Some(x0) = (q + first * self.sw).checked_sub(self.pw) else {
                    continue;
                };
                let taps = line.iter().skip(x0).step_by(self.sw);
                phase[first..]
                    .iter_mut()
                    .zip(taps)
                    .for_each(|(o, v)| *o = *v);
            }
        }
    }
}
