//! Plain loops over planes and rows that the compiler vectorizes, compiled once per ISA (the
//! crate's baseline is SSE2: outside a target-feature function the same loop runs 4 lanes).

use rlx_ir::{BinaryOp, UnaryOp};

use super::lanes::F32s;
use super::per_isa;
use crate::cpu::isa::Isa;
use crate::cpu::types::Num;

per_isa!(
    /// `run[i] = act(run[i] + bias + res[i])` over one channel's run of a convolution's output
    /// (`res`, when given, as long as `run`): a relu in the same pass, other activations after.
    ///
    /// # Safety
    /// `isa` is available on this CPU (slices bound every access).
    pub unsafe fn channel_epilogue(run: &mut [f32], bias: f32, res: Option<&[f32]>, act: Option<UnaryOp>) => channel_epilogue_v
);

#[inline(always)]
unsafe fn channel_epilogue_v<V: F32s>(
    run: &mut [f32],
    bias: f32,
    res: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    // SAFETY: one bias for every index.
    unsafe { epilogue_v::<V>(run, |_| V::splat(bias), |_| bias, res, act) }
}

per_isa!(
    /// `run[i] = act(run[i] + bias[i % c] + res[i])` over whole positions of a channels-last
    /// output (`c` channels each; `bias` holds `c` values): a relu in the same pass, other
    /// activations after.
    ///
    /// # Safety
    /// `isa` is available on this CPU, `run.len()` is a multiple of `c` and `bias`, when
    /// given, holds `c` values.
    pub unsafe fn position_epilogue(run: &mut [f32], c: usize, bias: Option<&[f32]>, res: Option<&[f32]>, act: Option<UnaryOp>) => position_epilogue_v
);

#[inline(always)]
unsafe fn position_epilogue_v<V: F32s>(
    run: &mut [f32],
    c: usize,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    let Some(bias) = bias.filter(|b| b.len() >= c && c > 0) else {
        // SAFETY: no bias.
        return unsafe { epilogue_v::<V>(run, |_| V::splat(0.0), |_| 0.0, res, act) };
    };
    let res = res.map(|r| &r[..r.len().min(run.len())]);
    // A relu goes in the bias pass; another activation runs once over the whole run after it
    // (once per position, a SiLU over 32 channels cost 4x the depthwise product it followed).
    let (inline, after) = match act {
        Some(UnaryOp::Relu | UnaryOp::Relu6) => (act, None),
        _ => (None, act),
    };
    for (i, pos) in run.chunks_exact_mut(c).enumerate() {
        let r = res.map(|r| &r[(i * c).min(r.len())..((i + 1) * c).min(r.len())]);
        // SAFETY: the vector loads of bias stay below c (the body of a c-long run).
        unsafe {
            epilogue_v::<V>(
                pos,
                |j| V::load(bias.as_ptr().add(j)),
                |j| bias[j],
                r,
                inline,
            )
        };
    }
    if let Some(op) = after {
        let n = res.map_or(run.len(), |r| r.len());
        super::unary_in_place(V::ISA, op, &mut run[..n]);
    }
}

/// `run[i] = act(run[i] + bias(i) + res[i])`: `vbias(i)` the vector of biases at `i` (a whole
/// vector below the run's end), `bias(i)` one.
#[inline(always)]
unsafe fn epilogue_v<V: F32s>(
    run: &mut [f32],
    vbias: impl Fn(usize) -> V,
    bias: impl Fn(usize) -> f32,
    res: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    let relu = act == Some(UnaryOp::Relu);
    let relu6 = act == Some(UnaryOp::Relu6);
    let n = match res {
        Some(r) => run.len().min(r.len()),
        None => run.len(),
    };
    let body = n - n % V::N;
    // SAFETY: every index below n is in bounds of run and res.
    unsafe {
        let (zero, p) = (V::splat(0.0), run.as_mut_ptr());
        let mut i = 0;
        while i < body {
            let mut v = V::load(p.add(i)).add(vbias(i));
            if let Some(r) = res {
                v = v.add(V::load(r.as_ptr().add(i)));
            }
            if relu {
                v = v.at_least(zero);
            } else if relu6 {
                v = v.at_least(zero).at_most(V::splat(6.0));
            }
            v.store(p.add(i));
            i += V::N;
        }
    }
    for (i, v) in run[..n].iter_mut().enumerate().skip(body) {
        let x = *v + bias(i) + res.map_or(0.0, |r| r[i]);
        *v = match act {
            Some(UnaryOp::Relu) if x < 0.0 => 0.0,
            Some(UnaryOp::Relu6) => crate::cpu::math::relu6(x),
            _ => x,
        };
    }
    match act {
        Some(op) if !relu && !relu6 => super::unary_in_place(V::ISA, op, &mut run[..n]),
        _ => {}
    }
}

