//! rlx-opt: passes over the HIR, lowering to an LIR template, and specialization of that
//! template for a concrete dim binding (sizes evaluated, arena planned, no pass re-run).
//!
//! Errors are `rlx_ir::IrError`: everything that can go wrong here is a graph, shape or binding
//! problem the IR already names.

mod compile_result;
mod lower;
pub mod memory_plan;
pub mod passes;
mod per_sample;
mod pipeline;
mod specialize;

pub use compile_result::{CompileReport, CompileResult};
pub use lower::lower;
pub use passes::PassLog;
pub use per_sample::{per_sample, per_sample_symbol};
pub use pipeline::{Pass, Pipeline, debug_level};
pub use rlx_ir::{IrError, Result};
