//! The HIR verifier: checks a whole module and collects every problem before failing.

use std::collections::HashSet;

use super::{HirModule, Op, infer_type};
use crate::{IrError, Result, Shape, TensorType};

pub(super) fn verify(m: &HirModule) -> Result<()> {
    let mut problems = Vec::new();
    let mut leaf_names = HashSet::new();
    let declared: HashSet<&str> = m.symbols.iter().map(|s| s.name.as_str()).collect();
    for (i, node) in m.nodes.iter().enumerate() {
        let at = format!("%{i} ({})", node.op.name());
        if let Some(v) = node.inputs.iter().find(|v| v.index() >= i) {
            problems.push(format!(
                "{at}: operand {v} is not defined before use (cycle or forward reference)"
            ));
            continue;
        }
        for d in &node.ty.shape.0 {
            for s in d.symbols() {
                if !declared.contains(s) {
                    problems.push(format!("{at}: dim `{d}` uses undeclared symbol `{s}`"));
                }
            }
        }
        match &node.op {
            Op::Input { name } | Op::Param { name } | Op::State { name } => {
                if !leaf_names.insert(name.as_str()) {
                    problems.push(format!(
                        "{at}: name `{name}` is used by more than one input/param"
                    ));
                }
                if !node.inputs.is_empty() {
                    problems.push(format!("{at}: a leaf takes no operands"));
                }
                if matches!(node.op, Op::Param { .. }) && !node.ty.shape.is_static() {
                    problems.push(format!(
                        "{at}: param `{name}` shape {} must be static",
                        node.ty.shape
                    ));
                }
            }
            Op::Constant(c) => {
                let want = TensorType::new(
                    c.data.dtype(),
                    Shape::new(&c.shape.iter().map(|&d| d as i64).collect::<Vec<_>>()),
                );
                if node.ty != want || c.shape.iter().product::<usize>() != c.data.len() {
                    problems.push(format!(
                        "{at}: constant of {} elements does not match type {}",
                        c.data.len(),
                        node.ty
                    ));
                }
            }
            op => match infer_type(m, op, &node.inputs) {
                Ok(ty) if ty != node.ty => {
                    problems.push(format!("{at}: recorded type {} but inferred {ty}", node.ty))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{at}: {e}")),
            },
        }
    }
    verify_states(m, &mut problems);
    if m.outputs.is_empty() {
        problems.push("module has no outputs".to_string());
    }
    let mut out_names = HashSet::new();
    for o in &m.outputs {
        if o.value.index() >= m.nodes.len() {
            problems.push(format!(
                "output `{}` refers to unknown value {}",
                o.name, o.value
            ));
        }
        if !out_names.insert(o.name.as_str()) {
            problems.push(format!("duplicate output name `{}`", o.name));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IrError::Verify {
            what: "HIR",
            problems,
        })
    }
}

/// A state is updated in place, so its old contents must have exactly one reader, the
/// `cache_write` that overwrites part of it; and a `cache_write` only writes into a state.
fn verify_states(m: &HirModule, problems: &mut Vec<String>) {
    use crate::ComputeOp;
    let mut users = vec![0usize; m.nodes.len()];
    for (i, node) in m.nodes.iter().enumerate() {
        for (k, v) in node.inputs.iter().enumerate() {
            if v.index() >= m.nodes.len() {
                continue;
            }
            let is_state = matches!(m.nodes[v.index()].op, Op::State { .. });
            let writes = matches!(node.op, Op::Compute(ComputeOp::CacheWrite)) && k == 0;
            if is_state {
                users[v.index()] += 1;
                if !writes {
                    problems.push(format!(
                        "%{i} ({}): reads state {v} directly; only a cache_write may take a \
                         state (as its first operand)",
                        node.op.name()
                    ));
                }
            } else if writes {
                problems.push(format!(
                    "%{i} (cache_write): writes into {v}, which is not a state"
                ));
            }
        }
    }
    for (i, node) in m.nodes.iter().enumerate() {
        if let Op::State { name } = &node.op
            && users[i] > 1
        {
            problems.push(format!(
                "state `{name}` is written by {} cache_writes; one per run is allowed",
                users[i]
            ));
        }
    }
}
