//! Activations on explicit SIMD vectors (AVX-512 and AVX2), the hot loops of GEMM epilogues
//! and elementwise kernels. The math is written once over a small vector trait and matches the
//! scalar functions in `math.rs` (same range reduction, polynomials and edge cases, within a
//! few ulp: FMA rounds once where the scalar code rounds twice).

use rlx_ir::UnaryOp;

use super::isa::Isa;
use super::math;

mod depthwise;
mod depthwise_groups;
mod depthwise_last;
mod depthwise_wide;
mod kv;
mod lanes;
mod planes;
mod pool_last;
mod rows;
mod store_act;
#[cfg(test)]
mod tests;
mod winograd;

pub use depthwise::{DEPTHWISE_SLACK, DepthwisePlane, depthwise_plane};
pub use depthwise_last::{DepthwiseRows, RowShift, depthwise_rows};
pub use kv::attend_rows;
pub use planes::{
    binary_map, channel_epilogue, position_epilogue, scalar_op, scaled_max, vector_op,
};
pub use pool_last::{AxisTaps, PoolRow, pool_row};
pub use rows::{add_norm_row, softmax_row, softmax_row_unnormalized};
pub use store_act::StoreAct;
pub use winograd::{Points, WinogradTiles, winograd_input, winograd_output};

use lanes::F32s;

/// Defines `unsafe fn $name(isa, args..)` that runs `$generic::<V>(args..)` with `V` the
/// vector type of `isa`, compiled with that ISA's target features (the scalar ISA: one plain
/// lane). Each kernel is written once, generic over `F32s`; this is its only dispatch.
macro_rules! per_isa {
    ($(#[$doc:meta])* $vis:vis unsafe fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $name(isa: Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::cpu::vmath::lanes::V512>($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::cpu::vmath::lanes::V256>($($arg),*) }
            }
            // SAFETY: an ISA is only chosen on a CPU that has it (`Isa::resolve`); the rest is
            // the caller's contract.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => avx512($($arg),*),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => avx2($($arg),*),
                    _ => $generic::<$crate::cpu::vmath::lanes::Scalar>($($arg),*),
                }
            }
        }
    };
}
use per_isa;

/// Whether `op` has a vector implementation here (others use the scalar loop). Relu is one:
/// the compiler made the scalar loop in place a masked store of the negative lanes
/// (`vmaskmovps`, microcoded on AMD: a relu over 14x14x480 in place took 3x a multiply's time).
pub fn vectorized(op: UnaryOp) -> bool {
    matches!(
        op,
        UnaryOp::Relu
            | UnaryOp::Exp
            | UnaryOp::Gelu
            | UnaryOp::Sigmoid
            | UnaryOp::Silu
            | UnaryOp::GeluTanh
            | UnaryOp::Relu6
            | UnaryOp::HardSwish
    )
}

/// `xs[i] = op(xs[i])` on the vectors of `isa`; ops without a vector form (and the scalar
/// ISA) go through `math::unary_in_place`.
pub fn unary_in_place(isa: Isa, op: UnaryOp, xs: &mut [f32]) {
    let p = xs.as_mut_ptr();
    // SAFETY: reading and writing the same slice element by element is in bounds.
    unsafe { map_ptr(isa, op, p, p, xs.len()) }
}

/// `c[r, j] = act(c[r, j] + bias[j])` over a `rows x cols` block with row stride `ldc`: a GEMM
/// epilogue, one call per block so the per-row work is a tight vector loop. With
/// `rational_gelu`, a GELU is `math::gelu_rational` (the epilogue of a bf16 product).
///
/// # Safety
/// `c` holds `rows` rows of `cols` elements with stride `ldc`; `bias` (if any) holds `cols`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn bias_act_block(
    isa: Isa,
    c: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    bias: Option<&[f32]>,
    act: Option<UnaryOp>,
    rational_gelu: bool,
) {
    let bias = bias.map(|b| &b[..cols]);
    // SAFETY: forwarded.
    unsafe { bias_act(isa, c, rows, cols, ldc, bias, None, act, rational_gelu) }
}

/// A residual block beside a product's: `rows` rows of `cols` at `ptr`, row stride `ld`.
#[derive(Clone, Copy)]
pub struct Residual {
    pub ptr: *const f32,
    pub ld: usize,
}

/// `c[r, j] = act(c[r, j] + bias[j] + res[r, j])` over a `rows x cols` block with row stride
/// `ldc`, as [`bias_act_block`] (a convolution's epilogue on the tile rows just computed).
///
/// # Safety
/// As [`bias_act_block`]; `res` (if any) holds `rows` rows of `cols` with its stride.
#[allow(clippy::too_many_arguments)]
pub unsafe fn bias_residual_act_block(
    isa: Isa,
    c: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    bias: Option<&[f32]>,
    res: Option<Residual>,
    act: Option<UnaryOp>,
) {
    let bias = bias.map(|b| &b[..cols]);
    // SAFETY: forwarded.
    unsafe { bias_act(isa, c, rows, cols, ldc, bias, res, act, false) }
}

