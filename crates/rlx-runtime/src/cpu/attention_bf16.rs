//! Attention's two products on the AVX512-BF16 kernel (`precision="bf16"`): queries, scaled
//! keys, probabilities and values rounded to bf16, products accumulated in f32; the softmax
//! between them stays f32. Keys and values are converted once per call into bf16 pair panels
//! (`gemm::bf16` layout) shared by every task; each task rounds its block of queries and,
//! after the softmax, its probabilities.

use std::cell::RefCell;

use rayon::prelude::*;

use super::attention::AttnSpec;
use super::gemm::bf16::{self, NR};
use crate::Result;
use crate::fallible::{grow, with_scratch};

thread_local! {
    /// Every kv head's scaled keys and values as pair panels, built by the calling thread once
    /// per call; kept between calls so runs do not allocate.
    static PANELS: RefCell<(Vec<u32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// A task's block of queries, then of probabilities, as bf16 pairs.
    static PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// The bf16 operands of one call: keys `[d / 2, sk]` and values `[sk / 2, dv]` per kv head.
pub struct Bf16Operands<'a> {
    keys: &'a [u32],
    values: &'a [u32],
    key_len: usize,
    value_len: usize,
}

/// Runs `body` with every kv head's keys (times the softmax scale) and values converted.
pub fn with_operands<R>(
    k: &[f32],
    v: &[f32],
    s: &AttnSpec,
    body: impl FnOnce(&Bf16Operands) -> Result<R>,
) -> Result<R> {
    with_scratch(&PANELS, |(keys, values)| {
        let key_len = s.d.div_ceil(2) * s.sk.div_ceil(NR) * NR;
        let value_len = s.sk.div_ceil(2) * s.dv.div_ceil(NR) * NR;
        let heads = s.batch * s.kv_heads;
        grow(keys, heads * key_len, "attention keys")?;
        grow(values, heads * value_len, "attention values")?;
        let [_, lk, lv, _] = s.layout;
        keys[..heads * key_len]
            .par_chunks_mut(key_len.max(1))
            .enumerate()
            .for_each(|(bh, dst)| {
                let base = lk.at(bh / s.kv_heads, bh % s.kv_heads);
                pack_keys(&k[base..], lk.row_stride, s, dst);
            });
        values[..heads * value_len]
            .par_chunks_mut(value_len.max(1))
            .enumerate()
            .for_each(|(bh, dst)| {
                let base = lv.at(bh / s.kv_heads, bh % s.kv_heads);
                let row = |r: usize| &v[base + r * lv.row_stride..][..s.dv];
                bf16::pack_pairs(row, s.sk, s.dv, dst);
            });
        body(&Bf16Operands {
            keys,
            values,
            key_len,
            value_len,
        })
    })
}

/// One kv head's keys (rows of `d` at stride `ld`), times the scale, as `k^T` pair panels:
/// panel `j`, pair row `p`, column `c` holds dims `(2p, 2p + 1)` of key `j * 32 + c`.
fn pack_keys(k: &[f32], ld: usize, s: &AttnSpec, dst: &mut [u32]) {
    let dp = s.d.div_ceil(2);
    let (mut scaled, mut pairs) = (vec![0.0f32; s.d], vec![0u32; dp]);
    for key in 0..s.sk {
        let row = &k[key * ld..key * ld + s.d];
        scaled
            .iter_mut()
            .zip(row)
            .for_each(|(o, x)| *o = x * s.scale);
        bf16::round_pairs(&scaled, &mut pairs);
        let panel = &mut dst[(key / NR) * dp * NR..];
        for (p, pair) in pairs.iter().enumerate() {
            panel[p * NR + key % NR] = *pair;
        }
    }
}

impl Bf16Operands<'_> {
    /// `scores[r, j] = q[r] . k[j] * scale` for the `rows` queries at `q` (row stride `ldq`)
    /// and keys `0..n` of kv head `bh`.
    ///
    /// # Safety
    /// `q` covers `rows` rows of `d`; `scores` holds `rows * n`; the CPU has AVX512-BF16.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn scores(
        &self,
        s: &AttnSpec,
        bh: usize,
        q: *const f32,
        ldq: usize,
        rows: usize,
        n: usize,
        scores: &mut [f32],
    ) {
        let dp = s.d.div_ceil(2);
        PAIRS.with_borrow_mut(|a| {
            a.clear();
            a.resize(rows * dp, 0);
            for (r, out) in a.chunks_exact_mut(dp.max(1)).enumerate().take(rows) {
                // SAFETY: row r of the block lies in q (caller).
                let row = unsafe { std::slice::from_raw_parts(q.add(r * ldq), s.d) };
                bf16::round_pairs(row, out);
            }
            let keys = &self.keys[bh * self.key_len..];
            // SAFETY: a holds rows x dp pairs; keys hold dp pair rows per panel over n keys;
            // scores holds rows x n.
            unsafe {
                bf16::product_pairs(
                    rows,
                    n,
                    dp,
                    a.as_ptr(),
                    dp,
                    keys.as_ptr(),
                    dp,
                    scores.as_mut_ptr(),
                    n,
                )
            };
        });
    }

    /// `out[r] = sum_j p[r, j] v[j]` over keys `0..n` of kv head `bh` (`n` even or `sk`: a
    /// pair never reaches a value row outside the window), output rows of stride `ldo`.
    ///
    /// # Safety
    /// `out` covers `rows` rows of `dv`; `p` holds `rows * n`; the CPU has AVX512-BF16.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mix(
        &self,
        s: &AttnSpec,
        bh: usize,
        p: &[f32],
        rows: usize,
        n: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let kp = n.div_ceil(2);
        PAIRS.with_borrow_mut(|a| {
            a.clear();
            a.resize(rows * kp, 0);
            for (r, row) in p.chunks(n.max(1)).enumerate().take(rows) {
                bf16::round_pairs(&row[..n], &mut a[r * kp..(r + 1) * kp]);
            }
            let values = &self.values[bh * self.value_len..];
            // SAFETY: a holds rows x kp pairs; values hold sk / 2 pair rows per panel.
            unsafe {
                bf16::product_pairs(
                    rows,
                    s.dv,
                    kp,
                    a.as_ptr(),
                    kp,
                    values.as_ptr(),
                    s.sk.div_ceil(2),
                    out,
                    ldo,
                )
            };
        });
    }

    /// Whether keys `0..n` can mix in pairs (see [`Bf16Operands::mix`]).
    pub fn mixes(s: &AttnSpec, n: usize) -> bool {
        n.is_multiple_of(2) || n == s.sk
    }
}

