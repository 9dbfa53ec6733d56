//! Matrix products: batched matmul with broadcast batch dims, and linears (single or grouped)
//! with a fused bias + activation epilogue. The inner product is `matrixmultiply`'s packed
//! sgemm. Work is cut into output tiles: row blocks when there are many rows, column blocks
//! when there are few (a row split would make every task pack the whole weight matrix).

use rayon::prelude::*;
use rlx_ir::UnaryOp;

use super::OutPtr;
use super::elementwise::broadcast_strides;
use super::math::unary_in_place;

/// Row and column strides of a `[k, n]` operand stored as is, or stored `[n, k]` (transposed).
pub fn b_strides(k: usize, n: usize, transposed: bool) -> (isize, isize) {
    if transposed {
        (1, k as isize)
    } else {
        (n as isize, 1)
    }
}

/// A block of output rows `r0..r1` and columns `c0..c1`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tile {
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
}

/// Multiply-adds below which a product runs as one task.
const MIN_PARALLEL_MACS: usize = 1 << 17;

/// Cuts an `m x n` output (inner size `k`) into about two tiles per thread.
fn tiles(m: usize, n: usize, k: usize) -> Vec<Tile> {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || m * n * k.max(1) < MIN_PARALLEL_MACS {
        return vec![Tile {
            r0: 0,
            r1: m,
            c0: 0,
            c1: n,
        }];
    }
    let tasks = threads * 2;
    let (row_blocks, col_blocks) = if m >= 256 * tasks {
        (tasks, 1)
    } else {
        // Up to a few hundred rows per task, column blocks win: each task packs only its slice
        // of the weight, and the rows (A) are small enough to pack once per task. Blocks are a
        // multiple of 16 (the sgemm kernel width). Measured with `probe_linear_speed`.
        let cols = n.div_ceil(16).clamp(1, tasks);
        (tasks.div_ceil(cols).min(m.div_ceil(16)).max(1), cols)
    };
    let (rb, cb) = (
        m.div_ceil(row_blocks),
        n.div_ceil(col_blocks).div_ceil(16) * 16,
    );
    let mut out = Vec::with_capacity(row_blocks * col_blocks);
    for r0 in (0..m).step_by(rb.max(1)) {
        for c0 in (0..n).step_by(cb.max(1)) {
            out.push(Tile {
                r0,
                r1: (r0 + rb).min(m),
                c0,
                c1: (c0 + cb).min(n),
            });
        }
    }
    out
}

/// One operand of a tiled product: `[m, k]` rows of `a`, a `[k, n]` view of `b` with strides
/// `bs`, written into `c` with row stride `ldc` starting at column `c_col`.
struct Gemm<'a> {
    a: &'a [f32],
    b: &'a [f32],
    bs: (isize, isize),
    k: usize,
    ldc: usize,
    c_col: usize,
    bias: Option<&'a [f32]>,
    act: Option<UnaryOp>,
}

impl Gemm<'_> {
    /// Computes one tile, then its epilogue while it is still in cache.
    ///
    /// # Safety
    /// `c` must hold rows of `ldc` elements covering every tile, no other task may touch this
    /// tile, and `a`/`b` must hold `m x k` / `k x n` elements for the tile's rows and columns.
    unsafe fn tile(&self, t: Tile, c: *mut f32) {
        let (rows, cols) = (t.r1 - t.r0, t.c1 - t.c0);
        if rows == 0 || cols == 0 {
            return;
        }
        unsafe {
            let c = c.add(t.r0 * self.ldc + self.c_col + t.c0);
            if self.k == 0 {
                for r in 0..rows {
                    std::slice::from_raw_parts_mut(c.add(r * self.ldc), cols).fill(0.0);
                }
            } else {
                let b = self.b.as_ptr().offset(t.c0 as isize * self.bs.1);
                let a = self.a.as_ptr().add(t.r0 * self.k);
                matrixmultiply::sgemm(
                    rows,
                    self.k,
                    cols,
                    1.0,
                    a,
                    self.k as isize,
                    1,
                    b,
                    self.bs.0,
                    self.bs.1,
                    0.0,
                    c,
                    self.ldc as isize,
                    1,
                );
            }
            if self.bias.is_none() && self.act.is_none() {
                return;
            }
            for r in 0..rows {
                let row = std::slice::from_raw_parts_mut(c.add(r * self.ldc), cols);
                if let Some(b) = self.bias {
                    row.iter_mut()
                        .zip(&b[t.c0..t.c1])
                        .for_each(|(y, b)| *y += b);
                }
                if let Some(op) = self.act {
                    unary_in_place(op, row);
                }
            }
        }
    }
}

/// Sizes and layout of one linear: `x[.., k] @ w -> [.., n]`.
pub struct LinearSpec {
    pub k: usize,
    pub n: usize,
    /// `w` is stored `[n, k]` and read transposed.
    pub transpose_w: bool,
    pub act: Option<UnaryOp>,
}

/// `out[r, :] = act(x[r, :] @ w + bias)` over all leading rows of `x`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, spec: &LinearSpec, out: &mut [f32]) {
    if spec.n == 0 || out.is_empty() {
        return;
    }
    let m = out.len() / spec.n;
    let g = Gemm {
        a: x,
        b: w,
        bs: b_strides(spec.k, spec.n, spec.transpose_w),
        k: spec.k,
        ldc: spec.n,
        c_col: 0,
        bias,
        act: spec.act,
    };
    let ptr = OutPtr(out.as_mut_ptr());
    // SAFETY: tiles are disjoint and lie inside `out` ([m, n]); x is [m, k], w is [k, n].
    tiles(m, spec.n, spec.k)
        .into_par_iter()
        .for_each(|t| unsafe { g.tile(t, ptr.get()) });
}

