//! Runs a specialized LIR: resolves every buffer to memory (caller input, shared param, arena
//! offset or a fresh output), then executes the kernel schedule in order on the runtime pool.

use std::sync::Arc;

use rayon::ThreadPool;
use rlx_ir::LirModule;
use rlx_ir::lir::{BufferId, BufferKind, Kernel, KernelOp};

use rlx_ir::{ComputeOp, DType, EwProgram, EwStep, ReduceOp};

use super::arena::ArenaPool;
use super::attention::{AttnSpec, HeadLayout};
use super::executor_plan::{INLINE_WORK, PackEntry, scratch_bytes, weights_to_pack, work};
use super::gemm::{Packed, Weight};
use super::isa::Isa;
use super::types::{CastTo, with_any, with_num};
use super::{
    attention, conv, conv_channels_last, conv_positions, decoder, elementwise, gemm, layout, norm,
    pooling, reduce, rotary,
};
use crate::error::fail;
use crate::fallible::{try_copy, try_map};
use crate::{
    Error, Executable, HostData, ParamData, Precision, Result, StateMut, StopCheck, TensorData,
};

/// Where a buffer's bytes live during a run.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place {
    Input(usize),
    Param(usize),
    Arena(usize),
    Output(usize),
    Const(usize),
    State(usize),
}

pub struct CpuExecutable {
    pub(super) lir: Arc<LirModule>,
    pub(super) shapes: Vec<Vec<usize>>,
    pub(super) numel: Vec<usize>,
    places: Vec<Place>,
    arenas: ArenaPool,
    pool: Arc<ThreadPool>,
    /// The process that owns `pool`: a forked child gets a pool of its own (see `pool.rs`).
    pool_pid: u32,
    /// `RLX_PROFILE=1` when compiled: print each kernel's time after every run.
    profile: bool,
    pub(super) isa: Isa,
    /// Weights read from panels packed once per bound param (empty with `prepack = false`).
    pub(super) packs: Vec<PackEntry>,
    /// For each buffer, its entry in `packs` when it is a packed weight.
    pub(super) packed_index: Vec<Option<usize>>,
    /// The linears' number format (applies to packed weights).
    pub(super) precision: Precision,
    /// Little enough work to run on the calling thread (see `INLINE_WORK`).
    inline: bool,
}

/// Buffer addresses of one run (raw pointers so kernels can borrow several at once), and the
/// packed panels of its weights, indexed like `CpuExecutable::packs`.
pub(super) struct Addrs(pub(super) Vec<*mut u8>, pub(super) Vec<Packed>);
// SAFETY: the addresses point into memory that outlives the run (inputs and params borrowed by
// `execute`, the run's own arena and outputs); the schedule never writes a buffer while a
// kernel reads it (the verifier and the arena plan guarantee disjointness).
unsafe impl Send for Addrs {}
unsafe impl Sync for Addrs {}

