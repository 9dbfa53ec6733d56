//! GELU recognition: the erf form exporters spell out, `x * (1 + erf(x / sqrt 2)) * 0.5` (with
//! the operands of each multiply or add in either order, and `x * (1/sqrt 2)` for the division),
//! becomes one `gelu` op, which the epilogue pass can then fold into a preceding linear.

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{BinaryOp, ComputeOp, HirModule, Result, UnaryOp};

use super::PassLog;
use super::util::{const_scalar, use_counts};

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 * b.abs()
}

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    for i in 0..m.nodes.len() {
        if let Some(x) = gelu_input(&m, &uses, ValueId(i as u32)) {
            m.nodes[i].op = Op::Compute(ComputeOp::Unary(UnaryOp::Gelu));
            m.nodes[i].inputs = vec![x];
            log.fusions.push(format!("gelu: erf form -> gelu %{i}"));
        }
    }
    Ok(m)
}

/// The `x` of a GELU spelled out ending at `root`, when every intermediate has one user.
fn gelu_input(m: &HirModule, uses: &[u32], root: ValueId) -> Option<ValueId> {
    let bin = |v: ValueId, want: BinaryOp| -> Option<(ValueId, ValueId)> {
        let n = &m.nodes[v.index()];
        (n.op == Op::Compute(ComputeOp::Binary(want))).then(|| (n.inputs[0], n.inputs[1]))
    };
    // Splits a commutative op into (the operand equal to constant c, the other one).
    let with_const = |(a, b): (ValueId, ValueId), c: f32| -> Option<ValueId> {
        if const_scalar(m, b).is_some_and(|v| close(v, c)) {
            Some(a)
        } else if const_scalar(m, a).is_some_and(|v| close(v, c)) {
            Some(b)
        } else {
            None
        }
    };
    let single = |v: ValueId| uses[v.index()] == 1;
    // root = (x * (1 + erf(..))) * 0.5
    let prod = with_const(bin(root, BinaryOp::Mul)?, 0.5).filter(|v| single(*v))?;
    let (p0, p1) = bin(prod, BinaryOp::Mul)?;
    for (x, one_plus) in [(p0, p1), (p1, p0)] {
        let Some(erf) = bin(one_plus, BinaryOp::Add).and_then(|ab| with_const(ab, 1.0)) else {
            continue;
        };
        let n = &m.nodes[erf.index()];
        if n.op != Op::Compute(ComputeOp::Unary(UnaryOp::Erf)) || !single(one_plus) || !single(erf)
        {
            continue;
        }
        let arg = n.inputs[0];
        let scaled = bin(arg, BinaryOp::Div).and_then(|(a, b)| {
            (const_scalar(m, b).is_some_and(|c| close(c, std::f32::consts::SQRT_2))).then_some(a)
        });
        let scaled = scaled.or_else(|| {
            bin(arg, BinaryOp::Mul).and_then(|ab| with_const(ab, std::f32::consts::FRAC_1_SQRT_2))
        });
        if scaled == Some(x) && single(arg) && m.nodes[x.index()].ty == m.nodes[root.index()].ty {
            return Some(x);
        }
    }
    None
}
