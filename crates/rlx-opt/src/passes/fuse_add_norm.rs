//! Residual + norm fusion: `layer_norm(a + b)` with a same-shape add used only by the norm
//! becomes one `add_layer_norm` kernel. Broadcasting adds are left alone.

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{BinaryOp, ComputeOp, HirModule, Result};

use super::PassLog;
use super::util::use_counts;

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    for i in 0..m.nodes.len() {
        let Op::Compute(ComputeOp::LayerNorm { eps }) = m.nodes[i].op else {
            continue;
        };
        let me = ValueId(i as u32);
        let av = m.nodes[i].inputs[0];
        let add = &m.nodes[av.index()];
        if add.op != Op::Compute(ComputeOp::Binary(BinaryOp::Add)) {
            continue;
        }
        let (a, b) = (add.inputs[0], add.inputs[1]);
        if m.nodes[a.index()].ty != add.ty || m.nodes[b.index()].ty != add.ty {
            log.near_misses
                .push(format!("add_norm: {me} kept apart: add {av} broadcasts"));
            continue;
        }
        if uses[av.index()] != 1 {
            log.near_misses.push(format!(
                "add_norm: {me} kept apart: add {av} has {} users",
                uses[av.index()]
            ));
            continue;
        }
        let (g, beta) = (m.nodes[i].inputs[1], m.nodes[i].inputs[2]);
        m.nodes[i].op = Op::Compute(ComputeOp::AddLayerNorm { eps });
        m.nodes[i].inputs = vec![a, b, g, beta];
        log.fusions.push(format!(
            "add_norm: {av} + layer_norm -> add_layer_norm {me}"
        ));
    }
    Ok(m)
}
