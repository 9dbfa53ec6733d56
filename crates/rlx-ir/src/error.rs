//! The one error type of rlx-ir.

use thiserror::Error;

pub type Result<T, E = IrError> = std::result::Result<T, E>;

/// Everything a user can get wrong while building, binding or describing a graph.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IrError {
    /// Unknown values, duplicate names, forward references, empty outputs.
    #[error("graph error: {0}")]
    Graph(String),
    /// Shapes that do not fit an op, or sizes that overflow.
    #[error("shape error: {0}")]
    Shape(String),
    /// An op got a dtype it does not accept; rlx never promotes silently.
    #[error("dtype error: {0}")]
    DType(String),
    /// A symbol is unbound, unknown, or outside its bounds.
    #[error("binding error: {0}")]
    Binding(String),
    /// The verifier found problems. For a graph made by the builder this is an rlx bug.
    #[error("{what} verifier found {} problem(s) (an rlx bug if the graph came from the builder):\n  {}", problems.len(), problems.join("\n  "))]
    Verify {
        what: &'static str,
        problems: Vec<String>,
    },
}

/// `bail!(Shape, "...")` returns early with the given variant.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($fmt:tt)*) => {
        return Err($crate::IrError::$kind(format!($($fmt)*)))
    };
}

/// `ensure!(cond, Shape, "...")` bails when `cond` is false.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $kind:ident, $($fmt:tt)*) => {
        if !$cond {
            $crate::bail!($kind, $($fmt)*);
        }
    };
}
