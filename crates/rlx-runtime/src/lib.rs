//! rlx-runtime: devices, backends, the CPU executor and kernels, compiled graphs, the shared
//! parameter store and the three-step `ModelCompilePipeline`.

pub mod aot;
mod backend;
mod compiled;
pub mod cpu;
mod device;
mod error;
mod fallible;
pub mod fork_lock;
mod model_pipeline;
mod model_pipeline_aot;
mod names;
mod options;
mod params;
mod per_sample;
pub mod reference;
pub mod registry;
pub mod stages;
mod tensor;

pub use backend::{Backend, Executable, StopCheck};
pub use compiled::CompiledGraph;
pub use device::Device;
pub use error::{Error, Result};
pub use fork_lock::ForkLock;

pub use aot::{AotCache, AotStats};
pub use model_pipeline::{Eviction, ModelCompilePipeline, PipelineStats};
pub use options::{CompileOptions, Precision};
pub use params::{ParamData, ParamStore, PreparedParam};
pub use registry::{backend_for, register_backend};
pub use rlx_ir::TensorData;
pub use tensor::{HostData, StateMut, Tensor, TensorRef};

pub use rlx_ir as ir;
pub use rlx_opt as opt;