impl CpuExecutable {
    pub fn new(
        lir: Arc<LirModule>,
        pool: Arc<ThreadPool>,
        isa: Isa,
        prepack: bool,
        precision: Precision,
    ) -> Result<CpuExecutable> {
        // Kernels index memory with the module's offsets and shapes: a module that is not
        // consistent (hand-built, or edited after planning) is refused, never run.
        lir.verify()?;
        if precision != Precision::F32 && !prepack {
            fail!(
                Compile,
                "precision {} converts weights once into packed panels: it needs prepack=True",
                precision.name()
            );
        }
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
                BufferKind::State => slot(&lir.states).map(Place::State),
                BufferKind::Temp => plan.offsets[root.index()].map(Place::Arena),
                BufferKind::Const => lir
                    .constants
                    .iter()
                    .position(|(b, _)| *b == root)
                    .map(Place::Const),
                BufferKind::View { .. } => None,
            };
            match place {
                Some(p) => places.push(p),
                None => fail!(Compile, "{id}: no memory assigned to its root {root}"),
            }
        }
        let numel: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let output_bytes = lir.outputs.iter().fold(0usize, |acc, o| {
            acc.saturating_add(
                numel[o.buffer.index()].saturating_mul(lir.buffer(o.buffer).ty.dtype.size()),
            )
        });
        let scratch = scratch_bytes(
            &lir,
            &shapes,
            pool.current_num_threads(),
            super::gemm::kernel(isa).nr,
        );
        super::arena::check_budget(&lir.name, plan.size, output_bytes, scratch)?;
        let arenas = ArenaPool::new(plan.size);
        // One arena up front, touched now: the first run pays no allocation or page faults.
        arenas.give_back(arenas.take()?);
        // One thread: every run on the calling thread. Handing a run to the pool's one worker
        // and back wakes two sleeping threads (~40 us on a VM, 5% of MobileNet-like b1).
        let inline = pool.current_num_threads() == 1 || work(&lir, &shapes) < INLINE_WORK;
        let (packs, packed_index) = if prepack {
            weights_to_pack(
                &lir,
                &shapes,
                &places,
                precision,
                super::gemm::kernel(isa).nr,
            )
        } else {
            (Vec::new(), vec![None; lir.buffers.len()])
        };
        Ok(CpuExecutable {
            lir,
            shapes,
            numel,
            places,
            arenas,
            pool,
            pool_pid: crate::fork_lock::current_pid(),
            profile: std::env::var("RLX_PROFILE").is_ok_and(|v| v == "1"),
            inline,
            isa,
            packs,
            packed_index,
            precision,
        })
    }

    /// # Safety
    /// `b` must hold `numel[b]` elements of type `T` at its address in `addrs`.
    pub(super) unsafe fn get<'a, T>(&self, addrs: &Addrs, b: BufferId) -> &'a [T] {
        let n = self.numel[b.index()];
        unsafe { std::slice::from_raw_parts(addrs.0[b.index()] as *const T, n) }
    }

    /// # Safety
    /// As `get`, and no other live slice may cover `b`'s memory.
    pub(super) unsafe fn get_mut<'a, T>(&self, addrs: &Addrs, b: BufferId) -> &'a mut [T] {
        let n = self.numel[b.index()];
        unsafe { std::slice::from_raw_parts_mut(addrs.0[b.index()] as *mut T, n) }
    }

    /// Bytes of buffer `b`.
    unsafe fn bytes<'a>(&self, addrs: &Addrs, b: BufferId) -> &'a [u8] {
        let n = self.numel[b.index()] * self.lir.buffer(b).ty.dtype.size();
        unsafe { std::slice::from_raw_parts(addrs.0[b.index()], n) }
    }

    unsafe fn bytes_mut<'a>(&self, addrs: &Addrs, b: BufferId) -> &'a mut [u8] {
        let n = self.numel[b.index()] * self.lir.buffer(b).ty.dtype.size();
        unsafe { std::slice::from_raw_parts_mut(addrs.0[b.index()], n) }
    }

    /// Whether an operand of `k` has fewer elements than its output (broadcast).
    fn broadcasts(&self, k: &Kernel, ins: &[(BufferId, &[usize], DType)]) -> bool {
        let out = self.numel[k.output.index()];
        ins.iter().any(|(b, _, _)| self.numel[b.index()] < out)
    }

    fn run_kernel(&self, k: &Kernel, addrs: &Addrs) -> Result<()> {
        let op = match &k.op {
            KernelOp::Copy => {
                // SAFETY: a copy reads one buffer and writes a fresh one of the same type and size.
                unsafe {
                    layout::copy_bytes(
                        self.bytes(addrs, k.inputs[0]),
                        self.bytes_mut(addrs, k.output),
                    )
                };
                return Ok(());
            }
            KernelOp::Compute(op) => op,
        };
        let ins: Vec<(BufferId, &[usize], DType)> = k
            .inputs
            .iter()
            .map(|b| {
                (
                    *b,
                    self.shapes[b.index()].as_slice(),
                    self.lir.buffer(*b).ty.dtype,
                )
            })
            .collect();
        let out_shape = self.shapes[k.output.index()].as_slice();
        // SAFETY: the schedule was verified; a kernel's output is a fresh Temp/Output (or, for a
        // cache write, its state, of which it reads nothing else) whose
        // memory overlaps nothing it reads (arena plan; the in-place exceptions are fused
        // kernels, which `executor_fused.rs` runs through raw pointers), and every buffer holds
        // `numel` elements of its dtype, which is the `T` each arm reads it as (shape inference).
        unsafe {
            let f32_in = |i: usize| self.get::<f32>(addrs, ins[i].0);
            let f32_out = || self.get_mut::<f32>(addrs, k.output);
            match op {
                ComputeOp::MatMul => gemm::matmul(
                    self.isa,
                    f32_in(0),
                    ins[0].1,
                    f32_in(1),
                    ins[1].1,
                    f32_out(),
                    out_shape,
                ),
                ComputeOp::Linear {
                    activation,
                    transpose_w,
                } => {
                    let bias = (ins.len() > 2).then(|| f32_in(2));
                    let w = ins[1].1;
                    let (k, n) = if *transpose_w {
                        (w[1], w[0])
                    } else {
                        (w[0], w[1])
                    };
                    let spec = gemm::LinearSpec {
                        k,
                        n,
                        act: *activation,
                    };
                    let w = self.weight(addrs, ins[1].0, *transpose_w);
                    gemm::linear(self.isa, f32_in(0), w, bias, &spec, f32_out())?
                }
                // An f32 operand broadcast to the output (a squeeze-excitation's gate over a
                // channels-last image) runs as a one-step elementwise program: blocks of whole
                // rows, the gate one vector operand, compiled for the ISA. (The generic loop
                // found each row's offsets by division and ran on SSE2.)
                ComputeOp::Binary(bop) if ins[0].2 == DType::F32 && self.broadcasts(k, &ins) => {
                    let steps = vec![EwStep::Load(0), EwStep::Load(1), EwStep::Binary(*bop, 0, 1)];
                    let program = Arc::new(EwProgram { steps });
                    let op = ComputeOp::Elementwise { program };
                    self.run_fused(&op, k, &ins, out_shape, addrs)?
                }
                ComputeOp::Binary(bop) => with_num!(ins[0].2, T => elementwise::binary::<T>(
                    *bop, self.get(addrs, ins[0].0), ins[0].1, self.get(addrs, ins[1].0), ins[1].1,
                    self.get_mut(addrs, k.output), out_shape), bool => fail!(DType, "{} on bool", bop)),
                ComputeOp::Compare(cop) => {
                    let out = self.get_mut::<bool>(addrs, k.output);
                    with_num!(ins[0].2, T => elementwise::compare::<T>(
                        *cop, self.get(addrs, ins[0].0), ins[0].1, self.get(addrs, ins[1].0), ins[1].1, out, out_shape),
                        bool => elementwise::compare_bool(
                        *cop, self.get(addrs, ins[0].0), ins[0].1, self.get(addrs, ins[1].0), ins[1].1, out, out_shape))
                }
                ComputeOp::Where => with_any!(ins[1].2, T => elementwise::where_::<T>(
                    self.get(addrs, ins[0].0), ins[0].1, self.get(addrs, ins[1].0), ins[1].1,
                    self.get(addrs, ins[2].0), ins[2].1, self.get_mut(addrs, k.output), out_shape)),
                ComputeOp::Unary(uop) => elementwise::unary(*uop, f32_in(0), f32_out()),
                ComputeOp::Cast { to } => with_any!(ins[0].2, A => with_any!(*to, B =>
                    elementwise::cast::<A, B>(self.get(addrs, ins[0].0), self.get_mut(addrs, k.output)))),
                ComputeOp::Softmax { axis } => {
                    let s = ins[0].1;
                    norm::softmax(
                        f32_in(0),
                        s[*axis],
                        s[axis + 1..].iter().product(),
                        f32_out(),
                    )
                }
                ComputeOp::LayerNorm { eps } => norm::layer_norm(
                    f32_in(0),
                    f32_in(1),
                    f32_in(2),
                    *eps,
                    last(ins[0].1),
                    f32_out(),
                ),
                ComputeOp::RmsNorm { eps } => {
                    norm::rms_norm(f32_in(0), f32_in(1), *eps, last(ins[0].1), f32_out())
                }
                ComputeOp::Rotary { theta } => {
                    let offsets = self.int_operand(addrs, ins[1].0, "rotary offsets")?;
                    rotary::rotary(f32_in(0), ins[0].1, &offsets, *theta, f32_out())?
                }
                ComputeOp::Reduce { op: rop, axes, .. } => match (rop, ins[0].2) {
                    (ReduceOp::Mean, _) => {
                        reduce::mean(self.isa, f32_in(0), ins[0].1, axes, f32_out())
                    }
                    (_, dt) => {
                        with_num!(dt, T => reduce::reduce::<T>(self.isa, *rop, self.get(addrs, ins[0].0), ins[0].1, axes,
                        self.get_mut(addrs, k.output)), bool => fail!(DType, "{} on bool", rop))
                    }
                },
                ComputeOp::Transpose { perm } => with_any!(ins[0].2, T => layout::transpose::<T>(
                    self.get(addrs, ins[0].0), ins[0].1, perm, self.get_mut(addrs, k.output))),
                ComputeOp::Concat { axis } => {
                    let es = ins[0].2.size();
                    let outer: usize = out_shape[..*axis].iter().product();
                    let parts: Vec<(&[u8], usize)> = ins
                        .iter()
                        .map(|(b, s, _)| {
                            (
                                self.bytes(addrs, *b),
                                s[*axis..].iter().product::<usize>() * es,
                            )
                        })
                        .collect();
                    layout::concat(&parts, outer, self.bytes_mut(addrs, k.output))
                }
                ComputeOp::Slice { axis, start, end } => {
                    let s = ins[0].1;
                    let (start, end) = (dim_value(start)?, dim_value(end)?);
                    let inner = s[axis + 1..].iter().product::<usize>() * ins[0].2.size();
                    let outer = s[..*axis].iter().product();
                    layout::slice(
                        self.bytes(addrs, ins[0].0),
                        outer,
                        s[*axis],
                        inner,
                        start,
                        end,
                        self.bytes_mut(addrs, k.output),
                    )
                }
                ComputeOp::Gather { axis } => {
                    let s = ins[0].1;
                    let idx = self.int_operand(addrs, ins[1].0, "gather indices")?;
                    let inner = s[axis + 1..].iter().product::<usize>() * ins[0].2.size();
                    let outer = s[..*axis].iter().product();
                    layout::gather(
                        self.bytes(addrs, ins[0].0),
                        outer,
                        s[*axis],
                        inner,
                        &idx,
                        self.bytes_mut(addrs, k.output),
                    )?
                }
                ComputeOp::Attention { scale, causal } => {
                    let (q, kk, v) = (ins[0].1, ins[1].1, ins[2].1);
                    let (heads, kv_heads) = (q[1], kk[1]);
                    let (sq, sk, d, dv) = (q[2], kk[2], q[3], v[3]);
                    let layout = [
                        HeadLayout::bhsd(heads, sq, d),
                        HeadLayout::bhsd(kv_heads, sk, d),
                        HeadLayout::bhsd(kv_heads, sk, dv),
                        HeadLayout::bhsd(heads, sq, dv),
                    ];
                    let spec = AttnSpec {
                        batch: q[0],
                        heads,
                        kv_heads,
                        sq,
                        sk,
                        d,
                        dv,
                        scale: *scale,
                        causal: *causal,
                        layout,
                        bf16_mix: self.gemm_precision()
                            == super::executor_plan::GemmPrecision::Bf16,
                    };
                    let mask = ins
                        .get(3)
                        .map(|(b, _, _)| self.keep_mask(addrs, *b))
                        .transpose()?;
                    attention::attention(
                        self.isa,
                        f32_in(0),
                        f32_in(1),
                        f32_in(2),
                        mask.as_deref(),
                        &spec,
                        f32_out(),
                    )?
                }
                ComputeOp::CacheWrite => {
                    // The output is the state itself (input 0): only the new rows are read.
                    let pos = self.int_operand(addrs, ins[2].0, "cache positions")?;
                    decoder::cache_write(f32_out(), out_shape[2], f32_in(1), ins[1].1, &pos)?
                }
                ComputeOp::KvAttention { scale } => {
                    let (q, kk, v) = (ins[0].1, ins[1].1, ins[2].1);
                    let spec = decoder::KvSpec {
                        batch: q[0],
                        heads: q[1],
                        kv_heads: kk[1],
                        seq: q[2],
                        ctx: kk[2],
                        d: q[3],
                        dv: v[3],
                        scale: *scale,
                    };
                    let pos = self.int_operand(addrs, ins[3].0, "attention positions")?;
                    decoder::kv_attention(
                        self.isa,
                        f32_in(0),
                        f32_in(1),
                        f32_in(2),
                        &pos,
                        &spec,
                        f32_out(),
                    )?
                }
                ComputeOp::Conv(c) => {
                    // The arena plan may put the output over the residual's memory (its last
                    // use, `ConvAttrs::sums_onto_residual`): the residual is then read through
                    // the output alone, by a path that adds onto it, or from a copy.
                    let res = ins[ins.len() - 1].0;
                    let onto_residual =
                        c.residual && addrs.0[res.index()] == addrs.0[k.output.index()];
                    let copied = match onto_residual && !c.channels_last {
                        true => Some(crate::fallible::try_copy(
                            "a convolution residual",
                            f32_out(),
                        )?),
                        false => None,
                    };
                    let epi = conv::Epilogue {
                        bias: c.has_bias(ins.len()).then(|| f32_in(2)),
                        residual: match &copied {
                            Some(r) => Some(r.as_slice()),
                            None => (c.residual && !onto_residual).then(|| f32_in(ins.len() - 1)),
                        },
                        act: c.act,
                    };
                    let (xs, ws) = (ins[0].1, ins[1].1);
                    let weight = self.weight(addrs, ins[1].0, true);
                    if c.channels_last {
                        let packed = match weight {
                            Weight::Packed(p) => Some(p),
                            _ => None,
                        };
                        let run = match onto_residual {
                            true => conv_channels_last::conv_onto_residual,
                            false => conv_channels_last::conv,
                        };
                        run(
                            self.isa,
                            f32_in(0),
                            xs,
                            packed,
                            f32_in(1),
                            ws,
                            &epi,
                            c,
                            f32_out(),
                            out_shape,
                        )?
                    } else {
                        match weight {
                            // Packed for a convolution that `conv_positions::chosen` picked (the
                            // same param may feed another convolution that it did not).
                            Weight::Packed(packed)
                                if conv_positions::chosen(xs, ws, out_shape, c.groups) =>
                            {
                                conv_positions::conv(
                                    self.isa,
                                    f32_in(0),
                                    ins[0].1,
                                    packed,
                                    ins[1].1,
                                    &epi,
                                    c,
                                    f32_out(),
                                    out_shape,
                                )?
                            }
                            _ => conv::conv(
                                self.isa,
                                f32_in(0),
                                ins[0].1,
                                f32_in(1),
                                ins[1].1,
                                &epi,
                                c,
                                f32_out(),
                                out_shape,
                            )?,
                        }
                    }
                }
                ComputeOp::TopK {
                    axis,
                    k: count,
                    largest,
                } => {
                    let out = self.get_mut::<i64>(addrs, k.output);
                    with_num!(ins[0].2, T => reduce::top_k::<T>(self.get(addrs, ins[0].0),
                        ins[0].1, *axis, *count, *largest, out)?, bool => fail!(DType, "{} on bool", op.name()))
                }
                ComputeOp::ArgReduce {
                    max, axis, last, ..
                } => {
                    let out = self.get_mut::<i64>(addrs, k.output);
                    with_num!(ins[0].2, T => reduce::arg_reduce::<T>(self.get(addrs, ins[0].0),
                        ins[0].1, *axis, *max, *last, out), bool => fail!(DType, "{} on bool", op.name()))
                }
                ComputeOp::Pool(p) if p.channels_last => pooling::pool_channels_last(
                    self.isa,
                    f32_in(0),
                    ins[0].1,
                    p,
                    f32_out(),
                    out_shape,
                ),
                ComputeOp::Pool(p) => pooling::pool(f32_in(0), ins[0].1, p, f32_out(), out_shape),
                ComputeOp::Lrn {
                    size,
                    alpha,
                    beta,
                    bias,
                } => pooling::lrn(f32_in(0), ins[0].1, *size, *alpha, *beta, *bias, f32_out()),
                ComputeOp::SwiGlu => {
                    decoder::swiglu(self.isa, f32_in(0), last(out_shape), f32_out())
                }
                ComputeOp::ScaledSoftmax { .. }
                | ComputeOp::Elementwise { .. }
                | ComputeOp::AddLayerNorm { .. }
                | ComputeOp::LinearGroup { .. }
                | ComputeOp::AttentionPacked { .. } => {
                    self.run_fused(op, k, &ins, out_shape, addrs)?
                }
            }
        }
        Ok(())
    }
}

