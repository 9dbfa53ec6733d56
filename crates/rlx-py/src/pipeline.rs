//! `rlx.ModelCompilePipeline`: template once, specialize per binding, compile, cache. The core
//! pipeline sits behind a mutex that is only taken with the GIL released, so a long compile
//! never blocks other Python threads.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rlx_ir::{BindingManifest, DimBinding, HirModule};
use rlx_opt::{CompileReport, CompileResult};
use rlx_runtime::cpu::Isa;
use rlx_runtime::{
    AotCache, CompileOptions, Device, Eviction, ForkLock, ModelCompilePipeline, ParamStore,
    Precision,
};

use crate::args::{Capacity, Count};
use crate::compiled::PyCompiledGraph;
use crate::dims::{binding_from_py, binding_to_py};
use crate::errors::{CompileError, to_py};
use crate::graph::PyGraph;
use crate::manifest::PyBindingManifest;

/// A pipeline over a snapshot of a graph (later edits to the graph do not reach it).
#[pyclass(name = "ModelCompilePipeline", module = "rlx", frozen)]
pub struct PyModelCompilePipeline {
    hir: Arc<HirModule>,
    options: CompileOptions,
    device: Device,
    /// A fork-safe lock: a child forked while another thread compiled can still use it.
    inner: ForkLock<ModelCompilePipeline>,
}

/// A template specialized for one binding (step 2), ready for `compile_lir`.
#[pyclass(name = "Specialized", module = "rlx", frozen)]
pub struct PySpecialized {
    result: CompileResult,
}

#[pymethods]
impl PySpecialized {
    #[getter]
    fn manifest(&self) -> PyResult<PyBindingManifest> {
        BindingManifest::from_lir(&self.result.lir)
            .map(PyBindingManifest::new)
            .map_err(to_py)
    }

    #[getter]
    fn binding<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        binding_to_py(
            py,
            self.result
                .lir
                .binding
                .as_ref()
                .unwrap_or(&DimBinding::new()),
        )
    }

    /// Pass timings, kernel count and the specialize time.
    #[getter]
    fn report(&self) -> String {
        self.result.report.to_string()
    }

    /// The report as a dict (see `ModelCompilePipeline.report_data`).
    #[getter]
    fn report_data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        report_to_py(py, &self.result.report)
    }

    /// The specialized LIR text.
    fn __str__(&self) -> String {
        self.result.lir.to_string()
    }

    fn __repr__(&self) -> String {
        let b = self
            .result
            .lir
            .binding
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default();
        format!("<rlx.Specialized '{}' {b}>", self.result.lir.name)
    }
}

impl PyModelCompilePipeline {
    /// Runs `f` on the core pipeline with the GIL released; the template is built first.
    fn with_template<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut ModelCompilePipeline) -> rlx_runtime::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let mut p = self.inner.lock();
            p.build_template(|| (*self.hir).clone(), &self.options)?;
            f(&mut p)
        })
        .map_err(to_py)
    }

    pub fn store(&self, py: Python<'_>) -> PyResult<Arc<ParamStore>> {
        self.with_template(py, |p| p.params().cloned())
    }

    /// The template's compile report (the template is built first).
    fn template_report(&self, py: Python<'_>) -> PyResult<CompileReport> {
        self.with_template(py, |p| {
            p.template_result()
                .map(|r| r.report.clone())
                .ok_or_else(|| rlx_runtime::Error::Compile("no template after building it".into()))
        })
    }
}

/// A compile report as a dict (times in seconds).
fn report_to_py<'py>(py: Python<'py>, r: &CompileReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let passes: Vec<(&str, f64)> = r
        .passes
        .iter()
        .map(|(n, t)| (*n, t.as_secs_f64()))
        .collect();
    d.set_item("passes", passes)?;
    d.set_item("hir_ops_before", r.hir_ops_before)?;
    d.set_item("hir_ops_after", r.hir_ops_after)?;
    d.set_item("kernels", r.kernels)?;
    d.set_item("lower_time_s", r.lower_time.as_secs_f64())?;
    d.set_item("specialize_time_s", r.specialize_time.as_secs_f64())?;
    d.set_item("fusions", r.fusions.clone())?;
    d.set_item("near_misses", r.near_misses.clone())?;
    Ok(d)
}

