//! SiLU recognition: `x * sigmoid(x)` (the operands in either order; exporters spell PyTorch's
//! SiLU that way) becomes one `silu` op, which the epilogue pass then folds into a preceding
//! linear or convolution (EfficientNet's and YOLO's activation). The sigmoid must have no
//! other user; `dce` drops it.

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{BinaryOp, ComputeOp, HirModule, Result, UnaryOp};

use super::PassLog;
use super::util::use_counts;

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    for i in 0..m.nodes.len() {
        let Some(x) = silu_input(&m, &uses, i) else {
            continue;
        };
        m.nodes[i].op = Op::Compute(ComputeOp::Unary(UnaryOp::Silu));
        m.nodes[i].inputs = vec![x];
        log.fusions
            .push(format!("silu: x * sigmoid(x) -> silu %{i}"));
    }
    Ok(m)
}

/// The `x` of node `i` when it is `x * sigmoid(x)` of `x`'s own type, the sigmoid used once.
fn silu_input(m: &HirModule, uses: &[u32], i: usize) -> Option<ValueId> {
    let n = &m.nodes[i];
    if n.op != Op::Compute(ComputeOp::Binary(BinaryOp::Mul)) {
        return None;
    }
    let sigmoid_of = |s: ValueId| {
        let node = &m.nodes[s.index()];
        (node.op == Op::Compute(ComputeOp::Unary(UnaryOp::Sigmoid)) && uses[s.index()] == 1)
            .then(|| node.inputs[0])
    };
    let (a, b) = (n.inputs[0], n.inputs[1]);
    let x = if sigmoid_of(b) == Some(a) {
        a
    } else if sigmoid_of(a) == Some(b) {
        b
    } else {
        return None;
    };
    (m.nodes[x.index()].ty == n.ty).then_some(x)
}
