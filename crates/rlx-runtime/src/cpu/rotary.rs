//! Rotary position embedding, half rotation: row `(b, h, s)` of `dim` floats has its pairs
//! `(x[i], x[i + dim/2])` rotated by `(offset[b] + s) * theta^(-2i/dim)`. The cosines and sines
//! are computed once per position (in f64, so large positions keep their precision) and shared
//! by every head.

use rayon::prelude::*;

use crate::Result;
use crate::error::fail;
use crate::fallible::try_map;

/// `x` and `out` are `[batch, heads, seq, dim]`; `offsets` holds `batch` values or one.
pub fn rotary(
    x: &[f32],
    shape: &[usize],
    offsets: &[i64],
    theta: f32,
    out: &mut [f32],
) -> Result<()> {
    let &[batch, heads, seq, dim] = shape else {
        fail!(Shape, "rotary over shape {shape:?}: expected 4 dims");
    };
    if offsets.len() != 1 && offsets.len() != batch {
        fail!(
            Shape,
            "rotary offset has {} values for a batch of {batch}",
            offsets.len()
        );
    }
    let half = dim / 2;
    if half == 0 || x.is_empty() {
        out.copy_from_slice(x);
        return Ok(());
    }
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| f64::from(theta).powf(-2.0 * i as f64 / dim as f64))
        .collect();
    // One table row of (cos, sin) per (offset row, position).
    let rows: Vec<(usize, usize)> = (0..offsets.len())
        .flat_map(|o| (0..seq).map(move |t| (o, t)))
        .collect();
    let table = try_map("rotary angles", &rows, |&(o, t)| {
        let pos = offsets[o].saturating_add(t as i64) as f64;
        inv_freq
            .iter()
            .map(|f| {
                let (s, c) = (pos * f).sin_cos();
                (c as f32, s as f32)
            })
            .collect::<Vec<_>>()
    })?;
    let per_offset = offsets.len() > 1;
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .enumerate()
        .for_each(|(r, (o, xr))| {
            let (b, t) = (r / (heads * seq), r % seq);
            let angles = &table[if per_offset { b } else { 0 } * seq + t];
            let (lo, hi) = xr.split_at(half);
            let (olo, ohi) = o.split_at_mut(half);
            for i in 0..half {
                let (c, s) = angles[i];
                olo[i] = lo[i] * c - hi[i] * s;
                ohi[i] = hi[i] * c + lo[i] * s;
            }
            // An odd dim keeps its last element (inference refuses odd static dims).
            ohi[half..].copy_from_slice(&hi[half..]);
        });
    Ok(())
}
