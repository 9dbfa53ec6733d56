//! The reference semantics of every compute op, one plain function per family.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice, Zip};
use rlx_ir::{BinaryOp, CompareOp, ComputeOp, DType, DimBinding, IrError, ReduceOp, UnaryOp};

use super::{Value, each, relayout};
use crate::error::fail;
use crate::{Error, Result};

/// Evaluates one compute op; `shape` is the result shape inference gave (used only where the
/// op needs it to lay out data, never to compute it).
pub(super) fn compute(
    op: &ComputeOp,
    args: &[&Value],
    shape: &[usize],
    binding: &DimBinding,
) -> Result<Value> {
    let name = op.name();
    // Fused ops that passes produce (and any op added later) are not part of the oracle.
    #[allow(unreachable_patterns)]
    Ok(match op {
        ComputeOp::MatMul => Value::F32(matmul(f32s(args, 0)?, f32s(args, 1)?, shape)?),
        ComputeOp::Linear {
            activation,
            transpose_w,
        } => {
            let bias = if args.len() > 2 {
                Some(f32s(args, 2)?)
            } else {
                None
            };
            // A `[out, in]` weight is the transpose of the `[in, out]` one.
            let w = f32s(args, 1)?;
            let w = if *transpose_w {
                w.t().to_owned()
            } else {
                w.clone()
            };
            Value::F32(linear(f32s(args, 0)?, &w, bias, *activation, shape)?)
        }
        ComputeOp::Binary(b) => binary(*b, args[0], args[1], shape)?,
        ComputeOp::Unary(u) => Value::F32(f32s(args, 0)?.mapv(|x| round(unary(*u, x.into())))),
        ComputeOp::Compare(c) => Value::Bool(compare(*c, args[0], args[1], shape)?),
        ComputeOp::Where => where_(args, shape)?,
        ComputeOp::Softmax { axis } => Value::F32(softmax(f32s(args, 0)?, *axis)),
        ComputeOp::LayerNorm { eps } => {
            let (g, b) = (f32s(args, 1)?, f32s(args, 2)?);
            Value::F32(norm(f32s(args, 0)?, |row| {
                let n = row.len() as f64;
                let mean = row.iter().sum::<f64>() / n;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let inv = 1.0 / (var + f64::from(*eps)).sqrt();
                let (g, b) = (g.iter(), b.iter());
                row.iter()
                    .zip(g.zip(b))
                    .map(|(x, (g, b))| (x - mean) * inv * f64::from(*g) + f64::from(*b))
                    .collect()
            }))
        }
        ComputeOp::RmsNorm { eps } => {
            let g = f32s(args, 1)?;
            Value::F32(norm(f32s(args, 0)?, |row| {
                let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
                let inv = 1.0 / (ms + f64::from(*eps)).sqrt();
                row.iter()
                    .zip(g.iter())
                    .map(|(x, g)| x * inv * f64::from(*g))
                    .collect()
            }))
        }
        ComputeOp::Rotary { theta } => {
            Value::F32(rotary(f32s(args, 0)?, args[1], f64::from(*theta))?)
        }
        ComputeOp::Reduce { op: r, axes, .. } => reduce(*r, args[0], axes)?.reshaped(shape)?,
        ComputeOp::Transpose { perm } => {
            each!(args[0], a => a.view().permuted_axes(IxDyn(perm)).to_owned())
        }
        ComputeOp::Concat { axis } => concat(args, *axis)?,
        ComputeOp::Slice { axis, start, end } => {
            let (s, e, d) = (
                start.eval(binding)?,
                end.eval(binding)?,
                args[0].shape()[*axis] as i64,
            );
            if !(0 <= s && s <= e && e <= d) {
                return Err(IrError::Shape(format!(
                    "slice [{s}, {e}) out of range for axis {axis} of size {d}"
                ))
                .into());
            }
            let r = Slice::from(s as usize..e as usize);
            each!(args[0], a => a.slice_axis(Axis(*axis), r).to_owned())
        }
        ComputeOp::Gather { axis } => gather(args[0], args[1], *axis, shape)?,
        ComputeOp::Cast { to } => cast(args[0], *to),
        ComputeOp::Attention { scale, causal } => {
            let mask = args.get(3).map(|m| nonzero(m));
            let (q, k, v) = (f32s(args, 0)?, f32s(args, 1)?, f32s(args, 2)?);
            let (sq, sk) = (q.shape()[2], k.shape()[2]);
            let visible = |b: usize, i: usize, j: usize| {
                mask.as_deref().is_none_or(|m| m[b * sk + j]) && (!causal || j + sq <= i + sk)
            };
            Value::F32(attention(q, k, v, f64::from(*scale), &visible)?)
        }
        ComputeOp::CacheWrite => {
            let (cache, new) = (f32s(args, 0)?, f32s(args, 1)?);
            let (ctx, seq) = (cache.shape()[2], new.shape()[2]);
            let pos = positions(name, args[2], cache.shape()[0], ctx, seq)?;
            let mut out = cache.clone();
            for ((b, h, t, x), val) in new
                .indexed_iter()
                .map(|(i, v)| ((i[0], i[1], i[2], i[3]), v))
            {
                out[[b, h, pos[b] + t, x]] = *val;
            }
            Value::F32(out)
        }
        ComputeOp::KvAttention { scale } => {
            let (q, k, v) = (f32s(args, 0)?, f32s(args, 1)?, f32s(args, 2)?);
            let pos = positions(name, args[3], q.shape()[0], k.shape()[2], q.shape()[2])?;
            let visible = |b: usize, i: usize, j: usize| j <= pos[b] + i;
            Value::F32(attention(q, k, v, f64::from(*scale), &visible)?)
        }
        ComputeOp::Conv(c) => {
            let bias = if c.has_bias(args.len()) {
                Some(f32s(args, 2)?)
            } else {
                None
            };
            let residual = if c.residual {
                Some(f32s(args, args.len() - 1)?)
            } else {
                None
            };
            Value::F32(super::vision::conv(
                f32s(args, 0)?,
                f32s(args, 1)?,
                bias,
                residual,
                c,
                shape,
            )?)
        }
        ComputeOp::Pool(p) => Value::F32(super::vision::pool(f32s(args, 0)?, p, shape)?),
        ComputeOp::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => Value::F32(super::vision::lrn(
            f32s(args, 0)?,
            *size,
            *alpha,
            *beta,
            *bias,
        )?),
        ComputeOp::ArgReduce {
            max, axis, last, ..
        } => {
            let idx = match args[0] {
                Value::F32(a) => arg_reduce(a, *axis, *max, *last, |x| x.is_nan()),
                Value::I64(a) => arg_reduce(a, *axis, *max, *last, |_| false),
                Value::I32(a) => arg_reduce(a, *axis, *max, *last, |_| false),
                Value::Bool(_) => fail!(DType, "{name} does not take bool"),
            };
            Value::I64(relayout(idx, shape)?)
        }
        ComputeOp::TopK { axis, k, largest } => {
            let idx = match args[0] {
                Value::F32(a) => top_k(a, *axis, *k, *largest, shape, |x| x.is_nan())?,
                Value::I64(a) => top_k(a, *axis, *k, *largest, shape, |_| false)?,
                Value::I32(a) => top_k(a, *axis, *k, *largest, shape, |_| false)?,
                Value::Bool(_) => fail!(DType, "{name} does not take bool"),
            };
            Value::I64(idx)
        }
        ComputeOp::SwiGlu => {
            let x = f32s(args, 0)?;
            let n = x.shape()[x.ndim() - 1] / 2;
            let rows: Vec<f32> = x
                .as_standard_layout()
                .as_slice()
                .unwrap_or_default()
                .chunks(2 * n.max(1))
                .flat_map(|row| {
                    (0..n).map(|i| {
                        let (g, u) = (f64::from(row[i]), f64::from(row[n + i]));
                        round(g / (1.0 + (-g).exp()) * u)
                    })
                })
                .collect();
            Value::F32(relayout(rows, shape)?)
        }
        _ => fail!(Compile, "reference interpreter does not evaluate {name}"),
    })
}

