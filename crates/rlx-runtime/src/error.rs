//! The one error type of rlx-runtime. Each variant maps to one Python exception class.

use rlx_ir::IrError;
use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Graph, shape, dtype, binding or verifier problems found by the IR and the passes.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// Missing, unknown or unusable inputs and params.
    #[error("binding error: {0}")]
    Binding(String),
    #[error("shape error: {0}")]
    Shape(String),
    #[error("dtype error: {0}")]
    DType(String),
    /// A backend could not compile, or the pipeline was used out of order.
    #[error("compile error: {0}")]
    Compile(String),
    /// An index (gather) outside its axis.
    #[error("index error: {0}")]
    Index(String),
    /// The caller's stop check asked the run to end (e.g. Ctrl-C).
    #[error("run cancelled")]
    Cancelled,
    /// An allocation would exceed what can be had.
    #[error("out of memory: {0}")]
    Memory(String),
    /// Bytes that are not a valid file of the kind expected (a saved graph).
    #[error("model format error: {0}")]
    ModelFormat(String),
}

/// `fail!(Binding, "...")` returns early with the given variant.
macro_rules! fail {
    ($kind:ident, $($fmt:tt)*) => {
        return Err($crate::Error::$kind(format!($($fmt)*)))
    };
}
pub(crate) use fail;