per_isa!(
    /// `dst[j] = op(a[j], b[j])`, one loop per op so each is a plain vector loop.
    ///
    /// # Safety
    /// `isa` is available on this CPU (slices bound every access).
    pub unsafe fn binary_map(op: BinaryOp, a: &[f32], b: &[f32], dst: &mut [f32]) => binary_map_v
);

#[inline(always)]
unsafe fn binary_map_v<V: F32s>(op: BinaryOp, a: &[f32], b: &[f32], dst: &mut [f32]) {
    match op {
        BinaryOp::Add => zip_map(a, b, dst, |x, y| x + y),
        BinaryOp::Sub => zip_map(a, b, dst, |x, y| x - y),
        BinaryOp::Mul => zip_map(a, b, dst, |x, y| x * y),
        BinaryOp::Div => zip_map(a, b, dst, |x, y| x / y),
        // NaN-propagating max / min do not vectorize as closures: explicit lanes.
        BinaryOp::Max => unsafe { zip_lanes::<V>(op, a, b, dst, |x, y| x.max_nan(y)) },
        BinaryOp::Min => unsafe { zip_lanes::<V>(op, a, b, dst, |x, y| x.min_nan(y)) },
        _ => zip_map(a, b, dst, |x, y| f32::binary(op, x, y)),
    }
}

/// `dst[i] = f(a[i], b[i])` a vector at a time, the tail as `op` on one element.
///
/// # Safety
/// `V`'s ISA is available on this CPU.
#[inline(always)]
unsafe fn zip_lanes<V: F32s>(
    op: BinaryOp,
    a: &[f32],
    b: &[f32],
    dst: &mut [f32],
    f: impl Fn(V, V) -> V,
) {
    let n = dst.len().min(a.len()).min(b.len());
    let body = n - n % V::N;
    // SAFETY: every index below n is in bounds of a, b and dst.
    unsafe {
        for i in (0..body).step_by(V::N) {
            f(V::load(a.as_ptr().add(i)), V::load(b.as_ptr().add(i)))
                .store(dst.as_mut_ptr().add(i));
        }
    }
    for i in body..n {
        dst[i] = f32::binary(op, a[i], b[i]);
    }
}

#[inline(always)]
fn zip_map(a: &[f32], b: &[f32], dst: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    dst.iter_mut()
        .zip(a.iter().zip(b))
        .for_each(|(d, (x, y))| *d = f(*x, *y));
}

per_isa!(
    /// `dst[i] = op(src[i], c)`, or `op(c, src[i])` when `!value_first`, for `i < n` and `op`
    /// one of add, sub, mul, div, max, min (others: the scalar function). `src` may be `dst` (each
    /// vector is read before it is written).
    ///
    /// # Safety
    /// `isa` is available on this CPU; `src` and `dst` hold `n` values and are the same or
    /// do not overlap.
    pub unsafe fn scalar_op(op: BinaryOp, c: f32, value_first: bool, src: *const f32, dst: *mut f32, n: usize) => scalar_op_v
);

#[inline(always)]
unsafe fn scalar_op_v<V: F32s>(
    op: BinaryOp,
    c: f32,
    value_first: bool,
    src: *const f32,
    dst: *mut f32,
    n: usize,
) {
    let scalar = |v: f32| match value_first {
        true => f32::binary(op, v, c),
        false => f32::binary(op, c, v),
    };
    // SAFETY: the caller's contract; whole vectors below `body`, the rest one by one.
    unsafe {
        let (k, body) = (V::splat(c), n - n % V::N);
        macro_rules! each {
            ($f:expr) => {{
                for i in (0..body).step_by(V::N) {
                    $f(V::load(src.add(i))).store(dst.add(i));
                }
            }};
        }
        match (op, value_first) {
            (BinaryOp::Add, _) => each!(|v: V| v.add(k)),
            (BinaryOp::Mul, _) => each!(|v: V| v.mul(k)),
            (BinaryOp::Sub, true) => each!(|v: V| v.sub(k)),
            (BinaryOp::Sub, false) => each!(|v: V| k.sub(v)),
            (BinaryOp::Div, true) => each!(|v: V| v.div(k)),
            (BinaryOp::Div, false) => each!(|v: V| k.div(v)),
            (BinaryOp::Max, _) => each!(|v: V| v.max_nan(k)),
            (BinaryOp::Min, _) => each!(|v: V| v.min_nan(k)),
            _ => {
                for i in 0..body {
                    *dst.add(i) = scalar(*src.add(i));
                }
            }
        }
        for i in body..n {
            *dst.add(i) = scalar(*src.add(i));
        }
    }
}

