//! Data movement: transpose, concat, slice, gather and copies. Apart from transpose these
//! move contiguous runs of bytes, so one implementation serves every dtype.

use rayon::prelude::*;

use super::PAR_GRAIN;
use crate::{Error, Result};

/// `out = x.transpose(perm)`, `shape` being the shape of `x`.
pub fn transpose<T: Copy + Send + Sync>(x: &[T], shape: &[usize], perm: &[usize], out: &mut [T]) {
    let rank = shape.len();
    if out.is_empty() {
        return;
    }
    if rank == 0 {
        out.copy_from_slice(x);
        return;
    }
    // Axes that stay adjacent and in order move as one (a channel shuffle's [n, g, c / g, h, w]
    // to [n, c / g, g, h, w] moves whole h * w planes).
    let (merged, merged_perm) = merged_axes(shape, perm);
    if merged.len() < rank {
        return transpose(x, &merged, &merged_perm, out);
    }
    if let Some((batch, rows, cols)) = as_matrices(shape, perm) {
        transpose_matrices(x, batch, rows, cols, out);
        return;
    }
    let mut in_strides = vec![1; rank];
    for i in (0..rank - 1).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    // Strides of x, visited in output order.
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let last = out_shape[rank - 1];
    let rows_per_task = PAR_GRAIN.div_ceil(last.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * last)
        .enumerate()
        .for_each(|(ci, chunk)| {
            for (ri, row) in chunk.chunks_mut(last).enumerate() {
                let (mut off, mut rem) = (0, ci * rows_per_task + ri);
                for d in (0..rank - 1).rev() {
                    off += (rem % out_shape[d]) * strides[d];
                    rem /= out_shape[d];
                }
                let s = strides[rank - 1];
                if s == 1 {
                    row.copy_from_slice(&x[off..off + last]);
                    continue;
                }
                for (j, o) in row.iter_mut().enumerate() {
                    *o = x[off + j * s];
                }
            }
        });
}

/// `shape` and `perm` with every run of input axes that `perm` keeps adjacent and in order
/// (`perm[i + 1] == perm[i] + 1`) made one axis, and size-1 axes dropped.
fn merged_axes(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = perm.iter().copied().filter(|&p| shape[p] != 1).collect();
    // Runs of output axes whose input axes follow each other (size-1 axes skipped).
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &p in &kept {
        match runs.last_mut() {
            Some(run) if kept_next(shape, *run.last().unwrap_or(&p), p) => run.push(p),
            _ => runs.push(vec![p]),
        }
    }
    // Each run is one axis; its place in the input is the order of its first axis.
    let mut firsts: Vec<usize> = runs.iter().map(|r| r[0]).collect();
    firsts.sort_unstable();
    let merged: Vec<usize> = firsts
        .iter()
        .map(|f| {
            let run = runs.iter().find(|r| r[0] == *f).map_or(&[][..], |r| &r[..]);
            run.iter().map(|&a| shape[a]).product()
        })
        .collect();
    let merged_perm = runs
        .iter()
        .map(|r| firsts.iter().position(|f| *f == r[0]).unwrap_or(0))
        .collect();
    (merged, merged_perm)
}

/// Whether input axis `b` follows `a` once size-1 axes are skipped.
fn kept_next(shape: &[usize], a: usize, b: usize) -> bool {
    b > a && shape[a + 1..b].iter().all(|&d| d == 1)
}

/// Side of the square tiles a matrix transpose moves (a tile's rows and columns stay in L1).
const TILE: usize = 16;

/// `perm` as a batch of matrix transposes: `(batch, rows, cols)` when it keeps some leading
/// axes (the batch) and swaps two groups of the remaining ones (`[.., rows.., cols..]` to
/// `[.., cols.., rows..]`), as channels-first to channels-last and back do.
fn as_matrices(shape: &[usize], perm: &[usize]) -> Option<(usize, usize, usize)> {
    let k = perm
        .iter()
        .enumerate()
        .take_while(|(i, p)| *i == **p)
        .count();
    let j = *perm.get(k)?;
    let r = perm.len();
    let swapped = j > k && perm[k..].iter().copied().eq((j..r).chain(k..j));
    swapped.then(|| {
        let n = |axes: &[usize]| axes.iter().product::<usize>();
        (n(&shape[..k]), n(&shape[k..j]), n(&shape[j..]))
    })
}

