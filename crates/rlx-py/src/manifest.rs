//! `BindingManifest`, its entries and `ManifestDiff`, read-only views of the core types.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use rlx_ir::{BindingManifest, ManifestDiff, ManifestEntry};

use crate::dims::{dim_to_py, numpy_name, shape_to_py};

/// One input, param or output: name, dtype, shape, byte size and (params) offset.
#[pyclass(name = "ManifestEntry", module = "rlx", frozen)]
pub struct PyManifestEntry {
    inner: ManifestEntry,
}

#[pymethods]
impl PyManifestEntry {
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    #[getter]
    fn dtype(&self) -> &'static str {
        numpy_name(self.inner.dtype)
    }

    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        shape_to_py(py, &self.inner.shape)
    }

    /// Bytes: an int, or text ("3136*batch") when the shape is symbolic.
    #[getter]
    fn nbytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dim_to_py(py, &self.inner.nbytes)
    }

    /// Byte offset in the parameter block; None for inputs and outputs.
    #[getter]
    fn offset(&self) -> Option<usize> {
        self.inner.offset
    }

    fn __repr__(&self) -> String {
        let e = &self.inner;
        let offset = e
            .offset
            .map(|o| format!(", offset={o}"))
            .unwrap_or_default();
        format!(
            "ManifestEntry({:?}, {}{}, nbytes={}{offset})",
            e.name,
            numpy_name(e.dtype),
            e.shape,
            e.nbytes
        )
    }
}

fn entries<'py>(py: Python<'py>, v: &[ManifestEntry]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, v.iter().map(|e| PyManifestEntry { inner: e.clone() }))
}

/// The contract of a template or variant: inputs, params (with offsets), outputs, sizes.
#[pyclass(name = "BindingManifest", module = "rlx", frozen)]
pub struct PyBindingManifest {
    pub inner: BindingManifest,
}

impl PyBindingManifest {
    pub fn new(inner: BindingManifest) -> Self {
        PyBindingManifest { inner }
    }
}

#[pymethods]
impl PyBindingManifest {
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        entries(py, &self.inner.inputs)
    }

    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        entries(py, &self.inner.params)
    }

    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        entries(py, &self.inner.outputs)
    }

    /// Run-spanning state (KV caches) a session holds and each run updates in place.
    #[getter]
    fn states<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        entries(py, &self.inner.states)
    }

    /// Bytes of the parameter block with every param at its aligned offset.
    #[getter]
    fn param_block_bytes(&self) -> usize {
        self.inner.param_block_bytes
    }

    /// Arena bytes of a variant; None for a template (planned per variant).
    #[getter]
    fn arena_bytes(&self) -> Option<usize> {
        self.inner.arena_bytes
    }

    /// What differs in `other` (the later manifest).
    fn diff(&self, other: &PyBindingManifest) -> PyManifestDiff {
        PyManifestDiff {
            inner: self.inner.diff(&other.inner),
        }
    }

    fn __repr__(&self) -> String {
        self.inner.to_string()
    }
}

/// Differences between two manifests.
#[pyclass(name = "ManifestDiff", module = "rlx", frozen)]
pub struct PyManifestDiff {
    inner: ManifestDiff,
}

#[pymethods]
impl PyManifestDiff {
    /// Entries only in the later manifest, as "input x" / "param w" / "output y".
    #[getter]
    fn added(&self) -> Vec<String> {
        self.inner.added.clone()
    }

    #[getter]
    fn removed(&self) -> Vec<String> {
        self.inner.removed.clone()
    }

    /// `(section, name, before, after)` for entries in both with another dtype, shape or size.
    #[getter]
    fn changed(&self) -> Vec<(String, String, PyManifestEntry, PyManifestEntry)> {
        let c = &self.inner.changed;
        c.iter()
            .map(|c| {
                let (before, after) = (c.before.clone(), c.after.clone());
                (
                    c.section.to_string(),
                    c.name.clone(),
                    PyManifestEntry { inner: before },
                    PyManifestEntry { inner: after },
                )
            })
            .collect()
    }

    /// `(before, after)` arena bytes when they differ.
    #[getter]
    fn arena_bytes(&self) -> Option<(Option<usize>, Option<usize>)> {
        self.inner.arena_bytes
    }

    #[getter]
    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// True when the parameter layout is the same, so one parameter block serves both.
    #[getter]
    fn params_compatible(&self) -> bool {
        self.inner.params_compatible()
    }

    fn __bool__(&self) -> bool {
        !self.inner.is_empty()
    }

    fn __repr__(&self) -> String {
        self.inner.to_string()
    }
}
