//! Weight panels: a `[k, n]` matrix (stored as is, or as `[n, k]` and read transposed) laid
//! out as `ceil(n / nr)` panels of `[k][nr]`, zero-padded past column `n`. The micro-kernel then
//! reads B as one contiguous stream per panel. Built once per weight and kept by the
//! `ParamStore` (see `params.rs`); activations that act as B are read in place instead.

use crate::{Error, Result};

/// A B operand in panel layout.
#[derive(Debug)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    pub nr: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs `b` (`[k, n]`, or `[n, k]` when `transposed`) into panels of `nr` columns.
    /// The buffer is allocated fallibly: a weight too big to copy is a memory error.
    pub fn new(b: &[f32], k: usize, n: usize, transposed: bool, nr: usize) -> Result<PackedB> {
        let panels = n.div_ceil(nr);
        let len = panels
            .checked_mul(k)
            .and_then(|v| v.checked_mul(nr))
            .ok_or_else(|| Error::Memory(format!("packed weight {k}x{n} overflows")))?;
        if b.len() < k * n {
            return Err(Error::Compile(format!(
                "packing a {k}x{n} weight from {} elements",
                b.len()
            )));
        }
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| {
            Error::Memory(format!(
                "cannot allocate {} bytes for a packed weight",
                len * 4
            ))
        })?;
        data.resize(len, 0.0);
        // With k = 0 there is nothing to lay out (and no chunk size to cut by).
        for (j, panel) in data.chunks_mut((k * nr).max(1)).enumerate() {
            pack_panel(b, k, n, transposed, j * nr, nr, panel);
        }
        Ok(PackedB { k, n, nr, data })
    }

    /// Panel `j`: `k` rows of `nr` floats.
    pub fn panel(&self, j: usize) -> *const f32 {
        self.data[j * self.k * self.nr..].as_ptr()
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }

    pub fn as_ptr(&self) -> *const f32 {
        self.data.as_ptr()
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
        // Column c of B is row c of the stored [n, k] matrix: read it sequentially.
        for j in 0..cols {
            let src = &b[(c0 + j) * k..(c0 + j + 1) * k];
            for (p, v) in src.iter().enumerate() {
                out[p * nr + j] = *v;
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

#[cfg(test)]
mod tests {
    use super::*;

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
