//! SwiGLU fusion: `silu(x @ w_gate) * (x @ w_up)` — two linears of one input, the gate's
//! activation, and their product — becomes one `linear_group` writing gate | up side by side
//! and a `swiglu` reading it. One pass over `x` and one GEMM launch instead of two; the weights
//! stay separate params, so binding never concatenates them.

use rlx_ir::hir::{Node, Op, ValueId};
use rlx_ir::{BinaryOp, ComputeOp, HirModule, Result, UnaryOp};

use super::PassLog;
use super::util::use_counts;

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    for i in 0..m.nodes.len() {
        if m.nodes[i].op != Op::Compute(ComputeOp::Binary(BinaryOp::Mul)) {
            continue;
        }
        let (a, b) = (m.nodes[i].inputs[0], m.nodes[i].inputs[1]);
        let found = [(a, b), (b, a)]
            .into_iter()
            .find_map(|(gate_v, up)| pair(&m, &uses, i, gate_v, up).map(|(g, u)| (gate_v, g, u)));
        let Some((gate_v, gate, up)) = found else {
            continue;
        };
        let (g, u) = (&m.nodes[gate.index()], &m.nodes[up.index()]);
        let transpose_w = matches!(
            g.op,
            Op::Compute(ComputeOp::Linear {
                transpose_w: true,
                ..
            })
        );
        let has_bias = g.inputs.len() == 3;
        let mut inputs = g.inputs.clone();
        inputs.extend_from_slice(&u.inputs[1..]);
        let mut ty = u.ty.clone();
        let Some(width) = ty.shape.0.last().and_then(|d| d.as_const()) else {
            continue;
        };
        *ty.shape.0.last_mut().expect("rank >= 1") = rlx_ir::Dim::constant(2 * width);
        // The group replaces the later of the product's operands (the gate's silu, or a
        // linear): every operand of both linears precedes it, and the nodes it leaves dead
        // still read what they read before (DCE drops them).
        let at = gate_v.max(up);
        m.nodes[at.index()] = Node {
            op: Op::Compute(ComputeOp::LinearGroup {
                parts: 2,
                has_bias,
                transpose_w,
            }),
            inputs,
            ty,
        };
        m.nodes[i].op = Op::Compute(ComputeOp::SwiGlu);
        m.nodes[i].inputs = vec![at];
        log.fusions
            .push(format!("swiglu: {gate}, {up} -> linear_group {at}, %{i}"));
    }
    Ok(m)
}

/// `(gate linear, up linear)` when `gate_v` is `silu(linear(x, wg))` (or a linear with the silu
/// fused) and `up_v` a plain `linear(x, wu)` of the same input, layout and output type, each
/// used only by the product at `mul`.
fn pair(
    m: &HirModule,
    uses: &[u32],
    mul: usize,
    gate_v: ValueId,
    up_v: ValueId,
) -> Option<(ValueId, ValueId)> {
    let linear = |v: ValueId| match &m.nodes[v.index()].op {
        Op::Compute(ComputeOp::Linear {
            activation,
            transpose_w,
        }) => Some((*activation, *transpose_w)),
        _ => None,
    };
    let gate = match (&m.nodes[gate_v.index()].op, linear(gate_v)) {
        (_, Some((Some(UnaryOp::Silu), _))) => gate_v,
        (Op::Compute(ComputeOp::Unary(UnaryOp::Silu)), _) => {
            let inner = m.nodes[gate_v.index()].inputs[0];
            (linear(inner)?.0.is_none() && uses[inner.index()] == 1).then_some(inner)?
        }
        _ => return None,
    };
    let (_, tw) = linear(gate)?;
    let (up_act, up_tw) = linear(up_v)?;
    let (g, u) = (&m.nodes[gate.index()], &m.nodes[up_v.index()]);
    let ok = up_act.is_none()
        && up_tw == tw
        && gate != up_v
        && g.inputs[0] == u.inputs[0]
        && g.inputs.len() == u.inputs.len()
        && g.ty == u.ty
        && m.nodes[mul].ty == u.ty
        && uses[gate_v.index()] == 1
        && uses[up_v.index()] == 1;
    ok.then_some((gate, up_v))
}