impl CpuExecutable {
    /// A padding mask of any dtype as an additive term: 0 where non-zero (attend), -inf where 0.
    /// An integer operand (gather indices, rotary offsets) as i64s, copied fallibly.
    fn int_operand(&self, addrs: &Addrs, b: BufferId, what: &str) -> Result<Vec<i64>> {
        // SAFETY: `b` holds its recorded dtype and size.
        match self.lir.buffer(b).ty.dtype {
            DType::I64 => try_copy(what, unsafe { self.get::<i64>(addrs, b) }),
            DType::I32 => try_map(what, unsafe { self.get::<i32>(addrs, b) }, |&i| {
                i64::from(i)
            }),
            dt => fail!(DType, "{what} must be i64 or i32, got {dt}"),
        }
    }

    pub(super) fn keep_mask(&self, addrs: &Addrs, b: BufferId) -> Result<Vec<f32>> {
        // SAFETY: `b` is a mask buffer of its recorded dtype and size.
        with_any!(self.lir.buffer(b).ty.dtype, T => {
            let m: &[T] = unsafe { self.get(addrs, b) };
            try_map("an attention mask", m, |x| if elementwise_nonzero(*x) { 0.0 } else { f32::NEG_INFINITY })
        })
    }

    fn run_profiled(&self, addrs: &Addrs) -> Result<()> {
        let mut lines = Vec::with_capacity(self.lir.kernels.len());
        let total = std::time::Instant::now();
        for k in &self.lir.kernels {
            let t = std::time::Instant::now();
            self.run_kernel(k, addrs)?;
            // One unit for every line, so a long run's kernels compare at a glance.
            lines.push(format!(
                "  {:>10.1}µs  {} = {}{:?}",
                t.elapsed().as_secs_f64() * 1e6,
                k.output,
                k.op.name(),
                self.shapes[k.output.index()]
            ));
        }
        eprintln!(
            "[rlx] run of {} took {:.2?}:\n{}",
            self.lir.name,
            total.elapsed(),
            lines.join("\n")
        );
        Ok(())
    }
}

