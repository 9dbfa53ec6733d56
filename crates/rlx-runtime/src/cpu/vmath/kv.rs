//! The inner loops of attention over a KV cache at decode time: a few query rows against the
//! valid prefix of one head's keys and values, on vectors, without packing the cache.

use super::lanes::F32s;
use super::per_isa;
use crate::cpu::isa::Isa;

/// Attention of `rows` query rows (`q`, `d` floats each, consecutive) over keys and values
/// `0..live[r]` of one cache head (`k` rows of `d`, `v` rows of `dv`, consecutive), scores
/// scaled by `scale`; row `r` of the result goes to `out + r * ldo` (`dv` floats). `scores`
/// holds `rows * max(live)` floats of scratch. A row with no key gets zeros.
///
/// # Safety
/// Every pointer addresses the rows and lengths described, and `out` overlaps nothing else.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_rows(
    isa: Isa,
    q: *const f32,
    d: usize,
    k: *const f32,
    v: *const f32,
    dv: usize,
    live: &[usize],
    scale: f32,
    scores: &mut [f32],
    out: *mut f32,
    ldo: usize,
) {
    let n = live.iter().copied().max().unwrap_or(0);
    for (r, &l) in live.iter().enumerate() {
        // SAFETY: the caller's contract; the score row is inside `scores`.
        unsafe {
            let row = &mut scores[r * n..r * n + l];
            dots(isa, q.add(r * d), k, d, row.as_mut_ptr(), l);
            let inv = super::softmax_row_unnormalized(isa, row, l, None, scale);
            mix(isa, row.as_ptr(), l, v, dv, inv, out.add(r * ldo));
        }
    }
}

per_isa!(unsafe fn dots(q: *const f32, k: *const f32, d: usize, out: *mut f32, n: usize) => dots_v);
per_isa!(unsafe fn mix(p: *const f32, n: usize, v: *const f32, dv: usize, f: f32, out: *mut f32) => mix_v);

/// `out[j] = q . k_j` for the `n` consecutive key rows of `d` floats.
#[inline(always)]
unsafe fn dots_v<V: F32s>(q: *const f32, k: *const f32, d: usize, out: *mut f32, n: usize) {
    let body = d - d % V::N;
    // SAFETY: every access is inside the q row, the n key rows and the n outputs.
    unsafe {
        for j in 0..n {
            let kj = k.add(j * d);
            let mut acc = V::splat(0.0);
            let mut x = 0;
            while x < body {
                acc = V::load(q.add(x)).fma(V::load(kj.add(x)), acc);
                x += V::N;
            }
            let mut tail = 0.0f32;
            for x in body..d {
                tail += *q.add(x) * *kj.add(x);
            }
            *out.add(j) = acc.reduce_add() + tail;
        }
    }
}

/// `out = f * sum_j p[j] v_j` over the `n` consecutive value rows of `dv` floats.
#[inline(always)]
unsafe fn mix_v<V: F32s>(p: *const f32, n: usize, v: *const f32, dv: usize, f: f32, out: *mut f32) {
    let body = dv - dv % V::N;
    // SAFETY: every access is inside the n weights, the n value rows and the dv outputs.
    unsafe {
        let mut x = 0;
        // A block of up to 4 vectors of the output row stays in registers over all keys.
        while x < body {
            let w = ((body - x) / V::N).min(4);
            let mut acc = [V::splat(0.0); 4];
            for j in 0..n {
                let (pj, vj) = (V::splat(*p.add(j)), v.add(j * dv + x));
                for (c, a) in acc.iter_mut().enumerate().take(w) {
                    *a = V::load(vj.add(c * V::N)).fma(pj, *a);
                }
            }
            for (c, a) in acc.iter().enumerate().take(w) {
                a.mul(V::splat(f)).store(out.add(x + c * V::N));
            }
            x += w * V::N;
        }
        for x in body..dv {
            let mut acc = 0.0f32;
            for j in 0..n {
                acc += *p.add(j) * *v.add(j * dv + x);
            }
            *out.add(x) = acc * f;
        }
    }
}
