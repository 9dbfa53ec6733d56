//! Runs a specialized LIR: resolves every buffer to memory (caller input, shared param, arena
//! offset or a fresh output), then executes the kernel schedule in order on the runtime pool.

use std::sync::Arc;

use rayon::ThreadPool;
use rlx_ir::LirModule;
use rlx_ir::lir::{BufferId, BufferKind, Kernel, KernelOp};

use super::arena::ArenaPool;
use super::{elementwise, gemm, layout, norm};
use crate::error::fail;
use crate::{Error, Executable, HostData, ParamData, Result, TensorData};

/// Where a buffer's bytes live during a run.
#[derive(Debug, Clone, Copy)]
enum Place {
    Input(usize),
    Param(usize),
    Arena(usize),
    Output(usize),
}

pub struct CpuExecutable {
    lir: Arc<LirModule>,
    shapes: Vec<Vec<usize>>,
    numel: Vec<usize>,
    places: Vec<Place>,
    arenas: ArenaPool,
    pool: Arc<ThreadPool>,
}

/// Buffer addresses of one run. Raw pointers so kernels can borrow several at once.
struct Addrs(Vec<*mut u8>);
// SAFETY: the addresses point into memory that outlives the run (inputs and params borrowed by
// `execute`, the run's own arena and outputs); the schedule never writes a buffer while a
// kernel reads it (the verifier and the arena plan guarantee disjointness).
unsafe impl Send for Addrs {}
unsafe impl Sync for Addrs {}

impl CpuExecutable {
    pub fn new(lir: Arc<LirModule>, pool: Arc<ThreadPool>) -> Result<CpuExecutable> {
        let Some(plan) = &lir.arena else {
            fail!(
                Compile,
                "`{}` has no arena plan: only specialized LIR can be compiled",
                lir.name
            )
        };
        let mut shapes = Vec::with_capacity(lir.buffers.len());
        let mut places = Vec::with_capacity(lir.buffers.len());
        for i in 0..lir.buffers.len() {
            let id = BufferId(i as u32);
            let Some(shape) = lir.static_shape(id) else {
                fail!(
                    Compile,
                    "{id} has symbolic shape {}: specialize first",
                    lir.buffer(id).ty.shape
                )
            };
            shapes.push(shape);
            let root = lir.root(id);
            let slot = |slots: &[rlx_ir::lir::IoSlot]| slots.iter().position(|s| s.buffer == root);
            let place = match lir.buffer(root).kind {
                BufferKind::Input => slot(&lir.inputs).map(Place::Input),
                BufferKind::Param => slot(&lir.params).map(Place::Param),
                BufferKind::Output => slot(&lir.outputs).map(Place::Output),
                BufferKind::Temp => plan.offsets[root.index()].map(Place::Arena),
                BufferKind::View { .. } => None,
            };
            match place {
                Some(p) => places.push(p),
                None => fail!(Compile, "{id}: no memory assigned to its root {root}"),
            }
        }
        for k in &lir.kernels {
            if !k
                .inputs
                .iter()
                .all(|b| lir.buffer(*b).ty.dtype == rlx_ir::DType::F32)
                && k.op != KernelOp::Copy
            {
                fail!(Compile, "CPU kernel {} supports f32 only", k.op.name());
            }
        }
        let numel = shapes.iter().map(|s| s.iter().product()).collect();
        let arenas = ArenaPool::new(plan.size);
        Ok(CpuExecutable {
            lir,
            shapes,
            numel,
            places,
            arenas,
            pool,
        })
    }

    /// # Safety
    /// `b` must be an f32 buffer whose address in `addrs` is valid for `numel[b]` elements.
    unsafe fn f32s<'a>(&self, addrs: &Addrs, b: BufferId) -> &'a [f32] {
        let n = self.numel[b.index()];
        unsafe { std::slice::from_raw_parts(addrs.0[b.index()] as *const f32, n) }
    }