/// `$apply!(f)` with `f` the vector form of `$op` (the ops `vectorized` names, on lanes `V`),
/// else `$other`: the one table from ops to vector functions that every loop here expands.
macro_rules! with_vector_form {
    ($op:expr, $apply:ident, $other:expr) => {
        match $op {
            // `at_least` keeps NaN and -0.0 as `math::unary`'s `if x < 0 { 0 } else { x }`.
            UnaryOp::Relu => $apply!(|v: V| v.at_least(V::splat(0.0))),
            UnaryOp::Exp => $apply!(|v: V| exp_v::<V>(v)),
            UnaryOp::Gelu => $apply!(|v: V| gelu_v::<V>(v)),
            UnaryOp::Sigmoid => $apply!(|v: V| sigmoid_v::<V>(v)),
            UnaryOp::Silu => $apply!(|v: V| silu_v::<V>(v)),
            UnaryOp::GeluTanh => $apply!(|v: V| gelu_tanh_v::<V>(v)),
            UnaryOp::Relu6 => $apply!(|v: V| relu6_v::<V>(v)),
            UnaryOp::HardSwish => $apply!(|v: V| v.mul(hard_sigmoid_v(v))),
            _ => $other,
        }
    };
}

per_isa!(unsafe fn bias_act(c: *mut f32, rows: usize, cols: usize, ldc: usize, bias: Option<&[f32]>, res: Option<Residual>, act: Option<UnaryOp>, rational_gelu: bool) => block_v);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_v<V: F32s>(
    c: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    bias: Option<&[f32]>,
    res: Option<Residual>,
    act: Option<UnaryOp>,
    rational_gelu: bool,
) {
    // SAFETY: every access is inside the block the caller describes.
    unsafe {
        // The activation in the bias pass (`with_vector_form`, relu's included), one load and
        // store per vector: a relu there saved a scalar loop per row that cost as much as a
        // small-K product (MobileNet-like b1 1.01 -> 0.85 ms); a SiLU there, a second pass
        // over each row (EfficientNet's 112x112 16 -> 96 expansion: 778 -> 707 us).
        macro_rules! pass {
            ($f:expr) => {
                block_pass::<V>(c, rows, cols, ldc, bias, res, act, $f)
            };
        }
        match act {
            Some(UnaryOp::Gelu) if rational_gelu => {
                block_pass::<V>(c, rows, cols, ldc, bias, res, None, |v: V| v);
                for r in 0..rows {
                    gelu_rational_row::<V>(c.add(r * ldc), cols);
                }
            }
            None => pass!(|v: V| v),
            Some(op) => with_vector_form!(op, pass, {
                block_pass::<V>(c, rows, cols, ldc, bias, res, None, |v: V| v);
                for r in 0..rows {
                    math::unary_in_place(op, std::slice::from_raw_parts_mut(c.add(r * ldc), cols));
                }
            }),
        }
    }
}

/// `c[r, j] = f(c[r, j] + bias[j] + res[r, j])` on whole vectors, `math::unary(act, ..)` on
/// the columns past them (`f` is `act`'s vector form, or the identity where `act` is `None`
/// or left to the caller). Rows are left alone where there is nothing to add or apply.
///
/// # Safety
/// As `block_v`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_pass<V: F32s>(
    c: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    bias: Option<&[f32]>,
    res: Option<Residual>,
    act: Option<UnaryOp>,
    f: impl Fn(V) -> V,
) {
    if bias.is_none() && res.is_none() && act.is_none() {
        return;
    }
    let body = cols - cols % V::N;
    // SAFETY: every access is inside the block the caller describes.
    unsafe {
        for r in 0..rows {
            let row = c.add(r * ldc);
            let res_row = res.map(|x| x.ptr.add(r * x.ld));
            let mut j = 0;
            while j < body {
                let mut v = V::load(row.add(j));
                if let Some(b) = bias {
                    v = v.add(V::load(b.as_ptr().add(j)));
                }
                if let Some(x) = res_row {
                    v = v.add(V::load(x.add(j)));
                }
                f(v).store(row.add(j));
                j += V::N;
            }
            for j in body..cols {
                let v =
                    *row.add(j) + bias.map_or(0.0, |b| b[j]) + res_row.map_or(0.0, |x| *x.add(j));
                *row.add(j) = act.map_or(v, |op| math::unary(op, v));
            }
        }
    }
}

