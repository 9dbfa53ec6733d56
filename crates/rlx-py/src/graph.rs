//! `rlx.Graph` and `rlx.Value`: the HIR builder as Python sees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use rlx_ir::{BinaryOp, DType, HirModule, HirMut, Shape, TensorType, UnaryOp, ValueId};

use crate::dims::{dtype_from_py, numpy_name, shape_from_py, shape_to_py};
use crate::errors::{GraphError, ShapeError, UnsupportedOpError, to_py};

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
        param: bool,
    ) -> PyResult<PyValue> {
        let what = format!("{} `{name}`", if param { "param" } else { "input" });
        let shape: Shape = shape_from_py(&what, shape)?;
        let dtype: DType = dtype_from_py(dtype)?;
        self.build(|b| {
            if param {
                b.param(name, dtype, shape)
            } else {
                b.input(name, dtype, shape)
            }
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
            g.dim(&sym, min, max)?;
        }
        Ok(g)
    }

    /// Declares symbol `name` with inclusive bounds.
    fn dim(&self, name: &str, min: i64, max: i64) -> PyResult<()> {
        HirMut::new(&mut self.lock())
            .dim(name, min, max)
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
        self.leaf(name, shape, dtype.unwrap_or(&f32), false)
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
        self.leaf(name, shape, dtype.unwrap_or(&f32), true)
    }

    /// `x @ w (+ b)` with an optional activation ("gelu", "relu", ...); `w` is `[in, out]`.
    #[pyo3(signature = (x, w, b = None, activation = None))]
    fn linear(
        &self,
        x: &PyValue,
        w: &PyValue,
        b: Option<&PyValue>,
        activation: Option<&str>,
    ) -> PyResult<PyValue> {
        let (x, w) = (self.id_of(x)?, self.id_of(w)?);
        let b = b.map(|b| self.id_of(b)).transpose()?;
        let act = activation.map(unary_op).transpose()?;
        self.build(|g| g.linear(x, w, b, act))
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

    #[pyo3(signature = (x, axis = -1))]
    fn softmax(&self, x: &PyValue, axis: i64) -> PyResult<PyValue> {
        let x = self.id_of(x)?;
        self.build(|g| g.softmax(x, axis))
    }

    /// Layer norm over the last axis.
    #[pyo3(signature = (x, gamma, beta, eps = 1e-5))]
    fn layer_norm(
        &self,
        x: &PyValue,
        gamma: &PyValue,
        beta: &PyValue,
        eps: f32,
    ) -> PyResult<PyValue> {
        let (x, gamma, beta) = (self.id_of(x)?, self.id_of(gamma)?, self.id_of(beta)?);
        self.build(|g| g.layer_norm(x, gamma, beta, eps))
    }

    /// Reshape; one dim may be -1 (inferred, symbolically).
    fn reshape(&self, x: &PyValue, shape: &Bound<'_, PyAny>) -> PyResult<PyValue> {
        let shape = shape_from_py("reshape", shape)?;
        let x = self.id_of(x)?;
        self.build(|g| g.reshape(x, shape))
    }

    /// Permutes the axes; negative axes count from the end.
    fn transpose(&self, x: &PyValue, perm: Vec<i64>) -> PyResult<PyValue> {
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

    /// Adds the named output.
    fn output(&self, name: &str, value: &PyValue) -> PyResult<()> {
        let v = self.id_of(value)?;
        HirMut::new(&mut self.lock()).output(name, v).map_err(to_py)
    }

    /// Checks the whole graph (the builder already checks every op as it is added).
    fn verify(&self) -> PyResult<()> {
        self.lock().verify().map_err(to_py)
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
