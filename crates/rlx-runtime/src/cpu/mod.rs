//! The CPU backend: an executor over a per-run arena and rayon-parallel kernels by family.

mod arena;
mod attention;
mod elementwise;
mod executor;
mod fused;
mod gemm;
mod layout;
pub mod math;
mod norm;
mod pool;
mod reduce;
mod types;

use std::sync::Arc;

use rlx_ir::LirModule;

pub use pool::thread_pool;

use crate::{Backend, CompileOptions, Device, Executable, Result};

/// Elements below which a kernel runs inline instead of splitting work across threads.
pub const PAR_GRAIN: usize = 1 << 14;

#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn compile_lir(
        &self,
        lir: Arc<LirModule>,
        options: &CompileOptions,
    ) -> Result<Box<dyn Executable>> {
        let pool = thread_pool(options.num_threads)?;
        Ok(Box::new(executor::CpuExecutable::new(lir, pool)?))
    }
}
