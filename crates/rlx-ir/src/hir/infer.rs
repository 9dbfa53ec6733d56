//! Shape and dtype inference: the type of an op's result from the types of its operands.
//! What cannot be proven symbolically (say `b == s`) is an error here, at build time.

use super::{HirModule, Op, ValueId};
use crate::ops::{ComputeOp, ReduceOp};
use crate::{DType, Dim, IrError, Result, Shape, TensorType};

/// Infers the result type of `op` applied to `inputs` in `m`.
pub fn infer_type(m: &HirModule, op: &Op, inputs: &[ValueId]) -> Result<TensorType> {
    let tys = inputs
        .iter()
        .map(|v| m.ty(*v))
        .collect::<Result<Vec<_>>>()?;
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::State { .. } | Op::Constant(_) => {
            crate::bail!(
                Graph,
                "{} is a leaf: its type is given, not inferred",
                op.name()
            )
        }
        Op::Reshape { shape } => {
            arity("reshape", &tys, 1, 1)?;
            let (from, to) = (tys[0].shape.numel(), shape.numel());
            crate::ensure!(
                from == to,
                Shape,
                "reshape {} -> {shape}: element counts {from} and {to} are not provably equal",
                tys[0].shape
            );
            Ok(TensorType::new(tys[0].dtype, shape.clone()))
        }
        Op::Compute(c) => infer_compute(c, &tys),
    }
}