pub(super) fn last(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

fn dim_value(d: &rlx_ir::Dim) -> Result<usize> {
    match d.as_const().and_then(|v| usize::try_from(v).ok()) {
        Some(v) => Ok(v),
        None => fail!(
            Compile,
            "size `{d}` is not a concrete non-negative value: specialize first"
        ),
    }
}

/// Non-zero test used for masks of any dtype.
fn elementwise_nonzero<T: CastTo<bool>>(x: T) -> bool {
    x.cast()
}

impl CpuExecutable {
    /// Kernels read inputs and params with this module's sizes: anything else is refused here,
    /// whoever the caller is.
    /// Each given `(dtype, elements)` against its slot's buffer.
    fn check_elements(
        &self,
        what: &str,
        slots: &[rlx_ir::lir::IoSlot],
        given: impl Iterator<Item = (DType, usize)>,
    ) -> Result<()> {
        for (slot, (dt, len)) in slots.iter().zip(given) {
            let (dtype, n) = (
                self.lir.buffer(slot.buffer).ty.dtype,
                self.numel[slot.buffer.index()],
            );
            if dt != dtype || len != n {
                fail!(
                    Binding,
                    "{what} `{}`: got {len} {dt} elements, this variant reads {n} {dtype}",
                    slot.name
                );
            }
        }
        Ok(())
    }

    fn check_args(
        &self,
        inputs: &[HostData<'_>],
        params: &[Arc<ParamData>],
        states: &[StateMut<'_>],
    ) -> Result<()> {
        let lir = &self.lir;
        if states.len() != lir.states.len() {
            fail!(
                Binding,
                "`{}` takes {} states, got {}",
                lir.name,
                lir.states.len(),
                states.len()
            );
        }
        self.check_elements(
            "state",
            &lir.states,
            states.iter().map(|x| (x.dtype(), x.len())),
        )?;
        if inputs.len() != lir.inputs.len() || params.len() != lir.params.len() {
            fail!(
                Binding,
                "`{}` takes {} inputs and {} params, got {} and {}",
                lir.name,
                lir.inputs.len(),
                lir.params.len(),
                inputs.len(),
                params.len()
            );
        }
        self.check_elements(
            "input",
            &lir.inputs,
            inputs.iter().map(|x| (x.dtype(), x.len())),
        )?;
        for (slot, p) in lir.params.iter().zip(params) {
            let dtype = lir.buffer(slot.buffer).ty.dtype;
            let bytes = self.numel[slot.buffer.index()] * dtype.size();
            if p.dtype() != dtype || p.nbytes() != bytes {
                fail!(
                    Binding,
                    "param `{}`: bound {} bytes of {}, this variant reads {bytes} bytes of {dtype}",
                    slot.name,
                    p.nbytes(),
                    p.dtype()
                );
            }
        }
        Ok(())
    }
}

impl Executable for CpuExecutable {
    fn prepare(&self, params: &[Option<Arc<ParamData>>]) -> Result<()> {
        for e in &self.packs {
            if let Some(data) = &params[e.param] {
                self.pack(e, data)?;
            }
        }
        Ok(())
    }

    fn isa(&self) -> Option<&'static str> {
        Some(self.isa.name())
    }

    fn gemm_precision(&self) -> Option<&'static str> {
        Some(self.gemm_precision().describe())
    }

    fn module(&self) -> &LirModule {
        &self.lir
    }

    fn execute(
        &self,
        inputs: &[HostData<'_>],
        params: &[Arc<ParamData>],
        states: &mut [StateMut<'_>],
        stop: Option<StopCheck<'_>>,
    ) -> Result<Vec<TensorData>> {
        self.check_args(inputs, params, states)?;
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
        let packed = self
            .packs
            .iter()
            .map(|e| self.pack(e, &params[e.param]))
            .collect::<Result<Vec<_>>>()?;
        let state_ptrs: Vec<*mut u8> = states.iter_mut().map(|s| s.as_mut_ptr()).collect();
        let addrs = Addrs(
            self.places
                .iter()
                .map(|p| match *p {
                    Place::Input(i) => inputs[i].as_ptr() as *mut u8,
                    Place::Param(i) => params[i].as_ptr() as *mut u8,
                    // SAFETY: the plan keeps every offset + size within the arena.
                    Place::Arena(off) => unsafe { base.add(off) },
                    Place::Output(i) => outputs[i].as_mut_ptr(),
                    Place::Const(i) => self.lir.constants[i].1.data.as_ptr() as *mut u8,
                    Place::State(i) => state_ptrs[i],
                })
                .collect(),
            packed,
        );
        let body = || {
            if self.profile {
                return self.run_profiled(&addrs);
            }
            self.lir.kernels.iter().try_for_each(|k| {
                if stop.is_some_and(|should_stop| should_stop()) {
                    return Err(Error::Cancelled);
                }
                self.run_kernel(k, &addrs)
            })
        };
        // On the calling thread where it has a pool that fits: handing a run to the pool and
        // waking a worker costs ~20 us, more than a small graph's whole run.
        let result = super::pool::run_on(&self.pool, self.pool_pid, self.inline, body);
        self.arenas.give_back(arena);
        result?.map(|()| outputs)
    }
}
