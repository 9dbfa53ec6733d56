//! Helpers shared by passes: use counts, value aliasing, constant lookups.

use rlx_ir::hir::{Node, Op, ValueId};
use rlx_ir::{HirModule, TensorData};

/// How many times each value is used (as an operand or an output).
pub fn use_counts(m: &HirModule) -> Vec<u32> {
    let mut uses = vec![0u32; m.nodes.len()];
    for n in &m.nodes {
        for v in &n.inputs {
            uses[v.index()] += 1;
        }
    }
    for o in &m.outputs {
        uses[o.value.index()] += 1;
    }
    uses
}

/// `m` with `nodes` in place of its nodes, its outputs moved to the new ids (`remap[old id]`):
/// the end of a pass that rebuilds the node list.
pub fn renumbered(mut m: HirModule, nodes: Vec<Node>, remap: &[ValueId]) -> HirModule {
    m.nodes = nodes;
    for o in &mut m.outputs {
        o.value = remap[o.value.index()];
    }
    m
}

/// Redirects uses of values to other (earlier) values, applied in one sweep at the end so a
/// pass over 10^5 nodes stays linear.
pub struct Aliases {
    to: Vec<ValueId>,
    changed: bool,
}

impl Aliases {
    pub fn new(m: &HirModule) -> Aliases {
        Aliases {
            to: (0..m.nodes.len() as u32).map(ValueId).collect(),
            changed: false,
        }
    }

    /// Every use of `from` becomes a use of `to` (which must be defined before `from`'s users).
    pub fn set(&mut self, from: ValueId, to: ValueId) {
        let to = self.resolve(to);
        self.to[from.index()] = to;
        self.changed = true;
    }

    pub fn resolve(&self, mut v: ValueId) -> ValueId {
        while self.to[v.index()] != v {
            v = self.to[v.index()];
        }
        v
    }

    /// Rewrites every operand and output of `m` through the aliases.
    pub fn apply(&self, m: &mut HirModule) {
        if !self.changed {
            return;
        }
        for n in &mut m.nodes {
            for v in &mut n.inputs {
                *v = self.resolve(*v);
            }
        }
        for o in &mut m.outputs {
            o.value = self.resolve(o.value);
        }
    }
}

/// The value of a one-element f32 constant.
pub fn const_scalar(m: &HirModule, v: ValueId) -> Option<f32> {
    match &m.nodes.get(v.index())?.op {
        Op::Constant(c) => match &c.data {
            TensorData::F32(d) if d.len() == 1 => Some(d[0]),
            _ => None,
        },
        _ => None,
    }
}