/// The result type of a compute op from its operands' types.
pub fn infer_compute(op: &ComputeOp, tys: &[&TensorType]) -> Result<TensorType> {
    let name = op.name();
    let f32_out = |shape: Shape| Ok(TensorType::new(DType::F32, shape));
    match op {
        ComputeOp::MatMul => {
            arity(name, tys, 2, 2)?;
            all_f32(name, tys)?;
            f32_out(matmul_shape(&tys[0].shape, &tys[1].shape)?)
        }
        ComputeOp::Linear { transpose_w, .. } => {
            arity(name, tys, 2, 3)?;
            all_f32(name, tys)?;
            f32_out(linear_shape(
                &tys[0].shape,
                &weight_in_out(&tys[1].shape, *transpose_w)?,
                tys.get(2).map(|t| &t.shape),
            )?)
        }
        ComputeOp::Binary(_) => {
            arity(name, tys, 2, 2)?;
            same_dtype(name, tys)?;
            crate::ensure!(
                tys[0].dtype != DType::Bool,
                DType,
                "{name} does not take bool operands"
            );
            Ok(TensorType::new(
                tys[0].dtype,
                broadcast(name, &tys[0].shape, &tys[1].shape)?,
            ))
        }
        ComputeOp::Compare(_) => {
            arity(name, tys, 2, 2)?;
            same_dtype(name, tys)?;
            Ok(TensorType::new(
                DType::Bool,
                broadcast(name, &tys[0].shape, &tys[1].shape)?,
            ))
        }
        ComputeOp::Where => {
            arity(name, tys, 3, 3)?;
            crate::ensure!(
                tys[0].dtype == DType::Bool,
                DType,
                "where condition: expected bool, got {}",
                tys[0]
            );
            same_dtype(name, &tys[1..])?;
            let s = broadcast(
                name,
                &broadcast(name, &tys[0].shape, &tys[1].shape)?,
                &tys[2].shape,
            )?;
            Ok(TensorType::new(tys[1].dtype, s))
        }
        ComputeOp::Unary(_) | ComputeOp::Softmax { .. } => {
            arity(name, tys, 1, 1)?;
            all_f32(name, tys)?;
            if let ComputeOp::Softmax { axis } = op {
                check_axis(name, *axis, &tys[0].shape)?;
            }
            Ok(tys[0].clone())
        }
        ComputeOp::LayerNorm { eps } | ComputeOp::RmsNorm { eps } => {
            let n = if matches!(op, ComputeOp::LayerNorm { .. }) {
                3
            } else {
                2
            };
            arity(name, tys, n, n)?;
            all_f32(name, tys)?;
            crate::ensure!(
                eps.is_finite() && *eps >= 0.0,
                Graph,
                "{name} eps {eps} must be finite and >= 0"
            );
            norm_check(name, &tys[0].shape, &tys[1..])?;
            Ok(tys[0].clone())
        }
        ComputeOp::Reduce {
            op: r,
            axes,
            keep_dim,
        } => {
            arity(name, tys, 1, 1)?;
            let dt = tys[0].dtype;
            let ok = if *r == ReduceOp::Mean {
                dt == DType::F32
            } else {
                dt != DType::Bool
            };
            crate::ensure!(ok, DType, "{name} does not take {dt}");
            let s = &tys[0].shape;
            crate::ensure!(
                axes.windows(2).all(|w| w[0] < w[1]),
                Graph,
                "{name} axes {axes:?} must be sorted and unique"
            );
            for a in axes {
                check_axis(name, *a, s)?;
            }
            let dims = (0..s.rank())
                .filter_map(|i| match (axes.contains(&i), keep_dim) {
                    (false, _) => Some(s.0[i].clone()),
                    (true, true) => Some(Dim::constant(1)),
                    (true, false) => None,
                })
                .collect();
            Ok(TensorType::new(dt, Shape(dims)))
        }
        ComputeOp::Transpose { perm } => {
            arity(name, tys, 1, 1)?;
            let s = &tys[0].shape;
            let mut seen = vec![false; s.rank()];
            let ok = perm.len() == s.rank()
                && perm
                    .iter()
                    .all(|&p| p < s.rank() && !std::mem::replace(&mut seen[p], true));
            crate::ensure!(
                ok,
                Shape,
                "transpose perm {perm:?} is not a permutation of rank {}",
                s.rank()
            );
            Ok(TensorType::new(tys[0].dtype, s.permuted(perm)))
        }
        ComputeOp::Concat { axis } => {
            arity(name, tys, 1, usize::MAX)?;
            same_dtype(name, tys)?;
            let first = &tys[0].shape;
            check_axis(name, *axis, first)?;
            let mut total = Dim::constant(0);
            for (i, t) in tys.iter().enumerate() {
                let same_rest = t.shape.rank() == first.rank()
                    && (0..first.rank()).all(|d| d == *axis || t.shape.0[d] == first.0[d]);
                crate::ensure!(
                    same_rest,
                    Shape,
                    "concat axis {axis}: operand {i} {} does not match {first}",
                    t.shape
                );
                total = &total + &t.shape.0[*axis];
            }
            let mut dims = first.0.clone();
            dims[*axis] = total;
            Ok(TensorType::new(tys[0].dtype, Shape(dims)))
        }
        ComputeOp::Slice { axis, start, end } => {
            arity(name, tys, 1, 1)?;
            let s = &tys[0].shape;
            check_axis(name, *axis, s)?;
            let len = end - start;
            if let (Some(a), Some(b), Some(d)) =
                (start.as_const(), end.as_const(), s.0[*axis].as_const())
            {
                crate::ensure!(
                    0 <= a && a <= b && b <= d,
                    Shape,
                    "slice [{a}, {b}) out of range for dim {d} of {s}"
                );
            }
            // Symbolic bounds: what the dim algebra can prove wrong is an error now
            // (x[n:n-1] has length -1 under every binding); the rest is checked at specialize.
            let provably_negative = |x: &Dim| x.as_const().is_some_and(|v| v < 0);
            crate::ensure!(
                !provably_negative(start)
                    && !provably_negative(&len)
                    && !provably_negative(&(&s.0[*axis] - end)),
                Shape,
                "slice [{start}, {end}) out of range for dim {} of {s}",
                s.0[*axis]
            );
            let mut dims = s.0.clone();
            dims[*axis] = len;
            Ok(TensorType::new(tys[0].dtype, Shape(dims)))
        }
        ComputeOp::Gather { axis } => {
            arity(name, tys, 2, 2)?;
            let (data, idx) = (&tys[0].shape, &tys[1]);
            crate::ensure!(
                matches!(idx.dtype, DType::I64 | DType::I32),
                DType,
                "gather indices: expected i64 or i32, got {idx}"
            );
            check_axis(name, *axis, data)?;
            let mut dims = data.0[..*axis].to_vec();
            dims.extend(idx.shape.0.iter().cloned());
            dims.extend(data.0[axis + 1..].iter().cloned());
            Ok(TensorType::new(tys[0].dtype, Shape(dims)))
        }
        ComputeOp::Cast { to } => {
            arity(name, tys, 1, 1)?;
            Ok(TensorType::new(*to, tys[0].shape.clone()))
        }
        ComputeOp::Attention { scale, .. } => {
            arity(name, tys, 3, 4)?;
            all_f32(name, &tys[..3])?;
            crate::ensure!(
                scale.is_finite(),
                Graph,
                "attention scale {scale} must be finite"
            );
            attention_shape(tys).map(|s| TensorType::new(DType::F32, s))
        }
        ComputeOp::Rotary { .. }
        | ComputeOp::CacheWrite
        | ComputeOp::KvAttention { .. }
        | ComputeOp::SwiGlu => super::infer_decoder::infer(op, tys),
        ComputeOp::Conv(_) | ComputeOp::Pool(_) | ComputeOp::Lrn { .. } => {
            super::infer_vision::infer(op, tys)
        }
        ComputeOp::ArgReduce { axis, keep_dim, .. } => {
            arity(name, tys, 1, 1)?;
            let (dt, s) = (tys[0].dtype, &tys[0].shape);
            crate::ensure!(dt != DType::Bool, DType, "{name} does not take {dt}");
            check_axis(name, *axis, s)?;
            let mut dims = s.0.clone();
            if *keep_dim {
                dims[*axis] = Dim::constant(1);
            } else {
                dims.remove(*axis);
            }
            Ok(TensorType::new(DType::I64, Shape(dims)))
        }
        ComputeOp::TopK { axis, k, .. } => {
            arity(name, tys, 1, 1)?;
            let (dt, s) = (tys[0].dtype, &tys[0].shape);
            crate::ensure!(dt != DType::Bool, DType, "{name} does not take {dt}");
            check_axis(name, *axis, s)?;
            if let Some(n) = s.0[*axis].as_const() {
                crate::ensure!(
                    *k as i64 <= n,
                    Shape,
                    "{name}: k = {k} is larger than axis {axis} of {s}"
                );
            }
            let mut dims = s.0.clone();
            dims[*axis] = Dim::constant(*k as i64);
            Ok(TensorType::new(DType::I64, Shape(dims)))
        }
        ComputeOp::Elementwise { .. }
        | ComputeOp::AddLayerNorm { .. }
        | ComputeOp::ScaledSoftmax { .. }
        | ComputeOp::LinearGroup { .. }
        | ComputeOp::AttentionPacked { .. } => super::infer_fused::infer(op, tys),
    }
}

