//! Weight panels: a `[k, n]` matrix (stored as is, or as `[n, k]` and read transposed) laid
//! out as `ceil(n / nr)` panels of `[k][nr]`, zero-padded past column `n`. The micro-kernel then
//! reads B as one contiguous stream per panel. Built once per weight and kept by the
//! `ParamStore` (see `params.rs`); activations that act as B are read in place instead.

use crate::fallible::try_zeroed;
use crate::{Error, Result};

/// A B operand in panel layout.
#[derive(Debug)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    pub nr: usize,
    data: Panels,
}

/// Where the panels live: this process's memory, or a file mapping shared with others.
#[derive(Debug)]
enum Panels {
    Owned(Vec<f32>),
    Shared(super::shared_panels::Mapped),
}

impl PackedB {
    /// Packs `b` (`[k, n]`, or `[n, k]` when `transposed`) into panels of `nr` columns.
    /// The buffer is allocated fallibly: a weight too big to copy is a memory error.
    pub fn new(b: &[f32], k: usize, n: usize, transposed: bool, nr: usize) -> Result<PackedB> {
        let len = panel_len(b, k, n, nr, 1)?;
        let mut data = try_zeroed("a packed weight", len)?;
        // With k = 0 there is nothing to lay out (and no chunk size to cut by).
        for (j, panel) in data.chunks_mut((k * nr).max(1)).enumerate() {
            pack_panel(b, k, n, transposed, j * nr, nr, panel);
        }
        Ok(PackedB {
            k,
            n,
            nr,
            data: Panels::Owned(data),
        })
    }

    /// As [`Self::new`] (then `map` applied to every element), the panels shared through a
    /// file in `dir` named by `key` (a hash of the weight's bytes and everything that shapes
    /// the layout): mapped from there when another process (or an earlier run) wrote it,
    /// else built, written and mapped. Kept in memory when the directory is unusable.
    #[allow(clippy::too_many_arguments)]
    pub fn shared(
        b: &[f32],
        k: usize,
        n: usize,
        transposed: bool,
        nr: usize,
        map: Option<fn(f32) -> f32>,
        dir: &std::path::Path,
        key: &[u8; 32],
    ) -> Result<PackedB> {
        let floats = n.div_ceil(nr).saturating_mul(k).saturating_mul(nr);
        let mut failed = None;
        let build = || match PackedB::new(b, k, n, transposed, nr) {
            Ok(mut p) => {
                if let Some(f) = map {
                    p.map_in_place(f);
                }
                match p.data {
                    Panels::Owned(v) => Some(v),
                    Panels::Shared(_) => None,
                }
            }
            Err(e) => {
                failed = Some(e);
                None
            }
        };
        let data = match super::shared_panels::load_or_store(dir, key, floats, build) {
            Ok(m) => Panels::Shared(m),
            Err(Some(v)) => Panels::Owned(v),
            Err(None) => {
                return Err(failed.unwrap_or_else(|| Error::Compile("packing failed".into())));
            }
        };
        Ok(PackedB { k, n, nr, data })
    }

    fn floats(&self) -> &[f32] {
        match &self.data {
            Panels::Owned(v) => v,
            Panels::Shared(m) => m.floats(),
        }
    }

    /// Whether the panels are a file mapping shared with other processes.
    pub fn is_shared(&self) -> bool {
        matches!(self.data, Panels::Shared(_))
    }

    /// Panel `j`: `k` rows of `nr` floats.
    pub fn panel(&self, j: usize) -> *const f32 {
        self.floats()[j * self.k * self.nr..].as_ptr()
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.floats())
    }

    pub fn as_ptr(&self) -> *const f32 {
        self.floats().as_ptr()
    }

    /// Applies `f` to every element of in-memory panels (the padding stays 0 for an `f` that
    /// keeps 0); shared panels are read-only and stay as they are.
    pub fn map_in_place(&mut self, f: impl Fn(f32) -> f32) {
        if let Panels::Owned(v) = &mut self.data {
            v.iter_mut().for_each(|x| *x = f(*x));
        }
    }
}

/// Elements of `ceil(n / nr)` panels of `ceil(k / group)` rows of `nr` elements, after
/// checking that `b` holds a `k x n` weight (`group` rows of B share one element of a
/// bf16 / int8 panel).
pub(super) fn panel_len(b: &[f32], k: usize, n: usize, nr: usize, group: usize) -> Result<usize> {
    if b.len() < k.saturating_mul(n) {
        return Err(Error::Compile(format!(
            "packing a {k}x{n} weight from {} elements",
            b.len()
        )));
    }
    n.div_ceil(nr)
        .checked_mul(k.div_ceil(group))
        .and_then(|v| v.checked_mul(nr))
        .ok_or_else(|| Error::Memory(format!("packed weight {k}x{n} overflows")))
}

/// Element `[p, c]` of the `[k, n]` weight stored as `b` (`[n, k]` when `transposed`).
pub(super) fn weight_at(
    b: &[f32],
    k: usize,
    n: usize,
    transposed: bool,
    p: usize,
    c: usize,
) -> f32 {
    if transposed {
        b[c * k + p]
    } else {
        b[p * n + c]
    }
}