#[pymethods]
impl PyModelCompilePipeline {
    /// `optimize=False` lowers without passes (for differential testing); `prepack=False`
    /// reads weights where they are bound (no packed copy); `isa` forces a kernel path
    /// ("scalar", "avx2", "avx512"; default: `RLX_ISA` or the CPU's best); `per_sample=False`
    /// runs every batch as one (by default a batch of a graph that computes each sample on
    /// its own, with activations much larger than its weights, runs sample by sample).
    #[new]
    #[pyo3(
        signature = (graph, device = "cpu", capacity = Capacity(8), optimize = true, prepack = true, isa = None, aot_dir = None, aot_max_bytes = None, eviction = "fifo", max_bytes = None, precision = "f32", per_sample = true),
        text_signature = "(graph, device='cpu', capacity=8, optimize=True, prepack=True, isa=None, aot_dir=None, aot_max_bytes=None, eviction='fifo', max_bytes=None, precision='f32', per_sample=True)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        graph: &PyGraph,
        device: &str,
        capacity: Capacity,
        optimize: bool,
        prepack: bool,
        isa: Option<&str>,
        aot_dir: Option<std::path::PathBuf>,
        aot_max_bytes: Option<Count>,
        eviction: &str,
        max_bytes: Option<Count>,
        precision: &str,
        per_sample: bool,
    ) -> PyResult<Self> {
        let precision = Precision::parse(precision).map_err(to_py)?;
        if precision != Precision::F32 && !prepack {
            return Err(CompileError::new_err(format!(
                "precision {:?} converts weights once into packed panels: it needs prepack=True",
                precision.name()
            )));
        }
        let device: Device = device.parse().map_err(to_py)?;
        let mut inner = ModelCompilePipeline::with_capacity(device, capacity.0).map_err(to_py)?;
        let isa = isa.map(Isa::parse).transpose().map_err(to_py)?;
        // An ISA this CPU lacks is an error now, not at the first compile.
        Isa::resolve(isa).map_err(to_py)?;
        let eviction = match eviction {
            "fifo" => Eviction::Fifo,
            "lru" => Eviction::Lru,
            other => {
                return Err(CompileError::new_err(format!(
                    "eviction must be \"fifo\" or \"lru\", got {other:?}"
                )));
            }
        };
        inner.set_eviction(eviction, max_bytes.map(|c| c.0));
        if let Some(dir) = aot_dir {
            let max = aot_max_bytes.map(|c| c.0 as u64);
            inner.set_aot(Some(Arc::new(AotCache::open(dir, max))));
        }
        let options = CompileOptions {
            optimize,
            prepack,
            isa,
            precision,
            per_sample,
            ..CompileOptions::default()
        };
        Ok(PyModelCompilePipeline {
            hir: Arc::new(graph.snapshot()),
            options,
            device,
            inner: ForkLock::new(inner),
        })
    }

    /// Step 1: compile the symbolic graph into the template (once; later calls do nothing).
    fn build_template(&self, py: Python<'_>) -> PyResult<()> {
        self.with_template(py, |_| Ok(()))
    }

    /// Step 2: the template specialized for `binding` (a dict, or keyword arguments).
    #[pyo3(signature = (binding = None, /, **dims))]
    fn specialize(
        &self,
        py: Python<'_>,
        binding: Option<&Bound<'_, PyAny>>,
        dims: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PySpecialized> {
        let b = binding_from_py(binding, dims)?;
        let result = self.with_template(py, |p| p.specialize_template(&b, &self.options))?;
        Ok(PySpecialized { result })
    }

    /// Step 3: compile a specialized template (not cached; `get_or_compile` caches).
    fn compile_lir(
        &self,
        py: Python<'_>,
        specialized: &PySpecialized,
    ) -> PyResult<PyCompiledGraph> {
        let s = specialized.result.clone();
        if !s.is_specialized() {
            return Err(CompileError::new_err(
                "compile_lir needs a specialized template",
            ));
        }
        let g = self.with_template(py, |p| p.compile_lir(s, &self.options))?;
        Ok(PyCompiledGraph::new(Arc::new(g)))
    }

    /// Template (once) -> specialize -> compile, cached by binding.
    #[pyo3(signature = (binding = None, /, **dims))]
    fn get_or_compile(
        &self,
        py: Python<'_>,
        binding: Option<&Bound<'_, PyAny>>,
        dims: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyCompiledGraph> {
        let b = binding_from_py(binding, dims)?;
        let g = self.with_template(py, |p| {
            p.get_or_compile(&b, || (*self.hir).clone(), &self.options)
        })?;
        Ok(PyCompiledGraph::new(g))
    }

    /// The template's manifest (symbolic shapes).
    #[getter]
    fn manifest(&self, py: Python<'_>) -> PyResult<PyBindingManifest> {
        self.with_template(py, |p| p.template_binding_manifest())
            .map(PyBindingManifest::new)
    }

    /// The manifest of one variant, without compiling or caching it.
    #[pyo3(signature = (binding = None, /, **dims))]
    fn manifest_for(
        &self,
        py: Python<'_>,
        binding: Option<&Bound<'_, PyAny>>,
        dims: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyBindingManifest> {
        let b = binding_from_py(binding, dims)?;
        self.with_template(py, |p| p.binding_manifest_for_binding(&b, &self.options))
            .map(PyBindingManifest::new)
    }

    /// Binds weights for every variant, now and later. `copy=False` borrows each array (it must
    /// be C-contiguous, aligned and of the param's dtype; it is kept alive, and changing it in
    /// place changes the next run); `copy=True` copies and may convert.
    #[pyo3(signature = (params, copy = false))]
    fn bind_params(&self, py: Python<'_>, params: &Bound<'_, PyDict>, copy: bool) -> PyResult<()> {
        crate::arrays::bind_params(&*self.store(py)?, params, copy)
    }

    /// Binds one weight (see `bind_params`).
    #[pyo3(signature = (name, array, copy = false))]
    fn set_param(
        &self,
        py: Python<'_>,
        name: &str,
        array: &Bound<'_, PyAny>,
        copy: bool,
    ) -> PyResult<()> {
        crate::arrays::bind_param(&*self.store(py)?, name, array, copy)
    }

    /// Names of params not bound yet.
    #[getter]
    fn missing_params(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(self.store(py)?.missing())
    }

    /// The template's compile report: passes and their times, HIR ops before and after the
    /// passes, kernels, fusions and near misses (builds the template if needed).
    #[getter]
    fn report(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.template_report(py)?.to_string())
    }

    /// The template's compile report as a dict: `passes` (list of (name, seconds)),
    /// `hir_ops_before`, `hir_ops_after`, `kernels`, `lower_time_s`, `specialize_time_s`,
    /// `fusions` and `near_misses` (lists of str).
    #[getter]
    fn report_data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        report_to_py(py, &self.template_report(py)?)
    }

    /// The graph's symbols and their inclusive bounds: name -> (min, max).
    #[getter]
    fn dims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for s in &self.hir.symbols {
            d.set_item(&s.name, (s.min, s.max))?;
        }
        Ok(d)
    }

    /// Counters and accumulated times (seconds).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, len, cap, packed, disk) = py.detach(|| {
            let (s, len, cap, packed, aot) = {
                let p = self.inner.lock();
                let packed = p.params().map_or(0, |store| store.derived_bytes());
                (
                    p.stats().clone(),
                    p.len(),
                    p.capacity(),
                    packed,
                    p.aot().cloned(),
                )
            };
            // The directory is listed after the pipeline lock is released.
            let disk = aot.map(|a| (a.stats(), a.disk_bytes(), a.dir().map(|d| d.to_path_buf())));
            (s, len, cap, packed, disk)
        });
        let d = PyDict::new(py);
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("specializations", s.specializations)?;
        d.set_item("compiles", s.compiles)?;
        d.set_item("template_time_s", s.template_time.as_secs_f64())?;
        d.set_item("specialize_time_s", s.specialize_time.as_secs_f64())?;
        d.set_item("compile_time_s", s.compile_time.as_secs_f64())?;
        d.set_item("cached", len)?;
        d.set_item("capacity", cap)?;
        d.set_item("packed_bytes", packed)?;
        d.set_item("isa", self.isa())?;
        d.set_item("precision", self.options.precision.name())?;
        d.set_item("prepack", self.options.prepack)?;
        d.set_item("per_sample", self.options.per_sample)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("template_from_disk", s.template_from_disk)?;
        d.set_item("variants_from_disk", s.variants_from_disk)?;
        let (a, disk_bytes, dir) = disk.unwrap_or_default();
        d.set_item("aot_dir", dir)?;
        d.set_item("disk_hits", a.hits)?;
        d.set_item("disk_misses", a.misses)?;
        d.set_item("disk_recovered", a.recovered)?;
        d.set_item("disk_writes", a.writes)?;
        d.set_item("disk_errors", a.errors)?;
        d.set_item("disk_evictions", a.evictions)?;
        d.set_item("disk_bytes", disk_bytes)?;
        Ok(d)
    }

    #[getter]
    fn device(&self) -> &'static str {
        self.device.name()
    }

    /// The CPU kernel path this pipeline's variants run ("scalar", "avx2", "avx512").
    #[getter]
    fn isa(&self) -> &'static str {
        Isa::resolve(self.options.isa).map_or("invalid", Isa::name)
    }

    #[getter]
    fn capacity(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.lock().capacity())
    }

    /// Cached variants.
    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.lock().len())
    }

    /// Whether the variant for a binding dict is cached (`{"batch": 8} in pipe`).
    fn __contains__(&self, py: Python<'_>, binding: &Bound<'_, PyAny>) -> PyResult<bool> {
        let b = binding_from_py(Some(binding), None)?;
        py.detach(|| {
            let p = self.inner.lock();
            // Without a template nothing is cached.
            Ok::<_, rlx_runtime::Error>(
                p.has_template() && p.contains(p.key_for(&b, &self.options)?),
            )
        })
        .map_err(to_py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (len, cap) = py.detach(|| {
            let p = self.inner.lock();
            (p.len(), p.capacity())
        });
        format!(
            "<rlx.ModelCompilePipeline '{}' on {}: {len}/{cap} variants cached>",
            self.hir.name,
            self.device()
        )
    }
}
