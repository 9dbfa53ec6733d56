//! Attention fusion: the block exporters and hand-written models emit —
//! split heads (reshape + transpose) of q, k, v; `q @ k^T`; optional scale (mul or div by a
//! constant); optional additive mask `[b, 1, 1, sk]`; softmax; `@ v`; merge heads (transpose +
//! reshape) — becomes one `attention_packed` op that reads heads in place. Anything that
//! starts like attention but does not fit is reported as a near miss with the reason.

use rlx_ir::hir::{Node, Op, ValueId};
use rlx_ir::{BinaryOp, ComputeOp, DType, Dim, HirModule, MaskKind, Result, Shape};

use super::PassLog;
use super::util::{const_scalar, use_counts};

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    for i in 0..m.nodes.len() {
        if !matches!(m.nodes[i].op, Op::Reshape { .. }) {
            continue;
        }
        match match_at(&m, &uses, i) {
            Ok(Some((op, inputs))) => {
                log.fusions
                    .push(format!("attention: %{i} <- {}", op.attrs().trim()));
                m.nodes[i].op = Op::Compute(op);
                m.nodes[i].inputs = inputs;
            }
            Ok(None) => {}
            Err(why) => log
                .near_misses
                .push(format!("attention ending at %{i}: {why}")),
        }
    }
    Ok(m)
}

type Match = Option<(ComputeOp, Vec<ValueId>)>;

fn compute(n: &Node) -> Option<&ComputeOp> {
    n.op.compute()
}

/// `transpose(reshape(src, [b, s, h, d]), [0, 2, 1, 3])` → (src, h, d).
fn split_heads(m: &HirModule, v: ValueId, perm: &[usize]) -> Option<(ValueId, Dim, Dim)> {
    let t = &m.nodes[v.index()];
    let Some(ComputeOp::Transpose { perm: p }) = compute(t) else {
        return None;
    };
    if p != perm {
        return None;
    }
    let r = &m.nodes[t.inputs[0].index()];
    let Op::Reshape { shape } = &r.op else {
        return None;
    };
    let src = r.inputs[0];
    let s = &m.nodes[src.index()].ty.shape;
    let ok = shape.rank() == 4 && s.rank() == 3 && s.0[0] == shape.0[0] && s.0[1] == shape.0[1];
    ok.then(|| (src, shape.0[2].clone(), shape.0[3].clone()))
}

fn match_at(m: &HirModule, uses: &[u32], root: usize) -> std::result::Result<Match, String> {
    let node = |v: ValueId| &m.nodes[v.index()];
    let t = m.nodes[root].inputs[0];
    if compute(node(t))
        != Some(&ComputeOp::Transpose {
            perm: vec![0, 2, 1, 3],
        })
    {
        return Ok(None);
    }
    let ctx = node(t).inputs[0];
    if compute(node(ctx)) != Some(&ComputeOp::MatMul) {
        return Ok(None);
    }
    let (p, vh) = (node(ctx).inputs[0], node(ctx).inputs[1]);
    let Some(ComputeOp::Softmax { axis }) = compute(node(p)) else {
        return Ok(None);
    };
    // From here on it looks like attention: every failure is a near miss.
    if *axis != 3 {
        return Err(format!("softmax over axis {axis}, not the key axis 3"));
    }
    for v in [t, ctx, p] {
        if uses[v.index()] != 1 {
            return Err(format!("intermediate {v} has {} users", uses[v.index()]));
        }
    }
    let mut s = node(p).inputs[0];
    let mut bias = None;
    if compute(node(s)) == Some(&ComputeOp::Binary(BinaryOp::Add)) {
        let scores_ty = &node(s).ty;
        let (a, b) = (node(s).inputs[0], node(s).inputs[1]);
        let (chain, mask) = if node(a).ty == *scores_ty {
            (a, b)
        } else {
            (b, a)
        };
        bias = Some(mask);
        s = chain;
    }
    let mut scale = 1.0f32;
    if let Some(ComputeOp::Binary(op @ (BinaryOp::Mul | BinaryOp::Div))) = compute(node(s)) {
        let (a, b) = (node(s).inputs[0], node(s).inputs[1]);
        let (chain, c) = match (op, const_scalar(m, b), const_scalar(m, a)) {
            (_, Some(c), _) => (a, c),
            (BinaryOp::Mul, None, Some(c)) => (b, c),
            _ => return Err(format!("scale of {s} is not a one-element f32 constant")),
        };
        scale = if *op == BinaryOp::Div { 1.0 / c } else { c };
        s = chain;
    }
    if compute(node(s)) != Some(&ComputeOp::MatMul) {
        return Err(format!(
            "softmax input does not come from q @ k^T ({s} is {})",
            node(s).op.name()
        ));
    }
    let (qh, kt) = (node(s).inputs[0], node(s).inputs[1]);
    let q =
        split_heads(m, qh, &[0, 2, 1, 3]).ok_or("q is not a head split of a [b, s, h*d] tensor")?;
    let k = split_heads(m, kt, &[0, 2, 3, 1])
        .or_else(|| {
            let Some(ComputeOp::Transpose { perm }) = compute(node(kt)) else {
                return None;
            };
            (perm == &[0, 1, 3, 2])
                .then(|| split_heads(m, node(kt).inputs[0], &[0, 2, 1, 3]))
                .flatten()
        })
        .ok_or("k^T is not a transposed head split")?;
    let v = split_heads(m, vh, &[0, 2, 1, 3]).ok_or("v is not a head split")?;
    let (Some(h), Some(d)) = (q.1.as_const(), q.2.as_const()) else {
        return Err("heads or head size is symbolic".into());
    };
    if (k.1.clone(), k.2.clone()) != (q.1.clone(), q.2.clone())
        || (v.1.clone(), v.2.clone()) != (q.1, q.2)
    {
        return Err("q, k and v split into different heads".into());
    }
    let qs = &node(q.0).ty.shape;
    let ks = &node(k.0).ty.shape;
    let want = Shape(vec![qs.0[0].clone(), qs.0[1].clone(), Dim::constant(h * d)]);
    if m.nodes[root].ty.shape != want {
        return Err(format!(
            "heads are merged into {}, expected {want}",
            m.nodes[root].ty.shape
        ));
    }
    let mut inputs = vec![q.0, k.0, v.0];
    let mask = match bias {
        None => MaskKind::None,
        Some(b) => {
            let one = Dim::constant(1);
            let bs = Shape(vec![qs.0[0].clone(), one.clone(), one, ks.0[1].clone()]);
            if node(b).ty.shape != bs || node(b).ty.dtype != DType::F32 {
                return Err(format!(
                    "mask {} is not an f32 [b, 1, 1, sk] = {bs} bias",
                    node(b).ty
                ));
            }
            inputs.push(b);
            MaskKind::Bias
        }
    };
    let (heads, head_dim) = (h as usize, d as usize);
    let op = ComputeOp::AttentionPacked {
        heads,
        head_dim,
        offsets: [0; 3],
        scale,
        causal: false,
        mask,
    };
    Ok(Some((op, inputs)))
}