/// Writes columns `c0..c0 + nr` of B (zero past `n`) as `k` rows of `nr` into `out`.
pub fn pack_panel(
    b: &[f32],
    k: usize,
    n: usize,
    transposed: bool,
    c0: usize,
    nr: usize,
    out: &mut [f32],
) {
    let cols = n.saturating_sub(c0).min(nr);
    if transposed {
        // Column c of B is row c of the stored [n, k] matrix. Whole 8 x 8 blocks go through
        // AVX2 registers (8 row loads, a transpose, 8 row stores); the rest, one element at a
        // time (a stride-nr store per element is what made packing slow).
        let (cols8, k8) = if cols == nr && nr.is_multiple_of(8) && avx2() {
            // SAFETY: the CPU has AVX2; the blocks lie inside `b` (rows c0..c0+nr of k floats)
            // and `out` (k rows of nr floats).
            unsafe { transpose_blocks_avx2(b, k, c0, nr, out) };
            (nr, k - k % 8)
        } else {
            (0, 0)
        };
        for j in 0..cols {
            let first = if j < cols8 { k8 } else { 0 };
            let src = &b[(c0 + j) * k + first..(c0 + j + 1) * k];
            for (p, v) in src.iter().enumerate() {
                out[(first + p) * nr + j] = *v;
            }
        }
        for p in 0..k {
            out[p * nr + cols..(p + 1) * nr].fill(0.0);
        }
    } else {
        for p in 0..k {
            let row = &mut out[p * nr..(p + 1) * nr];
            row[..cols].copy_from_slice(&b[p * n + c0..p * n + c0 + cols]);
            row[cols..].fill(0.0);
        }
    }
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[p][j] = b[(c0 + j) * k + p]` for every whole 8 x 8 block (p < k - k % 8, j < nr).
///
/// # Safety
/// AVX2; `b` holds rows `c0..c0 + nr` of `k` floats, `out` holds `k` rows of `nr` floats, and
/// `nr` is a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_blocks_avx2(b: &[f32], k: usize, c0: usize, nr: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(b.len() >= (c0 + nr) * k && out.len() >= k * nr && nr.is_multiple_of(8));
    let (src, dst) = (b.as_ptr(), out.as_mut_ptr());
    for j0 in (0..nr).step_by(8) {
        for p0 in (0..k - k % 8).step_by(8) {
            // SAFETY: rows c0 + j0 .. + 8 and columns p0 .. + 8 lie inside b; rows p0 .. + 8 and
            // columns j0 .. + 8 inside out (the assert above).
            unsafe {
                let row = |i: usize| _mm256_loadu_ps(src.add((c0 + j0 + i) * k + p0));
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (r4, r5, r6, r7) = (row(4), row(5), row(6), row(7));
                let t0 = _mm256_unpacklo_ps(r0, r1);
                let t1 = _mm256_unpackhi_ps(r0, r1);
                let t2 = _mm256_unpacklo_ps(r2, r3);
                let t3 = _mm256_unpackhi_ps(r2, r3);
                let t4 = _mm256_unpacklo_ps(r4, r5);
                let t5 = _mm256_unpackhi_ps(r4, r5);
                let t6 = _mm256_unpacklo_ps(r6, r7);
                let t7 = _mm256_unpackhi_ps(r6, r7);
                let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let cols = [
                    _mm256_permute2f128_ps::<0x20>(s0, s4),
                    _mm256_permute2f128_ps::<0x20>(s1, s5),
                    _mm256_permute2f128_ps::<0x20>(s2, s6),
                    _mm256_permute2f128_ps::<0x20>(s3, s7),
                    _mm256_permute2f128_ps::<0x31>(s0, s4),
                    _mm256_permute2f128_ps::<0x31>(s1, s5),
                    _mm256_permute2f128_ps::<0x31>(s2, s6),
                    _mm256_permute2f128_ps::<0x31>(s3, s7),
                ];
                for (i, v) in cols.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((p0 + i) * nr + j0), v);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose_blocks_avx2(_: &[f32], _: usize, _: usize, _: usize, _: &mut [f32]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_panels_agree_with_a_plain_transpose_at_every_size() {
        // Sizes around the 8 x 8 blocks: whole panels and an edge panel, k with and without a
        // remainder, k = 0.
        for (k, n, nr) in [
            (0, 8, 8),
            (8, 8, 8),
            (13, 37, 16),
            (64, 64, 32),
            (385, 70, 32),
            (7, 32, 32),
        ] {
            let bt: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.5 - 3.0).collect(); // [n, k]
            let p = PackedB::new(&bt, k, n, true, nr).unwrap();
            for c in 0..p.panels() * nr {
                for r in 0..k {
                    let got = unsafe { *p.panel(c / nr).add(r * nr + c % nr) };
                    let want = if c < n { bt[c * k + r] } else { 0.0 };
                    assert_eq!(got, want, "k={k} n={n} nr={nr} col {c} row {r}");
                }
            }
        }
    }

    #[test]
    fn panels_hold_the_columns_in_either_layout() {
        let (k, n) = (3, 5);
        let b: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
        // The same matrix stored [n, k].
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        for (src, t) in [(&b, false), (&bt, true)] {
            let p = PackedB::new(src, k, n, t, 4).unwrap();
            assert_eq!(p.panels(), 2);
            for c in 0..8 {
                for r in 0..k {
                    let got = unsafe { *p.panel(c / 4).add(r * 4 + c % 4) };
                    let want = if c < n { b[r * n + c] } else { 0.0 };
                    assert_eq!(got, want, "col {c} row {r} transposed={t}");
                }
            }
        }
    }
}
