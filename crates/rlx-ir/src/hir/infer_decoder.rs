//! Shape inference of the decoder ops: rotary embedding, the KV-cache write, attention over a
//! cache, and SwiGLU's gate.

use super::infer::{all_f32, arity};
use crate::ops::ComputeOp;
use crate::{DType, Dim, Result, Shape, TensorType};

pub(super) fn infer(op: &ComputeOp, tys: &[&TensorType]) -> Result<TensorType> {
    let name = op.name();
    match op {
        ComputeOp::Rotary { theta } => {
            arity(name, tys, 2, 2)?;
            let x = tys[0];
            heads_tensor(name, "x", x)?;
            crate::ensure!(
                x.shape.0[3].as_const().is_none_or(|d| d % 2 == 0),
                Shape,
                "{name}: the head dim {} must be even",
                x.shape.0[3]
            );
            positions(name, "offset", tys[1], &x.shape.0[0])?;
            crate::ensure!(
                theta.is_finite() && *theta > 1.0,
                Graph,
                "{name}: theta {theta} must be finite and > 1"
            );
            Ok(x.clone())
        }
        ComputeOp::CacheWrite => {
            arity(name, tys, 3, 3)?;
            let (cache, new) = (tys[0], tys[1]);
            heads_tensor(name, "cache", cache)?;
            heads_tensor(name, "new", new)?;
            let (c, n) = (&cache.shape.0, &new.shape.0);
            crate::ensure!(
                c[0] == n[0] && c[1] == n[1] && c[3] == n[3],
                Shape,
                "{name}: new {} must be [batch, heads, seq, dim] of cache {}",
                new.shape,
                cache.shape
            );
            positions(name, "pos", tys[2], &c[0])?;
            Ok(cache.clone())
        }
        ComputeOp::KvAttention { scale } => {
            arity(name, tys, 4, 4)?;
            let (q, k, v) = (tys[0], tys[1], tys[2]);
            for (what, t) in [("q", q), ("k", k), ("v", v)] {
                heads_tensor(name, what, t)?;
            }
            let (qs, ks, vs) = (&q.shape.0, &k.shape.0, &v.shape.0);
            crate::ensure!(
                qs[0] == ks[0]
                    && ks[0] == vs[0]
                    && ks[1] == vs[1]
                    && ks[2] == vs[2]
                    && qs[3] == ks[3],
                Shape,
                "{name} needs q [b, h, s, d], k [b, kv_h, ctx, d], v [b, kv_h, ctx, dv]; got {}, {}, {}",
                q.shape,
                k.shape,
                v.shape
            );
            let grouped = match (qs[1].as_const(), ks[1].as_const()) {
                (Some(h), Some(kv)) => kv > 0 && h % kv == 0,
                _ => qs[1] == ks[1],
            };
            crate::ensure!(
                grouped,
                Shape,
                "{name}: {} kv heads do not divide {} query heads",
                ks[1],
                qs[1]
            );
            crate::ensure!(
                scale.is_finite(),
                Graph,
                "{name} scale {scale} must be finite"
            );
            positions(name, "pos", tys[3], &qs[0])?;
            Ok(TensorType::new(
                DType::F32,
                Shape(vec![
                    qs[0].clone(),
                    qs[1].clone(),
                    qs[2].clone(),
                    vs[3].clone(),
                ]),
            ))
        }
        ComputeOp::SwiGlu => {
            arity(name, tys, 1, 1)?;
            all_f32(name, tys)?;
            let s = &tys[0].shape;
            let last = s.0.last().and_then(Dim::as_const);
            let Some(width) = last.filter(|w| w % 2 == 0) else {
                crate::bail!(
                    Shape,
                    "{name}: the last axis of {s} must be a static, even width (gate | up)"
                );
            };
            let mut dims = s.0.clone();
            *dims.last_mut().expect("rank >= 1") = Dim::constant(width / 2);
            Ok(TensorType::new(DType::F32, Shape(dims)))
        }
        _ => crate::bail!(Graph, "{name} is not a decoder op"),
    }
}

/// An f32 `[batch, heads, seq, dim]` tensor.
fn heads_tensor(name: &str, what: &str, t: &TensorType) -> Result<()> {
    crate::ensure!(
        t.dtype == DType::F32 && t.shape.rank() == 4,
        Shape,
        "{name}: {what} must be f32 [batch, heads, seq, dim], got {} {}",
        t.dtype,
        t.shape
    );
    Ok(())
}

/// Run-time positions: a 1-D i64 or i32 tensor of `batch` (or 1) values.
fn positions(name: &str, what: &str, t: &TensorType, batch: &Dim) -> Result<()> {
    crate::ensure!(
        matches!(t.dtype, DType::I64 | DType::I32) && t.shape.rank() == 1,
        DType,
        "{name}: {what} must be a 1-D i64 or i32 tensor of batch or 1 values, got {} {}",
        t.dtype,
        t.shape
    );
    let n = &t.shape.0[0];
    crate::ensure!(
        n.as_const() == Some(1) || n == batch || !n.is_const(),
        Shape,
        "{name}: {what} has {n} values for a batch of {batch}"
    );
    Ok(())
}
