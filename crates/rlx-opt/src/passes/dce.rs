//! Dead code elimination: drops ops whose values reach no output. Inputs, params and states
//! stay, since they are the module's interface (the manifest must not change with the
//! optimizer), and so do cache writes, whose effect is on their state.

use rlx_ir::hir::{Node, Op, ValueId};
use rlx_ir::{HirModule, Result};

pub fn run(mut m: HirModule, _log: &mut super::PassLog) -> Result<HirModule> {
    let mut live = vec![false; m.nodes.len()];
    for o in &m.outputs {
        live[o.value.index()] = true;
    }
    // Operands are always earlier nodes, so one reverse sweep finds every live node.
    for i in (0..m.nodes.len()).rev() {
        let kept = matches!(
            m.nodes[i].op,
            Op::Input { .. }
                | Op::Param { .. }
                | Op::State { .. }
                | Op::Compute(rlx_ir::ComputeOp::CacheWrite)
        );
        if live[i] || kept {
            live[i] = true;
            for v in &m.nodes[i].inputs {
                live[v.index()] = true;
            }
        }
    }
    if live.iter().all(|l| *l) {
        return Ok(m);
    }
    let mut remap = vec![ValueId(u32::MAX); m.nodes.len()];
    let mut nodes = Vec::with_capacity(m.nodes.len());
    for (i, node) in std::mem::take(&mut m.nodes).into_iter().enumerate() {
        if live[i] {
            remap[i] = ValueId(nodes.len() as u32);
            let inputs = node.inputs.iter().map(|v| remap[v.index()]).collect();
            nodes.push(Node { inputs, ..node });
        }
    }
    Ok(super::util::renumbered(m, nodes, &remap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlx_ir::{DType, HirMut, Shape};

    #[test]
    fn removes_unused_ops_but_keeps_leaves() {
        let mut m = HirModule::new("t");
        let mut g = HirMut::new(&mut m);
        let x = g.input("x", DType::F32, Shape::new(&[2, 3])).unwrap();
        let unused = g.input("unused", DType::F32, Shape::new(&[2, 3])).unwrap();
        let _dead = g.gelu(unused).unwrap();
        let y = g.gelu(x).unwrap();
        g.output("y", y).unwrap();
        let out = run(m, &mut Default::default()).unwrap();
        out.verify().unwrap();
        assert_eq!(out.len(), 3);
        assert!(matches!(out.nodes[1].op, Op::Input { .. }));
        assert_eq!(out.outputs[0].value, ValueId(2));
    }
}
