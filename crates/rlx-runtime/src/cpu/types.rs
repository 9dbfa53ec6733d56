//! Element types for generic kernels, and the one place that turns a `DType` into a `T`.

use rlx_ir::{BinaryOp, CompareOp};

/// Numeric element types (f32, i64, i32) and their arithmetic.
pub trait Num: Copy + Send + Sync + PartialOrd + Default + 'static {
    const LOWEST: Self;
    fn binary(op: BinaryOp, a: Self, b: Self) -> Self;
    fn compare(op: CompareOp, a: Self, b: Self) -> bool {
        match op {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            CompareOp::Lt => a < b,
            CompareOp::Le => a <= b,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a >= b,
        }
    }
}

impl Num for f32 {
    const LOWEST: f32 = f32::NEG_INFINITY;
    #[inline]
    fn binary(op: BinaryOp, a: f32, b: f32) -> f32 {
        match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            // NaN propagates, as in numpy's maximum / minimum.
            BinaryOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
            BinaryOp::Min => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }
        }
    }
}

macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const LOWEST: $t = <$t>::MIN;
            /// Wrapping arithmetic; division by zero gives 0 and a negative power gives 0
            /// (where numpy would warn or raise) so a bad value never crashes a run.
            #[inline]
            fn binary(op: BinaryOp, a: $t, b: $t) -> $t {
                match op {
                    BinaryOp::Add => a.wrapping_add(b),
                    BinaryOp::Sub => a.wrapping_sub(b),
                    BinaryOp::Mul => a.wrapping_mul(b),
                    BinaryOp::Div => if b == 0 { 0 } else { a.wrapping_div(b) },
                    BinaryOp::Pow => if b < 0 { 0 } else { wrapping_pow_u64(a, b as u64) },
                    BinaryOp::Max => a.max(b),
                    BinaryOp::Min => a.min(b),
                }
            }
        }
    )*};
}
int_num!(i64, i32);

/// `a^e` as `e` wrapping multiplications, for any exponent (`wrapping_pow` takes a `u32`,
/// and clamping a larger exponent to `u32::MAX` would change the result).
#[inline]
fn wrapping_pow_u64<T: Copy + WrappingMul>(a: T, mut e: u64) -> T {
    let (mut base, mut acc) = (a, T::ONE);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    acc
}

trait WrappingMul {
    const ONE: Self;
    fn wrapping_mul(self, b: Self) -> Self;
}

macro_rules! wrapping_mul {
    ($($t:ty),*) => {$(
        impl WrappingMul for $t {
            const ONE: $t = 1;
            #[inline]
            fn wrapping_mul(self, b: $t) -> $t { <$t>::wrapping_mul(self, b) }
        }
    )*};
}
wrapping_mul!(i64, i32);

/// Conversion between element types, as `cast` defines it: numeric `as` casts (float → int
/// saturates, NaN → 0), bool ↔ number as 1 / 0 and `!= 0`.
pub trait CastTo<U> {
    fn cast(self) -> U;
}

macro_rules! cast_num {
    ($($from:ty => $($to:ty),*);*) => {$($(
        impl CastTo<$to> for $from { #[inline] fn cast(self) -> $to { self as $to } }
    )*)*};
}
cast_num!(f32 => f32, i64, i32; i64 => f32, i64, i32; i32 => f32, i64, i32);

macro_rules! cast_bool {
    ($($t:ty: $one:expr, $zero:expr);*) => {$(
        impl CastTo<bool> for $t { #[inline] fn cast(self) -> bool { self != $zero } }
        impl CastTo<$t> for bool { #[inline] fn cast(self) -> $t { if self { $one } else { $zero } } }
    )*};
}
cast_bool!(f32: 1.0, 0.0; i64: 1, 0; i32: 1, 0);

impl CastTo<bool> for bool {
    fn cast(self) -> bool {
        self
    }
}

/// Runs `$body` with `$T` bound to the Rust type of a numeric dtype; bool yields `$bool_case`.
macro_rules! with_num {
    ($dt:expr, $T:ident => $body:expr, bool => $bool_case:expr) => {
        match $dt {
            rlx_ir::DType::F32 => {
                type $T = f32;
                $body
            }
            rlx_ir::DType::I64 => {
                type $T = i64;
                $body
            }
            rlx_ir::DType::I32 => {
                type $T = i32;
                $body
            }
            rlx_ir::DType::Bool => $bool_case,
        }
    };
}

/// Runs `$body` with `$T` bound to the Rust type of any dtype.
macro_rules! with_any {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            rlx_ir::DType::F32 => {
                type $T = f32;
                $body
            }
            rlx_ir::DType::I64 => {
                type $T = i64;
                $body
            }
            rlx_ir::DType::I32 => {
                type $T = i32;
                $body
            }
            rlx_ir::DType::Bool => {
                type $T = bool;
                $body
            }
        }
    };
}
pub(crate) use {with_any, with_num};