/// One part of a linear group: weight (`[k, n]`, or `[n, k]` when transposed), optional
/// bias `[n]`, and `n`.
pub type LinearPart<'a> = (&'a [f32], Option<&'a [f32]>, usize);

/// `out[:, cols_p] = x @ w_p + b_p` for each part p, written side by side (row stride = the
/// sum of the parts' widths). The weights stay where they are bound: no concatenated copy.
pub fn linear_group(
    x: &[f32],
    parts: &[LinearPart<'_>],
    k: usize,
    transpose_w: bool,
    out: &mut [f32],
) {
    let total: usize = parts.iter().map(|p| p.2).sum();
    if total == 0 || out.is_empty() {
        return;
    }
    let m = out.len() / total;
    let mut col = 0;
    let gemms: Vec<Gemm> = parts
        .iter()
        .map(|(w, b, n)| {
            let g = Gemm {
                a: x,
                b: w,
                bs: b_strides(k, *n, transpose_w),
                k,
                ldc: total,
                c_col: col,
                bias: *b,
                act: None,
            };
            col += n;
            g
        })
        .collect();
    // Tiles are cut for the whole group so the parts share the threads, then clipped per part.
    let whole = tiles(m, total, k);
    let jobs: Vec<(usize, Tile)> = gemms
        .iter()
        .zip(parts)
        .enumerate()
        .flat_map(|(p, (g, (_, _, n)))| {
            whole
                .iter()
                .filter_map(move |t| clip(*t, g.c_col, g.c_col + n))
                .map(move |t| (p, t))
        })
        .collect();
    let ptr = OutPtr(out.as_mut_ptr());
    // SAFETY: each job is a disjoint tile of part p's columns inside `out` ([m, total]).
    jobs.into_par_iter()
        .for_each(|(p, t)| unsafe { gemms[p].tile(t, ptr.get()) });
}

/// The part of tile `t` (in group columns) that falls in `[lo, hi)`, in part-local columns.
fn clip(t: Tile, lo: usize, hi: usize) -> Option<Tile> {
    let (c0, c1) = (t.c0.max(lo), t.c1.min(hi));
    (c0 < c1).then(|| Tile {
        c0: c0 - lo,
        c1: c1 - lo,
        ..t
    })
}

/// Batched `a[..., m, k] @ b[..., k, n]` into `out[..., m, n]`, batch dims broadcast.
pub fn matmul(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = a_shape[a_shape.len() - 1];
    if m * n == 0 {
        return;
    }
    let batch_shape = &out_shape[..r - 2];
    let a_batch = broadcast_strides(&a_shape[..a_shape.len() - 2], batch_shape);
    let b_batch = broadcast_strides(&b_shape[..b_shape.len() - 2], batch_shape);
    let batches = out.len() / (m * n);
    let per = tiles(m, n, k);
    let ptr = OutPtr(out.as_mut_ptr());
    (0..batches)
        .into_par_iter()
        .flat_map_iter(|bi| per.iter().map(move |t| (bi, *t)))
        .for_each(|(bi, t)| {
            // Offsets of this batch in a and b (in matrices), through the broadcast strides.
            let (mut ao, mut bo, mut rem) = (0, 0, bi);
            for d in (0..batch_shape.len()).rev() {
                let idx = rem % batch_shape[d];
                rem /= batch_shape[d];
                ao += idx * a_batch[d];
                bo += idx * b_batch[d];
            }
            let g = Gemm {
                a: &a[ao * m * k..(ao + 1) * m * k],
                b: &b[bo * k * n..(bo + 1) * k * n],
                bs: b_strides(k, n, false),
                k,
                ldc: n,
                c_col: 0,
                bias: None,
                act: None,
            };
            // SAFETY: batch bi owns out[bi*m*n..]; tiles within it are disjoint.
            unsafe { g.tile(t, ptr.get().add(bi * m * n)) }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(m: usize, n: usize, k: usize) {
        let ts = tiles(m, n, k);
        let mut seen = vec![0u8; m * n];
        for t in &ts {
            for r in t.r0..t.r1 {
                for c in t.c0..t.c1 {
                    seen[r * n + c] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&s| s == 1), "{m}x{n}: {ts:?}");
    }

    #[test]
    fn tiles_cover_every_output_once() {
        for (m, n, k) in [
            (1, 1, 1),
            (16, 1536, 384),
            (1024, 384, 384),
            (3, 17, 1000),
            (0, 5, 5),
            (7, 0, 3),
            (100, 100, 100),
        ] {
            covers(m, n, k);
        }
    }
}

#[cfg(test)]
mod probe {
    use super::*;

    #[test]
    #[ignore = "timing probe: cargo test --release -p rlx-runtime --lib gemm -- --ignored --nocapture"]
    fn probe_linear_speed() {
        let pool = crate::cpu::thread_pool(None).unwrap();
        for (m, k, n) in [
            (1024, 384, 384),
            (512, 384, 1536),
            (256, 384, 384),
            (128, 384, 1536),
            (4096, 384, 1152),
            (1024, 1536, 384),
            (16, 384, 1536),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0)
                .collect();
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104729 % 1000) as f32 - 500.0) / 300.0)
                .collect();
            let mut out = vec![0.0f32; m * n];
            let spec = LinearSpec {
                k,
                n,
                transpose_w: false,
                act: None,
            };
            let t = std::time::Instant::now();
            let reps = 50;
            pool.install(|| {
                for _ in 0..reps {
                    linear(&x, &w, None, &spec, &mut out);
                }
            });
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{m}x{k}x{n}: {:.1} GFLOP/s ({} tiles)",
                2.0 * (m * k * n) as f64 / s / 1e9,
                pool.install(|| tiles(m, n, k).len())
            );
        }
    }
}
