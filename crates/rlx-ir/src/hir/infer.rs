//! Shape and dtype inference: the type of an op's result from the types of its operands.
//! What cannot be proven symbolically (say `b == s`) is an error here, at build time.

use super::{HirModule, Op, ValueId};
use crate::{DType, Dim, IrError, Result, Shape, TensorType};

/// Infers the result type of `op` applied to `inputs` in `m`.
pub fn infer_type(m: &HirModule, op: &Op, inputs: &[ValueId]) -> Result<TensorType> {
    let name = op.name();
    let tys = inputs
        .iter()
        .map(|v| m.ty(*v))
        .collect::<Result<Vec<_>>>()?;
    let arity = |lo: usize, hi: usize| -> Result<()> {
        crate::ensure!(
            (lo..=hi).contains(&tys.len()),
            Graph,
            "{name} takes {lo}..={hi} operands, got {}",
            tys.len()
        );
        Ok(())
    };
    match op {
        Op::Input { .. } | Op::Param { .. } => {
            crate::bail!(Graph, "{name} is a leaf: its type is given, not inferred")
        }
        Op::MatMul => {
            arity(2, 2)?;
            all_f32(name, &tys)?;
            matmul_shape(&tys[0].shape, &tys[1].shape).map(f32_of)
        }
        Op::Linear { .. } => {
            arity(2, 3)?;
            all_f32(name, &tys)?;
            linear_shape(&tys[0].shape, &tys[1].shape, tys.get(2).map(|t| &t.shape)).map(f32_of)
        }
        Op::Binary(_) => {
            arity(2, 2)?;
            all_f32(name, &tys)?;
            broadcast(name, &tys[0].shape, &tys[1].shape).map(f32_of)
        }
        Op::Unary(_) => {
            arity(1, 1)?;
            all_f32(name, &tys)?;
            Ok(tys[0].clone())
        }
        Op::Softmax { axis } => {
            arity(1, 1)?;
            all_f32(name, &tys)?;
            let rank = tys[0].shape.rank();
            crate::ensure!(
                *axis < rank,
                Shape,
                "softmax axis {axis} out of range for rank {rank}"
            );
            Ok(tys[0].clone())
        }
        Op::LayerNorm { eps } => {
            arity(3, 3)?;
            all_f32(name, &tys)?;
            crate::ensure!(
                eps.is_finite() && *eps >= 0.0,
                Graph,
                "layer_norm eps {eps} invalid"
            );
            layer_norm_check(&tys[0].shape, &tys[1].shape, &tys[2].shape)?;
            Ok(tys[0].clone())
        }
        Op::Reshape { shape } => {
            arity(1, 1)?;
            let (from, to) = (tys[0].shape.numel(), shape.numel());
            crate::ensure!(
                from == to,
                Shape,
                "reshape {} -> {shape}: element counts {from} and {to} are not provably equal",
                tys[0].shape
            );
            Ok(TensorType::new(tys[0].dtype, shape.clone()))
        }
        Op::Transpose { perm } => {
            arity(1, 1)?;
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
            let dims = perm.iter().map(|&p| s.0[p].clone()).collect();
            Ok(TensorType::new(tys[0].dtype, Shape(dims)))
        }
    }
}

fn f32_of(shape: Shape) -> TensorType {
    TensorType::new(DType::F32, shape)
}

fn all_f32(op: &str, tys: &[&TensorType]) -> Result<()> {
    for (i, t) in tys.iter().enumerate() {
        crate::ensure!(
            t.dtype == DType::F32,
            DType,
            "{op} operand {i}: expected f32, got {t}"
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

fn layer_norm_check(x: &Shape, gamma: &Shape, beta: &Shape) -> Result<()> {
    crate::ensure!(x.rank() >= 1, Shape, "layer_norm needs rank >= 1, got {x}");
    let d = &x.0[x.rank() - 1];
    for (what, s) in [("gamma", gamma), ("beta", beta)] {
        crate::ensure!(
            s.rank() == 1 && s.0[0] == *d,
            Shape,
            "layer_norm {what} {s} does not match the normalized axis {d} of {x}"
        );
    }
    Ok(())
}