/// `out[b, c, r] = x[b, r, c]` in square tiles, a block of `TILE` output rows per task; 4-byte
/// elements move as 8 x 8 register blocks where the CPU has AVX.
fn transpose_matrices<T: Copy + Send + Sync>(
    x: &[T],
    batch: usize,
    rows: usize,
    cols: usize,
    out: &mut [T],
) {
    if rows == 0 || cols == 0 || batch == 0 {
        return;
    }
    let per = rows * cols;
    if rows <= 4 {
        // A few planes interleaved (a 3-channel image to channels-last): a plain loop per
        // plane count, which the compiler vectorizes as an interleaved store. Small matrices
        // go many to a task (a channels-last shuffle's 3,136 of 4 x 28 took 54 us one task
        // each).
        let per_task = PAR_GRAIN.div_ceil(per).max(1) * per;
        // Four planes of f32 eight columns at a time in registers (the scalar loop moved
        // ~6 GB/s).
        let simd = rows == 4 && std::mem::size_of::<T>() == 4 && avx();
        out.par_chunks_mut(per_task)
            .zip(x.par_chunks(per_task))
            .for_each(|(o, src)| {
                for (o, src) in o.chunks_exact_mut(per).zip(src.chunks_exact(per)) {
                    if !simd {
                        interleave_planes(src, cols, rows, o);
                        continue;
                    }
                    let done = cols / 8 * 8;
                    for c0 in (0..done).step_by(8) {
                        // SAFETY: 4 rows of columns c0 .. + 8 lie in src (4 x cols), their 32
                        // outputs in o (cols x 4); T is 4 bytes; the CPU has AVX.
                        unsafe {
                            block4x8(
                                src.as_ptr().add(c0) as *const f32,
                                cols,
                                o.as_mut_ptr().add(c0 * 4) as *mut f32,
                            )
                        };
                    }
                    for c in done..cols {
                        for r in 0..4 {
                            o[c * 4 + r] = src[r * cols + c];
                        }
                    }
                }
            });
        return;
    }
    let simd = std::mem::size_of::<T>() == 4 && avx();
    out.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .take(batch)
        .flat_map(|(o, src)| {
            o.par_chunks_mut(TILE * rows)
                .enumerate()
                .map(move |(cb, dst)| (cb, dst, src))
        })
        .for_each(|(cb, dst, src)| {
            let c0 = cb * TILE;
            let n_c = dst.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                let r1 = (r0 + TILE).min(rows);
                if simd && n_c == TILE && r1 - r0 == TILE {
                    for (bc, br) in [(0, 0), (0, 8), (8, 0), (8, 8)] {
                        // SAFETY: rows r0 + br .. + 8 and columns c0 + bc .. + 8 lie inside
                        // src (a rows x cols matrix); output rows bc .. + 8 of this block
                        // (rows long) hold columns r0 + br .. + 8; T is 4 bytes.
                        unsafe {
                            block8(
                                src.as_ptr().add((r0 + br) * cols + c0 + bc) as *const f32,
                                cols,
                                dst.as_mut_ptr().add(bc * rows + r0 + br) as *mut f32,
                                rows,
                            )
                        };
                    }
                    continue;
                }
                for dc in 0..n_c {
                    let line = &mut dst[dc * rows + r0..dc * rows + r1];
                    for (dr, o) in line.iter_mut().enumerate() {
                        *o = src[(r0 + dr) * cols + c0 + dc];
                    }
                }
            }
        });
}

/// `out[c * planes + r] = x[r * plane + c]`: the first `out.len() / planes` values of
/// `planes` planes `plane` apart interleaved (a few planes: a loop per count, which the
/// compiler vectorizes as an interleaved store).
pub(super) fn interleave_planes<T: Copy>(x: &[T], plane: usize, planes: usize, out: &mut [T]) {
    match planes {
        1 => out.copy_from_slice(&x[..out.len()]),
        2 => interleave::<T, 2>(x, plane, out),
        3 => interleave::<T, 3>(x, plane, out),
        4 => interleave::<T, 4>(x, plane, out),
        _ => {
            for (c, o) in out.chunks_exact_mut(planes.max(1)).enumerate() {
                for (r, v) in o.iter_mut().enumerate() {
                    *v = x[r * plane + c];
                }
            }
        }
    }
}