pub(super) fn arity(name: &str, tys: &[&TensorType], lo: usize, hi: usize) -> Result<()> {
    crate::ensure!(
        (lo..=hi).contains(&tys.len()),
        Graph,
        "{name} takes {lo}..={} operands, got {}",
        if hi == usize::MAX {
            "n".to_string()
        } else {
            hi.to_string()
        },
        tys.len()
    );
    Ok(())
}

fn check_axis(name: &str, axis: usize, s: &Shape) -> Result<()> {
    crate::ensure!(
        axis < s.rank(),
        Shape,
        "{name}: axis {axis} out of range for rank {} shape {s}",
        s.rank()
    );
    Ok(())
}

pub(super) fn all_f32(op: &str, tys: &[&TensorType]) -> Result<()> {
    for (i, t) in tys.iter().enumerate() {
        crate::ensure!(
            t.dtype == DType::F32,
            DType,
            "{op} operand {i}: expected f32, got {t}"
        );
    }
    Ok(())
}

fn same_dtype(op: &str, tys: &[&TensorType]) -> Result<()> {
    for (i, t) in tys.iter().enumerate().skip(1) {
        crate::ensure!(
            t.dtype == tys[0].dtype,
            DType,
            "{op} operand {i}: expected {} like operand 0, got {t} (no implicit promotion)",
            tys[0].dtype
        );
    }
    Ok(())
}

/// Numpy broadcasting, right-aligned; a dim broadcasts only when it is the constant 1.
pub fn broadcast(op: &str, a: &Shape, b: &Shape) -> Result<Shape> {
    let rank = a.rank().max(b.rank());
    let one = Dim::constant(1);
    let at = |s: &Shape, i: usize| -> Dim {
        let pad = rank - s.rank();
        if i < pad {
            one.clone()
        } else {
            s.0[i - pad].clone()
        }
    };
    let mut dims = Vec::with_capacity(rank);
    for i in 0..rank {
        let (x, y) = (at(a, i), at(b, i));
        let d = if x == y || y == one {
            x
        } else if x == one {
            y
        } else {
            crate::bail!(
                Shape,
                "{op}: shapes {a} and {b} do not broadcast (dim {i}: {x} vs {y})"
            )
        };
        dims.push(d);
    }
    Ok(Shape(dims))
}

