//! `rlx.CompiledGraph`: one variant, run from any number of Python threads with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use numpy::{PyArrayDyn, PyArrayMethods, PyReadwriteArrayDyn};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use rlx_runtime::{CompiledGraph, HostData, StateMut, TensorRef};

use crate::arrays::{ArrayView, bind_param, check_borrowed, output_to_py, pin, view};
use crate::dims::binding_to_py;
use crate::errors::{BindingError, to_py};
use crate::manifest::PyBindingManifest;

#[pyclass(name = "CompiledGraph", module = "rlx", frozen)]
pub struct PyCompiledGraph {
    graph: Arc<CompiledGraph>,
}

/// Runs at least this long let Ctrl-C through while they run. A variant's first run always
/// does (its length is unknown; a small arena can still mean minutes of compute), at the price
/// of one helper thread for that run. The last run's length is the variant's (kept by the core
/// graph), so a new handle to a cached variant is not a "first run" again.
const LONG_RUN: Duration = Duration::from_millis(20);

impl PyCompiledGraph {
    pub fn new(graph: Arc<CompiledGraph>) -> Self {
        PyCompiledGraph { graph }
    }

    /// Whether this run should poll for Ctrl-C: only on Python's main thread (the only one that
    /// sees signals) and only when the run is expected to be long, as a poll costs a thread.
    fn interruptible(&self, py: Python<'_>) -> PyResult<bool> {
        let long = self.graph.last_run_time().is_none_or(|t| t >= LONG_RUN);
        if !long {
            return Ok(false);
        }
        let threading = py.import("threading")?;
        threading
            .call_method0("current_thread")?
            .is(&threading.call_method0("main_thread")?)
            .then_some(true)
            .map_or(Ok(false), Ok)
    }

    /// Runs with the inputs viewed and the states borrowed for writing; the GIL is released
    /// for the run, with Ctrl-C polled on long runs.
    fn execute<'py>(
        &self,
        py: Python<'py>,
        views: Vec<(String, Option<ArrayView<'py>>)>,
        mut states: Vec<(String, PyReadwriteArrayDyn<'py, f32>)>,
    ) -> PyResult<Bound<'py, PyDict>> {
        check_borrowed(py, self.graph.params())?;
        // Inputs are read in place with the GIL released: pinned so that another thread cannot
        // resize (reallocate) one until this call returns. States are borrowed for writing
        // through numpy's borrow checker, which also refuses read-only and aliased arrays.
        let _pins = views
            .iter()
            .filter_map(|(_, v)| v.as_ref())
            .map(|v| pin(v.arr.as_any()))
            .chain(states.iter().map(|(_, a)| pin(a.as_any())))
            .collect::<PyResult<Vec<_>>>()?;
        let unknown = TensorRef {
            data: HostData::F32(&[]),
            shape: None,
        };
        let refs: Vec<(&str, TensorRef<'_>)> = views
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str(),
                    v.as_ref()
                        .map_or(unknown, |v| TensorRef::new(v.host_data(), &v.shape)),
                )
            })
            .collect();
        let mut slots: Vec<(&str, StateMut<'_>)> = Vec::with_capacity(states.len());
        for (name, arr) in states.iter_mut() {
            let data = arr.as_slice_mut().map_err(|_| {
                BindingError::new_err(format!("state `{name}` must be C-contiguous"))
            })?;
            slots.push((name.as_str(), StateMut::F32(data)));
        }
        check_disjoint(&refs, &slots)?;
        let graph = &self.graph;
        let outputs = if self.interruptible(py)? {
            // The calling thread polls for signals every 50 ms while a helper thread runs; a
            // Ctrl-C stops the run at the next kernel boundary and surfaces as KeyboardInterrupt.
            let mut interrupt: Option<PyErr> = None;
            let result = py.detach(|| {
                graph.run_polling(&refs, &mut slots, Duration::from_millis(50), &mut || {
                    Python::attach(|py| match py.check_signals() {
                        Ok(()) => false,
                        Err(e) => {
                            interrupt = Some(e);
                            true
                        }
                    })
                })
            });
            if let Some(e) = interrupt {
                return Err(e);
            }
            result
        } else {
            py.detach(|| graph.run_stateful(&refs, &mut slots, None))
        }
        .map_err(to_py)?;
        let d = PyDict::new(py);
        for t in outputs {
            let name = t.name.clone();
            d.set_item(name, output_to_py(py, t)?)?;
        }
        Ok(d)
    }

    /// Views every named array; dict entries and keyword arguments may not name one input twice.
    /// An unknown name gets no view: the core then reports every unknown and missing name at once.
    fn views<'py>(
        &self,
        inputs: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Vec<(String, Option<ArrayView<'py>>)>> {
        let mut items: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = Vec::new();
        if let Some(d) = inputs {
            let d = d.cast::<PyDict>().map_err(|_| {
                BindingError::new_err(format!(
                    "run() takes a dict of name -> array or keyword arguments, got {}",
                    d.get_type()
                ))
            })?;
            items.extend(d.iter());
        }
        if let Some(kw) = kwargs {
            items.extend(kw.iter());
        }
        let mut out: Vec<(String, Option<ArrayView<'py>>)> = Vec::with_capacity(items.len());
        for (k, v) in items {
            let name = k
                .cast::<PyString>()
                .map_err(|_| BindingError::new_err("input names must be str"))?
                .to_str()?
                .to_string();
            if out.iter().any(|(n, _)| *n == name) {
                return Err(BindingError::new_err(format!(
                    "input `{name}` given twice (in the dict and as a keyword)"
                )));
            }
            let v = match self.graph.manifest().input(&name) {
                Some(e) => Some(view(&format!("input `{name}`"), &v, Some(e.dtype), false)?),
                None => None,
            };
            out.push((name, v));
        }
        Ok(out)
    }
}

