//! Scalar math for activations, in f32 and branch-free so loops over slices vectorize.
//!
//! `exp` is range-reduced to `2^n * e^g` with `|g| <= ln2/2` (Cody–Waite) and a degree-6 Taylor polynomial
//! (truncation below 1.3e-7 relative); `erfc` is the Numerical Recipes `erfcc` form, whose
//! relative error stays near 1e-7 across the whole line, so `gelu` keeps its precision in the
//! negative tail where `1 + erf(x)` would cancel.

use rlx_ir::UnaryOp;

/// e^x for f32, NaN-propagating, over the whole f32 range: finite up to ln(f32::MAX) = 88.72,
/// subnormal down to about -103.97, then 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two (Cody–Waite): `n * LN2_HI` is exact, so the reduced argument keeps
    // its precision even when |x| is large.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    // Adding 1.5 * 2^23 puts round(t) in the low mantissa bits of `r`: the scale 2^n is built
    // from those bits with integer arithmetic only (no float -> int conversion, so NaN input
    // is well defined: it propagates through `p`).
    let c = x.clamp(EXP_LO, EXP_HI);
    let r = c * LOG2E + ROUND;
    let n = r - ROUND;
    let g = c - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + g * (1.0
            + g * (0.5
                + g * (1.0 / 6.0 + g * (1.0 / 24.0 + g * (1.0 / 120.0 + g * (1.0 / 720.0))))));
    let n = (r.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let (s1, s2) = split_pow2(n);
    p * s1 * s2
}

/// The clamp of `exp`'s argument: e^EXP_LO rounds to 0 and e^EXP_HI overflows to +inf, so the
/// clamp changes no result.
pub(crate) const EXP_LO: f32 = -104.0;
pub(crate) const EXP_HI: f32 = 88.75;

/// 2^n as two normal factors (n in [-150, 128] after `exp`'s clamp, each half in [-75, 64]):
/// their product with the polynomial rounds once, into the subnormal range or to +inf as f32
/// does.
#[inline(always)]
fn split_pow2(n: i32) -> (f32, f32) {
    let n1 = n >> 1;
    let n2 = n.wrapping_sub(n1);
    let pow2 = |k: i32| f32::from_bits((k.wrapping_add(127) as u32) << 23);
    (pow2(n1), pow2(n2))
}

/// erfc(x) with relative error about 1e-7 for all x.
#[inline(always)]
pub fn erfc(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.135_204 + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77));
    let p = 0.374_091_96 + t * (0.096_784_18 + t * (-0.186_288_06 + t * (0.278_868_07 + t * p)));
    let r = t * exp(-z * z - 1.265_512_2 + t * (1.000_023_7 + t * p));
    if x >= 0.0 { r } else { 2.0 - r }
}

/// erf(x): a Taylor series near 0 (where `1 - erfc` would lose relative precision), else
/// `1 - erfc(x)`.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const TWO_OVER_SQRT_PI: f32 = std::f32::consts::FRAC_2_SQRT_PI;
    let x2 = x * x;
    let series = TWO_OVER_SQRT_PI
        * x
        * (1.0
            + x2 * (-1.0 / 3.0
                + x2 * (1.0 / 10.0
                    + x2 * (-1.0 / 42.0 + x2 * (1.0 / 216.0 + x2 * (-1.0 / 1320.0))))));
    if x.abs() < 0.5 { series } else { 1.0 - erfc(x) }
}

/// `x * Phi(x)` = `0.5 * x * erfc(-x / sqrt(2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * erfc(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// erf on `[-4, 4]` as an odd rational function `t * P(t^2) / Q(t^2)` (the minimax form
/// XLA and Eigen use): `P`'s coefficients from `t^12` down, then `Q`'s from `t^8` down. Beyond
/// +-4 erf is +-1 in f32. Absolute error <= 4e-7, no exp and one division; near -1 (the
/// negative tail of `gelu_rational`) the relative error of `1 + erf` grows.
pub const ERF_RATIONAL: ([f32; 7], [f32; 5]) = (
    [
        -2.726_142e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ],
    [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_473_9e-2,
    ],
);