per_isa!(
    /// `dst[i] = max(src[i], src[i] * k)` for `i < n`, NaN propagating as `BinaryOp::Max`
    /// (LeakyRelu and PRelu's form for slopes in (0, 1]). `src` may be `dst`.
    ///
    /// # Safety
    /// `isa` is available on this CPU; `src` and `dst` hold `n` values and are the same or
    /// do not overlap.
    pub unsafe fn scaled_max(k: f32, src: *const f32, dst: *mut f32, n: usize) => scaled_max_v
);

#[inline(always)]
unsafe fn scaled_max_v<V: F32s>(k: f32, src: *const f32, dst: *mut f32, n: usize) {
    let body = n - n % V::N;
    // SAFETY: the caller's contract; whole vectors below `body`, the rest one by one.
    unsafe {
        let kv = V::splat(k);
        for i in (0..body).step_by(V::N) {
            let v = V::load(src.add(i));
            v.max_nan(v.mul(kv)).store(dst.add(i));
        }
        for i in body..n {
            let v = *src.add(i);
            *dst.add(i) = f32::binary(BinaryOp::Max, v, v * k);
        }
    }
}

per_isa!(
    /// `dst[r * c + j] = op(src[r * c + j], v[j])` (or `op(v[j], src[..])` when
    /// `!value_first`) for `rows` rows of `c` and `op` one of add, sub, mul, div (others: the
    /// scalar function): a per-channel operand over channels-last positions. `src` may be
    /// `dst`.
    ///
    /// # Safety
    /// `isa` is available on this CPU; `src` and `dst` hold `rows * c` values and are the
    /// same or do not overlap; `v` holds `c`.
    pub unsafe fn vector_op(op: BinaryOp, v: *const f32, c: usize, value_first: bool, src: *const f32, dst: *mut f32, rows: usize) => vector_op_v
);

#[inline(always)]
unsafe fn vector_op_v<V: F32s>(
    op: BinaryOp,
    v: *const f32,
    c: usize,
    value_first: bool,
    src: *const f32,
    dst: *mut f32,
    rows: usize,
) {
    let body = c - c % V::N;
    // SAFETY: the caller's contract; whole vectors below `body`, the rest one by one.
    unsafe {
        macro_rules! each {
            ($f:expr) => {{
                for r in 0..rows {
                    let (s, d) = (src.add(r * c), dst.add(r * c));
                    for j in (0..body).step_by(V::N) {
                        $f(V::load(s.add(j)), V::load(v.add(j))).store(d.add(j));
                    }
                    for j in body..c {
                        *d.add(j) = match value_first {
                            true => f32::binary(op, *s.add(j), *v.add(j)),
                            false => f32::binary(op, *v.add(j), *s.add(j)),
                        };
                    }
                }
            }};
        }
        match (op, value_first) {
            (BinaryOp::Add, _) => each!(|x: V, k: V| x.add(k)),
            (BinaryOp::Mul, _) => each!(|x: V, k: V| x.mul(k)),
            (BinaryOp::Sub, true) => each!(|x: V, k: V| x.sub(k)),
            (BinaryOp::Sub, false) => each!(|x: V, k: V| k.sub(x)),
            (BinaryOp::Div, true) => each!(|x: V, k: V| x.div(k)),
            (BinaryOp::Div, false) => each!(|x: V, k: V| k.div(x)),
            (BinaryOp::Max, _) => each!(|x: V, k: V| x.max_nan(k)),
            (BinaryOp::Min, _) => each!(|x: V, k: V| x.min_nan(k)),
            _ => {
                for i in 0..rows * c {
                    let (x, k) = (*src.add(i), *v.add(i % c));
                    *dst.add(i) = match value_first {
                        true => f32::binary(op, x, k),
                        false => f32::binary(op, k, x),
                    };
                }
            }
        }
    }
}
