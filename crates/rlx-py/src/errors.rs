//! The Python exception hierarchy and the one place where rlx errors become Python errors.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyIndexError, PyKeyboardInterrupt, PyMemoryError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rlx_ir::IrError;
use rlx_runtime::Error;

create_exception!(
    rlx,
    RlxError,
    PyException,
    "Base class of every error rlx raises."
);
create_exception!(
    rlx,
    GraphError,
    RlxError,
    "Unknown values, duplicate names, values of another graph."
);
create_exception!(
    rlx,
    ShapeError,
    RlxError,
    "Shapes that do not fit an op, a param or an input."
);
create_exception!(
    rlx,
    DTypeError,
    RlxError,
    "A dtype rlx does not accept there; rlx never casts silently."
);
create_exception!(
    rlx,
    BindingError,
    RlxError,
    "Missing, unknown or unusable inputs, params or dim values."
);
create_exception!(
    rlx,
    CompileError,
    RlxError,
    "A backend could not compile, or steps were used out of order."
);
create_exception!(
    rlx,
    UnsupportedOpError,
    RlxError,
    "An op or activation rlx does not implement."
);
create_exception!(
    rlx,
    ModelFormatError,
    RlxError,
    "A model file that cannot be read."
);
create_exception!(
    rlx,
    CacheError,
    RlxError,
    "The compile cache cannot be used."
);

/// Adds the classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // create_exception! takes one base. Bad shapes, dtypes and bindings are bad values too, so
    // these three also derive from ValueError and `except ValueError` catches them.
    for ty in [
        py.get_type::<ShapeError>(),
        py.get_type::<DTypeError>(),
        py.get_type::<BindingError>(),
    ] {
        let bases = PyTuple::new(
            py,
            [py.get_type::<RlxError>(), py.get_type::<PyValueError>()],
        )?;
        ty.setattr("__bases__", bases)?;
    }
    m.add("RlxError", py.get_type::<RlxError>())?;
    m.add("GraphError", py.get_type::<GraphError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("DTypeError", py.get_type::<DTypeError>())?;
    m.add("BindingError", py.get_type::<BindingError>())?;
    m.add("CompileError", py.get_type::<CompileError>())?;
    m.add("UnsupportedOpError", py.get_type::<UnsupportedOpError>())?;
    m.add("ModelFormatError", py.get_type::<ModelFormatError>())?;
    m.add("CacheError", py.get_type::<CacheError>())?;
    Ok(())
}

/// Maps an rlx-runtime or rlx-ir error to its Python class. The message drops the Rust
/// "shape error: " prefix because the class name already says it.
pub fn to_py(e: impl Into<Error>) -> PyErr {
    match e.into() {
        Error::Ir(ir) => match ir {
            IrError::Graph(m) => GraphError::new_err(m),
            IrError::Shape(m) => ShapeError::new_err(m),
            IrError::DType(m) => DTypeError::new_err(m),
            IrError::Binding(m) => BindingError::new_err(m),
            // A verifier failure on a builder-made graph is an rlx bug, not a user mistake.
            v @ IrError::Verify { .. } => CompileError::new_err(v.to_string()),
        },
        Error::Binding(m) => BindingError::new_err(m),
        Error::Shape(m) => ShapeError::new_err(m),
        Error::DType(m) => DTypeError::new_err(m),
        Error::Compile(m) => CompileError::new_err(m),
        Error::Memory(m) => PyMemoryError::new_err(m),
        Error::ModelFormat(m) => ModelFormatError::new_err(m),
        Error::Index(m) => PyIndexError::new_err(m),
        // Only Ctrl-C cancels runs from Python, and that path raises the KeyboardInterrupt itself.
        e @ Error::Cancelled => PyKeyboardInterrupt::new_err(e.to_string()),
    }
}