/// `dst[i] = op(src[i])` on the vectors of the process's ISA (`RLX_ISA` or the CPU's best),
/// for elementwise kernels.
pub fn unary_map_default(op: UnaryOp, src: &[f32], dst: &mut [f32]) {
    unary_map(
        super::isa::default_isa().unwrap_or(Isa::Scalar),
        op,
        src,
        dst,
    )
}

/// `dst[i] = op(src[i])` on the vectors of `isa`.
pub fn unary_map(isa: Isa, op: UnaryOp, src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    // SAFETY: both slices hold n elements; they are distinct borrows.
    unsafe { map_ptr(isa, op, src.as_ptr(), dst.as_mut_ptr(), n) }
}

/// # Safety
/// `src` and `dst` hold `n` elements; they may be equal, but must not partly overlap.
unsafe fn map_ptr(isa: Isa, op: UnaryOp, src: *const f32, dst: *mut f32, n: usize) {
    // SAFETY: forwarded.
    unsafe {
        match isa {
            Isa::Avx512 | Isa::Avx2 if vectorized(op) => map(isa, op, src, dst, n),
            _ if std::ptr::eq(src, dst) => {
                math::unary_in_place(op, std::slice::from_raw_parts_mut(dst, n))
            }
            _ => math::unary_map(
                op,
                std::slice::from_raw_parts(src, n),
                std::slice::from_raw_parts_mut(dst, n),
            ),
        }
    }
}

per_isa!(unsafe fn map(op: UnaryOp, src: *const f32, dst: *mut f32, n: usize) => map_v);

/// Applies `op` to `n` elements, vector by vector; the tail goes through the scalar function.
#[inline(always)]
unsafe fn map_v<V: F32s>(op: UnaryOp, src: *const f32, dst: *mut f32, n: usize) {
    let body = n - n % V::N;
    // SAFETY: every index below n is in bounds of src and dst.
    unsafe {
        // Four independent vectors per step: the functions are long dependency chains, and
        // interleaving four of them keeps the FMA units busy.
        macro_rules! each {
            ($f:expr) => {{
                let mut i = 0;
                while i + 4 * V::N <= body {
                    let (a, b) = (V::load(src.add(i)), V::load(src.add(i + V::N)));
                    let (c, d) = (
                        V::load(src.add(i + 2 * V::N)),
                        V::load(src.add(i + 3 * V::N)),
                    );
                    let (a, b, c, d) = ($f(a), $f(b), $f(c), $f(d));
                    a.store(dst.add(i));
                    b.store(dst.add(i + V::N));
                    c.store(dst.add(i + 2 * V::N));
                    d.store(dst.add(i + 3 * V::N));
                    i += 4 * V::N;
                }
                while i < body {
                    $f(V::load(src.add(i))).store(dst.add(i));
                    i += V::N;
                }
            }};
        }
        with_vector_form!(op, each, {});
        for i in body..n {
            *dst.add(i) = math::unary(op, *src.add(i));
        }
    }
}

/// `e^c` for `c` already clamped to `[math::EXP_LO, math::EXP_HI]`: range reduction to
/// `2^n e^g` (Cody-Waite) and the degree-6 polynomial of `math::exp`, scaled by 2^n with one
/// rounding (into the subnormal range or to +inf) by `F32s::scale_pow2`.
#[inline(always)]
unsafe fn exp_clamped_v<V: F32s>(c: V) -> V {
    unsafe {
        let r = c.fma(V::splat(std::f32::consts::LOG2_E), V::splat(12_582_912.0));
        let n = r.sub(V::splat(12_582_912.0));
        let g = n.fma(V::splat(-0.693_359_4), c);
        let g = n.fma(V::splat(2.121_944_4e-4), g);
        let mut p = V::splat(1.0 / 720.0);
        for k in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = p.fma(g, V::splat(k));
        }
        p.scale_pow2(r, n)
    }
}

/// `math::relu6` on a vector (NaN lanes kept).
#[inline(always)]
unsafe fn relu6_v<V: F32s>(x: V) -> V {
    unsafe { x.at_least(V::splat(0.0)).at_most(V::splat(6.0)) }
}

/// `math::hard_sigmoid` on a vector: the same two roundings.
#[inline(always)]
unsafe fn hard_sigmoid_v<V: F32s>(x: V) -> V {
    unsafe {
        let t = x.mul(V::splat(math::HARD_ALPHA)).add(V::splat(0.5));
        t.at_least(V::splat(0.0)).at_most(V::splat(1.0))
    }
}

/// `math::exp` on a vector.
#[inline(always)]
unsafe fn exp_v<V: F32s>(x: V) -> V {
    unsafe {
        exp_clamped_v(
            x.at_least(V::splat(math::EXP_LO))
                .at_most(V::splat(math::EXP_HI)),
        )
    }
}

