//! The vector types of `vmath`: one trait with the operations the activations need, and its
//! implementations for AVX-512 (16 lanes), AVX2 + FMA (8 lanes) and one plain `f32` lane.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The operations the activations need, on one vector of `N` lanes.
pub(super) trait F32s: Copy {
    const N: usize;
    /// The ISA whose vectors these are.
    const ISA: crate::cpu::Isa;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// `self * a + b`, rounded once.
    unsafe fn fma(self, a: Self, b: Self) -> Self;
    /// Lane-wise `max(lo, self)`, keeping NaN lanes of `self`.
    unsafe fn at_least(self, lo: Self) -> Self;
    /// Lane-wise `min(hi, self)`, keeping NaN lanes of `self`.
    unsafe fn at_most(self, hi: Self) -> Self;
    /// Lane-wise `max(self, o)`, NaN where either is NaN.
    unsafe fn max_nan(self, o: Self) -> Self;
    /// Lane-wise `min(self, o)`, NaN where either is NaN.
    unsafe fn min_nan(self, o: Self) -> Self;
    unsafe fn abs(self) -> Self;
    /// `if self < b { then } else { other }` per lane (false for NaN).
    unsafe fn select_lt(self, b: Self, then: Self, other: Self) -> Self;
    /// `2^n` as two normal factors `2^(n >> 1)` and `2^(n - (n >> 1))` for lanes holding
    /// `n + 1.5 * 2^23` (the rounding trick of `exp`, n in [-150, 128]).
    unsafe fn pow2_halves_of_rounded(self) -> (Self, Self);
    /// `self * 2^n` rounded once, for `r` holding `n + 1.5 * 2^23` and `n` the same integer as
    /// a float (n in [-150, 128]): by default two exact-or-once-rounded products by the halves.
    #[inline(always)]
    unsafe fn scale_pow2(self, r: Self, n: Self) -> Self {
        let _ = n;
        unsafe {
            let (s1, s2) = r.pow2_halves_of_rounded();
            self.mul(s1).mul(s2)
        }
    }
    /// The sum of the lanes.
    unsafe fn reduce_add(self) -> f32;
    /// The largest lane (a NaN lane may be ignored).
    unsafe fn reduce_max(self) -> f32;
}

/// One-lane stand-in for the portable path of the softmax helpers.
#[derive(Clone, Copy)]
pub(super) struct Scalar(pub(super) f32);

impl F32s for Scalar {
    const N: usize = 1;
    const ISA: crate::cpu::Isa = crate::cpu::Isa::Scalar;
    unsafe fn splat(x: f32) -> Self {
        Scalar(x)
    }
    unsafe fn load(p: *const f32) -> Self {
        unsafe { Scalar(*p) }
    }
    unsafe fn store(self, p: *mut f32) {
        unsafe { *p = self.0 }
    }
    unsafe fn add(self, o: Self) -> Self {
        Scalar(self.0 + o.0)
    }
    unsafe fn sub(self, o: Self) -> Self {
        Scalar(self.0 - o.0)
    }
    unsafe fn mul(self, o: Self) -> Self {
        Scalar(self.0 * o.0)
    }
    unsafe fn div(self, o: Self) -> Self {
        Scalar(self.0 / o.0)
    }
    // Two roundings: `mul_add` is a libm call on targets without FMA, and this lane is the
    // portable path.
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        Scalar(self.0 * a.0 + b.0)
    }
    unsafe fn at_least(self, lo: Self) -> Self {
        Scalar(if self.0 < lo.0 { lo.0 } else { self.0 })
    }
    unsafe fn at_most(self, hi: Self) -> Self {
        Scalar(if self.0 > hi.0 { hi.0 } else { self.0 })
    }
    unsafe fn max_nan(self, o: Self) -> Self {
        Scalar(if !self.0.is_nan() && (o.0 > self.0 || o.0.is_nan()) {
            o.0
        } else {
            self.0
        })
    }
    unsafe fn min_nan(self, o: Self) -> Self {
        Scalar(if !self.0.is_nan() && (o.0 < self.0 || o.0.is_nan()) {
            o.0
        } else {
            self.0
        })
    }
    unsafe fn abs(self) -> Self {
        Scalar(self.0.abs())
    }
    unsafe fn select_lt(self, b: Self, then: Self, other: Self) -> Self {
        if self.0 < b.0 { then } else { other }
    }
    unsafe fn pow2_halves_of_rounded(self) -> (Self, Self) {
        let n = (self.0.to_bits() as i32).wrapping_sub(12_582_912.0f32.to_bits() as i32);
        let n1 = n >> 1;
        let pow2 = |k: i32| Scalar(f32::from_bits((k.wrapping_add(127) as u32) << 23));
        (pow2(n1), pow2(n.wrapping_sub(n1)))
    }
    unsafe fn reduce_add(self) -> f32 {
        self.0
    }
    unsafe fn reduce_max(self) -> f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct V512(__m512);