fn f32s<'a>(args: &[&'a Value], i: usize) -> Result<&'a ArrayD<f32>> {
    match args.get(i) {
        Some(Value::F32(a)) => Ok(a),
        Some(v) => fail!(
            DType,
            "reference: operand {i} is {}, expected f32",
            v.dtype()
        ),
        None => fail!(Compile, "reference: missing operand {i}"),
    }
}

fn round(x: f64) -> f32 {
    x as f32
}

fn to_f64(a: &ArrayD<f32>) -> Vec<f64> {
    a.iter().map(|x| f64::from(*x)).collect()
}

fn bcast<'a, T>(a: &'a ArrayD<T>, shape: &[usize]) -> Result<ArrayViewD<'a, T>> {
    match a.broadcast(IxDyn(shape)) {
        Some(v) => Ok(v),
        None => fail!(
            Shape,
            "reference: {:?} does not broadcast to {shape:?}",
            a.shape()
        ),
    }
}

fn zip2<A: Copy, B: Copy, O>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    shape: &[usize],
    f: impl Fn(A, B) -> O,
) -> Result<ArrayD<O>> {
    let (a, b) = (bcast(a, shape)?, bcast(b, shape)?);
    Ok(Zip::from(&a).and(&b).map_collect(|x, y| f(*x, *y)))
}

