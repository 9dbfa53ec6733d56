//! AVX-512 micro-kernel: up to 8 rows x 32 columns (16 zmm accumulators).

super::simd::simd_micro_kernel! {
    isa: Avx512, feature: "avx512f", vector: __m512, lanes: 16,
    zero: _mm512_setzero_ps, load: _mm512_loadu_ps, store: _mm512_storeu_ps,
    splat: _mm512_set1_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps, max: _mm512_max_ps,
    rows: [1, 2, 3, 4, 5, 6, 7, 8], max_rows: 8
}
