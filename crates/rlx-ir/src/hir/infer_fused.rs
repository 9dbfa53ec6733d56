//! Type inference for the fused ops that passes produce.

use crate::ops::{ComputeOp, EwStep, MaskKind};
use crate::{DType, Dim, Result, Shape, TensorType};

use super::infer::{all_f32, broadcast};

pub(super) fn infer(op: &ComputeOp, tys: &[&TensorType]) -> Result<TensorType> {
    let name = op.name();
    match op {
        ComputeOp::Elementwise { program } => {
            crate::ensure!(
                !program.steps.is_empty() && !tys.is_empty(),
                Graph,
                "{name}: empty program or no operands"
            );
            for (i, s) in program.steps.iter().enumerate() {
                let ok = match s {
                    EwStep::Load(n) => *n < tys.len(),
                    EwStep::Const(_) => true,
                    EwStep::Unary(_, a) => *a < i,
                    EwStep::Binary(_, a, b) => *a < i && *b < i,
                };
                crate::ensure!(
                    ok,
                    Graph,
                    "{name}: step {i} ({s:?}) refers to a later register or a missing operand"
                );
            }
            let mut shape = tys[0].shape.clone();
            for t in &tys[1..] {
                shape = broadcast(name, &shape, &t.shape)?;
            }
            Ok(TensorType::new(DType::F32, shape))
        }
        ComputeOp::AddLayerNorm { eps } => {
            crate::ensure!(
                tys.len() == 4,
                Graph,
                "{name} takes 4 operands, got {}",
                tys.len()
            );
            all_f32(name, tys)?;
            crate::ensure!(
                eps.is_finite() && *eps >= 0.0,
                Graph,
                "{name} eps {eps} invalid"
            );
            let x = &tys[0].shape;
            crate::ensure!(
                tys[1].shape == *x && x.rank() >= 1,
                Shape,
                "{name}: operands {x} and {} must match",
                tys[1].shape
            );
            let d = &x.0[x.rank() - 1];
            for w in &tys[2..] {
                crate::ensure!(
                    w.shape.0.as_slice() == [d.clone()],
                    Shape,
                    "{name}: weight {} must be [{d}]",
                    w.shape
                );
            }
            Ok(tys[0].clone())
        }
        ComputeOp::ScaledSoftmax { axis, scale } => {
            crate::ensure!(
                (1..=2).contains(&tys.len()),
                Graph,
                "{name} takes 1 or 2 operands, got {}",
                tys.len()
            );
            all_f32(name, tys)?;
            crate::ensure!(
                scale.is_finite(),
                Graph,
                "{name}: scale {scale} must be finite"
            );
            let x = &tys[0].shape;
            crate::ensure!(
                *axis < x.rank(),
                Shape,
                "{name}: axis {axis} out of range for {x}"
            );
            if let Some(b) = tys.get(1) {
                crate::ensure!(
                    broadcast(name, x, &b.shape)? == *x,
                    Shape,
                    "{name}: bias {} must broadcast to {x}",
                    b.shape
                );
            }
            Ok(tys[0].clone())
        }
        ComputeOp::LinearGroup {
            parts,
            has_bias,
            transpose_w,
        } => {
            let per = if *has_bias { 2 } else { 1 };
            crate::ensure!(
                *parts >= 1 && tys.len() == 1 + parts * per,
                Graph,
                "{name}: {parts} parts need {} operands, got {}",
                1 + parts * per,
                tys.len()
            );
            all_f32(name, tys)?;
            let x = &tys[0].shape;
            crate::ensure!(x.rank() >= 1, Shape, "{name}: x must have rank >= 1");
            let k = &x.0[x.rank() - 1];
            let mut total = Dim::constant(0);
            for p in 0..*parts {
                let w = &super::infer::weight_in_out(&tys[1 + p * per].shape, *transpose_w)?;
                crate::ensure!(
                    w.rank() == 2 && w.0[0] == *k,
                    Shape,
                    "{name}: weight {p} {w} must be [{k}, n]"
                );
                if *has_bias {
                    let b = &tys[2 + p * per].shape;
                    crate::ensure!(
                        b.0.as_slice() == [w.0[1].clone()],
                        Shape,
                        "{name}: bias {p} {b} must be [{}]",
                        w.0[1]
                    );
                }
                total = &total + &w.0[1];
            }
            let mut dims = x.0.clone();
            *dims.last_mut().expect("rank >= 1") = total;
            Ok(TensorType::new(DType::F32, Shape(dims)))
        }
        ComputeOp::AttentionPacked {
            heads,
            head_dim,
            offsets,
            scale,
            mask,
            ..
        } => {
            let want = if *mask == MaskKind::None { 3 } else { 4 };
            crate::ensure!(
                tys.len() == want,
                Graph,
                "{name} with mask {mask:?} takes {want} operands, got {}",
                tys.len()
            );
            all_f32(name, &tys[..3])?;
            crate::ensure!(
                scale.is_finite(),
                Graph,
                "{name}: scale {scale} must be finite"
            );
            let span = (heads * head_dim) as i64;
            for (i, t) in tys[..3].iter().enumerate() {
                let s = &t.shape;
                let width = s.0.get(2).and_then(Dim::as_const);
                let ok = s.rank() == 3 && width.is_some_and(|w| offsets[i] as i64 + span <= w);
                crate::ensure!(
                    ok,
                    Shape,
                    "{name}: source {i} {s} must be [b, s, w] with static w >= {} + {span}",
                    offsets[i]
                );
            }
            let (q, k, v) = (&tys[0].shape, &tys[1].shape, &tys[2].shape);
            crate::ensure!(
                q.0[0] == k.0[0] && k.0[0] == v.0[0] && k.0[1] == v.0[1],
                Shape,
                "{name}: batch or key length differ: {q}, {k}, {v}"
            );
            if let Some(m) = tys.get(3) {
                let numel = &q.0[0] * &k.0[1];
                crate::ensure!(
                    m.shape.numel() == numel,
                    Shape,
                    "{name}: mask {} must hold batch*key_len = {numel} elements",
                    m.shape
                );
                if *mask == MaskKind::Bias {
                    crate::ensure!(
                        m.dtype == DType::F32,
                        DType,
                        "{name}: a bias mask must be f32, got {}",
                        m.dtype
                    );
                }
            }
            Ok(TensorType::new(
                DType::F32,
                Shape(vec![q.0[0].clone(), q.0[1].clone(), Dim::constant(span)]),
            ))
        }
        _ => crate::bail!(Graph, "{name} is not a fused op"),
    }
}
