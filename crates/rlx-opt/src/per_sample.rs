//! Whether a graph computes every sample of its batch on its own: row `i` of each output
//! (axis 0) depends on row `i` of the inputs alone, whatever the batch. Such a graph can run a
//! large batch one sample at a time (each sample's activations then stay in cache) and give
//! the same results. The check is conservative: an op it does not know, or one that could
//! mix samples (a reduction or softmax over axis 0, a transpose or reshape that moves the
//! batch axis, a cache), makes the answer no.

use rlx_ir::hir::Op;
use rlx_ir::{ComputeOp, Dim, HirModule, Shape};

/// What a value holds along the batch.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Rows {
    /// The same for every sample (weights, constants, and what is made of them alone).
    Shared,
    /// Row `i` of axis 0 (the batch symbol) is sample `i`'s.
    PerSample,
}

/// The symbol a graph batches over: the first dim of its first input of rank 1 or more, when
/// that is a plain symbol and the graph computes each sample on its own along it.
pub fn per_sample_symbol(hir: &HirModule) -> Option<String> {
    let first = hir.nodes.iter().find_map(|n| match n.op {
        Op::Input { .. } => n.ty.shape.0.first(),
        _ => None,
    })?;
    let name = match first.symbols().as_slice() {
        [s] if *first == Dim::sym(s) => s.to_string(),
        _ => return None,
    };
    per_sample(hir, &name).then_some(name)
}

/// Whether `hir` computes each sample on its own along symbol `s` (see the module docs).
pub fn per_sample(hir: &HirModule, s: &str) -> bool {
    let mentions = |shape: &Shape| shape.0.iter().any(|d| d.symbols().contains(&s));
    // Axis 0 is the batch, and no other axis mentions it.
    let batched = |shape: &Shape| {
        shape.0.first() == Some(&Dim::sym(s))
            && !shape.0[1..].iter().any(|d| d.symbols().contains(&s))
    };
    let mut rows: Vec<Rows> = Vec::with_capacity(hir.nodes.len());
    for node in &hir.nodes {
        let out = &node.ty.shape;
        let ins: Vec<(Rows, &Shape)> = node
            .inputs
            .iter()
            .map(|v| (rows[v.0 as usize], &hir.nodes[v.0 as usize].ty.shape))
            .collect();
        let all_shared = ins.iter().all(|(r, _)| *r == Rows::Shared);
        let r = match &node.op {
            Op::Input { .. } if !mentions(out) => Some(Rows::Shared),
            Op::Input { .. } => batched(out).then_some(Rows::PerSample),
            Op::Param { .. } | Op::Constant(_) => (!mentions(out)).then_some(Rows::Shared),
            Op::State { .. } => None,
            _ if all_shared => (!mentions(out)).then_some(Rows::Shared),
            _ if !batched(out) => None,
            Op::Reshape { .. } => {
                // The same elements per sample: every other dim a constant, equal products.
                let rest = |sh: &Shape| -> Option<i64> {
                    sh.0[1..]
                        .iter()
                        .try_fold(1i64, |acc, d| acc.checked_mul(d.as_const()?))
                };
                let same = ins[0].0 == Rows::PerSample
                    && rest(ins[0].1).is_some()
                    && rest(ins[0].1) == rest(out);
                same.then_some(Rows::PerSample)
            }
            Op::Compute(op) => {
                computes_per_sample(op, &ins, out.0.len()).then_some(Rows::PerSample)
            }
        };
        match r {
            Some(r) => rows.push(r),
            None => return false,
        }
    }
    !hir.outputs.is_empty()
        && hir
            .outputs
            .iter()
            .all(|o| rows[o.value.0 as usize] == Rows::PerSample)
}

