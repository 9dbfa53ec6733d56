//! The backend interface: a device turns specialized LIR into something that runs.

use std::sync::Arc;

use rlx_ir::LirModule;

use crate::{CompileOptions, Device, HostData, ParamData, Result, StateMut, TensorData};

/// Asked between kernels whether a run should stop early (for example on Ctrl-C); returning
/// `true` makes the run end with `Error::Cancelled`.
pub type StopCheck<'a> = &'a (dyn Fn() -> bool + Sync);

/// A compiled, immutable program for one variant. `execute` may run on many threads at once.
///
/// The interface is safe: an implementation checks whatever it trusts. `compile_lir` verifies
/// the module it is given (schedule, arena plan, every kernel's types) and `execute` checks the
/// count, dtype and size of every input and param against that module before a kernel reads
/// them.
pub trait Executable: Send + Sync {
    /// Runs with inputs, params and states in manifest order (`CompiledGraph` checks names and
    /// shapes first, for better messages); returns the outputs in manifest order. States (KV
    /// caches) are read and updated in place.
    fn execute(
        &self,
        inputs: &[HostData<'_>],
        params: &[Arc<ParamData>],
        states: &mut [StateMut<'_>],
        stop: Option<StopCheck<'_>>,
    ) -> Result<Vec<TensorData>>;

    /// Builds what the executable derives from bound params (packed weights) ahead of the
    /// first run; `params` are in manifest order, `None` where unbound. A no-op by default.
    fn prepare(&self, params: &[Option<Arc<ParamData>>]) -> Result<()> {
        let _ = params;
        Ok(())
    }

    /// The module this was compiled from.
    fn module(&self) -> &LirModule;

    /// The instruction set the kernels run with, for reports.
    fn isa(&self) -> Option<&'static str> {
        None
    }

    /// How the packed linears compute (precision and instructions), for reports.
    fn gemm_precision(&self) -> Option<&'static str> {
        None
    }

    /// The samples of a batch run one at a time (`per_sample.rs`); `None` for one run.
    fn samples_apart(&self) -> Option<usize> {
        None
    }
}

/// A device's compiler for specialized LIR.
pub trait Backend: Send + Sync {
    fn device(&self) -> Device;
    fn compile_lir(
        &self,
        lir: Arc<LirModule>,
        options: &CompileOptions,
    ) -> Result<Box<dyn Executable>>;
}
