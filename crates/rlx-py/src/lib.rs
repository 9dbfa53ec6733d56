//! `rlx._rlx`: the thin pyo3 layer over rlx. One module per core concept; every logic that a
//! Rust user would also need lives in the core crates, not here.

mod args;
mod arrays;
mod compiled;
mod dims;
mod errors;
mod graph;
mod held;
mod manifest;
mod pipeline;

use pyo3::prelude::*;

#[pymodule]
fn _rlx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<graph::PyGraph>()?;
    m.add_class::<graph::PyValue>()?;
    m.add_class::<pipeline::PyModelCompilePipeline>()?;
    m.add_class::<pipeline::PySpecialized>()?;
    m.add_class::<compiled::PyCompiledGraph>()?;
    m.add_class::<manifest::PyBindingManifest>()?;
    m.add_class::<manifest::PyManifestEntry>()?;
    m.add_class::<manifest::PyManifestDiff>()?;
    m.add_function(wrap_pyfunction!(cpu_isa, m)?)?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// The CPU kernel path variants use by default: `RLX_ISA` if set, else the widest this CPU has.
#[pyfunction]
fn cpu_isa() -> PyResult<&'static str> {
    rlx_runtime::cpu::isa::default_isa()
        .map(|i| i.name())
        .map_err(errors::to_py)
}

/// Every kernel path this CPU can run, most portable first.
#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    rlx_runtime::cpu::Isa::available()
        .into_iter()
        .map(|i| i.name())
        .collect()
}