/// erf in f64: Maclaurin series near 0, the erfc continued fraction further out.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    if a.is_nan() {
        return x;
    }
    if a < 2.5 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        return sum * std::f64::consts::FRAC_2_SQRT_PI;
    }
    // erfc(a) = exp(-a^2) / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...)))).
    let mut k = a;
    for n in (1..=80).rev() {
        k = a + f64::from(n) / 2.0 / k;
    }
    let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / k;
    (1.0 - erfc).copysign(x)
}

pub fn unary(op: UnaryOp, x: f64) -> f64 {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    match op {
        // NaN stays NaN, as in torch.relu.
        UnaryOp::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        // `clamp` keeps NaN.
        UnaryOp::Relu6 => x.clamp(0.0, 6.0),
        UnaryOp::HardSwish => {
            let t = x / 6.0 + 0.5;
            x * t.clamp(0.0, 1.0)
        }
        UnaryOp::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        UnaryOp::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
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
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        // Ties to even, from the definition: the nearer integer, else the even one.
        UnaryOp::Round => {
            let (lo, hi) = (x.floor(), x.ceil());
            match (x - lo).partial_cmp(&(hi - x)) {
                Some(std::cmp::Ordering::Less) => lo,
                Some(std::cmp::Ordering::Greater) => hi,
                Some(std::cmp::Ordering::Equal) if lo % 2.0 == 0.0 => lo,
                Some(std::cmp::Ordering::Equal) => hi,
                None => x,
            }
        }
        UnaryOp::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
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

fn binary_f32(op: BinaryOp, a: f32, b: f32) -> f32 {
    let (x, y) = (f64::from(a), f64::from(b));
    match op {
        BinaryOp::Add => round(x + y),
        BinaryOp::Sub => round(x - y),
        BinaryOp::Mul => round(x * y),
        BinaryOp::Div => round(x / y),
        BinaryOp::Pow => round(x.powf(y)),
        // NaN propagates, as numpy's maximum / minimum.
        BinaryOp::Max | BinaryOp::Min if a.is_nan() || b.is_nan() => f32::NAN,
        BinaryOp::Max => {
            if a >= b {
                a
            } else {
                b
            }
        }
        BinaryOp::Min => {
            if a <= b {
                a
            } else {
                b
            }
        }
    }
}

macro_rules! binary_int {
    ($name:ident, $t:ty) => {
        /// Two's-complement wrapping; `x / 0 = 0`; a negative power is 0; a power is repeated
        /// wrapping multiplication for any exponent.
        fn $name(op: BinaryOp, a: $t, b: $t) -> $t {
            match op {
                BinaryOp::Add => a.wrapping_add(b),
                BinaryOp::Sub => a.wrapping_sub(b),
                BinaryOp::Mul => a.wrapping_mul(b),
                BinaryOp::Div if b == 0 => 0,
                BinaryOp::Div => a.wrapping_div(b),
                BinaryOp::Pow if b < 0 => 0,
                BinaryOp::Pow => {
                    let (mut base, mut e, mut acc) = (a, b as u64, 1 as $t);
                    while e > 0 {
                        if e & 1 == 1 {
                            acc = acc.wrapping_mul(base);
                        }
                        base = base.wrapping_mul(base);
                        e >>= 1;
                    }
                    acc
                }
                BinaryOp::Max => a.max(b),
                BinaryOp::Min => a.min(b),
            }
        }
    };
}
binary_int!(binary_i64, i64);
binary_int!(binary_i32, i32);

fn binary(op: BinaryOp, a: &Value, b: &Value, shape: &[usize]) -> Result<Value> {
    Ok(match (a, b) {
        (Value::F32(a), Value::F32(b)) => {
            Value::F32(zip2(a, b, shape, |x, y| binary_f32(op, x, y))?)
        }
        (Value::I64(a), Value::I64(b)) => {
            Value::I64(zip2(a, b, shape, |x, y| binary_i64(op, x, y))?)
        }
        (Value::I32(a), Value::I32(b)) => {
            Value::I32(zip2(a, b, shape, |x, y| binary_i32(op, x, y))?)
        }
        _ => fail!(DType, "reference: {op} on {} and {}", a.dtype(), b.dtype()),
    })
}

fn compare(op: CompareOp, a: &Value, b: &Value, shape: &[usize]) -> Result<ArrayD<bool>> {
    fn cmp<T: PartialOrd>(op: CompareOp, x: T, y: T) -> bool {
        match op {
            CompareOp::Eq => x == y,
            CompareOp::Ne => x != y,
            CompareOp::Lt => x < y,
            CompareOp::Le => x <= y,
            CompareOp::Gt => x > y,
            CompareOp::Ge => x >= y,
        }
    }
    match (a, b) {
        (Value::F32(a), Value::F32(b)) => zip2(a, b, shape, |x, y| cmp(op, x, y)),
        (Value::I64(a), Value::I64(b)) => zip2(a, b, shape, |x, y| cmp(op, x, y)),
        (Value::I32(a), Value::I32(b)) => zip2(a, b, shape, |x, y| cmp(op, x, y)),
        (Value::Bool(a), Value::Bool(b)) => zip2(a, b, shape, |x, y| cmp(op, x, y)),
        _ => fail!(DType, "reference: {op} on {} and {}", a.dtype(), b.dtype()),
    }
}

fn where_(args: &[&Value], shape: &[usize]) -> Result<Value> {
    let Value::Bool(c) = args[0] else {
        fail!(DType, "reference: where condition is {}", args[0].dtype())
    };
    let c = bcast(c, shape)?;
    macro_rules! pick {
        ($a:expr, $b:expr) => {{
            let (a, b) = (bcast($a, shape)?, bcast($b, shape)?);
            Zip::from(&c)
                .and(&a)
                .and(&b)
                .map_collect(|c, a, b| if *c { *a } else { *b })
        }};
    }
    Ok(match (args[1], args[2]) {
        (Value::F32(a), Value::F32(b)) => Value::F32(pick!(a, b)),
        (Value::I64(a), Value::I64(b)) => Value::I64(pick!(a, b)),
        (Value::I32(a), Value::I32(b)) => Value::I32(pick!(a, b)),
        (Value::Bool(a), Value::Bool(b)) => Value::Bool(pick!(a, b)),
        (a, b) => fail!(DType, "reference: where on {} and {}", a.dtype(), b.dtype()),
    })
}

fn softmax(x: &ArrayD<f32>, axis: usize) -> ArrayD<f32> {
    let mut out = x.mapv(f64::from);
    for mut lane in out.lanes_mut(Axis(axis)) {
        let max = lane.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
        lane.mapv_inplace(|v| (v - max).exp());
        let sum: f64 = lane.sum();
        lane.mapv_inplace(|v| v / sum);
    }
    out.mapv(round)
}

/// Applies `f` to every row of the last axis, in f64.
fn norm(x: &ArrayD<f32>, f: impl Fn(&[f64]) -> Vec<f64>) -> ArrayD<f32> {
    let mut out = x.mapv(|_| 0.0f32);
    let last = Axis(x.ndim() - 1);
    for (src, mut dst) in x.lanes(last).into_iter().zip(out.lanes_mut(last)) {
        let row: Vec<f64> = src.iter().map(|v| f64::from(*v)).collect();
        for (d, v) in dst.iter_mut().zip(f(&row)) {
            *d = round(v);
        }
    }
    out
}

fn reduce(op: ReduceOp, x: &Value, axes: &[usize]) -> Result<Value> {
    // Reduce the highest axis first so the lower axis numbers stay valid.
    let count: usize = axes.iter().map(|&a| x.shape()[a]).product();
    Ok(match (op, x) {
        (ReduceOp::Sum | ReduceOp::Mean, Value::F32(a)) => {
            let mut acc = a.mapv(f64::from);
            for &ax in axes.iter().rev() {
                acc = acc.sum_axis(Axis(ax));
            }
            let div = if op == ReduceOp::Mean {
                count as f64
            } else {
                1.0
            };
            Value::F32(acc.mapv(|v| round(v / div)))
        }
        (ReduceOp::Max, Value::F32(a)) => Value::F32(fold(a, axes, f32::NEG_INFINITY, |m, v| {
            binary_f32(BinaryOp::Max, m, v)
        })),
        (ReduceOp::Sum, Value::I64(a)) => Value::I64(fold(a, axes, 0, i64::wrapping_add)),
        (ReduceOp::Max, Value::I64(a)) => Value::I64(fold(a, axes, i64::MIN, i64::max)),
        (ReduceOp::Sum, Value::I32(a)) => Value::I32(fold(a, axes, 0, i32::wrapping_add)),
        (ReduceOp::Max, Value::I32(a)) => Value::I32(fold(a, axes, i32::MIN, i32::max)),
        _ => fail!(DType, "reference: {op} on {}", x.dtype()),
    })
}

fn fold<T: Copy>(a: &ArrayD<T>, axes: &[usize], init: T, f: impl Fn(T, T) -> T) -> ArrayD<T> {
    let mut acc = a.clone();
    for &ax in axes.iter().rev() {
        acc = acc.fold_axis(Axis(ax), init, |m, v| f(*m, *v));
    }
    acc
}

fn concat(args: &[&Value], axis: usize) -> Result<Value> {
    macro_rules! cat {
        ($v:ident) => {{
            let mut views = Vec::with_capacity(args.len());
            for a in args {
                let Value::$v(a) = a else {
                    fail!(DType, "reference: concat of mixed dtypes")
                };
                views.push(a.view());
            }
            Value::$v(
                ndarray::concatenate(Axis(axis), &views)
                    .map_err(|e| Error::Shape(format!("reference: concat: {e}")))?,
            )
        }};
    }
    Ok(match args[0] {
        Value::F32(_) => cat!(F32),
        Value::I64(_) => cat!(I64),
        Value::I32(_) => cat!(I32),
        Value::Bool(_) => cat!(Bool),
    })
}

fn gather(data: &Value, indices: &Value, axis: usize, shape: &[usize]) -> Result<Value> {
    let idx: Vec<i64> = match indices {
        Value::I64(a) => a.iter().copied().collect(),
        Value::I32(a) => a.iter().map(|&i| i64::from(i)).collect(),
        v => fail!(
            DType,
            "gather indices must be i64 or i32, got {}",
            v.dtype()
        ),
    };
    let dim = data.shape()[axis] as i64;
    let mut rows = Vec::with_capacity(idx.len());
    for (pos, &i) in idx.iter().enumerate() {
        let j = if i < 0 { i + dim } else { i };
        if !(0..dim).contains(&j) {
            fail!(
                Index,
                "gather index {i} at position {pos} is out of range for an axis of size {dim}"
            );
        }
        rows.push(j as usize);
    }
    each!(data, a => a.select(Axis(axis), &rows)).reshaped(shape)
}

/// Half rotation in f64, straight from the definition.
fn rotary(x: &ArrayD<f32>, offset: &Value, theta: f64) -> Result<ArrayD<f32>> {
    let offsets: Vec<i64> = match offset {
        Value::I64(a) => a.iter().copied().collect(),
        Value::I32(a) => a.iter().map(|&i| i64::from(i)).collect(),
        v => fail!(DType, "rotary offset must be i64 or i32, got {}", v.dtype()),
    };
    let s = x.shape();
    let (batch, heads, seq, dim) = (s[0], s[1], s[2], s[3]);
    if offsets.len() != 1 && offsets.len() != batch {
        fail!(
            Shape,
            "rotary offset has {} values for a batch of {batch}",
            offsets.len()
        );
    }
    let half = dim / 2;
    let mut out = x.clone();
    for b in 0..batch {
        let start = offsets[if offsets.len() == 1 { 0 } else { b }];
        for h in 0..heads {
            for t in 0..seq {
                let pos = (start + t as i64) as f64;
                for i in 0..half {
                    let angle = pos * theta.powf(-2.0 * i as f64 / dim as f64);
                    let (x0, x1) = (
                        f64::from(x[[b, h, t, i]]),
                        f64::from(x[[b, h, t, i + half]]),
                    );
                    out[[b, h, t, i]] = round(x0 * angle.cos() - x1 * angle.sin());
                    out[[b, h, t, i + half]] = round(x1 * angle.cos() + x0 * angle.sin());
                }
            }
        }
    }
    Ok(out)
}

/// Per-row positions of a cache op (one value broadcasts), each with `seq` rows from it
/// inside a cache of `ctx`.
fn positions(name: &str, pos: &Value, batch: usize, ctx: usize, seq: usize) -> Result<Vec<usize>> {
    let raw: Vec<i64> = match pos {
        Value::I64(a) => a.iter().copied().collect(),
        Value::I32(a) => a.iter().map(|&i| i64::from(i)).collect(),
        v => fail!(
            DType,
            "{name} positions must be i64 or i32, got {}",
            v.dtype()
        ),
    };
    if raw.len() != 1 && raw.len() != batch {
        fail!(
            Shape,
            "{name}: {} positions for a batch of {batch}",
            raw.len()
        );
    }
    (0..batch)
        .map(|b| {
            let p = raw[if raw.len() == 1 { 0 } else { b }];
            match usize::try_from(p) {
                Ok(p) if p.checked_add(seq).is_some_and(|e| e <= ctx) => Ok(p),
                _ => fail!(
                    Shape,
                    "{name}: row {b} at position {p} with {seq} new does not fit a context of {ctx}"
                ),
            }
        })
        .collect()
}

/// For every position off `axis`, the index along it of the extreme element: a NaN is the
/// extreme (the first one); among equals the first, or the last with `last`.
/// Each lane's `k` first indices after a stable sort: descending (`largest`) or ascending,
/// NaN above every number.
fn top_k<T: Copy + PartialOrd>(
    a: &ArrayD<T>,
    axis: usize,
    k: usize,
    largest: bool,
    shape: &[usize],
    nan: impl Fn(T) -> bool,
) -> Result<ArrayD<i64>> {
    let n = a.shape()[axis];
    if k > n {
        fail!(
            Shape,
            "top_k: k = {k} is larger than axis {axis} of size {n}"
        );
    }
    let rank = |x: T, y: T| match (nan(x), nan(y)) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
    };
    let mut out = ArrayD::<i64>::zeros(IxDyn(shape));
    for (lane, mut dst) in a
        .lanes(Axis(axis))
        .into_iter()
        .zip(out.lanes_mut(Axis(axis)))
    {
        let mut order: Vec<(usize, T)> = lane.iter().copied().enumerate().collect();
        // Stable: equal elements keep their index order.
        if largest {
            order.sort_by(|p, q| rank(q.1, p.1));
        } else {
            order.sort_by(|p, q| rank(p.1, q.1));
        }
        for (d, (i, _)) in dst.iter_mut().zip(order) {
            *d = i as i64;
        }
    }
    Ok(out)
}

fn arg_reduce<T: Copy + PartialOrd>(
    a: &ArrayD<T>,
    axis: usize,
    max: bool,
    last: bool,
    nan: impl Fn(T) -> bool,
) -> Vec<i64> {
    a.lanes(Axis(axis))
        .into_iter()
        .map(|lane| {
            let mut best: Option<(usize, T)> = None;
            for (i, &v) in lane.iter().enumerate() {
                let better = match best {
                    None => true,
                    Some((_, b)) if nan(b) => false,
                    Some(_) if nan(v) => true,
                    Some((_, b)) => {
                        let strictly = if max { v > b } else { v < b };
                        strictly || (last && v == b)
                    }
                };
                if better {
                    best = Some((i, v));
                }
            }
            best.map_or(0, |(i, _)| i as i64)
        })
        .collect()
}

fn cast(x: &Value, to: DType) -> Value {
    macro_rules! from {
        ($a:expr, $zero:expr) => {
            match to {
                DType::F32 => Value::F32($a.mapv(|v| v as f32)),
                DType::I64 => Value::I64($a.mapv(|v| v as i64)),
                DType::I32 => Value::I32($a.mapv(|v| v as i32)),
                DType::Bool => Value::Bool($a.mapv(|v| v != $zero)),
            }
        };
    }
    match x {
        Value::F32(a) => from!(a, 0.0),
        Value::I64(a) => from!(a, 0),
        Value::I32(a) => from!(a, 0),
        Value::Bool(a) => from!(a.mapv(u8::from), 0),
    }
}

fn nonzero(v: &Value) -> Vec<bool> {
    match cast(v, DType::Bool) {
        Value::Bool(a) => a.iter().copied().collect(),
        _ => unreachable!("cast to bool gives bool"),
    }
}

/// `a[..., m, k] @ b[..., k, n]` with the batch dims broadcast to `shape[..r-2]`.
fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
    let r = shape.len();
    let (m, n, k) = (shape[r - 2], shape[r - 1], a.shape()[a.ndim() - 1]);
    let full = |tail: [usize; 2]| [&shape[..r - 2], &tail[..]].concat();
    let av: Vec<f64> = bcast(a, &full([m, k]))?
        .iter()
        .map(|v| f64::from(*v))
        .collect();
    let bv: Vec<f64> = bcast(b, &full([k, n]))?
        .iter()
        .map(|v| f64::from(*v))
        .collect();
    let batches: usize = shape[..r - 2].iter().product();
    let mut out = vec![0.0f32; batches * m * n];
    for t in 0..batches {
        let (am, bm) = (&av[t * m * k..], &bv[t * k * n..]);
        for i in 0..m {
            for j in 0..n {
                let acc: f64 = (0..k).map(|p| am[i * k + p] * bm[p * n + j]).sum();
                out[(t * m + i) * n + j] = round(acc);
            }
        }
    }
    relayout(out, shape)
}

