//! QKV fusion: when the q, k and v sources of a packed attention are three bias-alike linears
//! of the same input used only there, they become one `linear_group` that writes q | k | v side
//! by side, and the attention reads them at column offsets. The weights stay separate params:
//! the grouping is planned here, at compile time, so binding never copies or concatenates.

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{ComputeOp, HirModule, Result};

use super::PassLog;
use super::util::use_counts;

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    for i in 0..m.nodes.len() {
        let Some(ComputeOp::AttentionPacked {
            heads,
            head_dim,
            scale,
            causal,
            mask,
            ..
        }) = m.nodes[i].op.compute().cloned()
        else {
            continue;
        };
        let srcs: Vec<ValueId> = m.nodes[i].inputs[..3].to_vec();
        let why_not = || -> Option<String> {
            if srcs[0] == srcs[1] || srcs[1] == srcs[2] || srcs[0] == srcs[2] {
                return Some("q, k, v are not three separate values".into());
            }
            let nodes: Vec<_> = srcs.iter().map(|v| &m.nodes[v.index()]).collect();
            if !nodes.iter().all(|n| {
                n.op == nodes[0].op
                    && matches!(
                        n.op,
                        Op::Compute(ComputeOp::Linear {
                            activation: None,
                            ..
                        })
                    )
            }) {
                return Some("q, k, v are not all plain linears".into());
            }
            if !nodes.iter().all(|n| {
                n.inputs[0] == nodes[0].inputs[0] && n.inputs.len() == nodes[0].inputs.len()
            }) {
                return Some("q, k, v linears do not share one input and bias layout".into());
            }
            srcs.iter()
                .find(|v| uses[v.index()] != 1)
                .map(|v| format!("{v} has {} users", uses[v.index()]))
        };
        if let Some(reason) = why_not() {
            log.near_misses.push(format!("qkv at %{i}: {reason}"));
            continue;
        }
        let has_bias = m.nodes[srcs[0].index()].inputs.len() == 3;
        let transpose_w = matches!(
            m.nodes[srcs[0].index()].op,
            Op::Compute(ComputeOp::Linear {
                transpose_w: true,
                ..
            })
        );
        let mut inputs = vec![m.nodes[srcs[0].index()].inputs[0]];
        let mut offsets = [0usize; 3];
        let mut width = 0usize;
        for (p, v) in srcs.iter().enumerate() {
            let n = &m.nodes[v.index()];
            inputs.extend_from_slice(&n.inputs[1..]);
            offsets[p] = width;
            width += m.nodes[n.inputs[1].index()]
                .ty
                .shape
                .as_static()
                .map_or(0, |s| s[1]);
        }
        // The group takes the place of the latest of the three linears: all its operands are
        // defined before it and the attention comes after it.
        let at = *srcs.iter().max().expect("three sources");
        let mut ty = m.nodes[at.index()].ty.clone();
        *ty.shape.0.last_mut().expect("rank 3 source") = rlx_ir::Dim::constant(width as i64);
        m.nodes[at.index()].op = Op::Compute(ComputeOp::LinearGroup {
            parts: 3,
            has_bias,
            transpose_w,
        });
        m.nodes[at.index()].inputs = inputs;
        m.nodes[at.index()].ty = ty;
        let mut att_inputs = vec![at, at, at];
        att_inputs.extend(m.nodes[i].inputs.get(3).copied());
        m.nodes[i].inputs = att_inputs;
        m.nodes[i].op = Op::Compute(ComputeOp::AttentionPacked {
            heads,
            head_dim,
            offsets,
            scale,
            causal,
            mask,
        });
        log.fusions.push(format!(
            "qkv: {}, {}, {} -> linear_group {at}",
            srcs[0], srcs[1], srcs[2]
        ));
    }
    Ok(m)
}
