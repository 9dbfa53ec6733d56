//! Numeric arguments converted with rlx's errors. pyo3's own `i64` / `usize` / `f32`
//! conversions raise a bare `OverflowError` for an int outside the type (`axis=2**63`,
//! `capacity=-1`), accept `True` as an int, and round a float beyond f32's range to inf.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt};

use crate::errors::{CompileError, DTypeError, ShapeError};

fn repr(obj: &Borrowed<'_, '_, PyAny>) -> String {
    obj.repr().map(|r| r.to_string()).unwrap_or_default()
}

/// An axis, bound or size: a Python int (not a bool) within i64; otherwise `ShapeError`.
#[derive(Debug, Clone, Copy)]
pub struct Int(pub i64);

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        // numpy integers are not `int` subclasses: they convert through `__index__`.
        let int = obj.is_instance_of::<PyInt>() || obj.hasattr("__index__")?;
        if obj.is_instance_of::<PyBool>() || !int {
            return Err(ShapeError::new_err(format!(
                "expected an int, got {}",
                repr(&obj)
            )));
        }
        obj.extract::<i64>().map(Int).map_err(|_| {
            ShapeError::new_err(format!(
                "{} is out of range: ints must fit in 64 bits",
                repr(&obj)
            ))
        })
    }
}

/// A variant count (`capacity`): an int >= 1; otherwise `CompileError`, as for 0.
#[derive(Debug, Clone, Copy)]
pub struct Capacity(pub usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Capacity {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let bad = || {
            CompileError::new_err(format!(
                "ModelCompilePipeline capacity must be an int >= 1, got {}",
                repr(&obj)
            ))
        };
        let Int(n) = obj.extract::<Int>().map_err(|_| bad())?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .map(Capacity)
            .ok_or_else(bad)
    }
}

/// A float32 value (a constant, an epsilon): a number whose magnitude f32 can hold (inf and
/// NaN pass as given); a finite value beyond f32's range is a `DTypeError`, not a silent inf.
#[derive(Debug, Clone, Copy)]
pub struct F32(pub f32);

impl<'a, 'py> FromPyObject<'a, 'py> for F32 {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let number = !obj.is_instance_of::<PyBool>()
            && (obj.is_instance_of::<PyFloat>()
                || obj.is_instance_of::<PyInt>()
                || obj.hasattr("__float__")?);
        if !number {
            return Err(DTypeError::new_err(format!(
                "expected a number, got {}",
                repr(&obj)
            )));
        }
        let v = obj
            .extract::<f64>()
            .map_err(|_| DTypeError::new_err(format!("{} is out of float32 range", repr(&obj))))?;
        let f = v as f32;
        if v.is_finite() && !f.is_finite() {
            return Err(DTypeError::new_err(format!(
                "{} is out of float32 range (largest: {:e})",
                repr(&obj),
                f32::MAX
            )));
        }
        Ok(F32(f))
    }
}

/// A byte count or similar size: an int >= 0; otherwise `CompileError`.
#[derive(Debug, Clone, Copy)]
pub struct Count(pub usize);

impl<'a, 'py> FromPyObject<'a, 'py> for Count {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let bad =
            || CompileError::new_err(format!("expected a size (an int >= 0), got {}", repr(&obj)));
        let Int(n) = obj.extract::<Int>().map_err(|_| bad())?;
        usize::try_from(n).map(Count).map_err(|_| bad())
    }
}
