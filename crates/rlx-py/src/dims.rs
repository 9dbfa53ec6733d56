//! Conversions between Python values and rlx dims, shapes, dtypes and dim bindings.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};
use rlx_ir::{DType, Dim, DimBinding, Shape};

use crate::errors::{BindingError, DTypeError, ShapeError};

/// The numpy name of a dtype (what `Value.dtype` and manifest entries report).
pub fn numpy_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::Bool => "bool",
    }
}

/// A dtype from its numpy or rlx name ("float32" / "f32"), or anything `numpy.dtype()` takes.
pub fn dtype_from_py(obj: &Bound<'_, PyAny>) -> PyResult<DType> {
    let name: String = match obj.cast::<PyString>() {
        Ok(s) => s.to_str()?.to_string(),
        Err(_) => {
            let np = obj.py().import("numpy")?;
            match np.getattr("dtype")?.call1((obj,)) {
                Ok(d) => d.getattr("name")?.extract()?,
                Err(_) => return Err(DTypeError::new_err(format!("not a dtype: {obj}"))),
            }
        }
    };
    let found = DType::ALL
        .into_iter()
        .find(|d| d.name() == name || numpy_name(*d) == name);
    found.ok_or_else(|| {
        let known: Vec<&str> = DType::ALL.iter().map(|d| numpy_name(*d)).collect();
        DTypeError::new_err(format!(
            "unsupported dtype `{name}`; rlx dtypes are {known:?}"
        ))
    })
}

/// One dim of a shape: an int, a symbol name or an expression such as "batch*seq".
fn dim_from_py(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<Dim> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Dim::parse(s.to_str()?).map_err(crate::errors::to_py);
    }
    if !obj.is_instance_of::<PyBool>()
        && let Ok(v) = obj.extract::<i64>()
    {
        return Ok(Dim::constant(v));
    }
    Err(ShapeError::new_err(format!(
        "{what}: dim {} is a {}, expected an int or a dim name such as \"batch\" or \"batch*seq\"",
        obj.repr()?,
        obj.get_type().name()?
    )))
}

/// A shape from a tuple or list of dims.
pub fn shape_from_py(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<Shape> {
    let items: Vec<Bound<'_, PyAny>> = if obj.is_instance_of::<PyString>() {
        return Err(ShapeError::new_err(format!(
            "{what}: shape must be a tuple or list of dims, got a str"
        )));
    } else {
        obj.extract().map_err(|_| {
            ShapeError::new_err(format!(
                "{what}: shape must be a tuple or list of dims, got {}",
                obj.get_type()
            ))
        })?
    };
    items
        .iter()
        .map(|d| dim_from_py(what, d))
        .collect::<PyResult<Vec<_>>>()
        .map(Shape::from_dims)
}

/// A dim as Python sees it: an int when constant, its text ("batch*seq") otherwise.
pub fn dim_to_py<'py>(py: Python<'py>, d: &Dim) -> PyResult<Bound<'py, PyAny>> {
    Ok(match d.as_const() {
        Some(v) => v.into_pyobject(py)?.into_any(),
        None => PyString::new(py, &d.to_string()).into_any(),
    })
}

pub fn shape_to_py<'py>(py: Python<'py>, s: &Shape) -> PyResult<Bound<'py, PyTuple>> {
    let dims = s
        .dims()
        .iter()
        .map(|d| dim_to_py(py, d))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, dims)
}

/// A dim binding from a dict and/or keyword arguments; bools, floats and other non-ints are
/// rejected here with the symbol's name (bounds are checked by the core).
pub fn binding_from_py(
    positional: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<DimBinding> {
    let mut b = DimBinding::new();
    let mut add = |k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>| -> PyResult<()> {
        let name: String = k.extract().map_err(|_| {
            BindingError::new_err(format!(
                "dim names must be str, got {}",
                k.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        // `extract::<i64>` takes ints and numpy integers (via __index__), never floats.
        let int = if v.is_instance_of::<PyBool>() {
            None
        } else {
            v.extract::<i64>().ok()
        };
        let Some(value) = int else {
            return Err(BindingError::new_err(format!(
                "dim `{name}`: expected an int, got {} ({})",
                v.repr()?,
                v.get_type().name()?
            )));
        };
        if b.get(&name).is_some() {
            return Err(BindingError::new_err(format!("dim `{name}` given twice")));
        }
        b.set(&name, value);
        Ok(())
    };
    if let Some(p) = positional {
        let d = p.cast::<PyDict>().map_err(|_| {
            BindingError::new_err(format!(
                "a binding is a dict of dim name -> int, got {}",
                p.get_type()
            ))
        })?;
        for (k, v) in d.iter() {
            add(&k, &v)?;
        }
    }
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            add(&k, &v)?;
        }
    }
    Ok(b)
}

pub fn binding_to_py<'py>(py: Python<'py>, b: &DimBinding) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in b.iter() {
        d.set_item(k, v)?;
    }
    Ok(d)
}
