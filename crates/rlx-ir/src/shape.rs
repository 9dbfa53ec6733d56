//! Shapes (lists of dims) and tensor types (dtype + shape).

use std::fmt;

use crate::{DType, Dim, DimBinding, IrError, Result};

/// A list of dims, each constant or symbolic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A static shape.
    pub fn new(dims: &[i64]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::constant(d)).collect())
    }

    /// The axes in the order `perm` gives (`perm` a permutation of the rank: the caller checked).
    pub fn permuted(&self, perm: &[usize]) -> Shape {
        Shape(perm.iter().map(|&p| self.0[p].clone()).collect())
    }

    pub fn from_dims(dims: Vec<Dim>) -> Shape {
        Shape(dims)
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    pub fn numel(&self) -> Dim {
        Dim::product(&self.0)
    }

    pub fn is_static(&self) -> bool {
        self.0.iter().all(Dim::is_const)
    }

    /// The constant dims when the shape is static.
    pub fn as_static(&self) -> Option<Vec<usize>> {
        self.0
            .iter()
            .map(|d| d.as_const().and_then(|v| usize::try_from(v).ok()))
            .collect()
    }

    /// Evaluates every dim; a negative result or an element count over `isize::MAX` is an error.
    pub fn eval(&self, binding: &DimBinding) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(self.0.len());
        let mut numel: usize = 1;
        for d in &self.0 {
            let v = d.eval(binding)?;
            let v = usize::try_from(v).map_err(|_| {
                IrError::Shape(format!("dim `{d}` is negative ({v}) under {binding}"))
            })?;
            numel = numel
                .checked_mul(v)
                .filter(|n| *n <= isize::MAX as usize)
                .ok_or_else(|| IrError::Shape(format!("shape {self} overflows under {binding}")))?;
            out.push(v);
        }
        Ok(out)
    }

    /// Normalizes a possibly negative axis against this rank.
    pub fn axis(&self, axis: i64, op: &str) -> Result<usize> {
        let rank = self.rank() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            crate::bail!(
                Shape,
                "{op}: axis {axis} is out of range for rank {rank} shape {self}"
            );
        }
        Ok(a as usize)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a value: dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    /// Byte size as a dim: numel × element size.
    pub fn nbytes(&self) -> Dim {
        &self.shape.numel() * &Dim::constant(self.dtype.size() as i64)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
