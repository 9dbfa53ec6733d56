//! A plain reference interpreter over the HIR: the oracle for differential tests.
//!
//! No fusion, no threads, no arena, and nothing shared with the CPU backend's kernels or math:
//! ndarray operations and plain loops, with f32 arithmetic done in f64 and rounded once per op.
//! It evaluates the graph as written (every node, in order) and checks each result against the
//! type shape inference gave the node, so it also catches inference that disagrees with data.

mod ops;
mod vision;

use ndarray::{ArrayD, IxDyn};
use rlx_ir::hir::Op;
use rlx_ir::{DType, DimBinding, HirModule, IrError, TensorData};

use crate::error::fail;
use crate::{Error, HostData, Result, Tensor, TensorRef};

/// A value during evaluation: an n-d array of one dtype (any memory layout; read it in
/// logical order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    Bool(ArrayD<bool>),
}

/// `each!(v, a => expr)`: applies `expr` to the array of any variant, keeping the variant.
macro_rules! each {
    ($v:expr, $a:ident => $body:expr) => {
        match $v {
            Value::F32($a) => Value::F32($body),
            Value::I64($a) => Value::I64($body),
            Value::I32($a) => Value::I32($body),
            Value::Bool($a) => Value::Bool($body),
        }
    };
}
pub(crate) use each;

impl Value {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Value::F32(_) => DType::F32,
            Value::I64(_) => DType::I64,
            Value::I32(_) => DType::I32,
            Value::Bool(_) => DType::Bool,
        }
    }

    pub(crate) fn shape(&self) -> &[usize] {
        match self {
            Value::F32(a) => a.shape(),
            Value::I64(a) => a.shape(),
            Value::I32(a) => a.shape(),
            Value::Bool(a) => a.shape(),
        }
    }

    /// The same elements in logical order under another shape of the same size.
    pub(crate) fn reshaped(&self, shape: &[usize]) -> Result<Value> {
        Ok(each!(self, a => relayout(a.iter().cloned().collect(), shape)?))
    }

    fn into_data(self) -> TensorData {
        match self {
            Value::F32(a) => TensorData::F32(a.iter().copied().collect()),
            Value::I64(a) => TensorData::I64(a.iter().copied().collect()),
            Value::I32(a) => TensorData::I32(a.iter().copied().collect()),
            Value::Bool(a) => TensorData::Bool(a.iter().copied().collect()),
        }
    }
}

/// A row-major array of `shape` from elements in logical order.
pub(crate) fn relayout<T>(data: Vec<T>, shape: &[usize]) -> Result<ArrayD<T>> {
    let n = data.len();
    ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|e| Error::Shape(format!("reference: {n} elements as {shape:?}: {e}")))
}