#[cfg(test)]
mod tests {
    use super::super::attention::{AttnSpec, HeadLayout, attention};
    use super::super::isa::Isa;
    use super::bf16::round_bf16;

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0) * 1.5)
            .collect()
    }

    /// f64 attention over bf16-rounded operands (queries, scaled keys, values; probabilities
    /// rounded after an exact softmax), and per output the bound of one bf16 ulp of every
    /// probability: `2^-8 sum_j p_j |v_j|`.
    #[allow(clippy::too_many_arguments)]
    fn model(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (heads, kv_heads, sq, sk, d, dv): (usize, usize, usize, usize, usize, usize),
        scale: f32,
        causal: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let r = |x: f32| f64::from(round_bf16(x));
        let (mut out, mut bound) = (vec![0.0; heads * sq * dv], vec![0.0; heads * sq * dv]);
        for h in 0..heads {
            let kh = h / (heads / kv_heads);
            for i in 0..sq {
                let live = if causal {
                    (i + sk + 1).saturating_sub(sq)
                } else {
                    sk
                };
                let scores: Vec<f64> = (0..live)
                    .map(|j| {
                        (0..d)
                            .map(|t| {
                                r(q[(h * sq + i) * d + t]) * r(k[(kh * sk + j) * d + t] * scale)
                            })
                            .sum()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..dv {
                    let at = (h * sq + i) * dv + c;
                    for (j, ej) in e.iter().enumerate() {
                        let p = ej / sum;
                        let vj = r(v[(kh * sk + j) * dv + c]);
                        out[at] += r(p as f32) * vj;
                        bound[at] += p * vj.abs() / 256.0;
                    }
                }
            }
        }
        (out, bound)
    }

    #[test]
    fn bf16_attention_matches_the_rounding_model() {
        if !super::bf16::supported() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        // (heads, kv_heads, sq, sk, d, dv, causal): odd head dims, keys short of a panel,
        // grouped queries, and causal blocks whose odd key count mixes in f32.
        for shape in [
            (2, 2, 70, 70, 32, 32, false),
            (4, 2, 9, 45, 33, 40, false),
            (2, 1, 37, 37, 16, 8, true),
        ] {
            let (heads, kv_heads, sq, sk, d, dv, causal) = shape;
            let (q, k, v) = (
                data(heads * sq * d, 1),
                data(kv_heads * sk * d, 2),
                data(kv_heads * sk * dv, 3),
            );
            let scale = 1.0 / (d as f32).sqrt();
            let spec = |bf16_mix| AttnSpec {
                batch: 1,
                heads,
                kv_heads,
                sq,
                sk,
                d,
                dv,
                scale,
                causal,
                layout: [
                    HeadLayout::bhsd(heads, sq, d),
                    HeadLayout::bhsd(kv_heads, sk, d),
                    HeadLayout::bhsd(kv_heads, sk, dv),
                    HeadLayout::bhsd(heads, sq, dv),
                ],
                bf16_mix,
            };
            let (mut got, mut f32s) = (vec![0.0; heads * sq * dv], vec![0.0; heads * sq * dv]);
            attention(Isa::Avx512, &q, &k, &v, None, &spec(true), &mut got).unwrap();
            attention(Isa::Avx512, &q, &k, &v, None, &spec(false), &mut f32s).unwrap();
            let (want, bound) = model(&q, &k, &v, (heads, kv_heads, sq, sk, d, dv), scale, causal);
            for (i, ((g, w), b)) in got.iter().zip(&want).zip(&bound).enumerate() {
                let err = (f64::from(*g) - w).abs();
                assert!(
                    err <= b + 1e-5,
                    "{shape:?} [{i}]: {g} vs model {w} (bound {b})"
                );
            }
            // The bf16 path ran: rounding the values moves the result off the f32 one.
            assert!(got.iter().zip(&f32s).any(|(a, b)| a != b), "{shape:?}");
        }
    }
}
