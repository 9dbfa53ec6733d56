//! AVX2 + FMA micro-kernel: up to 6 rows x 16 columns (12 ymm accumulators).

super::simd::simd_micro_kernel! {
    isa: Avx2, feature: "avx2,fma", vector: __m256, lanes: 8,
    zero: _mm256_setzero_ps, load: _mm256_loadu_ps, store: _mm256_storeu_ps,
    splat: _mm256_set1_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps, max: _mm256_max_ps,
    rows: [1, 2, 3, 4, 5, 6], max_rows: 6
}
