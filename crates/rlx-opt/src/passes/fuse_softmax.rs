//! Softmax fusion: `softmax(x * c + bias)`, `softmax(x / c + bias)`, `softmax(x * c)` and
//! `softmax(x + bias)` (c a one-element constant, the bias broadcasting to x) become one
//! `scaled_softmax` kernel. Runs after attention fusion, which takes whole attention blocks.

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{BinaryOp, ComputeOp, HirModule, Result};

use super::PassLog;
use super::util::{const_scalar, use_counts};

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    for i in 0..m.nodes.len() {
        let Some(ComputeOp::Softmax { axis }) = m.nodes[i].op.compute().cloned() else {
            continue;
        };
        let me = ValueId(i as u32);
        let ty = m.nodes[i].ty.clone();
        let single = |v: ValueId| uses[v.index()] == 1;
        let binary = |v: ValueId| match m.nodes[v.index()].op.compute() {
            Some(ComputeOp::Binary(op)) => Some((
                *op,
                m.nodes[v.index()].inputs[0],
                m.nodes[v.index()].inputs[1],
            )),
            _ => None,
        };
        let mut x = m.nodes[i].inputs[0];
        let mut bias = None;
        if let Some((BinaryOp::Add, a, b)) = binary(x).filter(|_| single(x)) {
            // The operand with the softmax's own type carries the scores; the other is the bias.
            let (scores, extra) = if m.nodes[a.index()].ty == ty {
                (a, b)
            } else {
                (b, a)
            };
            if m.nodes[scores.index()].ty == ty {
                bias = Some(extra);
                x = scores;
            }
        }
        let mut scale = 1.0f32;
        if let Some((op @ (BinaryOp::Mul | BinaryOp::Div), a, b)) = binary(x).filter(|_| single(x))
        {
            let c = const_scalar(&m, b).or(if op == BinaryOp::Mul {
                const_scalar(&m, a)
            } else {
                None
            });
            let other = if const_scalar(&m, b).is_some() { a } else { b };
            // A scale of x / 0 or x * inf is not finite: the scaled kernel refuses it, and the
            // unfused ops give the NaNs / infinities the graph asks for.
            let c = c.map(|c| if op == BinaryOp::Div { 1.0 / c } else { c });
            match c {
                Some(c) if m.nodes[other.index()].ty == ty && c.is_finite() => {
                    scale = c;
                    x = other;
                }
                Some(c) if !c.is_finite() => log
                    .near_misses
                    .push(format!("softmax {me}: scale {c} is not finite")),
                _ => log
                    .near_misses
                    .push(format!("softmax {me}: scale is not a one-element constant")),
            }
        }
        if x == m.nodes[i].inputs[0] {
            continue;
        }
        let mut inputs = vec![x];
        inputs.extend(bias);
        m.nodes[i].op = Op::Compute(ComputeOp::ScaledSoftmax { axis, scale });
        m.nodes[i].inputs = inputs;
        log.fusions.push(format!(
            "softmax: scale {scale:e}{} -> scaled_softmax {me}",
            if bias.is_some() { " + bias" } else { "" }
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlx_ir::{DType, HirMut, Shape};

    #[test]
    fn a_scale_that_is_not_finite_stays_unfused() {
        for (op, c) in [
            (BinaryOp::Div, 0.0),
            (BinaryOp::Mul, f32::INFINITY),
            (BinaryOp::Div, 4.0),
        ] {
            let mut m = HirModule::new("softmax");
            let mut g = HirMut::new(&mut m);
            let x = g.input("x", DType::F32, Shape::new(&[2, 8])).unwrap();
            let k = g.scalar(c).unwrap();
            let y = g.binary(op, x, k).unwrap();
            let y = g.softmax(y, -1).unwrap();
            g.output("y", y).unwrap();
            let mut log = PassLog::default();
            let m = run(m, &mut log).unwrap();
            m.verify().unwrap();
            let fused = m
                .nodes
                .iter()
                .any(|n| matches!(n.op, Op::Compute(ComputeOp::ScaledSoftmax { .. })));
            // x / 4 fuses (scale 0.25); x / 0 and x * inf keep their ops.
            assert_eq!(fused, c == 4.0, "{op:?} {c}: {m}");
        }
    }
}
