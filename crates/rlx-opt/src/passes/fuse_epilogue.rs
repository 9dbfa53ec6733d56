//! Epilogue fusion into `linear` and `conv`: `matmul(x, w) + b` (w rank 2, b `[n]`) and
//! `linear(x, w) + b` become a linear with bias; `conv + r` with `r` of the conv's own shape
//! becomes a conv with a residual; an activation applied to a linear or a conv without one
//! moves into it. Producers with more than one user are left alone (and reported).

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{BinaryOp, ComputeOp, HirModule, Result, UnaryOp};

use super::PassLog;
use super::util::use_counts;

const ACTIVATIONS: [UnaryOp; 8] = [
    UnaryOp::Relu,
    UnaryOp::Relu6,
    UnaryOp::HardSwish,
    UnaryOp::Gelu,
    UnaryOp::GeluTanh,
    UnaryOp::Silu,
    UnaryOp::Sigmoid,
    UnaryOp::Tanh,
];

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    for i in 0..m.nodes.len() {
        let me = ValueId(i as u32);
        match m.nodes[i].op.clone() {
            Op::Compute(ComputeOp::Binary(BinaryOp::Add)) => {
                if fold_residual(&mut m, i, &uses, log) {
                    continue;
                }
                for (p, b) in [(0, 1), (1, 0)] {
                    let (pv, bv) = (m.nodes[i].inputs[p], m.nodes[i].inputs[b]);
                    let (prod, bias) = (&m.nodes[pv.index()], &m.nodes[bv.index()]);
                    let matmul_like = match &prod.op {
                        Op::Compute(ComputeOp::MatMul) => {
                            m.nodes[prod.inputs[1].index()].ty.shape.rank() == 2
                        }
                        Op::Compute(ComputeOp::Linear {
                            activation: None, ..
                        }) => prod.inputs.len() == 2,
                        _ => false,
                    };
                    if !matmul_like {
                        continue;
                    }
                    let n = prod.ty.shape.0.last().cloned();
                    if bias.ty.shape.rank() != 1
                        || n.as_ref() != bias.ty.shape.0.first()
                        || m.nodes[i].ty != prod.ty
                    {
                        continue;
                    }
                    if uses[pv.index()] != 1 {
                        log.near_misses.push(format!(
                            "epilogue: bias add {me} kept apart: {pv} has {} users",
                            uses[pv.index()]
                        ));
                        continue;
                    }
                    let inputs = vec![prod.inputs[0], prod.inputs[1], bv];
                    let transpose_w = matches!(
                        prod.op,
                        Op::Compute(ComputeOp::Linear {
                            transpose_w: true,
                            ..
                        })
                    );
                    m.nodes[i].op = Op::Compute(ComputeOp::Linear {
                        activation: None,
                        transpose_w,
                    });
                    m.nodes[i].inputs = inputs;
                    log.fusions
                        .push(format!("epilogue: {pv} + bias -> linear {me}"));
                    break;
                }
            }
            Op::Compute(ComputeOp::Unary(act)) if ACTIVATIONS.contains(&act) => {
                let pv = m.nodes[i].inputs[0];
                let prod = &m.nodes[pv.index()];
                if let Op::Compute(ComputeOp::Conv(c)) = &prod.op
                    && c.act.is_none()
                {
                    if uses[pv.index()] != 1 {
                        log.near_misses.push(format!(
                            "epilogue: {act} {me} kept apart: conv {pv} has {} users",
                            uses[pv.index()]
                        ));
                        continue;
                    }
                    let mut c = c.clone();
                    c.act = Some(act);
                    m.nodes[i].inputs = prod.inputs.clone();
                    m.nodes[i].op = Op::Compute(ComputeOp::Conv(c));
                    log.fusions
                        .push(format!("epilogue: conv {pv} + {act} -> {me}"));
                    continue;
                }
                if let Op::Compute(ComputeOp::Linear {
                    activation: None,
                    transpose_w,
                }) = prod.op
                {
                    if uses[pv.index()] != 1 {
                        log.near_misses.push(format!(
                            "epilogue: {act} {me} kept apart: {pv} has {} users",
                            uses[pv.index()]
                        ));
                        continue;
                    }
                    m.nodes[i].inputs = prod.inputs.clone();
                    m.nodes[i].op = Op::Compute(ComputeOp::Linear {
                        activation: Some(act),
                        transpose_w,
                    });
                    log.fusions
                        .push(format!("epilogue: linear {pv} + {act} -> {me}"));
                }
            }
            _ => {}
        }
    }
    Ok(m)
}

/// `conv + r` (either order) with `r` of the sum's own type: node `i` becomes the conv with `r`
/// as its residual. False where neither operand is such a conv.
fn fold_residual(m: &mut HirModule, i: usize, uses: &[u32], log: &mut PassLog) -> bool {
    let me = ValueId(i as u32);
    for (p, r) in [(0, 1), (1, 0)] {
        let (pv, rv) = (m.nodes[i].inputs[p], m.nodes[i].inputs[r]);
        let (prod, res) = (&m.nodes[pv.index()], &m.nodes[rv.index()]);
        let Op::Compute(ComputeOp::Conv(c)) = &prod.op else {
            continue;
        };
        if c.residual || c.act.is_some() || pv == rv {
            continue;
        }
        if prod.ty != m.nodes[i].ty || res.ty != m.nodes[i].ty {
            continue;
        }
        if uses[pv.index()] != 1 {
            log.near_misses.push(format!(
                "epilogue: residual add {me} kept apart: conv {pv} has {} users",
                uses[pv.index()]
            ));
            continue;
        }
        let mut c = c.clone();
        c.residual = true;
        let mut inputs = prod.inputs.clone();
        inputs.push(rv);
        m.nodes[i].op = Op::Compute(ComputeOp::Conv(c));
        m.nodes[i].inputs = inputs;
        log.fusions
            .push(format!("epilogue: conv {pv} + residual {rv} -> {me}"));
        return true;
    }
    false
}
