//! The CPU backend: an executor over a per-run arena and rayon-parallel kernels by family.

mod arena;
mod attention;
mod attention_bf16;
mod conv;
mod conv_channels_last;
mod conv_positions;
mod decoder;
mod depthwise;
mod elementwise;
mod executor;
mod executor_fused;
mod executor_plan;
mod fused;
pub mod gemm;
pub mod isa;
mod layout;
pub mod math;
mod norm;
mod padded;
mod pool;
mod pooling;
mod reduce;
mod rotary;
mod types;
pub mod vmath;
mod window;
mod winograd;

use std::sync::Arc;

use rlx_ir::LirModule;

pub use isa::Isa;
pub(crate) use pool::run_on;
pub use pool::thread_pool;

use crate::{Backend, CompileOptions, Device, Executable, Result};

/// Elements below which a kernel runs inline instead of splitting work across threads.
pub const PAR_GRAIN: usize = 1 << 14;

/// An output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every user documents that its tasks write disjoint elements.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Used inside tasks so closures capture the whole `OutPtr` (which is `Send`), not its field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

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
        let isa = Isa::resolve(options.isa)?;
        Ok(Box::new(executor::CpuExecutable::new(
            lir,
            pool,
            isa,
            options.prepack,
            options.precision,
        )?))
    }
}