    /// # Safety
    /// As `f32s`, and no other live slice may cover `b`'s memory.
    unsafe fn f32s_mut<'a>(&self, addrs: &Addrs, b: BufferId) -> &'a mut [f32] {
        let n = self.numel[b.index()];
        unsafe { std::slice::from_raw_parts_mut(addrs.0[b.index()] as *mut f32, n) }
    }

    fn run_kernel(&self, k: &Kernel, addrs: &Addrs) {
        let shape = |b: BufferId| self.shapes[b.index()].as_slice();
        // SAFETY: the schedule was verified; each kernel's output is a fresh Temp/Output whose
        // memory does not overlap any buffer it reads (arena plan), and all buffers hold
        // `numel` elements of their dtype.
        unsafe {
            let out = self.f32s_mut(addrs, k.output);
            let arg = |i: usize| self.f32s(addrs, k.inputs[i]);
            match &k.op {
                KernelOp::MatMul => gemm::matmul(
                    arg(0),
                    shape(k.inputs[0]),
                    arg(1),
                    shape(k.inputs[1]),
                    out,
                    shape(k.output),
                ),
                KernelOp::Linear { activation } => {
                    let w = shape(k.inputs[1]);
                    let bias = (k.inputs.len() > 2).then(|| arg(2));
                    gemm::linear(arg(0), arg(1), bias, *activation, w[0], w[1], out)
                }
                KernelOp::Binary(op) => elementwise::binary(
                    *op,
                    arg(0),
                    shape(k.inputs[0]),
                    arg(1),
                    shape(k.inputs[1]),
                    out,
                    shape(k.output),
                ),
                KernelOp::Unary(op) => elementwise::unary(*op, arg(0), out),
                KernelOp::Softmax { axis } => {
                    let s = shape(k.inputs[0]);
                    norm::softmax(arg(0), s[*axis], s[axis + 1..].iter().product(), out)
                }
                KernelOp::LayerNorm { eps } => {
                    let d = *shape(k.inputs[0]).last().unwrap_or(&0);
                    norm::layer_norm(arg(0), arg(1), arg(2), *eps, d, out)
                }
                KernelOp::Transpose { perm } => {
                    layout::transpose(arg(0), shape(k.inputs[0]), perm, out)
                }
                KernelOp::Copy => {
                    let n =
                        self.numel[k.output.index()] * self.lir.buffer(k.output).ty.dtype.size();
                    let src =
                        std::slice::from_raw_parts(addrs.0[k.inputs[0].index()] as *const u8, n);
                    let dst = std::slice::from_raw_parts_mut(addrs.0[k.output.index()], n);
                    layout::copy_bytes(src, dst)
                }
            }
        }
    }
}

impl Executable for CpuExecutable {
    fn execute(
        &self,
        inputs: &[HostData<'_>],
        params: &[Arc<ParamData>],
    ) -> Result<Vec<TensorData>> {
        let mut outputs = Vec::with_capacity(self.lir.outputs.len());
        for slot in &self.lir.outputs {
            let (dtype, n) = (
                self.lir.buffer(slot.buffer).ty.dtype,
                self.numel[slot.buffer.index()],
            );
            let data = TensorData::zeros(dtype, n).map_err(|_| {
                Error::Memory(format!(
                    "cannot allocate output `{}` ({n} x {dtype})",
                    slot.name
                ))
            })?;
            outputs.push(data);
        }
        let mut arena = self.arenas.take()?;
        let base = arena.base();
        let addrs = Addrs(
            self.places
                .iter()
                .map(|p| match *p {
                    Place::Input(i) => inputs[i].as_ptr() as *mut u8,
                    Place::Param(i) => params[i].as_ptr() as *mut u8,
                    // SAFETY: the plan keeps every offset + size within the arena.
                    Place::Arena(off) => unsafe { base.add(off) },
                    Place::Output(i) => outputs[i].as_mut_ptr(),
                })
                .collect(),
        );
        self.pool.install(|| {
            for k in &self.lir.kernels {
                self.run_kernel(k, &addrs);
            }
        });
        self.arenas.give_back(arena);
        Ok(outputs)
    }
}
