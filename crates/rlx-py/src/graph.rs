//! `rlx.Graph` and `rlx.Value`: the HIR builder as Python sees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use numpy::PyUntypedArray;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyString, PyTuple};
use rlx_ir::{
    BinaryOp, CompareOp, DType, Dim, HirModule, HirMut, PoolKind, ReduceOp, Shape, TensorData,
    TensorType, UnaryOp, ValueId,
};
use rlx_runtime::HostData;

use crate::args::{F32, Int};
use crate::dims::{dtype_from_py, numpy_name, shape_from_py, shape_to_py};
use crate::errors::{DTypeError, GraphError, ShapeError, UnsupportedOpError, to_py};

/// Graph ids let a value say which graph it belongs to.
static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// A model graph whose dims may be symbolic. Values it returns belong to it alone.
#[pyclass(name = "Graph", module = "rlx", frozen)]
pub struct PyGraph {
    id: u64,
    module: Mutex<HirModule>,
}

/// A value of a graph: its id and type, fixed when it was made.
#[pyclass(name = "Value", module = "rlx", frozen)]
pub struct PyValue {
    graph: u64,
    id: ValueId,
    ty: TensorType,
}

#[pymethods]
impl PyValue {
    /// Dims as ints, or as text ("batch", "batch*seq") when symbolic.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        shape_to_py(py, &self.ty.shape)
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        numpy_name(self.ty.dtype)
    }

    /// The node index in its graph (`%id` in the printed IR).
    #[getter]
    fn id(&self) -> u32 {
        self.id.0
    }

    fn __repr__(&self) -> String {
        format!("Value({}: {})", self.id, self.ty)
    }
}

fn unary_op(name: &str) -> PyResult<UnaryOp> {
    UnaryOp::parse(name).ok_or_else(|| {
        let known: Vec<&str> = UnaryOp::ALL.iter().map(|o| o.name()).collect();
        UnsupportedOpError::new_err(format!(
            "unknown unary op / activation `{name}`; available: {known:?}"
        ))
    })
}

fn binary_op(name: &str) -> PyResult<BinaryOp> {
    BinaryOp::parse(name).ok_or_else(|| {
        let known: Vec<&str> = BinaryOp::ALL.iter().map(|o| o.name()).collect();
        UnsupportedOpError::new_err(format!("unknown binary op `{name}`; available: {known:?}"))
    })
}

fn compare_op(name: &str) -> PyResult<CompareOp> {
    CompareOp::parse(name).ok_or_else(|| {
        let known: Vec<&str> = CompareOp::ALL.iter().map(|o| o.name()).collect();
        UnsupportedOpError::new_err(format!("unknown compare op `{name}`; available: {known:?}"))
    })
}

/// An int that is not a bool (`True` is an int to Python, never an axis or a bound to us).
fn strict_int(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if obj.is_instance_of::<PyBool>() {
        return None;
    }
    obj.extract::<i64>().ok()
}

