//! AVX2 + FMA micro-kernel: up to 6 rows x 16 columns (12 ymm accumulators).

super::simd::simd_micro_kernel! {
    isa: Avx2, feature: "avx2,fma", vector: __m256, lanes: 8,
    zero: _mm256_setzero_ps, load: _mm256_loadu_ps, store: _mm256_storeu_ps,
    splat: _mm256_set1_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps, max: _mm256_max_ps, min: _mm256_min_ps,
    store_first: store_first, load_first: load_first,
    rows: [1, 2, 3, 4, 5, 6], max_rows: 6, run: None
}

/// The first `n` (< 8) lanes of `v` stored at `p`, the rest of the vector's span untouched.
///
/// # Safety
/// The CPU has AVX2; `n` floats at `p`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_first(p: *mut f32, v: __m256, n: usize) {
    // SAFETY: masked-off lanes are neither read nor written.
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes);
        _mm256_maskstore_ps(p, mask, v)
    }
}

/// The first `n` (<= 8) floats at `p` in the first lanes, zeros in the rest.
///
/// # Safety
/// The CPU has AVX2; `n` floats at `p`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_first(p: *const f32, n: usize) -> __m256 {
    // SAFETY: masked-off lanes are not read.
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes);
        _mm256_maskload_ps(p, mask)
    }
}