#[pymethods]
impl PyCompiledGraph {
    /// Runs on numpy inputs (a dict, or keyword arguments), read in place; returns new arrays.
    #[pyo3(signature = (inputs = None, /, **kwargs))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let views = self.views(inputs, kwargs)?;
        self.execute(py, views, Vec::new())
    }

    /// Runs a graph with states (KV caches): `states` maps each state name to a writeable,
    /// C-contiguous float32 array of its manifest shape, read and updated in place.
    fn run_stateful<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        states: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let views = self.views(Some(inputs), None)?;
        let mut held = Vec::with_capacity(states.len());
        for (k, v) in states.iter() {
            let name: String = k
                .cast::<PyString>()
                .map_err(|_| BindingError::new_err("state names must be str"))?
                .to_str()?
                .to_string();
            held.push((name.clone(), state_view(&name, &v)?));
        }
        self.execute(py, views, held)
    }
    /// Binds one weight for every variant of the pipeline (see `ModelCompilePipeline.bind_params`).
    #[pyo3(signature = (name, array, copy = false))]
    fn set_param(&self, name: &str, array: &Bound<'_, PyAny>, copy: bool) -> PyResult<()> {
        bind_param(self.graph.params(), name, array, copy)
    }

    /// Address of the bytes kernels read for param `name` (None while unbound). For a
    /// zero-copy binding it equals `array.ctypes.data`.
    fn param_data_ptr(&self, name: &str) -> PyResult<Option<usize>> {
        let store = self.graph.params();
        store.index_of(name).map_err(to_py)?;
        Ok(store.data_ptr(name))
    }

    /// Names of params not bound yet.
    #[getter]
    fn missing_params(&self) -> Vec<String> {
        self.graph.params().missing()
    }

    #[getter]
    fn manifest(&self) -> PyBindingManifest {
        PyBindingManifest::new(self.graph.manifest().clone())
    }

    /// The kernel path (`"avx512"`, ...) and how its packed linears compute (precision and
    /// instructions, e.g. "bf16 x bf16 -> f32 (avx512_bf16 vdpbf16ps)").
    #[getter]
    fn kernels(&self) -> (Option<&'static str>, Option<&'static str>) {
        self.graph.kernel_paths()
    }

    /// How many samples of the batch run one at a time through the one-sample variant
    /// (`per_sample=True` pipelines); `None` when the batch runs as one.
    #[getter]
    fn samples_apart(&self) -> Option<usize> {
        self.graph.samples_apart()
    }

    /// The dim values this variant was specialized for.
    #[getter]
    fn binding<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        binding_to_py(py, self.graph.binding().unwrap_or(&Default::default()))
    }

    /// The LIR text of the variant.
    fn __str__(&self) -> String {
        self.graph.lir().to_string()
    }

    fn __repr__(&self) -> String {
        let b = self
            .graph
            .binding()
            .map(|b| b.to_string())
            .unwrap_or_default();
        format!(
            "<rlx.CompiledGraph '{}' {b} on {}>",
            self.graph.lir().name,
            self.graph.device()
        )
    }
}

/// A state array borrowed for writing (numpy refuses a read-only array or one already
/// borrowed by another run).
fn state_view<'py>(name: &str, obj: &Bound<'py, PyAny>) -> PyResult<PyReadwriteArrayDyn<'py, f32>> {
    let arr = obj.cast::<PyArrayDyn<f32>>().map_err(|_| {
        crate::errors::DTypeError::new_err(format!(
            "state `{name}`: expected a float32 numpy.ndarray, got {}",
            obj.get_type()
        ))
    })?;
    arr.try_readwrite().map_err(|e| {
        BindingError::new_err(format!(
            "state `{name}` cannot be written: {e} (a read-only array, or one in use by another run)"
        ))
    })
}

/// States are written while inputs and other states are read: no two may share bytes.
fn check_disjoint(
    inputs: &[(&str, TensorRef<'_>)],
    states: &[(&str, StateMut<'_>)],
) -> PyResult<()> {
    let span = |p: *const u8, bytes: usize| (p as usize, p as usize + bytes);
    let mut spans: Vec<(&str, (usize, usize))> = inputs
        .iter()
        .map(|(n, t)| {
            (
                *n,
                span(t.data.as_ptr(), t.data.len() * t.data.dtype().size()),
            )
        })
        .collect();
    for (name, s) in states {
        let mine = match s {
            StateMut::F32(d) => span(d.as_ptr().cast(), std::mem::size_of_val(*d)),
            _ => continue,
        };
        if mine.0 == mine.1 {
            continue;
        }
        if let Some((other, _)) = spans.iter().find(|(_, o)| o.0 < mine.1 && mine.0 < o.1) {
            return Err(BindingError::new_err(format!(
                "state `{name}` shares memory with `{other}`: a state is written in place and \
                 must not overlap any input or other state"
            )));
        }
        spans.push((name, mine));
    }
    Ok(())
}
