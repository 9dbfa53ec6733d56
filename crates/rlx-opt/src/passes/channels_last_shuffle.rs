//! `channels_last`'s channel shuffles (ShuffleNet's): a reshape of `[n, c, h, w]` to `[n, g, c
//! / g, h, w]`, a transpose swapping the two channel axes, a reshape back to `[n, c, h, w]`. Of
//! a value already channels-last, the same steps are taken on its last axis: `[n, h, w, c]` as
//! `[n, h, w, g, c / g]`, the two swapped, back to `[n, h, w, c]`; one transpose, where the
//! channel-major shuffle sat between a transpose from channels-last and one back (three per
//! ShuffleNet unit). The channel-major steps are kept for any other reader; `dce` drops them.

use std::collections::HashMap;

use rlx_ir::hir::{Node, Op, ValueId};
use rlx_ir::{ComputeOp, Shape, TensorType};

use super::channels_last::{push, transpose};

/// The channels-last forms of the shuffles' first two steps, by channel-major value.
#[derive(Default)]
pub(super) struct Shuffles {
    /// A split reshape's value: its channels-last `[n, h, w, g, c / g]`.
    split: HashMap<ValueId, ValueId>,
    /// A swapping transpose's value: its channels-last `[n, h, w, c / g, g]`.
    swapped: HashMap<ValueId, ValueId>,
}

impl Shuffles {
    /// After `node` was pushed as `v` (its channel-major form, reading `inputs`): the
    /// channels-last form of a shuffle step, pushed and remembered; a finished shuffle's goes
    /// into `last`. True when `node` was such a step.
    pub(super) fn step(
        &mut self,
        nodes: &mut Vec<Node>,
        last: &mut HashMap<ValueId, ValueId>,
        (node, inputs, v): (&Node, &[ValueId], ValueId),
    ) -> bool {
        let Some(&x) = inputs.first() else {
            return false;
        };
        let (to, from) = (
            node.ty.shape.dims(),
            nodes[x.index()].ty.shape.dims().to_vec(),
        );
        match &node.op {
            // [n, c, h, w] -> [n, g, c / g, h, w] of a channels-last value.
            Op::Reshape { .. }
                if to.len() == 5
                    && from.len() == 4
                    && to[..1] == from[..1]
                    && to[3..] == from[2..]
                    && last.contains_key(&x) =>
            {
                let shape = Shape::from_dims(vec![
                    to[0].clone(),
                    to[3].clone(),
                    to[4].clone(),
                    to[1].clone(),
                    to[2].clone(),
                ]);
                let ty = TensorType::new(node.ty.dtype, shape.clone());
                let cl = push(nodes, Op::Reshape { shape }, vec![last[&x]], ty);
                self.split.insert(v, cl);
                true
            }
            // The two channel axes swapped.
            Op::Compute(ComputeOp::Transpose { perm })
                if perm[..] == [0, 2, 1, 3, 4] && self.split.contains_key(&x) =>
            {
                let cl = self.split[&x];
                let shape = nodes[cl.index()].ty.shape.permuted(&[0, 1, 2, 4, 3]);
                let ty = TensorType::new(node.ty.dtype, shape);
                let t = push(nodes, transpose(&[0, 1, 2, 4, 3]), vec![cl], ty);
                self.swapped.insert(v, t);
                true
            }
            // Back to [n, c, h, w].
            Op::Reshape { .. }
                if to.len() == 4
                    && from.len() == 5
                    && to[..1] == from[..1]
                    && to[2..] == from[3..]
                    && self.swapped.contains_key(&x) =>
            {
                let shape = node.ty.shape.permuted(&[0, 2, 3, 1]);
                let ty = TensorType::new(node.ty.dtype, shape.clone());
                let cl = push(nodes, Op::Reshape { shape }, vec![self.swapped[&x]], ty);
                last.insert(v, cl);
                true
            }
            _ => false,
        }
    }
}
