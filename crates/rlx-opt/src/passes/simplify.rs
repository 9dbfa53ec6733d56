//! Algebraic simplification: reshape∘reshape → reshape, transpose∘transpose → one transpose,
//! and drops identities (same-shape reshape, identity transpose, cast to the same dtype,
//! `x * 1`, `x + 0` that broadcast nothing). Leaves every other op alone.

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{BinaryOp, ComputeOp, HirModule, Result};

use super::PassLog;
use super::util::{Aliases, const_scalar};

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let mut alias = Aliases::new(&m);
    for i in 0..m.nodes.len() {
        let inputs: Vec<ValueId> = m.nodes[i]
            .inputs
            .iter()
            .map(|v| alias.resolve(*v))
            .collect();
        m.nodes[i].inputs.clone_from(&inputs);
        let me = ValueId(i as u32);
        let ty = m.nodes[i].ty.clone();
        let producer = inputs.first().map(|v| m.nodes[v.index()].clone());
        match (&m.nodes[i].op, producer) {
            (Op::Reshape { .. }, Some(p)) if p.ty.shape == ty.shape => alias.set(me, inputs[0]),
            (Op::Reshape { .. }, Some(p)) if matches!(p.op, Op::Reshape { .. }) => {
                m.nodes[i].inputs = p.inputs.clone();
                log.fusions
                    .push(format!("simplify: reshape∘reshape at {me}"));
            }
            (Op::Compute(ComputeOp::Transpose { perm }), Some(p)) => {
                let identity = |q: &[usize]| q.iter().enumerate().all(|(a, b)| a == *b);
                if identity(perm) {
                    alias.set(me, inputs[0]);
                } else if let Op::Compute(ComputeOp::Transpose { perm: inner }) = &p.op {
                    let composed: Vec<usize> = perm.iter().map(|&j| inner[j]).collect();
                    log.fusions
                        .push(format!("simplify: transpose∘transpose at {me}"));
                    if identity(&composed) {
                        alias.set(me, p.inputs[0]);
                    } else {
                        m.nodes[i].op = Op::Compute(ComputeOp::Transpose { perm: composed });
                        m.nodes[i].inputs = p.inputs.clone();
                    }
                }
            }
            (Op::Compute(ComputeOp::Cast { to }), Some(p)) if p.ty.dtype == *to => {
                alias.set(me, inputs[0])
            }
            (Op::Compute(ComputeOp::Binary(op @ (BinaryOp::Mul | BinaryOp::Add))), _) => {
                let neutral = if *op == BinaryOp::Mul { 1.0 } else { 0.0 };
                for (keep, other) in [(0, 1), (1, 0)] {
                    let same_shape = m.nodes[inputs[keep].index()].ty == ty;
                    if same_shape && const_scalar(&m, inputs[other]) == Some(neutral) {
                        alias.set(me, inputs[keep]);
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    alias.apply(&mut m);
    Ok(m)
}
