//! Zero-padded copies of 2-D input planes, split by column phase when strided: a window's taps
//! over an output row become contiguous runs that need no bounds checks.

use rlx_ir::Window;

/// The zero-padded copy of a 2-D input plane that depthwise kernels and patch panels read:
/// rows of `row_len`, each split into `sw` column phases of `phase_len` (phase `q` holds padded
/// columns `q, q + sw, ..`), so every tap of an output row is one contiguous run. `fill` keeps
/// a buffer's borders (zero since its creation: each plane overwrites only the input's own
/// positions); `fill_all` writes them too.
pub(super) struct Padded {
    input: [usize; 2],
    /// Begin pads (rows, columns) and the column stride.
    ph: usize,
    pw: usize,
    sw: usize,
    rows: usize,
    phase_len: usize,
    pub row_len: usize,
    /// Per kernel column: where its tap for output column 0 sits in a row.
    pub offsets: Vec<usize>,
}

impl Padded {
    pub fn new(input: &[usize], output: &[usize], kernel: &[usize], w: &Window) -> Padded {
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

    /// Floats of one padded plane.
    pub fn plane_len(&self) -> usize {
        self.rows.saturating_mul(self.row_len)
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
    pub fn fill(&self, src: &[f32], buf: &mut [f32]) {
        self.write(src, buf, false);
    }

    /// Writes the whole padded plane into `buf` (`plane_len` floats): `src` and zero borders,
    /// whatever `buf` held before.
    pub fn fill_all(&self, src: &[f32], buf: &mut [f32]) {
        self.write(src, buf, true);
    }

    fn write(&self, src: &[f32], buf: &mut [f32], borders: bool) {
        let [ih, iw] = self.input;
        let plane = &mut buf[..self.rows * self.row_len];
        if borders && iw == 0 {
            plane.fill(0.0);
        }
        if borders {
            plane[..self.ph * self.row_len].fill(0.0);
            plane[(self.ph + ih).min(self.rows) * self.row_len..].fill(0.0);
        }
        for (y, line) in src.chunks_exact(iw.max(1)).take(ih).enumerate() {
            let row = &mut plane[(y + self.ph) * self.row_len..(y + self.ph + 1) * self.row_len];
            if self.sw == 1 {
                if borders {
                    row[..self.pw].fill(0.0);
                    row[self.pw + iw..].fill(0.0);
                }
                row[self.pw..self.pw + iw].copy_from_slice(line);
                continue;
            }
            if borders {
                row.fill(0.0);
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