// Each method is one intrinsic; the callers are compiled with the ISA's target features.
#[cfg(target_arch = "x86_64")]
impl F32s for V512 {
    const N: usize = 16;
    const ISA: crate::cpu::Isa = crate::cpu::Isa::Avx512;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        unsafe { V512(_mm512_set1_ps(x)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { V512(_mm512_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        unsafe { V512(_mm512_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        unsafe { V512(_mm512_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        unsafe { V512(_mm512_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        unsafe { V512(_mm512_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        unsafe { V512(_mm512_fmadd_ps(self.0, a.0, b.0)) }
    }
    // max_ps / min_ps return their second operand when either is NaN: NaN goes second.
    #[inline(always)]
    unsafe fn at_least(self, lo: Self) -> Self {
        unsafe { V512(_mm512_max_ps(lo.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn at_most(self, hi: Self) -> Self {
        unsafe { V512(_mm512_min_ps(hi.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn max_nan(self, o: Self) -> Self {
        // max_ps gives o where either is NaN; then self's NaN lanes are put back.
        unsafe {
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self.0, self.0);
            V512(_mm512_mask_blend_ps(
                nan,
                _mm512_max_ps(self.0, o.0),
                self.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn min_nan(self, o: Self) -> Self {
        // As max_nan.
        unsafe {
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self.0, self.0);
            V512(_mm512_mask_blend_ps(
                nan,
                _mm512_min_ps(self.0, o.0),
                self.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        unsafe {
            let mask = _mm512_set1_epi32(0x7fff_ffff);
            V512(_mm512_castsi512_ps(_mm512_and_si512(
                _mm512_castps_si512(self.0),
                mask,
            )))
        }
    }
    #[inline(always)]
    unsafe fn select_lt(self, b: Self, then: Self, other: Self) -> Self {
        unsafe {
            V512(_mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, b.0),
                other.0,
                then.0,
            ))
        }
    }
    #[inline(always)]
    unsafe fn pow2_halves_of_rounded(self) -> (Self, Self) {
        unsafe {
            let round = _mm512_set1_epi32(12_582_912.0f32.to_bits() as i32);
            let n = _mm512_sub_epi32(_mm512_castps_si512(self.0), round);
            let n1 = _mm512_srai_epi32::<1>(n);
            let n2 = _mm512_sub_epi32(n, n1);
            let bias = _mm512_set1_epi32(127);
            let pow2 = |k| {
                V512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(
                    _mm512_add_epi32(k, bias),
                )))
            };
            (pow2(n1), pow2(n2))
        }
    }
    #[inline(always)]
    unsafe fn scale_pow2(self, _r: Self, n: Self) -> Self {
        // One `vscalefps`: the same single rounding as the two products (into the subnormal
        // range, or to +inf), in one instruction instead of eight.
        unsafe { V512(_mm512_scalef_ps(self.0, n.0)) }
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        unsafe { _mm512_reduce_add_ps(self.0) }
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        unsafe { _mm512_reduce_max_ps(self.0) }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct V256(__m256);

// Each method is one intrinsic; the callers are compiled with the ISA's target features.
#[cfg(target_arch = "x86_64")]
impl F32s for V256 {
    const N: usize = 8;
    const ISA: crate::cpu::Isa = crate::cpu::Isa::Avx2;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        unsafe { V256(_mm256_set1_ps(x)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { V256(_mm256_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        unsafe { V256(_mm256_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        unsafe { V256(_mm256_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        unsafe { V256(_mm256_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        unsafe { V256(_mm256_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        unsafe { V256(_mm256_fmadd_ps(self.0, a.0, b.0)) }
    }
    // max_ps / min_ps return their second operand when either is NaN: NaN goes second.
    #[inline(always)]
    unsafe fn at_least(self, lo: Self) -> Self {
        unsafe { V256(_mm256_max_ps(lo.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn at_most(self, hi: Self) -> Self {
        unsafe { V256(_mm256_min_ps(hi.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn max_nan(self, o: Self) -> Self {
        // max_ps gives o where either is NaN; then self's NaN lanes are put back.
        unsafe {
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(self.0, self.0);
            V256(_mm256_blendv_ps(_mm256_max_ps(self.0, o.0), self.0, nan))
        }
    }
    #[inline(always)]
    unsafe fn min_nan(self, o: Self) -> Self {
        // As max_nan.
        unsafe {
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(self.0, self.0);
            V256(_mm256_blendv_ps(_mm256_min_ps(self.0, o.0), self.0, nan))
        }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        unsafe {
            let mask = _mm256_set1_epi32(0x7fff_ffff);
            V256(_mm256_castsi256_ps(_mm256_and_si256(
                _mm256_castps_si256(self.0),
                mask,
            )))
        }
    }
    #[inline(always)]
    unsafe fn select_lt(self, b: Self, then: Self, other: Self) -> Self {
        unsafe {
            V256(_mm256_blendv_ps(
                other.0,
                then.0,
                _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, b.0),
            ))
        }
    }
    #[inline(always)]
    unsafe fn pow2_halves_of_rounded(self) -> (Self, Self) {
        unsafe {
            let round = _mm256_set1_epi32(12_582_912.0f32.to_bits() as i32);
            let n = _mm256_sub_epi32(_mm256_castps_si256(self.0), round);
            let n1 = _mm256_srai_epi32::<1>(n);
            let n2 = _mm256_sub_epi32(n, n1);
            let bias = _mm256_set1_epi32(127);
            let pow2 = |k| {
                V256(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(
                    _mm256_add_epi32(k, bias),
                )))
            };
            (pow2(n1), pow2(n2))
        }
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        unsafe {
            let h = _mm_add_ps(
                _mm256_castps256_ps128(self.0),
                _mm256_extractf128_ps::<1>(self.0),
            );
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
        }
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        unsafe {
            let h = _mm_max_ps(
                _mm256_castps256_ps128(self.0),
                _mm256_extractf128_ps::<1>(self.0),
            );
            let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)))
        }
    }
}