fn linear(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    act: Option<UnaryOp>,
    shape: &[usize],
) -> Result<ArrayD<f32>> {
    let (k, n) = (w.shape()[0], w.shape()[1]);
    // Logical order, whatever the layout of `w`.
    let (xv, wv) = (to_f64(x), to_f64(w));
    let bv = bias.map(to_f64).unwrap_or_else(|| vec![0.0; n]);
    let rows = match xv.len().checked_div(k) {
        Some(r) => r,
        // x is [.., 0]: the row count comes from the output.
        None => shape.iter().product::<usize>() / n.max(1),
    };
    let mut out = Vec::with_capacity(rows * n);
    for r in 0..rows {
        for j in 0..n {
            let acc = bv[j] + (0..k).map(|p| xv[r * k + p] * wv[p * n + j]).sum::<f64>();
            out.push(round(act.map_or(acc, |op| unary(op, acc))));
        }
    }
    relayout(out, shape)
}

/// Scaled dot-product attention over `[batch, heads, seq, dim]`; key `j` is seen by query `i`
/// of row `b` when `visible(b, i, j)`. No visible key: zeros.
fn attention(
    q: &ArrayD<f32>,
    k: &ArrayD<f32>,
    v: &ArrayD<f32>,
    scale: f64,
    visible: &dyn Fn(usize, usize, usize) -> bool,
) -> Result<ArrayD<f32>> {
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    let (batch, heads, sq, d, sk, dv) = (qs[0], qs[1], qs[2], qs[3], ks[2], vs[3]);
    let kv_heads = ks[1];
    let (qv, kv, vv) = (to_f64(q), to_f64(k), to_f64(v));
    let mut out = Vec::with_capacity(batch * heads * sq * dv);
    for b in 0..batch {
        for h in 0..heads {
            let bh = b * heads + h;
            // The kv head of query head h (grouped-query attention).
            let bkv = b * kv_heads + h / (heads / kv_heads.max(1)).max(1);
            for i in 0..sq {
                let visible = |j: usize| visible(b, i, j);
                let scores: Vec<f64> = (0..sk)
                    .map(|j| {
                        (0..d)
                            .map(|x| qv[(bh * sq + i) * d + x] * kv[(bkv * sk + j) * d + x])
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = (0..sk)
                    .filter(|&j| visible(j))
                    .map(|j| scores[j])
                    .fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = (0..sk)
                    .map(|j| {
                        if visible(j) {
                            (scores[j] - max).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let sum: f64 = p.iter().sum();
                let any = (0..sk).any(visible);
                for x in 0..dv {
                    let acc: f64 = (0..sk).map(|j| p[j] * vv[(bkv * sk + j) * dv + x]).sum();
                    out.push(if any { round(acc / sum) } else { 0.0 });
                }
            }
        }
    }
    relayout(out, &[batch, heads, sq, dv])
}