fn matmul_shape(a: &Shape, b: &Shape) -> Result<Shape> {
    crate::ensure!(
        a.rank() >= 2 && b.rank() >= 2,
        Shape,
        "matmul needs rank >= 2 operands, got {a} and {b}"
    );
    let (ra, rb) = (a.rank(), b.rank());
    let (m, ka) = (&a.0[ra - 2], &a.0[ra - 1]);
    let (kb, n) = (&b.0[rb - 2], &b.0[rb - 1]);
    crate::ensure!(
        ka == kb,
        Shape,
        "matmul {a} @ {b}: inner dims {ka} and {kb} differ"
    );
    let batch = broadcast(
        "matmul",
        &Shape(a.0[..ra - 2].to_vec()),
        &Shape(b.0[..rb - 2].to_vec()),
    )
    .map_err(|_| IrError::Shape(format!("matmul {a} @ {b}: batch dims do not broadcast")))?;
    let mut dims = batch.0;
    dims.push(m.clone());
    dims.push(n.clone());
    Ok(Shape(dims))
}

/// A rank-2 weight as `[in, out]`, whichever layout it is stored in.
pub(super) fn weight_in_out(w: &Shape, transposed: bool) -> Result<Shape> {
    crate::ensure!(
        w.rank() == 2,
        Shape,
        "linear weight must be rank 2, got {w}"
    );
    Ok(if transposed {
        Shape(vec![w.0[1].clone(), w.0[0].clone()])
    } else {
        w.clone()
    })
}

fn linear_shape(x: &Shape, w: &Shape, bias: Option<&Shape>) -> Result<Shape> {
    crate::ensure!(
        x.rank() >= 1 && w.rank() == 2,
        Shape,
        "linear needs x rank >= 1 and w [in, out], got {x} and {w}"
    );
    let k = &x.0[x.rank() - 1];
    crate::ensure!(
        *k == w.0[0],
        Shape,
        "linear {x} @ {w}: in-features {k} and {} differ",
        w.0[0]
    );
    if let Some(b) = bias {
        crate::ensure!(
            b.rank() == 1 && b.0[0] == w.0[1],
            Shape,
            "linear bias {b} does not match out-features {}",
            w.0[1]
        );
    }
    let mut dims = x.0.clone();
    *dims.last_mut().expect("rank >= 1 checked") = w.0[1].clone();
    Ok(Shape(dims))
}

fn norm_check(name: &str, x: &Shape, weights: &[&TensorType]) -> Result<()> {
    crate::ensure!(x.rank() >= 1, Shape, "{name} needs rank >= 1, got {x}");
    let d = &x.0[x.rank() - 1];
    for w in weights {
        let s = &w.shape;
        crate::ensure!(
            s.rank() == 1 && s.0[0] == *d,
            Shape,
            "{name} weight {s} does not match the normalized axis {d} of {x}"
        );
    }
    Ok(())
}

fn attention_shape(tys: &[&TensorType]) -> Result<Shape> {
    let (q, k, v) = (&tys[0].shape, &tys[1].shape, &tys[2].shape);
    let ok = q.rank() == 4
        && k.rank() == 4
        && v.rank() == 4
        && q.0[0] == k.0[0]
        && k.0[0] == v.0[0]
        && k.0[1] == v.0[1]
        && q.0[3] == k.0[3]
        && k.0[2] == v.0[2];
    crate::ensure!(
        ok,
        Shape,
        "attention needs q [b, h, sq, d], k [b, kv_h, sk, d], v [b, kv_h, sk, dv]; got {q}, {k}, {v}"
    );
    // Grouped-query attention: kv_h divides h (each kv head serves h / kv_h query heads).
    let grouped = match (q.0[1].as_const(), k.0[1].as_const()) {
        (Some(h), Some(kv)) => (kv > 0 && h % kv == 0) || (h == 0 && kv == 0),
        _ => q.0[1] == k.0[1],
    };
    crate::ensure!(
        grouped,
        Shape,
        "attention: {} kv heads do not divide {} query heads (q {q}, k {k})",
        k.0[1],
        q.0[1]
    );
    if let Some(mask) = tys.get(3) {
        let want = Shape(vec![q.0[0].clone(), k.0[2].clone()]);
        crate::ensure!(
            mask.shape == want,
            Shape,
            "attention mask {} must be [batch, key_len] = {want}",
            mask.shape
        );
    }
    Ok(Shape(vec![
        q.0[0].clone(),
        q.0[1].clone(),
        q.0[2].clone(),
        v.0[3].clone(),
    ]))
}
