//! Common subexpression elimination: two compute ops (or reshapes, or constants) with the same
//! op, attributes and operands become one. Inputs, params, states and cache writes are never merged.

use std::collections::HashMap;

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{HirModule, Result};

use super::PassLog;
use super::util::Aliases;

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let mut alias = Aliases::new(&m);
    let mut seen: HashMap<String, ValueId> = HashMap::new();
    let mut merged = 0usize;
    for i in 0..m.nodes.len() {
        for v in m.nodes[i].inputs.iter_mut() {
            *v = alias.resolve(*v);
        }
        let node = &m.nodes[i];
        if matches!(
            node.op,
            Op::Input { .. }
                | Op::Param { .. }
                | Op::State { .. }
                | Op::Compute(rlx_ir::ComputeOp::CacheWrite)
        ) {
            continue;
        }
        // The Debug form spells out op, attributes (constants included), operands and type.
        let key = format!("{:?}|{:?}|{:?}", node.op, node.inputs, node.ty);
        match seen.get(&key) {
            Some(&earlier) => {
                alias.set(ValueId(i as u32), earlier);
                merged += 1;
            }
            None => {
                seen.insert(key, ValueId(i as u32));
            }
        }
    }
    if merged > 0 {
        log.fusions
            .push(format!("cse: merged {merged} duplicate op(s)"));
    }
    alias.apply(&mut m);
    Ok(m)
}