/// `out[c * R + r] = x[r * plane + c]`: `R` planes interleaved.
fn interleave<T: Copy, const R: usize>(x: &[T], plane: usize, out: &mut [T]) {
    let n = out.len() / R;
    let planes: [&[T]; R] = std::array::from_fn(|r| &x[r * plane..r * plane + n]);
    for (c, o) in out.chunks_exact_mut(R).enumerate() {
        for r in 0..R {
            o[r] = planes[r][c];
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx() -> bool {
    std::arch::is_x86_feature_detected!("avx")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx() -> bool {
    false
}

/// `dst[c * ldd + r] = src[r * lds + c]` for `r, c < 8`: three rounds of shuffles (pairs of
/// rows interleaved, then pairs of pairs, then 128-bit halves exchanged).
///
/// # Safety
/// The CPU has AVX; 8 rows of 8 floats at `src` (stride `lds`) and at `dst` (stride `ldd`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, v) in r.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(src.add(i * lds));
        }
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        let s = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for i in 0..4 {
            _mm256_storeu_ps(
                dst.add(i * ldd),
                _mm256_permute2f128_ps::<0x20>(s[i], s[i + 4]),
            );
            _mm256_storeu_ps(
                dst.add((i + 4) * ldd),
                _mm256_permute2f128_ps::<0x31>(s[i], s[i + 4]),
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block8(_: *const f32, _: usize, _: *mut f32, _: usize) {
    unreachable!("only called where the CPU has AVX")
}

/// `dst[c * 4 + r] = src[r * lds + c]` for `r < 4`, `c < 8`: four rows of eight interleaved
/// into 32 floats (`block8`'s first two rounds, then the 128-bit halves in order).
///
/// # Safety
/// The CPU has AVX; 4 rows of 8 floats at `src` (stride `lds`), 32 floats at `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block4x8(src: *const f32, lds: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let r: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
        ];
        // Columns (0, 4), (1, 5), (2, 6), (3, 7), each a column's four rows per half.
        let s = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        ];
        _mm256_storeu_ps(dst, _mm256_permute2f128_ps::<0x20>(s[0], s[1]));
        _mm256_storeu_ps(dst.add(8), _mm256_permute2f128_ps::<0x20>(s[2], s[3]));
        _mm256_storeu_ps(dst.add(16), _mm256_permute2f128_ps::<0x31>(s[0], s[1]));
        _mm256_storeu_ps(dst.add(24), _mm256_permute2f128_ps::<0x31>(s[2], s[3]));
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block4x8(_: *const f32, _: usize, _: *mut f32) {
    unreachable!("only called where the CPU has AVX")
}

pub fn copy_f32(x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(PAR_GRAIN)
        .zip(x.par_chunks(PAR_GRAIN))
        .for_each(|(o, x)| o.copy_from_slice(x));
}

pub fn copy_bytes(x: &[u8], out: &mut [u8]) {
    out.par_chunks_mut(PAR_GRAIN * 4)
        .zip(x.par_chunks(PAR_GRAIN * 4))
        .for_each(|(o, x)| o.copy_from_slice(x));
}

/// Concatenates byte tensors viewed as `[outer, run_i]`: each part contributes `run_i` bytes
/// per outer index.
pub fn concat(parts: &[(&[u8], usize)], outer: usize, out: &mut [u8]) {
    let total: usize = parts.iter().map(|p| p.1).sum();
    if total == 0 {
        return;
    }
    out.par_chunks_mut(total)
        .take(outer)
        .enumerate()
        .for_each(|(o, row)| {
            let mut at = 0;
            for (data, run) in parts {
                row[at..at + run].copy_from_slice(&data[o * run..(o + 1) * run]);
                at += run;
            }
        });
}

/// `x` viewed as `[outer, dim * inner]` bytes; keeps `[start, end)` of `dim` in every row.
pub fn slice(
    x: &[u8],
    outer: usize,
    dim: usize,
    inner: usize,
    start: usize,
    end: usize,
    out: &mut [u8],
) {
    let run = (end - start) * inner;
    if run == 0 {
        return;
    }
    out.par_chunks_mut(run)
        .take(outer)
        .enumerate()
        .for_each(|(o, row)| {
            let src = o * dim * inner + start * inner;
            row.copy_from_slice(&x[src..src + run]);
        });
}

/// `data` viewed as `[outer, dim, inner]` (inner in bytes); out = `[outer, n, inner]` with
/// row `i` taken from `indices[i]`. Every index is checked before any byte moves.
pub fn gather(
    data: &[u8],
    outer: usize,
    dim: usize,
    inner: usize,
    indices: &[i64],
    out: &mut [u8],
) -> Result<()> {
    let mut rows = Vec::with_capacity(indices.len());
    for (pos, &i) in indices.iter().enumerate() {
        let j = if i < 0 { i + dim as i64 } else { i };
        if j < 0 || j >= dim as i64 {
            return Err(Error::Index(format!(
                "gather index {i} at position {pos} is out of range for an axis of size {dim}"
            )));
        }
        rows.push(j as usize);
    }
    let n = indices.len();
    if inner == 0 || n == 0 {
        return Ok(());
    }
    out.par_chunks_mut(n * inner)
        .take(outer)
        .enumerate()
        .for_each(|(o, block)| {
            for (i, dst) in block.chunks_mut(inner).enumerate() {
                let src = (o * dim + rows[i]) * inner;
                dst.copy_from_slice(&data[src..src + inner]);
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x.transpose(perm)` one element at a time.
    fn naive(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
        let out_shape: Vec<usize> = perm.iter().map(|p| shape[*p]).collect();
        let n: usize = shape.iter().product();
        (0..n)
            .map(|mut f| {
                let mut idx = vec![0; shape.len()];
                for d in (0..shape.len()).rev() {
                    idx[d] = f % out_shape[d];
                    f /= out_shape[d];
                }
                let mut at = 0;
                for (d, size) in shape.iter().enumerate() {
                    let i = idx[perm.iter().position(|p| *p == d).unwrap()];
                    at = at * size + i;
                }
                x[at]
            })
            .collect()
    }

    #[test]
    fn planes_interleave_into_pixels() {
        // Each count's own loop (1-4) and the general one (5); 37 values of planes 50 apart
        // (a row of a larger image), into an output one longer than asked (not written).
        let plane = 50;
        for c in 1..=5 {
            let src: Vec<f32> = (0..c * plane).map(|i| i as f32).collect();
            let mut dst = vec![-1.0f32; 37 * c + 1];
            interleave_planes(&src, plane, c, &mut dst[..37 * c]);
            for x in 0..37 {
                for k in 0..c {
                    assert_eq!(dst[x * c + k], (k * plane + x) as f32, "c={c} [{x}, {k}]");
                }
            }
            assert_eq!(dst[37 * c], -1.0, "c={c}: wrote past the pixels");
        }
    }

    #[test]
    fn matrix_and_general_permutations_match_one_element_at_a_time() {
        for (shape, perm) in [
            (vec![2, 5, 7, 33], vec![0, 3, 1, 2]),
            (vec![3, 17, 18, 20], vec![0, 2, 3, 1]),
            (vec![1, 40, 3], vec![0, 2, 1]),
            (vec![19, 35], vec![1, 0]),
            (vec![2, 3, 4, 5], vec![2, 0, 3, 1]),
            (vec![2, 0, 4], vec![0, 2, 1]),
            (vec![2, 3, 5, 7], vec![0, 2, 3, 1]),
            (vec![3, 2, 9], vec![0, 2, 1]),
            (vec![2, 4, 1, 3], vec![0, 2, 3, 1]),
            // A channel shuffle (whole planes move), size-1 axes among merged runs, all ones.
            (vec![2, 6, 4, 5, 3], vec![0, 2, 1, 3, 4]),
            (vec![2, 1, 3, 1, 4], vec![4, 3, 2, 1, 0]),
            (vec![3, 1, 4, 5], vec![1, 3, 0, 2]),
            (vec![1, 1, 1], vec![2, 0, 1]),
            // A channels-last shuffle: four rows of 8-column blocks and a tail, of 8 exactly,
            // of fewer than 8; and 700 small matrices over several tasks.
            (vec![5, 4, 34], vec![0, 2, 1]),
            (vec![3, 4, 8], vec![0, 2, 1]),
            (vec![2, 4, 5], vec![0, 2, 1]),
            (vec![700, 4, 12], vec![0, 2, 1]),
        ] {
            let n: usize = shape.iter().product();
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut out = vec![-1.0; n];
            transpose(&x, &shape, &perm, &mut out);
            assert_eq!(out, naive(&x, &shape, &perm), "{shape:?} {perm:?}");
        }
        assert_eq!(as_matrices(&[2, 3, 4, 5], &[0, 2, 3, 1]), Some((2, 3, 20)));
        assert_eq!(as_matrices(&[2, 3, 4, 5], &[2, 0, 3, 1]), None);
        // [n, g, c, h, w] -> [n, c, g, h, w]: four axes, h and w one; size-1 axes gone.
        let shuffle = merged_axes(&[2, 6, 4, 5, 3], &[0, 2, 1, 3, 4]);
        assert_eq!(shuffle, (vec![2, 6, 4, 15], vec![0, 2, 1, 3]));
        assert_eq!(
            merged_axes(&[3, 1, 4, 5], &[1, 3, 0, 2]),
            (vec![12, 5], vec![1, 0])
        );
    }
}
