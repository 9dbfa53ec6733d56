//! AVX-512 micro-kernel: up to 8 rows x 32 columns (16 zmm accumulators). Whole-panel tiles
//! without prefetches run in assembly (`avx512_asm.rs`).

super::simd::simd_micro_kernel! {
    isa: Avx512, feature: "avx512f", vector: __m512, lanes: 16,
    zero: _mm512_setzero_ps, load: _mm512_loadu_ps, store: _mm512_storeu_ps,
    splat: _mm512_set1_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps, max: _mm512_max_ps, min: _mm512_min_ps,
    store_first: store_first, load_first: load_first,
    rows: [1, 2, 3, 4, 5, 6, 7, 8], max_rows: 8, run: super::avx512_asm::RUN,
    fast: super::avx512_asm::segs
}

/// The first `n` (< 16) lanes of `v` stored at `p`, the rest of the vector's span untouched.
///
/// # Safety
/// The CPU has AVX-512F; `n` floats at `p`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
    // SAFETY: masked-off lanes are neither read nor written.
    unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as __mmask16, v) }
}

/// The first `n` (<= 16) floats at `p` in the first lanes, zeros in the rest.
///
/// # Safety
/// The CPU has AVX-512F; `n` floats at `p`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_first(p: *const f32, n: usize) -> __m512 {
    // SAFETY: masked-off lanes are not read.
    unsafe { _mm512_maskz_loadu_ps(((1u32 << n) - 1) as __mmask16, p) }
}