/// `exp(x)` for `x <= 0` (softmax after the max is taken): no overflow to handle. NaN
/// propagates (through the clamp's operand order).
#[inline(always)]
unsafe fn exp_nonpositive_v<V: F32s>(x: V) -> V {
    unsafe {
        // Below the clamp (and for -inf) the result rounds to 0 as e^x does.
        exp_clamped_v(x.at_least(V::splat(math::EXP_LO)))
    }
}

/// `math::erfc` on a vector.
#[inline(always)]
unsafe fn erfc_v<V: F32s>(x: V) -> V {
    unsafe {
        let z = x.abs();
        let t = V::splat(1.0).div(z.fma(V::splat(0.5), V::splat(1.0)));
        let mut p = V::splat(0.170_872_77);
        for k in [-0.822_152_2, 1.488_515_9, -1.135_204] {
            p = p.fma(t, V::splat(k));
        }
        for k in [
            0.278_868_07,
            -0.186_288_06,
            0.096_784_18,
            0.374_091_96,
            1.000_023_7,
        ] {
            p = t.fma(p, V::splat(k));
        }
        let arg = t.fma(p, V::splat(-1.265_512_2)).sub(z.mul(z));
        let r = t.mul(exp_v(arg));
        x.select_lt(V::splat(0.0), V::splat(2.0).sub(r), r)
    }
}

/// `math::gelu_rational` over `n` elements at `row`, in place.
#[inline(always)]
unsafe fn gelu_rational_row<V: F32s>(row: *mut f32, n: usize) {
    let body = n - n % V::N;
    // SAFETY: every index below n is in bounds (the caller's row).
    unsafe {
        let mut i = 0;
        while i + 2 * V::N <= body {
            // Two independent vectors per step: the polynomials are dependency chains.
            let (a, b) = (V::load(row.add(i)), V::load(row.add(i + V::N)));
            gelu_rational_v(a).store(row.add(i));
            gelu_rational_v(b).store(row.add(i + V::N));
            i += 2 * V::N;
        }
        while i < body {
            gelu_rational_v(V::load(row.add(i))).store(row.add(i));
            i += V::N;
        }
        for j in body..n {
            *row.add(j) = math::gelu_rational(*row.add(j));
        }
    }
}

/// `math::gelu_rational` on a vector.
#[inline(always)]
unsafe fn gelu_rational_v<V: F32s>(x: V) -> V {
    unsafe {
        let t = x
            .mul(V::splat(std::f32::consts::FRAC_1_SQRT_2))
            .at_least(V::splat(-4.0))
            .at_most(V::splat(4.0));
        let t2 = t.mul(t);
        let (num, den) = math::ERF_RATIONAL;
        let mut p = V::splat(num[0]);
        for k in &num[1..] {
            p = p.fma(t2, V::splat(*k));
        }
        let mut q = V::splat(den[0]);
        for k in &den[1..] {
            q = q.fma(t2, V::splat(*k));
        }
        let half = x.mul(V::splat(0.5));
        half.fma(p.mul(t).div(q), half)
    }
}

/// `math::gelu`: `0.5 * x * erfc(-x / sqrt(2))`.
#[inline(always)]
unsafe fn gelu_v<V: F32s>(x: V) -> V {
    unsafe {
        let e = erfc_v(x.mul(V::splat(-std::f32::consts::FRAC_1_SQRT_2)));
        x.mul(V::splat(0.5)).mul(e)
    }
}

/// `math::silu` on a vector.
#[inline(always)]
unsafe fn silu_v<V: F32s>(x: V) -> V {
    unsafe {
        let t = V::splat(0.0).sub(x);
        let e = exp_v(t.at_least(V::splat(-math::SIGMOID_LIM)));
        x.div(V::splat(1.0).add(e))
    }
}

/// `math::sigmoid` on a vector (the same flush below `-SIGMOID_LIM`).
#[inline(always)]
unsafe fn sigmoid_v<V: F32s>(x: V) -> V {
    unsafe {
        let lim = V::splat(math::SIGMOID_LIM);
        let t = V::splat(0.0).sub(x);
        let e = exp_v(t.at_least(V::splat(-math::SIGMOID_LIM)));
        let s = V::splat(1.0).div(V::splat(1.0).add(e));
        lim.select_lt(t, V::splat(0.0), s)
    }
}

/// `x * sigmoid(2 * sqrt(2 / pi) * (x + 0.044715 x^3))`, as `math::unary` computes it.
#[inline(always)]
unsafe fn gelu_tanh_v<V: F32s>(x: V) -> V {
    unsafe {
        let x3 = x.mul(x).mul(x);
        let u = x3
            .fma(V::splat(0.044_715), x)
            .mul(V::splat(2.0 * 0.797_884_6));
        x.mul(sigmoid_v(u))
    }
}
