//! Scalar math for activations.

use rlx_ir::UnaryOp;

/// erf with the Abramowitz–Stegun 7.1.26 rational approximation, evaluated in f64
/// (absolute error below 1.5e-7, under f32 resolution near 1).
pub fn erf(x: f32) -> f32 {
    let x = f64::from(x);
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

/// erfc in f64 with relative error below 1.2e-7 everywhere (Numerical Recipes' `erfcc`), so
/// `gelu` keeps its precision in the negative tail where `1 + erf(x)` would cancel.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77));
    let p = 0.374_091_96 + t * (0.096_784_18 + t * (-0.186_288_06 + t * (0.278_868_07 + t * p)));
    let r = t * (-z * z - 1.265_512_23 + t * (1.000_023_68 + t * p)).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// `x * Phi(x)` = `0.5 * x * erfc(-x / sqrt(2))`, in f64.
fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)) as f32
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Applies one unary op to one element.
#[inline]
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
        UnaryOp::Gelu => gelu(x),
        // 0.5 * (1 + tanh(u)) = sigmoid(2u): the same function without cancelling for x < -3.
        UnaryOp::GeluTanh => {
            const C: f32 = 0.797_884_6; // sqrt(2 / pi)
            x * sigmoid(2.0 * C * (x + 0.044_715 * x * x * x))
        }
        UnaryOp::Silu => x * sigmoid(x),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Erf => erf(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
            (4.0, 0.999_999_98),
        ] {
            assert!(
                (erf(x) - want).abs() < 3e-7,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }
}