/// Reduce axes: `None` (all), an int, or a non-empty sequence of ints.
fn axes_from_py(what: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<i64>> {
    let Some(obj) = obj else {
        return Ok(Vec::new());
    };
    if let Some(a) = strict_int(obj) {
        return Ok(vec![a]);
    }
    let bad = || {
        ShapeError::new_err(format!(
            "{what}: axes must be None, an int or a sequence of ints, got {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    };
    if obj.is_instance_of::<PyString>() {
        return Err(bad());
    }
    let items: Vec<Bound<'_, PyAny>> = obj.extract().map_err(|_| bad())?;
    let axes = items
        .iter()
        .map(|a| strict_int(a).ok_or_else(bad))
        .collect::<PyResult<Vec<i64>>>()?;
    // The core reads no axes as "all axes"; numpy reads `axis=()` as "none", so refuse it.
    if axes.is_empty() {
        return Err(ShapeError::new_err(format!(
            "{what}: axes=() is ambiguous; pass axes=None to reduce over every axis"
        )));
    }
    Ok(axes)
}

/// A slice bound: an int (negative counts from the end) or a dim expression ("seq", "seq-1").
fn bound_from_py(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<Dim> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Dim::parse(s.to_str()?).map_err(to_py);
    }
    strict_int(obj).map(Dim::constant).ok_or_else(|| {
        ShapeError::new_err(format!(
            "{what}: a bound is an int or a dim expression such as \"seq\", got {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })
}

/// The elements and shape of a constant. Lists and scalars become float32 unless `dtype` says
/// otherwise; arrays keep their dtype, which must be an rlx dtype (converting needs `dtype=`).
fn constant_from_py(
    value: &Bound<'_, PyAny>,
    dtype: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Vec<usize>, TensorData)> {
    let py = value.py();
    let np = py.import("numpy")?;
    // numpy scalars (`np.int64(3)`) carry a dtype like arrays do.
    let typed =
        value.cast::<PyUntypedArray>().is_ok() || value.is_instance(&np.getattr("generic")?)?;
    let want = match dtype {
        Some(d) => Some(dtype_from_py(d)?),
        None if typed => None,
        None => Some(DType::F32),
    };
    // None and other objects would become NaN under a float dtype: only numbers are constants.
    if !typed {
        let kind: String = np
            .call_method1("asarray", (value,))
            .and_then(|a| a.getattr("dtype")?.getattr("kind")?.extract())
            .unwrap_or_else(|_| "O".to_string());
        if !matches!(kind.as_str(), "b" | "i" | "u" | "f") {
            return Err(DTypeError::new_err(format!(
                "constant: expected numbers (a number, a nested list of numbers, or an array), \
                 got {}",
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            )));
        }
    }
    // A fresh C-ordered copy (0-d stays 0-d); the constant owns its data anyway.
    let kw = PyDict::new(py);
    kw.set_item("order", "C")?;
    kw.set_item("copy", true)?;
    if let Some(d) = want {
        kw.set_item("dtype", numpy_name(d))?;
    }
    let arr = np
        .getattr("array")?
        .call((value,), Some(&kw))
        .map_err(|e| {
            let to = want.map(numpy_name).unwrap_or("an array");
            DTypeError::new_err(format!("constant: cannot convert to {to}: {e}"))
        })?;
    let v = crate::arrays::view("constant", &arr, want, false).map_err(|e| {
        if want.is_some() {
            return e;
        }
        let name = arr
            .getattr("dtype")
            .and_then(|d| d.str())
            .map(|d| d.to_string())
            .unwrap_or_default();
        DTypeError::new_err(format!(
            "constant: {name} is not an rlx dtype (float32, int64, int32, bool); rlx never casts \
             silently: pass dtype=\"float32\" (or another) to convert"
        ))
    })?;
    let data = match v.host_data() {
        HostData::F32(d) => TensorData::F32(d.to_vec()),
        HostData::I64(d) => TensorData::I64(d.to_vec()),
        HostData::I32(d) => TensorData::I32(d.to_vec()),
        HostData::Bool(d) => TensorData::Bool(d.to_vec()),
    };
    Ok((v.shape.clone(), data))
}

impl PyGraph {
    fn lock(&self) -> MutexGuard<'_, HirModule> {
        // A panic cannot leave the module half-edited (every edit is one push), so a poisoned
        // lock is still usable.
        self.module.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the module as it is now (pipelines snapshot the graph).
    pub fn snapshot(&self) -> HirModule {
        self.lock().clone()
    }

    fn id_of(&self, v: &PyValue) -> PyResult<ValueId> {
        if v.graph != self.id {
            return Err(GraphError::new_err(format!(
                "{v_repr} belongs to another graph",
                v_repr = v.__repr__()
            )));
        }
        Ok(v.id)
    }

    /// Runs one builder call and wraps the value it makes.
    fn build(
        &self,
        f: impl FnOnce(&mut HirMut<'_>) -> rlx_ir::Result<ValueId>,
    ) -> PyResult<PyValue> {
        let mut m = self.lock();
        let id = f(&mut HirMut::new(&mut m)).map_err(to_py)?;
        let ty = m.ty(id).map_err(to_py)?.clone();
        Ok(PyValue {
            graph: self.id,
            id,
            ty,
        })
    }

    fn leaf(
        &self,
        name: &str,
        shape: &Bound<'_, PyAny>,
        dtype: &Bound<'_, PyAny>,
        kind: Leaf,
    ) -> PyResult<PyValue> {
        let what = format!("{} `{name}`", kind.name());
        let shape: Shape = shape_from_py(&what, shape)?;
        let dtype: DType = dtype_from_py(dtype)?;
        self.build(|b| match kind {
            Leaf::Input => b.input(name, dtype, shape),
            Leaf::Param => b.param(name, dtype, shape),
            Leaf::State => b.state(name, dtype, shape),
        })
    }
}

#[pymethods]
impl PyGraph {
    /// `dims` declares the symbols: `{"batch": (1, 4096)}` (inclusive bounds).
    #[new]
    #[pyo3(signature = (name, dims = None))]
    fn new(name: &str, dims: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let g = PyGraph {
            id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
            module: Mutex::new(HirModule::new(name)),
        };
        for (k, v) in dims.into_iter().flat_map(|d| d.iter()) {
            let sym: String = k
                .extract()
                .map_err(|_| GraphError::new_err("dim names must be str"))?;
            let (min, max): (i64, i64) = v.extract().map_err(|_| {
                GraphError::new_err(format!(
                    "dim `{sym}`: bounds must be a (min, max) tuple of ints, got {v}"
                ))
            })?;
            g.dim(&sym, Int(min), Int(max))?;
        }
        Ok(g)
    }

    /// Declares symbol `name` with inclusive bounds.
    fn dim(&self, name: &str, min: Int, max: Int) -> PyResult<()> {
        HirMut::new(&mut self.lock())
            .dim(name, min.0, max.0)
            .map(|_| ())
            .map_err(to_py)
    }

    #[pyo3(signature = (name, shape, dtype = None))]
    fn input(
        &self,
        py: Python<'_>,
        name: &str,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyValue> {
        let f32 = "float32".into_pyobject(py)?.into_any();
        self.leaf(name, shape, dtype.unwrap_or(&f32), Leaf::Input)
    }

    /// A weight; its shape must be static.
    #[pyo3(signature = (name, shape, dtype = None))]
    fn param(
        &self,
        py: Python<'_>,
        name: &str,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyValue> {
        let f32 = "float32".into_pyobject(py)?.into_any();
        self.leaf(name, shape, dtype.unwrap_or(&f32), Leaf::Param)
    }

    /// State that outlives a run (a KV cache `[batch, kv_heads, ctx, head_dim]`): held by the
    /// caller (`CompiledGraph.run_stateful`), updated in place by the one `cache_write` that
    /// must take it.
    #[pyo3(signature = (name, shape, dtype = None))]
    fn state(
        &self,
        py: Python<'_>,
        name: &str,
        shape: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyValue> {
        let f32 = "float32".into_pyobject(py)?.into_any();
        self.leaf(name, shape, dtype.unwrap_or(&f32), Leaf::State)
    }

    /// Writes `new` (`[batch, kv_heads, seq, head_dim]`) into the state `cache` at rows
    /// `pos[b] ..` of each row `b` (`pos`: int64/int32 of batch or 1 values, read at run time);
    /// returns the updated cache.
    fn cache_write(&self, cache: &PyValue, new: &PyValue, pos: &PyValue) -> PyResult<PyValue> {
        let (c, n, p) = (self.id_of(cache)?, self.id_of(new)?, self.id_of(pos)?);
        self.build(|g| g.cache_write(c, n, p))
    }

    /// Causal attention of `q` (`[batch, heads, seq, head_dim]`) over the caches `k`, `v`:
    /// query `i` of row `b` sits at position `pos[b] + i` and sees keys `0 ..= pos[b] + i`.
    #[pyo3(signature = (q, k, v, pos, scale = None))]
    fn kv_attention(
        &self,
        q: &PyValue,
        k: &PyValue,
        v: &PyValue,
        pos: &PyValue,
        scale: Option<F32>,
    ) -> PyResult<PyValue> {
        let (q, k, v, p) = (
            self.id_of(q)?,
            self.id_of(k)?,
            self.id_of(v)?,
            self.id_of(pos)?,
        );
        self.build(|g| g.kv_attention(q, k, v, p, scale.map(|s| s.0)))
    }

    /// `silu(x[..., :n]) * x[..., n:]` over a last axis of `2n` (SwiGLU's gate).
    fn swiglu(&self, x: &PyValue) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        self.build(|g| g.swiglu(x))
    }

    /// `x @ w (+ b)` with an optional activation ("gelu", "relu", ...); `w` is `[in, out]`, or
    /// `[out, in]` (PyTorch's layout, read transposed in place) with `transpose_w=True`.
    #[pyo3(signature = (x, w, b = None, activation = None, transpose_w = false))]
    fn linear(
        &self,
        x: &PyValue,
        w: &PyValue,
        b: Option<&PyValue>,
        activation: Option<&str>,
        transpose_w: bool,
    ) -> PyResult<PyValue> {
        let (x, w) = (self.id_of(x)?, self.id_of(w)?);
        let b = b.map(|b| self.id_of(b)).transpose()?;
        let act = activation.map(unary_op).transpose()?;
        self.build(|g| g.linear_with(x, w, b, act, transpose_w))
    }

    fn matmul(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        let (a, b) = (self.id_of(a)?, self.id_of(b)?);
        self.build(|g| g.matmul(a, b))
    }

    /// An elementwise binary op by name, with numpy broadcasting.
    fn binary(&self, op: &str, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        let (op, a, b) = (binary_op(op)?, self.id_of(a)?, self.id_of(b)?);
        self.build(|g| g.binary(op, a, b))
    }

    fn add(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("add", a, b)
    }
    fn sub(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("sub", a, b)
    }
    fn mul(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("mul", a, b)
    }
    fn div(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("div", a, b)
    }
    fn maximum(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("max", a, b)
    }
    fn minimum(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("min", a, b)
    }
    /// Same as `maximum` (the op's name in the IR).
    fn max(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("max", a, b)
    }
    /// Same as `minimum` (the op's name in the IR).
    fn min(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("min", a, b)
    }

    /// An elementwise unary op by name ("relu", "gelu", "gelu_tanh", "silu", ...).
    fn unary(&self, op: &str, x: &PyValue) -> PyResult<PyValue> {
        let (op, x) = (unary_op(op)?, self.id_of(x)?);
        self.build(|g| g.unary(op, x))
    }

    fn relu(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("relu", x)
    }
    fn gelu(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("gelu", x)
    }
    fn gelu_tanh(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("gelu_tanh", x)
    }
    fn silu(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("silu", x)
    }
    fn sigmoid(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("sigmoid", x)
    }
    fn tanh(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("tanh", x)
    }
    fn exp(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("exp", x)
    }
    fn neg(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("neg", x)
    }

    #[pyo3(signature = (x, axis = Int(-1)), text_signature = "(self, x, axis=-1)")]
    fn softmax(&self, x: &PyValue, axis: Int) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        self.build(|g| g.softmax(x, axis.0))
    }

    /// Layer norm over the last axis.
    #[pyo3(signature = (x, gamma, beta, eps = F32(1e-5)), text_signature = "(self, x, gamma, beta, eps=1e-05)")]
    fn layer_norm(
        &self,
        x: &PyValue,
        gamma: &PyValue,
        beta: &PyValue,
        eps: F32,
    ) -> PyResult<PyValue> {
        let (x, gamma, beta) = (self.id_of(x)?, self.id_of(gamma)?, self.id_of(beta)?);
        self.build(|g| g.layer_norm(x, gamma, beta, eps.0))
    }

    /// Reshape; one dim may be -1 (inferred, symbolically).
    fn reshape(&self, x: &PyValue, shape: &Bound<'_, PyAny>) -> PyResult<PyValue> {
        let shape = shape_from_py("reshape", shape)?;
        let x = self.id_of(x)?;
        self.build(|g| g.reshape(x, shape))
    }

    /// Permutes the axes; negative axes count from the end.
    fn transpose(&self, x: &PyValue, perm: Vec<Int>) -> PyResult<PyValue> {
        let perm: Vec<i64> = perm.iter().map(|p| p.0).collect();
        let rank = x.ty.shape.rank() as i64;
        let perm = perm
            .iter()
            .map(|&p| {
                let a = if p < 0 { p + rank } else { p };
                usize::try_from(a)
                    .ok()
                    .filter(|a| (*a as i64) < rank)
                    .ok_or_else(|| {
                        ShapeError::new_err(format!(
                            "transpose perm {perm:?} is not a permutation of rank {rank}"
                        ))
                    })
            })
            .collect::<PyResult<Vec<usize>>>()?;
        let x = self.id_of(x)?;
        self.build(|g| g.transpose(x, &perm))
    }

    fn log(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("log", x)
    }
    fn sqrt(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("sqrt", x)
    }
    fn rsqrt(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("rsqrt", x)
    }
    fn abs(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("abs", x)
    }
    fn erf(&self, x: &PyValue) -> PyResult<PyValue> {
        self.unary("erf", x)
    }

    /// `a ** b`, elementwise with broadcasting.
    fn pow(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.binary("pow", a, b)
    }

    /// A constant baked into the graph: a numpy array or scalar keeps its dtype (which must be an
    /// rlx dtype); a list or a Python number becomes float32; `dtype` converts explicitly.
    #[pyo3(signature = (value, dtype = None))]
    fn constant(
        &self,
        value: &Bound<'_, PyAny>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyValue> {
        let (shape, data) = constant_from_py(value, dtype)?;
        self.build(|g| g.constant(&shape, data))
    }

    /// A float32 constant of shape `(1,)`, which broadcasts against anything.
    fn scalar(&self, value: F32) -> PyResult<PyValue> {
        self.build(|g| g.scalar(value.0))
    }

    /// An elementwise comparison by name ("eq", "ne", "lt", "le", "gt", "ge"); the result is bool.
    fn compare(&self, op: &str, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        let (op, a, b) = (compare_op(op)?, self.id_of(a)?, self.id_of(b)?);
        self.build(|g| g.compare(op, a, b))
    }

    fn eq(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.compare("eq", a, b)
    }
    fn ne(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.compare("ne", a, b)
    }
    fn lt(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.compare("lt", a, b)
    }
    fn le(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.compare("le", a, b)
    }
    fn gt(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.compare("gt", a, b)
    }
    fn ge(&self, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        self.compare("ge", a, b)
    }

    /// `cond ? a : b` with broadcasting; `cond` is bool.
    #[pyo3(name = "where")]
    fn where_(&self, cond: &PyValue, a: &PyValue, b: &PyValue) -> PyResult<PyValue> {
        let (c, a, b) = (self.id_of(cond)?, self.id_of(a)?, self.id_of(b)?);
        self.build(|g| g.where_(c, a, b))
    }

    /// RMS norm over the last axis: `x / sqrt(mean(x**2) + eps) * gamma`.
    #[pyo3(signature = (x, gamma, eps = F32(1e-6)), text_signature = "(self, x, gamma, eps=1e-06)")]
    fn rms_norm(&self, x: &PyValue, gamma: &PyValue, eps: F32) -> PyResult<PyValue> {
        let (x, gamma) = (self.id_of(x)?, self.id_of(gamma)?);
        self.build(|g| g.rms_norm(x, gamma, eps.0))
    }

    /// Rotary position embedding (half rotation, as Llama / Qwen2) of `x` (`[batch, heads,
    /// seq, dim]`, dim even) at positions `offset[b] + s`; `offset` is an int64 or int32 value
    /// of `batch` (or 1) entries read at run time.
    #[pyo3(signature = (x, offset, theta = F32(10_000.0)), text_signature = "(self, x, offset, theta=10000.0)")]
    fn rotary(&self, x: &PyValue, offset: &PyValue, theta: F32) -> PyResult<PyValue> {
        let (x, offset) = (self.id_of(x)?, self.id_of(offset)?);
        self.build(|g| g.rotary(x, offset, theta.0))
    }

    /// Convolution (ONNX Conv) of `x = [batch, c, spatial..]` with `w = [m, c / groups,
    /// kernel..]` and an optional bias `[m]`. `strides` / `dilations` default to 1 per spatial
    /// axis, `pads` (begins, then ends) to 0.
    #[pyo3(
        signature = (x, w, b = None, strides = None, pads = None, dilations = None, groups = Int(1)),
        text_signature = "(self, x, w, b=None, strides=None, pads=None, dilations=None, groups=1)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        x: &PyValue,
        w: &PyValue,
        b: Option<&PyValue>,
        strides: Option<Vec<Int>>,
        pads: Option<Vec<Int>>,
        dilations: Option<Vec<Int>>,
        groups: Int,
    ) -> PyResult<PyValue> {
        let (x, w) = (self.id_of(x)?, self.id_of(w)?);
        let b = b.map(|b| self.id_of(b)).transpose()?;
        let (st, pa, di) = (
            sizes("strides", strides)?,
            sizes("pads", pads)?,
            sizes("dilations", dilations)?,
        );
        let groups = sizes("groups", Some(vec![groups]))?[0];
        self.build(|g| g.conv(x, w, b, &st, &pa, &di, groups))
    }

    /// Max pooling (ONNX MaxPool) over `kernel`, defaults as for `conv`.
    #[pyo3(signature = (x, kernel, strides = None, pads = None, dilations = None, ceil_mode = false))]
    fn max_pool(
        &self,
        x: &PyValue,
        kernel: Vec<Int>,
        strides: Option<Vec<Int>>,
        pads: Option<Vec<Int>>,
        dilations: Option<Vec<Int>>,
        ceil_mode: bool,
    ) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        let k = sizes("kernel", Some(kernel))?;
        let (st, pa, di) = (
            sizes("strides", strides)?,
            sizes("pads", pads)?,
            sizes("dilations", dilations)?,
        );
        self.build(|g| g.pool(PoolKind::Max, x, &k, &st, &pa, &di, ceil_mode, false))
    }

    /// Average pooling (ONNX AveragePool); pads count toward the divisor only with
    /// `count_include_pad`, dilations spread the window's taps (defaults as for `conv`).
    #[pyo3(signature = (x, kernel, strides = None, pads = None, ceil_mode = false, count_include_pad = false, dilations = None))]
    #[allow(clippy::too_many_arguments)]
    fn avg_pool(
        &self,
        x: &PyValue,
        kernel: Vec<Int>,
        strides: Option<Vec<Int>>,
        pads: Option<Vec<Int>>,
        ceil_mode: bool,
        count_include_pad: bool,
        dilations: Option<Vec<Int>>,
    ) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        let k = sizes("kernel", Some(kernel))?;
        let (st, pa, di) = (
            sizes("strides", strides)?,
            sizes("pads", pads)?,
            sizes("dilations", dilations)?,
        );
        self.build(|g| {
            g.pool(
                PoolKind::Avg,
                x,
                &k,
                &st,
                &pa,
                &di,
                ceil_mode,
                count_include_pad,
            )
        })
    }

    /// The int64 index of the largest element along `axis` (ONNX ArgMax): the first of equal
    /// ones, or the last with `select_last_index`; a NaN counts as the largest.
    #[pyo3(
        signature = (x, axis = Int(0), keep_dim = true, select_last_index = false),
        text_signature = "(self, x, axis=0, keep_dim=True, select_last_index=False)"
    )]
    fn argmax(
        &self,
        x: &PyValue,
        axis: Int,
        keep_dim: bool,
        select_last_index: bool,
    ) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        self.build(|g| g.arg_reduce(x, true, axis.0, keep_dim, select_last_index))
    }

    /// The int64 indices of the `k` largest (or, with `largest=False`, smallest) elements along
    /// `axis`, in order; the lower index comes first among equal elements and a NaN ranks above
    /// every number (ONNX TopK). Gather the values with these indices.
    #[pyo3(
        signature = (x, k, axis = Int(-1), largest = true),
        text_signature = "(self, x, k, axis=-1, largest=True)"
    )]
    fn top_k(&self, x: &PyValue, k: usize, axis: Int, largest: bool) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        self.build(|g| g.top_k(x, axis.0, k, largest))
    }

    /// As `argmax`, for the smallest element (a NaN counts as the smallest).
    #[pyo3(
        signature = (x, axis = Int(0), keep_dim = true, select_last_index = false),
        text_signature = "(self, x, axis=0, keep_dim=True, select_last_index=False)"
    )]
    fn argmin(
        &self,
        x: &PyValue,
        axis: Int,
        keep_dim: bool,
        select_last_index: bool,
    ) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        self.build(|g| g.arg_reduce(x, false, axis.0, keep_dim, select_last_index))
    }

    /// Local response normalization across channels (ONNX LRN).
    #[pyo3(
        signature = (x, size, alpha = F32(1e-4), beta = F32(0.75), bias = F32(1.0)),
        text_signature = "(self, x, size, alpha=0.0001, beta=0.75, bias=1.0)"
    )]
    fn lrn(&self, x: &PyValue, size: Int, alpha: F32, beta: F32, bias: F32) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        let size = sizes("size", Some(vec![size]))?[0];
        self.build(|g| g.lrn(x, size, alpha.0, beta.0, bias.0))
    }

    /// A reduction by name ("reduce_sum", "reduce_mean", "reduce_max") over `axes` (an int, a
    /// sequence of ints, or None for every axis).
    #[pyo3(signature = (op, x, axes = None, keep_dim = false))]
    fn reduce(
        &self,
        op: &str,
        x: &PyValue,
        axes: Option<&Bound<'_, PyAny>>,
        keep_dim: bool,
    ) -> PyResult<PyValue> {
        let op = ReduceOp::parse(op).ok_or_else(|| {
            let known: Vec<&str> = ReduceOp::ALL.iter().map(|o| o.name()).collect();
            UnsupportedOpError::new_err(format!("unknown reduction `{op}`; available: {known:?}"))
        })?;
        let axes = axes_from_py(op.name(), axes)?;
        let x = self.id_of(x)?;
        self.build(|g| g.reduce(op, x, &axes, keep_dim))
    }

    #[pyo3(signature = (x, axes = None, keep_dim = false))]
    fn reduce_sum(
        &self,
        x: &PyValue,
        axes: Option<&Bound<'_, PyAny>>,
        keep_dim: bool,
    ) -> PyResult<PyValue> {
        self.reduce("reduce_sum", x, axes, keep_dim)
    }

    #[pyo3(signature = (x, axes = None, keep_dim = false))]
    fn reduce_mean(
        &self,
        x: &PyValue,
        axes: Option<&Bound<'_, PyAny>>,
        keep_dim: bool,
    ) -> PyResult<PyValue> {
        self.reduce("reduce_mean", x, axes, keep_dim)
    }

    #[pyo3(signature = (x, axes = None, keep_dim = false))]
    fn reduce_max(
        &self,
        x: &PyValue,
        axes: Option<&Bound<'_, PyAny>>,
        keep_dim: bool,
    ) -> PyResult<PyValue> {
        self.reduce("reduce_max", x, axes, keep_dim)
    }

    /// Joins values along `axis`; the other dims must match.
    #[pyo3(signature = (values, axis = Int(0)), text_signature = "(self, values, axis=0)")]
    fn concat(&self, values: Vec<PyRef<'_, PyValue>>, axis: Int) -> PyResult<PyValue> {
        let ids = values
            .iter()
            .map(|v| self.id_of(v))
            .collect::<PyResult<Vec<_>>>()?;
        self.build(|g| g.concat(&ids, axis.0))
    }

    /// `x[start:end]` along `axis`; bounds are ints (negative counts from the end) or dim
    /// expressions such as "seq" or "seq-1", checked when a variant is specialized.
    #[pyo3(signature = (x, axis, start, end = None))]
    fn slice(
        &self,
        x: &PyValue,
        axis: Int,
        start: &Bound<'_, PyAny>,
        end: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyValue> {
        let start = bound_from_py("slice start", start)?;
        let end = end.map(|e| bound_from_py("slice end", e)).transpose()?;
        let x = self.id_of(x)?;
        self.build(|g| g.slice(x, axis.0, start, end))
    }

    /// `numpy.take(data, indices, axis)`; indices are int64 or int32, checked when run
    /// (out of range raises IndexError).
    #[pyo3(signature = (data, indices, axis = Int(0)), text_signature = "(self, data, indices, axis=0)")]
    fn gather(&self, data: &PyValue, indices: &PyValue, axis: Int) -> PyResult<PyValue> {
        let (d, i) = (self.id_of(data)?, self.id_of(indices)?);
        self.build(|g| g.gather(d, i, axis.0))
    }

    /// Converts to `dtype` (the one place rlx converts dtypes: when asked).
    fn cast(&self, x: &PyValue, dtype: &Bound<'_, PyAny>) -> PyResult<PyValue> {
        let to = dtype_from_py(dtype)?;
        let x = self.id_of(x)?;
        self.build(|g| g.cast(x, to))
    }

    /// Scaled dot-product attention over `[batch, heads, seq, head_dim]` q, k, v. `mask` is a
    /// `[batch, key_len]` padding mask (non-zero = attend); `scale` defaults to
    /// `1/sqrt(head_dim)`.
    #[pyo3(signature = (q, k, v, mask = None, scale = None, causal = false))]
    fn attention(
        &self,
        q: &PyValue,
        k: &PyValue,
        v: &PyValue,
        mask: Option<&PyValue>,
        scale: Option<f32>,
        causal: bool,
    ) -> PyResult<PyValue> {
        let (q, k, v) = (self.id_of(q)?, self.id_of(k)?, self.id_of(v)?);
        let mask = mask.map(|m| self.id_of(m)).transpose()?;
        self.build(|g| g.attention(q, k, v, mask, scale, causal))
    }

    /// Adds the named output.
    fn output(&self, name: &str, value: &PyValue) -> PyResult<()> {
        let v = self.id_of(value)?;
        HirMut::new(&mut self.lock()).output(name, v).map_err(to_py)
    }

    /// The graph as bytes (checksummed; read back by `Graph.from_bytes` of the same rlx
    /// version), for caching an import.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = rlx_runtime::aot::graph_to_bytes(&self.lock()).map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// A graph saved by `to_bytes`; `ModelFormatError` for anything else.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        let hir = rlx_runtime::aot::graph_from_bytes(data).map_err(to_py)?;
        Ok(PyGraph {
            id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
            module: Mutex::new(hir),
        })
    }

    /// Checks the whole graph (the builder already checks every op as it is added).
    fn verify(&self) -> PyResult<()> {
        let m = self.lock();
        if m.outputs.is_empty() {
            return Err(GraphError::new_err(format!(
                "graph `{}` has no outputs: mark at least one with g.output(name, value)",
                m.name
            )));
        }
        m.verify().map_err(to_py)
    }

    #[getter]
    fn name(&self) -> String {
        self.lock().name.clone()
    }

    #[getter]
    fn inputs(&self) -> Vec<String> {
        self.lock().inputs().map(|(n, _)| n.to_string()).collect()
    }

    #[getter]
    fn params(&self) -> Vec<String> {
        self.lock().params().map(|(n, _)| n.to_string()).collect()
    }

    #[getter]
    fn states(&self) -> Vec<String> {
        self.lock().states().map(|(n, _)| n.to_string()).collect()
    }

    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.lock().outputs.iter().map(|o| o.name.clone()).collect()
    }

    /// Declared symbols: name -> (min, max).
    #[getter]
    fn dims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for s in &self.lock().symbols {
            d.set_item(&s.name, (s.min, s.max))?;
        }
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.lock().len()
    }

    /// The HIR text.
    fn __str__(&self) -> String {
        self.lock().to_string()
    }

    fn __repr__(&self) -> String {
        let m = self.lock();
        format!(
            "<rlx.Graph '{}': {} nodes, {} outputs>",
            m.name,
            m.len(),
            m.outputs.len()
        )
    }
}

/// The kinds of named leaf a Python graph declares.
#[derive(Clone, Copy)]
enum Leaf {
    Input,
    Param,
    State,
}

impl Leaf {
    fn name(self) -> &'static str {
        match self {
            Leaf::Input => "input",
            Leaf::Param => "param",
            Leaf::State => "state",
        }
    }
}

/// Non-negative window sizes (empty when not given).
fn sizes(what: &str, v: Option<Vec<Int>>) -> PyResult<Vec<usize>> {
    v.unwrap_or_default()
        .into_iter()
        .map(|i| {
            usize::try_from(i.0)
                .ok()
                .filter(|n| *n < (1 << 31))
                .ok_or_else(|| {
                    ShapeError::new_err(format!("{what}: {} is not a size in [0, 2**31)", i.0))
                })
        })
        .collect()
}