/// `0.5 * x * (1 + erf(x / sqrt(2)))` with erf from `ERF_RATIONAL`: 2.5x faster than `gelu`
/// on AVX-512, absolute error <= 1.2e-6 (relative error large only where |gelu| < 1e-5). For
/// the epilogues of bf16 products, whose sums already carry the bf16 rounding of their
/// operands (relative 2^-9 each).
#[inline(always)]
pub fn gelu_rational(x: f32) -> f32 {
    let t = (x * std::f32::consts::FRAC_1_SQRT_2).clamp(-4.0, 4.0);
    let t2 = t * t;
    let (num, den) = ERF_RATIONAL;
    let p = num[1..].iter().fold(num[0], |p, k| p.mul_add(t2, *k));
    let q = den[1..].iter().fold(den[0], |q, k| q.mul_add(t2, *k));
    let half = 0.5 * x;
    half.mul_add(p * t / q, half)
}

/// Where `sigmoid` stops computing: past `-x = SIGMOID_LIM` it is 0, below `-SIGMOID_LIM` the
/// exponential is taken at `-SIGMOID_LIM` (and `1 + e^-87` rounds to 1 as any smaller term
/// does). Neither `e^-x` nor the quotient is then ever subnormal: a subnormal result costs a
/// microcode assist (SiLU over a product of large activations ran 33% slower).
pub(crate) const SIGMOID_LIM: f32 = 87.0;

/// `1 / (1 + e^-x)`, flushed to 0 below `x = -SIGMOID_LIM` (where it is under 1.7e-38).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let t = -x;
    if t > SIGMOID_LIM {
        return 0.0;
    }
    // (Comparisons keep a NaN as it is.)
    let t = if t < -SIGMOID_LIM { -SIGMOID_LIM } else { t };
    1.0 / (1.0 + exp(t))
}

/// `x * sigmoid(x)` as `x / (1 + e^-x)`, the exponential taken at `-SIGMOID_LIM` above
/// `x = SIGMOID_LIM`: no subnormal on the way, and no flush (below x = -87 the result is
/// still a normal number down to x = -88.7, where e^-x overflows and it becomes -0).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let t = -x;
    // (Comparisons keep a NaN as it is.)
    let t = if t < -SIGMOID_LIM { -SIGMOID_LIM } else { t };
    x / (1.0 + exp(t))
}

/// `min(max(x, 0), 6)`, NaN kept (the vector form's operand order does the same).
#[inline(always)]
pub fn relu6(x: f32) -> f32 {
    x.clamp(0.0, 6.0)
}

/// ONNX HardSigmoid with HardSwish's constants: `x * (1/6) + 1/2` (two roundings, as ONNX
/// writes it) clamped to `[0, 1]`, NaN kept.
#[inline(always)]
pub fn hard_sigmoid(x: f32) -> f32 {
    let t = x * HARD_ALPHA + 0.5;
    t.clamp(0.0, 1.0)
}

/// HardSwish's slope, 1/6 rounded to f32 (ONNX's `alpha`).
pub const HARD_ALPHA: f32 = 1.0 / 6.0;

/// Applies one unary op to one element.
#[inline(always)]
pub fn unary(op: UnaryOp, x: f32) -> f32 {
    match op {
        // Not `x.max(0.0)`, which turns NaN into 0: NaN propagates, as in torch.relu.
        UnaryOp::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        UnaryOp::Relu6 => relu6(x),
        UnaryOp::HardSwish => x * hard_sigmoid(x),
        UnaryOp::Gelu => gelu(x),
        // 0.5 * (1 + tanh(u)) = sigmoid(2u): the same function without cancelling for x < -3.
        UnaryOp::GeluTanh => {
            const C: f32 = 0.797_884_6; // sqrt(2 / pi)
            x * sigmoid(2.0 * C * (x + 0.044_715 * x * x * x))
        }
        UnaryOp::Silu => silu(x),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => exp(x),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Erf => erf(x),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Round => x.round_ties_even(),
        UnaryOp::Sign => sign(x),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Tan => x.tan(),
        UnaryOp::Asin => x.asin(),
        UnaryOp::Acos => x.acos(),
        UnaryOp::Atan => x.atan(),
        UnaryOp::Sinh => x.sinh(),
        UnaryOp::Cosh => x.cosh(),
        UnaryOp::Asinh => x.asinh(),
        UnaryOp::Acosh => x.acosh(),
        UnaryOp::Atanh => x.atanh(),
    }
}

/// -1, 1, or `x` itself for zeros (signed) and NaN.
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// Defines `pub fn $name` that runs `$generic` compiled for AVX2 when the CPU has it (8-wide
/// loops instead of SSE2's 4), and as built otherwise. Wheels stay portable: the baseline code
/// is always there, and the check is a cached atomic load.
macro_rules! avx2_dispatch {
    ($(#[$doc:meta])* fn $name:ident / $avx2:ident => $generic:ident ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2($($arg: $ty),*) {
            $generic($($arg),*)
        }

        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { $avx2($($arg),*) };
            }
            $generic($($arg),*)
        }
    };
}