/// Evaluates `hir` under `binding` on named inputs and params; returns the outputs in
/// `hir.outputs` order, shaped and typed as a compiled run returns them.
pub fn evaluate(
    hir: &HirModule,
    binding: &DimBinding,
    inputs: &[(&str, TensorRef<'_>)],
    params: &[(&str, TensorRef<'_>)],
) -> Result<Vec<Tensor>> {
    evaluate_stateful(hir, binding, inputs, params, &[]).map(|(outputs, _)| outputs)
}

/// As [`evaluate`], for a graph with states (KV caches): takes their contents before the run
/// and returns `(outputs, states after the run)`, states in `hir.states()` order.
pub fn evaluate_stateful(
    hir: &HirModule,
    binding: &DimBinding,
    inputs: &[(&str, TensorRef<'_>)],
    params: &[(&str, TensorRef<'_>)],
    states: &[(&str, TensorRef<'_>)],
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    check_binding(hir, binding)?;
    let mut values: Vec<Value> = Vec::with_capacity(hir.nodes.len());
    for (i, node) in hir.nodes.iter().enumerate() {
        let shape = node.ty.shape.eval(binding)?;
        let value = match &node.op {
            Op::Input { name } => leaf("input", name, inputs, node.ty.dtype, &shape)?,
            Op::Param { name } => leaf("param", name, params, node.ty.dtype, &shape)?,
            Op::State { name } => leaf("state", name, states, node.ty.dtype, &shape)?,
            Op::Constant(c) => from_data(&c.data, &c.shape)?,
            Op::Reshape { .. } => values[node.inputs[0].index()].reshaped(&shape)?,
            Op::Compute(op) => {
                let args: Vec<&Value> = node.inputs.iter().map(|v| &values[v.index()]).collect();
                ops::compute(op, &args, &shape, binding)?
            }
        };
        if value.shape() != shape.as_slice() || value.dtype() != node.ty.dtype {
            fail!(
                Compile,
                "reference: %{i} = {} gave {}{:?}, but inference says {} = {}{shape:?}",
                node.op.name(),
                value.dtype(),
                value.shape(),
                node.ty,
                node.ty.dtype
            );
        }
        values.push(value);
    }
    let tensor = |name: &str, v: Value| Tensor {
        name: name.to_string(),
        shape: v.shape().to_vec(),
        data: v.into_data(),
    };
    let outputs = hir
        .outputs
        .iter()
        .map(|o| tensor(&o.name, values[o.value.index()].clone()))
        .collect();
    // A state after the run is the result of the cache write that takes it, if any.
    let after = hir
        .states()
        .map(|(name, leaf)| {
            let writer = hir.nodes.iter().position(|n| {
                matches!(n.op, Op::Compute(rlx_ir::ComputeOp::CacheWrite)) && n.inputs[0] == leaf
            });
            tensor(name, values[writer.unwrap_or(leaf.index())].clone())
        })
        .collect();
    Ok((outputs, after))
}

/// Every symbol bound and inside its bounds, as specializing requires.
fn check_binding(hir: &HirModule, binding: &DimBinding) -> Result<()> {
    for s in &hir.symbols {
        match binding.get(&s.name) {
            Some(v) => s.check(v)?,
            None => {
                return Err(IrError::Binding(format!("symbol `{}` is not bound", s.name)).into());
            }
        }
    }
    Ok(())
}

fn leaf(
    what: &str,
    name: &str,
    given: &[(&str, TensorRef<'_>)],
    dtype: DType,
    shape: &[usize],
) -> Result<Value> {
    let Some((_, t)) = given.iter().find(|(n, _)| *n == name) else {
        fail!(Binding, "reference: {what} `{name}` is not given")
    };
    if t.data.dtype() != dtype {
        fail!(
            DType,
            "{what} `{name}`: expected {dtype}, got {}",
            t.data.dtype()
        );
    }
    if let Some(s) = t.shape
        && s != shape
    {
        fail!(Shape, "{what} `{name}`: expected {shape:?}, got {s:?}");
    }
    let numel: usize = shape.iter().product();
    if t.data.len() != numel {
        fail!(
            Shape,
            "{what} `{name}`: expected {numel} elements {shape:?}, got {}",
            t.data.len()
        );
    }
    Ok(match t.data {
        HostData::F32(d) => Value::F32(relayout(d.to_vec(), shape)?),
        HostData::I64(d) => Value::I64(relayout(d.to_vec(), shape)?),
        HostData::I32(d) => Value::I32(relayout(d.to_vec(), shape)?),
        HostData::Bool(d) => Value::Bool(relayout(d.to_vec(), shape)?),
    })
}

fn from_data(data: &TensorData, shape: &[usize]) -> Result<Value> {
    Ok(match data {
        TensorData::F32(d) => Value::F32(relayout(d.clone(), shape)?),
        TensorData::I64(d) => Value::I64(relayout(d.clone(), shape)?),
        TensorData::I32(d) => Value::I32(relayout(d.clone(), shape)?),
        TensorData::Bool(d) => Value::Bool(relayout(d.clone(), shape)?),
    })
}
