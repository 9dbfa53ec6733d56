//! Constant folding: reshapes, casts and f32 elementwise arithmetic whose operands are all
//! constants become constants (up to 65,536 elements). Params are never folded: they are
//! bound at run time. Other ops on constants are left for the kernels.

use std::sync::Arc;

use rlx_ir::hir::Op;
use rlx_ir::{BinaryOp, ComputeOp, Constant, DType, HirModule, Result, TensorData, UnaryOp};

use super::PassLog;

const MAX_FOLD: usize = 1 << 16;

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let mut folded = 0usize;
    for i in 0..m.nodes.len() {
        let consts: Option<Vec<Arc<Constant>>> = m.nodes[i]
            .inputs
            .iter()
            .map(|v| match &m.nodes[v.index()].op {
                Op::Constant(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let Some(consts) = consts.filter(|c| !c.is_empty()) else {
            continue;
        };
        let Some(shape) = m.nodes[i].ty.shape.as_static() else {
            continue;
        };
        if shape.iter().product::<usize>() > MAX_FOLD {
            continue;
        }
        let data = match &m.nodes[i].op {
            Op::Reshape { .. } => Some(consts[0].data.clone()),
            Op::Compute(ComputeOp::Cast { to: DType::F32 }) => {
                to_f32(&consts[0].data).map(TensorData::F32)
            }
            Op::Compute(ComputeOp::Unary(op)) => unary(*op, &consts[0].data),
            Op::Compute(ComputeOp::Binary(op)) => binary(*op, &consts[0], &consts[1], &shape),
            _ => None,
        };
        if let Some(data) = data {
            m.nodes[i].op = Op::Constant(Arc::new(Constant { shape, data }));
            m.nodes[i].inputs.clear();
            folded += 1;
        }
    }
    if folded > 0 {
        log.fusions
            .push(format!("fold_constants: folded {folded} op(s)"));
    }
    Ok(m)
}

fn to_f32(d: &TensorData) -> Option<Vec<f32>> {
    Some(match d {
        TensorData::F32(v) => v.clone(),
        TensorData::I64(v) => v.iter().map(|x| *x as f32).collect(),
        TensorData::I32(v) => v.iter().map(|x| *x as f32).collect(),
        TensorData::Bool(v) => v.iter().map(|x| f32::from(u8::from(*x))).collect(),
    })
}

/// Only ops whose f32 result is exactly what the kernel computes (IEEE basic operations).
fn unary(op: UnaryOp, d: &TensorData) -> Option<TensorData> {
    let TensorData::F32(v) = d else { return None };
    let f: fn(f32) -> f32 = match op {
        UnaryOp::Neg => |x| -x,
        UnaryOp::Abs => f32::abs,
        UnaryOp::Sqrt => f32::sqrt,
        // NaN stays NaN, as the kernels keep it (`f32::max` would give 0).
        UnaryOp::Relu => |x| if x < 0.0 { 0.0 } else { x },
        UnaryOp::Relu6 => |x| x.clamp(0.0, 6.0),
        _ => return None,
    };
    Some(TensorData::F32(v.iter().map(|x| f(*x)).collect()))
}

fn binary(op: BinaryOp, a: &Constant, b: &Constant, out: &[usize]) -> Option<TensorData> {
    let (TensorData::F32(x), TensorData::F32(y)) = (&a.data, &b.data) else {
        return None;
    };
    let f: fn(f32, f32) -> f32 = match op {
        BinaryOp::Add => |a, b| a + b,
        BinaryOp::Sub => |a, b| a - b,
        BinaryOp::Mul => |a, b| a * b,
        BinaryOp::Div => |a, b| a / b,
        _ => return None,
    };
    let (sa, sb) = (strides(&a.shape, out), strides(&b.shape, out));
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    for i in 0..n {
        let (mut oa, mut ob, mut rem) = (0, 0, i);
        for d in (0..out.len()).rev() {
            let idx = rem % out[d];
            rem /= out[d];
            oa += idx * sa[d];
            ob += idx * sb[d];
        }
        res.push(f(x[oa], y[ob]));
    }
    Some(TensorData::F32(res))
}

/// Broadcast strides of `shape` against `out` (0 on broadcast dims).
fn strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len() - shape.len();
    let mut s = vec![0; out.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        s[pad + i] = if shape[i] == 1 { 0 } else { acc };
        acc *= shape[i];
    }
    s
}