/// Whether `op` keeps samples apart, given its inputs (at least one per-sample) and an output
/// of `rank` with the batch at axis 0.
fn computes_per_sample(op: &ComputeOp, ins: &[(Rows, &Shape)], rank: usize) -> bool {
    let per_sample = |i: usize| ins.get(i).is_some_and(|(r, _)| *r == Rows::PerSample);
    let shared_from = |i: usize| ins.iter().skip(i).all(|(r, _)| *r == Rows::Shared);
    // Broadcasting aligns trailing axes: a per-sample operand must have the output's rank, or
    // its batch axis would meet another axis of the output; a shared one of that rank must
    // be 1 along the batch (inference refuses other sizes today; this does not rely on it).
    let aligned = || {
        ins.iter().all(|(r, sh)| match r {
            Rows::PerSample => sh.0.len() == rank,
            Rows::Shared => sh.0.len() < rank || sh.0.first() == Some(&Dim::constant(1)),
        })
    };
    match op {
        ComputeOp::Binary(_)
        | ComputeOp::Unary(_)
        | ComputeOp::Compare(_)
        | ComputeOp::Where
        | ComputeOp::Cast { .. }
        | ComputeOp::SwiGlu
        | ComputeOp::Elementwise { .. } => aligned(),
        // Over the last axis, which is not the batch.
        ComputeOp::LayerNorm { .. }
        | ComputeOp::RmsNorm { .. }
        | ComputeOp::AddLayerNorm { .. } => rank >= 2 && aligned(),
        ComputeOp::Softmax { axis } | ComputeOp::ScaledSoftmax { axis, .. } => {
            *axis != 0 && aligned()
        }
        // Channels and windows within each image; weights, bias shared; a residual (the
        // last input of a fused convolution) of the output's shape.
        ComputeOp::Conv(c) => {
            let weights = if c.residual { ins.len() - 1 } else { ins.len() };
            let residual = !c.residual || ins.last().is_some_and(|(_, sh)| sh.0.len() == rank);
            per_sample(0) && ins[1..weights].iter().all(|(r, _)| *r == Rows::Shared) && residual
        }
        ComputeOp::Pool(_) | ComputeOp::Lrn { .. } => per_sample(0),
        ComputeOp::Linear { .. } | ComputeOp::LinearGroup { .. } => {
            rank >= 2 && per_sample(0) && shared_from(1)
        }
        // A 2-D `a` is rows of samples times a shared `b`; otherwise the batch is a leading
        // axis of the product, never a contracted one.
        ComputeOp::MatMul => {
            let a_rows = rank == 2 && per_sample(0) && shared_from(1);
            a_rows || (rank >= 3 && aligned())
        }
        ComputeOp::Reduce { axes, .. } => !axes.contains(&0),
        ComputeOp::ArgReduce { axis, .. } | ComputeOp::TopK { axis, .. } => *axis != 0,
        ComputeOp::Transpose { perm } => perm.first() == Some(&0),
        ComputeOp::Concat { axis } => *axis != 0 && ins.iter().all(|(r, _)| *r == Rows::PerSample),
        ComputeOp::Slice { axis, start, end } => {
            *axis != 0 && start.symbols().is_empty() && end.symbols().is_empty()
        }
        // Rows of shared data picked by per-sample indices (an embedding), or per-sample data
        // along another axis than the batch by shared indices.
        ComputeOp::Gather { axis } => match (ins[0].0, ins[1].0) {
            (Rows::Shared, Rows::PerSample) => *axis == 0,
            (Rows::PerSample, Rows::Shared) => *axis != 0,
            _ => false,
        },
        // Batch-major by definition: q, k, v and the mask (or the rotary offsets) per sample.
        ComputeOp::Attention { .. }
        | ComputeOp::AttentionPacked { .. }
        | ComputeOp::Rotary { .. } => per_sample(0),
        // Caches outlive the run; the rest are not known to keep samples apart.
        ComputeOp::CacheWrite | ComputeOp::KvAttention { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlx_ir::{DType, HirMut, ReduceOp, UnaryOp};

    /// `x = [batch, 8, 6, 6]` through a conv, then `tail` on its `[batch, 4, 6, 6]` output.
    fn conv_then(tail: impl FnOnce(&mut HirMut, rlx_ir::ValueId) -> rlx_ir::ValueId) -> HirModule {
        let mut m = HirModule::new("g");
        let mut g = HirMut::new(&mut m);
        let b = g.dim("batch", 1, 16).unwrap();
        let shape = Shape(vec![
            b,
            Dim::constant(8),
            Dim::constant(6),
            Dim::constant(6),
        ]);
        let x = g.input("x", DType::F32, shape).unwrap();
        let w = g.param("w", DType::F32, Shape::new(&[4, 8, 3, 3])).unwrap();
        let y = g.conv(x, w, None, &[], &[1, 1, 1, 1], &[], 1).unwrap();
        let y = g.unary(UnaryOp::Relu, y).unwrap();
        let z = tail(&mut g, y);
        g.output("z", z).unwrap();
        m
    }

    #[test]
    fn convolutions_pools_and_per_image_reductions_keep_samples_apart() {
        let m = conv_then(|g, y| {
            let p = g.reduce(ReduceOp::Mean, y, &[2, 3], false).unwrap();
            let flat = g
                .reshape(p, Shape(vec![Dim::sym("batch"), Dim::constant(4)]))
                .unwrap();
            let w = g.param("fc", DType::F32, Shape::new(&[4, 10])).unwrap();
            let l = g.linear(flat, w, None, None).unwrap();
            g.softmax(l, -1).unwrap()
        });
        assert_eq!(per_sample_symbol(&m).as_deref(), Some("batch"));
    }

    #[test]
    fn anything_that_mixes_samples_is_refused() {
        let over_batch = conv_then(|g, y| g.softmax(y, 0).unwrap());
        let reduce_batch = conv_then(|g, y| g.reduce(ReduceOp::Sum, y, &[0], true).unwrap());
        let moved = conv_then(|g, y| g.transpose(y, &[1, 0, 2, 3]).unwrap());
        let merged = conv_then(|g, y| {
            g.reshape(
                y,
                Shape(vec![
                    Dim::sym("batch") * Dim::constant(4),
                    Dim::constant(36),
                ]),
            )
            .unwrap()
        });
        for m in [over_batch, reduce_batch, moved, merged] {
            assert_eq!(per_sample_symbol(&m), None, "{m}");
        }
    }
}