#[inline(always)]
fn unary_map_generic(op: UnaryOp, src: &[f32], dst: &mut [f32]) {
    macro_rules! each {
        ($f:expr) => {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d = $f(*s))
        };
    }
    match op {
        UnaryOp::Relu => each!(|x: f32| if x < 0.0 { 0.0 } else { x }),
        UnaryOp::Neg => each!(|x: f32| -x),
        UnaryOp::Gelu => each!(gelu),
        UnaryOp::Exp => each!(exp),
        UnaryOp::Sigmoid => each!(sigmoid),
        UnaryOp::Erf => each!(erf),
        op => each!(|x| unary(op, x)),
    }
}

#[inline(always)]
fn unary_in_place_generic(op: UnaryOp, xs: &mut [f32]) {
    match op {
        UnaryOp::Gelu => xs.iter_mut().for_each(|x| *x = gelu(*x)),
        UnaryOp::Relu => xs
            .iter_mut()
            .for_each(|x| *x = if *x < 0.0 { 0.0 } else { *x }),
        op => xs.iter_mut().for_each(|x| *x = unary(op, *x)),
    }
}

avx2_dispatch!(
    /// `dst[i] = op(src[i])`, with the op chosen once outside the loop so the loop vectorizes.
    fn unary_map / unary_map_avx2 => unary_map_generic(op: UnaryOp, src: &[f32], dst: &mut [f32])
);
avx2_dispatch!(
    /// `xs[i] = op(xs[i])` in place.
    fn unary_in_place / unary_in_place_avx2 => unary_in_place_generic(op: UnaryOp, xs: &mut [f32])
);

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f64) -> f64 {
        ((f64::from(a) - b) / b.abs().max(1e-300)).abs()
    }

    #[test]
    fn exp_is_accurate_and_saturates() {
        // Down to e^-87: below that results are subnormal and lose digits.
        for i in -870..=887 {
            let x = i as f32 / 10.0;
            let want = f64::from(x).exp();
            assert!(
                rel(exp(x), want) < 3e-7,
                "exp({x}) = {} want {want}",
                exp(x)
            );
        }
        // The range ends as f32 has it: e^88.72 is finite, e^88.73 is not; subnormal
        // results keep their leading digits; e^-104 rounds to 0.
        assert!(exp(88.72).is_finite() && rel(exp(88.72), f64::from(88.72f32).exp()) < 3e-7);
        assert_eq!(exp(88.73), f32::INFINITY);
        // Subnormal results: within one unit of the last place (2^-149) of the true value.
        for x in [-88.0f32, -95.0, -100.0, -103.0] {
            let err = (f64::from(exp(x)) - f64::from(x).exp()).abs();
            assert!(err <= 2f64.powi(-149), "exp({x}) = {}", exp(x));
            assert!(exp(x) > 0.0);
        }
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    #[ignore = "timing probe: cargo test --release -p rlx-runtime --lib -- --ignored --nocapture"]
    fn probe_speed() {
        let xs: Vec<f32> = (0..1 << 20).map(|i| (i as f32 / 65536.0) - 8.0).collect();
        let mut out = vec![0.0; xs.len()];
        for op in [UnaryOp::Exp, UnaryOp::Gelu, UnaryOp::Relu] {
            let t = std::time::Instant::now();
            for _ in 0..10 {
                unary_map(op, &xs, &mut out);
            }
            println!(
                "{op}: {:.2} ns/elem",
                t.elapsed().as_nanos() as f64 / (10.0 * xs.len() as f64)
            );
        }
    }

    #[test]
    fn erf_and_gelu_match_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (1e-4, 1.128_379_2e-4),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
            (4.0, 0.999_999_98),
        ] {
            assert!(
                (erf(x) - want).abs() <= 3e-7 * want.abs().max(1e-3),
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
        // gelu(-5) = -5 * Phi(-5) = -1.4332e-6: relative precision in the tail.
        assert!(rel(gelu(-5.0), -1.433_257_2e-6) < 1e-5, "{}", gelu(-5.0));
        assert!(rel(gelu(2.0), 1.954_500_0) < 1e-6, "{}", gelu(2.0));
        assert!(gelu(f32::NAN).is_nan());
    }
}
