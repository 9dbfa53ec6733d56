//! The low-level IR: a linear schedule of kernels over buffers, plus an arena plan once the
//! sizes are concrete. A template LIR has symbolic shapes and no plan; a specialized LIR has
//! only static shapes, the binding it was made for, and a plan.

mod print;
mod verify;

use std::fmt;

use std::sync::Arc;

use crate::ops::{ComputeOp, Constant};
use crate::{Dim, DimBinding, Symbol, TensorType};

/// A buffer of the LIR.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct BufferId(pub u32);

impl BufferId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// Where a buffer's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BufferKind {
    /// Read in place from the caller.
    Input,
    /// Read from the shared parameter store.
    Param,
    /// Scratch, placed in the per-run arena.
    Temp,
    /// Written into memory that is handed back to the caller.
    Output,
    /// Baked-in data of the module (`LirModule::constants`).
    Const,
    /// Memory of the caller's session that outlives the run (a KV cache): holds its previous
    /// contents on entry, updated in place by the one `cache_write` kernel that writes it.
    State,
    /// Same bytes as another buffer, another shape (reshape costs nothing).
    View { of: BufferId },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Buffer {
    pub kind: BufferKind,
    pub ty: TensorType,
}

/// What a kernel computes: one compute op of the IR, or a copy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum KernelOp {
    Compute(ComputeOp),
    Copy,
}

impl KernelOp {
    pub fn name(&self) -> &'static str {
        match self {
            KernelOp::Compute(c) => c.name(),
            KernelOp::Copy => "copy",
        }
    }
}

/// A size relation the specializer must check: `lhs <= rhs` (e.g. a slice end within its dim).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DimCheck {
    pub lhs: Dim,
    pub rhs: Dim,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kernel {
    pub op: KernelOp,
    pub inputs: Vec<BufferId>,
    pub output: BufferId,
}

/// A named input, param or output and the buffer that holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoSlot {
    pub name: String,
    pub buffer: BufferId,
}

/// Byte offsets of temp buffers in one arena.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ArenaPlan {
    /// Per buffer: the offset of a temp, `None` for every other kind.
    pub offsets: Vec<Option<usize>>,
    /// Arena size in bytes.
    pub size: usize,
    /// Sum of all temp sizes: the arena size without reuse.
    pub temp_bytes: usize,
    /// Largest sum of temps live at one kernel: a lower bound on `size`. A temp whose last
    /// reader writes its result in place hands its bytes over and counts once.
    pub max_live_bytes: usize,
    /// `(output, input)` pairs where a kernel writes its output over its input, which it reads
    /// for the last time (elementwise kernels only; same size, same offset).
    pub in_place: Vec<(BufferId, BufferId)>,
}

/// Alignment of arena offsets and parameter-block offsets, in bytes.
pub const ALIGN: usize = 64;

pub fn align_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGN - 1).map(|x| x / ALIGN * ALIGN)
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LirModule {
    pub name: String,
    pub symbols: Vec<Symbol>,
    /// The binding a specialized module was made for; `None` in a template.
    pub binding: Option<DimBinding>,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub inputs: Vec<IoSlot>,
    pub params: Vec<IoSlot>,
    pub outputs: Vec<IoSlot>,
    /// Run-spanning state (KV caches), read and written in place.
    pub states: Vec<IoSlot>,
    pub constants: Vec<(BufferId, Arc<Constant>)>,
    /// Relations between sizes that only a binding can decide.
    pub checks: Vec<DimCheck>,
    pub arena: Option<ArenaPlan>,
}

impl LirModule {
    pub fn buffer(&self, b: BufferId) -> &Buffer {
        &self.buffers[b.index()]
    }

    /// Follows views to the buffer that owns the bytes.
    pub fn root(&self, mut b: BufferId) -> BufferId {
        // Views only point to earlier buffers (checked by the verifier), so this terminates.
        while let BufferKind::View { of } = self.buffers[b.index()].kind {
            if of >= b {
                break;
            }
            b = of;
        }
        b
    }

    /// Static shape of a buffer, when it has one.
    pub fn static_shape(&self, b: BufferId) -> Option<Vec<usize>> {
        self.buffer(b).ty.shape.as_static()
    }

    /// Static byte size of a buffer, when it has one.
    pub fn static_bytes(&self, b: BufferId) -> Option<usize> {
        let buf = self.buffer(b);
        let n = buf
            .ty
            .shape
            .as_static()?
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))?;
        n.checked_mul(buf.ty.dtype.size())
    }

    /// Live interval `[first kernel, last kernel]` of each temp buffer (by root), counting the
    /// kernel that writes it and every kernel that reads it or a view of it.
    pub fn temp_intervals(&self) -> Vec<Option<(usize, usize)>> {
        let mut iv: Vec<Option<(usize, usize)>> = vec![None; self.buffers.len()];
        for (k, kernel) in self.kernels.iter().enumerate() {
            for b in kernel.inputs.iter().chain([&kernel.output]) {
                let r = self.root(*b);
                if self.buffers[r.index()].kind == BufferKind::Temp {
                    let e = iv[r.index()].get_or_insert((k, k));
                    e.0 = e.0.min(k);
                    e.1 = e.1.max(k);
                }
            }
        }
        iv
    }

    pub fn verify(&self) -> crate::Result<()> {
        verify::verify(self)
    }
}
