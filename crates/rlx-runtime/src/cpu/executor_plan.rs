//! What the CPU executable decides once per variant beside its buffer places: which params it
//! reads as packed GEMM weights (and fetching those panels per run), and whether a run is small
//! enough to stay on the calling thread.

use rlx_ir::ComputeOp;
use rlx_ir::LirModule;
use rlx_ir::lir::{BufferId, KernelOp};

use super::executor::{Addrs, CpuExecutable, Place};
use super::gemm::{Packed, PackedB, PackedBf16, PackedI8, Weight, bf16, int8};
use super::isa::Isa;
use crate::{ParamData, Precision, Result};

/// Estimated work (multiply-adds, plus 32 per element other kernels write) below which a
/// run stays on the calling thread: about 15 us on one core, less than a pool hand-off.
pub(super) const INLINE_WORK: usize = 1 << 21;

/// A param that linears read as a `[k, n]` B operand (stored `[n, k]` when transposed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PackEntry {
    pub(super) param: usize,
    k: usize,
    n: usize,
    transposed: bool,
    /// A convolution weight `[n, c, taps]` (transposed, `k = c * taps`) packs with its K axis
    /// reordered to `(tap, c)`, the order position-major patches are laid out in; 1 otherwise.
    taps: usize,
    /// f32 panels whatever the precision (convolutions are computed in f32).
    f32_only: bool,
    /// A 3x3 convolution weight of this many output channels, Winograd-transformed
    /// (`winograd::transformed_weights`: `k` input channels, `n` 16 padded output rows).
    winograd: Option<usize>,
    /// A grouped 1x1 convolution's `[n, k]` weight (`k` input channels per group): each
    /// group's `n / groups` rows packed as whole panels of their own (`grouped_padded`).
    groups: usize,
}

impl CpuExecutable {
    /// The weight `b` as a GEMM operand: its packed panels, or the bound array itself.
    ///
    /// # Safety
    /// As `get`.
    pub(super) unsafe fn weight<'a>(
        &self,
        addrs: &'a Addrs,
        b: BufferId,
        transposed: bool,
    ) -> Weight<'a> {
        match self.packed_index[b.index()] {
            Some(e) => addrs.1[e].weight(),
            // SAFETY: forwarded.
            None => Weight::Raw {
                w: unsafe { self.get(addrs, b) },
                transposed,
            },
        }
    }

    /// The packed panels of entry `e`'s weight in this executable's precision, built the first
    /// time any variant asks.
    pub(super) fn pack(&self, e: &PackEntry, data: &ParamData) -> Result<Packed> {
        let nr = super::gemm::kernel(self.isa).nr;
        let variant = (u64::from(e.winograd.is_some()) << 63)
            | ((e.groups as u64) << 40)
            | ((e.taps as u64) << 32)
            | ((nr as u64) << 1)
            | u64::from(e.transposed);
        // SAFETY: the param is bound with k * n f32 elements (the store checked its dtype and
        // shape against the manifest this LIR was planned with).
        let w = || unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f32, e.k * e.n) };
        if e.f32_only {
            return self
                .pack_f32(data, e, ("gemm_b", variant), None)
                .map(Packed::F32);
        }
        match self.gemm_precision() {
            GemmPrecision::F32 => self
                .pack_f32(data, e, ("gemm_b", variant), None)
                .map(Packed::F32),
            GemmPrecision::Bf16Weights => self
                .pack_f32(
                    data,
                    e,
                    ("gemm_b_bf16_in_f32", variant),
                    Some(bf16::round_bf16),
                )
                .map(Packed::F32),
            GemmPrecision::Bf16 => data
                .derived(("gemm_b_bf16", u64::from(e.transposed)), || {
                    let p = PackedBf16::new(w(), e.k, e.n, e.transposed)?;
                    let bytes = p.bytes();
                    Ok((p, bytes))
                })
                .map(Packed::Bf16),
            GemmPrecision::Int8Vnni | GemmPrecision::Int8AvxVnni | GemmPrecision::Int8Portable => {
                data.derived(("gemm_b_int8", u64::from(e.transposed)), || {
                    let p = PackedI8::new(w(), e.k, e.n, e.transposed)?;
                    let bytes = p.bytes();
                    Ok((p, bytes))
                })
                .map(Packed::Int8)
            }
        }
    }

    /// f32 panels of entry `e` under `key` (each element through `map` when given): shared
    /// through the param's shared directory when it has one, else built in this process's
    /// memory. Built once; every later run finds them with one lookup.
    fn pack_f32(
        &self,
        data: &ParamData,
        e: &PackEntry,
        key: (&'static str, u64),
        map: Option<fn(f32) -> f32>,
    ) -> Result<std::sync::Arc<PackedB>> {
        if let Some(p) = data.derived_cached::<PackedB>(key) {
            return Ok(p);
        }
        let nr = super::gemm::kernel(self.isa).nr;
        // Hashed before the derived-data lock is taken (the hash is derived data too).
        let shared = match data.shared_dir() {
            Some(dir) => Some((dir, data.content_hash()?)),
            None => None,
        };
        data.derived(key, || {
            // The bound elements: k * n, or m * k * 9 for a weight Winograd transforms.
            let len = e.winograd.map_or(e.k * e.n, |m| m * e.k * 9);
            // SAFETY: the param is bound with len f32 elements (checked by the store).
            let w = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f32, len) };
            let reordered;
            let mut n = e.n;
            let w = if let Some(m) = e.winograd {
                reordered = super::winograd::transformed_weights(w, m, e.k, e.n / 16)?;
                &reordered[..]
            } else if e.groups > 1 {
                reordered = grouped_padded(w, e.n / e.groups, e.k, e.groups, nr)?;
                n = reordered.len() / e.k.max(1);
                &reordered[..]
            } else if e.taps > 1 {
                reordered = taps_major(w, e.n, e.k / e.taps, e.taps)?;
                &reordered[..]
            } else {
                w
            };
            let p = match shared {
                None => {
                    let mut p = PackedB::new(w, e.k, n, e.transposed, nr)?;
                    if let Some(f) = map {
                        p.map_in_place(f);
                    }
                    p
                }
                Some((dir, hash)) => {
                    let mut id = blake3::Hasher::new();
                    id.update(b"rlx packed f32 panels v1\0");
                    id.update(&hash);
                    for v in [
                        e.k,
                        e.n,
                        nr,
                        usize::from(e.transposed),
                        usize::from(map.is_some()),
                    ] {
                        id.update(&(v as u64).to_le_bytes());
                    }
                    // Only reordered panels say so: a linear's id is what it was before
                    // convolutions shared panels, so existing files stay valid.
                    if e.taps > 1 {
                        id.update(b"taps");
                        id.update(&(e.taps as u64).to_le_bytes());
                    }
                    if let Some(m) = e.winograd {
                        id.update(b"winograd f2x2 3x3");
                        id.update(&(m as u64).to_le_bytes());
                    }
                    if e.groups > 1 {
                        id.update(b"groups");
                        id.update(&(e.groups as u64).to_le_bytes());
                    }
                    let id = id.finalize();
                    PackedB::shared(w, e.k, n, e.transposed, nr, map, dir, id.as_bytes())?
                }
            };
            let bytes = if p.is_shared() { 0 } else { p.bytes() };
            Ok((p, bytes))
        })
    }

    /// How this executable's packed linears compute.
    pub(super) fn gemm_precision(&self) -> GemmPrecision {
        match self.precision {
            Precision::F32 => GemmPrecision::F32,
            Precision::Bf16 if self.isa == Isa::Avx512 && bf16::supported() => GemmPrecision::Bf16,
            Precision::Bf16 => GemmPrecision::Bf16Weights,
            Precision::Int8 => match int8::Int8Kernel::for_isa(self.isa) {
                int8::Int8Kernel::Avx512Vnni => GemmPrecision::Int8Vnni,
                int8::Int8Kernel::AvxVnni => GemmPrecision::Int8AvxVnni,
                int8::Int8Kernel::Portable => GemmPrecision::Int8Portable,
            },
        }
    }
}

/// A grouped weight's `[groups * mg, k]` rows with zero rows after each group's `mg` up to a
/// multiple of `nr`: packed, each group's rows are whole panels of their own.
pub(super) fn grouped_padded(
    w: &[f32],
    mg: usize,
    k: usize,
    groups: usize,
    nr: usize,
) -> Result<Vec<f32>> {
    let padded = mg.div_ceil(nr.max(1)) * nr;
    let len = groups.saturating_mul(padded).saturating_mul(k);
    let mut out = crate::fallible::try_zeroed::<f32>("grouped convolution weights", len)?;
    for (src, dst) in w
        .chunks_exact(mg * k)
        .zip(out.chunks_exact_mut(padded * k))
        .take(groups)
    {
        dst[..mg * k].copy_from_slice(src);
    }
    Ok(out)
}

/// `[n, c, taps]` rows reordered to `[n, taps, c]`.
pub(super) fn taps_major(w: &[f32], n: usize, c: usize, taps: usize) -> Result<Vec<f32>> {
    let mut out = crate::fallible::try_zeroed::<f32>("reordered convolution weights", w.len())?;
    for (src, dst) in w
        .chunks_exact(c * taps)
        .zip(out.chunks_exact_mut(c * taps))
        .take(n)
    {
        for ch in 0..c {
            for t in 0..taps {
                dst[t * c + ch] = src[ch * taps + t];
            }
        }
    }
    Ok(out)
}

/// What a packed linear runs as, for the report: the precision asked for, on this CPU and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPrecision {
    F32,
    /// bf16 inputs and weights, f32 accumulation (AVX512-BF16).
    Bf16,
    /// bf16-rounded weights on the f32 kernels: the CPU or the chosen path has no bf16 dot.
    Bf16Weights,
    /// u8 x s8 -> i32 on AVX512-VNNI.
    Int8Vnni,
    /// u8 x s8 -> i32 on AVX-VNNI (256-bit, the `avx2` path).
    Int8AvxVnni,
    /// The same integers from a portable loop (no VNNI on this path): slow, for correctness.
    Int8Portable,
}

impl GemmPrecision {
    pub fn describe(self) -> &'static str {
        match self {
            GemmPrecision::F32 => "f32",
            GemmPrecision::Bf16 => "bf16 x bf16 -> f32 (avx512_bf16 vdpbf16ps)",
            GemmPrecision::Bf16Weights => "bf16 weights, f32 compute (no avx512_bf16 on this path)",
            GemmPrecision::Int8Vnni => "u8 x s8 -> i32, dequantized to f32 (avx512_vnni vpdpbusd)",
            GemmPrecision::Int8AvxVnni => "u8 x s8 -> i32, dequantized to f32 (avx_vnni vpdpbusd)",
            GemmPrecision::Int8Portable => {
                "u8 x s8 -> i32, dequantized to f32 (portable loop: no vnni on this path)"
            }
        }
    }
}

/// Estimated work of one run: multiply-adds of the products, 32 per element written by the
/// other kernels (an elementwise op costs about as much as 32 multiply-adds in a GEMM).
pub(super) fn work(lir: &LirModule, shapes: &[Vec<usize>]) -> usize {
    let numel = |b: BufferId| shapes[b.index()].iter().product::<usize>();
    lir.kernels.iter().fold(0usize, |acc, k| {
        let out = numel(k.output);
        let inner = match &k.op {
            KernelOp::Compute(ComputeOp::MatMul | ComputeOp::Linear { .. })
            | KernelOp::Compute(ComputeOp::LinearGroup { .. }) => {
                shapes[k.inputs[0].index()].last().copied().unwrap_or(1)
            }
            KernelOp::Compute(ComputeOp::Conv(_)) => {
                shapes[k.inputs[1].index()][1..].iter().product()
            }
            KernelOp::Compute(
                ComputeOp::Attention { .. }
                | ComputeOp::AttentionPacked { .. }
                | ComputeOp::KvAttention { .. },
            ) => {
                // Scores and mix: about 2 * keys * head_dim per output element.
                let kshape = &shapes[k.inputs[1].index()];
                2 * kshape
                    .get(kshape.len().wrapping_sub(2))
                    .copied()
                    .unwrap_or(1)
                    * 32
            }
            _ => 32,
        };
        acc.saturating_add(out.saturating_mul(inner))
    })
}

/// A param read as packed weights: its buffer and entry (`param` set when added).
type Read = (BufferId, PackEntry);

impl PackEntry {
    /// A linear's `[k, n]` operand (stored `[n, k]` when transposed), in the executable's
    /// precision.
    fn linear(k: usize, n: usize, transposed: bool) -> PackEntry {
        PackEntry {
            param: 0,
            k,
            n,
            transposed,
            taps: 1,
            f32_only: false,
            winograd: None,
            groups: 1,
        }
    }

    /// A convolution's `[n, k]` weight: f32 panels in every precision.
    fn conv(k: usize, n: usize) -> PackEntry {
        PackEntry {
            f32_only: true,
            ..PackEntry::linear(k, n, true)
        }
    }
}

/// The param buffers that linears (and position-major convolutions) read as packed weights,
/// and each buffer's entry among them.
pub(super) fn weights_to_pack(
    lir: &LirModule,
    shapes: &[Vec<usize>],
    places: &[Place],
    precision: Precision,
    nr: usize,
) -> (Vec<PackEntry>, Vec<Option<usize>>) {
    let mut packs: Vec<PackEntry> = Vec::new();
    let mut index = vec![None; lir.buffers.len()];
    // Param `b` read as `[k, n]` (stored `[n, k]` when transposed).
    let mut add = |(b, e): Read| {
        let Place::Param(param) = places[b.index()] else {
            return;
        };
        let e = PackEntry { param, ..e };
        let i = packs.iter().position(|p| *p == e).unwrap_or_else(|| {
            packs.push(e);
            packs.len() - 1
        });
        index[b.index()] = Some(i);
    };
    // A linear's `[r, c]` weight is `[k, n]`, or `[n, k]` when transposed.
    let linear = |b: BufferId, transposed: bool| match shapes[b.index()].as_slice() {
        [r, c] if transposed => Some((b, PackEntry::linear(*c, *r, true))),
        [r, c] => Some((b, PackEntry::linear(*r, *c, false))),
        _ => None,
    };
    for k in &lir.kernels {
        let weights: Vec<_> = match &k.op {
            KernelOp::Compute(ComputeOp::Linear { transpose_w, .. }) => {
                vec![linear(k.inputs[1], *transpose_w)]
            }
            KernelOp::Compute(ComputeOp::LinearGroup {
                parts,
                has_bias,
                transpose_w,
            }) => {
                let per = if *has_bias { 2 } else { 1 };
                (0..*parts)
                    .map(|p| linear(k.inputs[1 + p * per], *transpose_w))
                    .collect()
            }
            // A position-major convolution reads its `[m, c, kh, kw]` weight as `[k, m]`, K in
            // (ky, kx, c) order, as f32 panels in every precision (convolutions are computed
            // in f32). Channel-major convolutions in reduced precision read their weights in
            // place, as they did before channels-last ones existed.
            KernelOp::Compute(ComputeOp::Conv(c))
                if precision == Precision::F32 || c.channels_last =>
            {
                let (xs, ws) = (&shapes[k.inputs[0].index()], &shapes[k.inputs[1].index()]);
                let os = &shapes[k.output.index()];
                // Channels-last convolutions of one group always run position-major.
                let chosen = if c.channels_last {
                    c.groups == 1
                } else {
                    super::conv_positions::chosen(xs, ws, os, c.groups)
                };
                let taps: usize = ws[2..].iter().product();
                let w = k.inputs[1];
                let entry = if super::winograd::chosen(xs, ws, os, c) {
                    let n = 16 * super::winograd::padded_channels(ws[0], nr);
                    Some(PackEntry {
                        transposed: false,
                        taps,
                        winograd: Some(ws[0]),
                        ..PackEntry::conv(ws[1], n)
                    })
                } else if c.channels_last && c.grouped_pointwise(ws) {
                    Some(PackEntry {
                        groups: c.groups,
                        ..PackEntry::conv(ws[1], ws[0])
                    })
                } else {
                    chosen.then(|| PackEntry {
                        taps,
                        ..PackEntry::conv(ws[1] * taps, ws[0])
                    })
                };
                vec![entry.map(|e| (w, e))]
            }
            _ => Vec::new(),
        };
        for read in weights.into_iter().flatten() {
            add(read);
        }
    }
    (packs, index)
}

/// Bytes a run may allocate beside its arena and outputs, for the largest kernel: attention's
/// packed keys, score blocks and mask; GEMM panel copies; elementwise programs' row registers
/// and converted operands; gather's widened indices. Per-thread buffers count once per thread.
/// Counted in the memory budget so a variant that cannot run is refused at compile.
pub(super) fn scratch_bytes(
    lir: &LirModule,
    shapes: &[Vec<usize>],
    threads: usize,
    nr: usize,
) -> usize {
    let numel = |b: BufferId| shapes[b.index()].iter().product::<usize>();
    let f32s = |n: usize| n.saturating_mul(4);
    let per_kernel = |k: &rlx_ir::lir::Kernel| -> usize {
        let KernelOp::Compute(op) = &k.op else {
            return 0;
        };
        let shape = |i: usize| shapes[k.inputs[i].index()].as_slice();
        let last = |s: &[usize]| s.last().copied().unwrap_or(1);
        match op {
            ComputeOp::Attention { .. }
            | ComputeOp::AttentionPacked { .. }
            | ComputeOp::KvAttention { .. } => {
                let (q, kk) = (shape(0), shape(1));
                let (batch, sk) = (q[0], kk[kk.len() - 2]);
                let heads_x_d = if !matches!(op, ComputeOp::AttentionPacked { .. }) {
                    q[1] * q[3]
                } else {
                    last(shape(0))
                };
                let keys = batch
                    .saturating_mul(sk.div_ceil(nr).saturating_mul(nr))
                    .saturating_mul(heads_x_d);
                let scores = threads
                    .saturating_mul(super::attention::QB)
                    .saturating_mul(sk);
                // With bf16 attention the values come as pair panels too: counted as a
                // second set of keys (the same size within the padding of a panel).
                f32s(
                    keys.saturating_mul(2)
                        .saturating_add(scores)
                        .saturating_add(batch.saturating_mul(sk)),
                )
            }
            ComputeOp::Conv(c) => {
                let (x, w, o) = (shape(0), shape(1), &shapes[k.output.index()]);
                // Channels-last: its own buffers, and the channel-major kernel's for the
                // transposing fallback.
                let (extra, xo) = if c.channels_last {
                    let first = |s: &[usize]| vec![s[0], s[3], s[1], s[2]];
                    let own = super::conv_channels_last::scratch(x, w, o, c, nr);
                    let xf = super::conv_channels_last::input_first(x, c).to_vec();
                    (own, [xf, first(o)])
                } else {
                    (0, [x.to_vec(), o.to_vec()])
                };
                let (x, o) = (xo[0].as_slice(), &xo[1]);
                let taps: usize = w[2..].iter().product();
                let (p, ck) = (o[2..].iter().product::<usize>(), w[1].saturating_mul(taps));
                let (batch, cin) = (x[0], x[1]);
                // Position-major: a block of padded channels-last images and products. A
                // strided 1x1 kernel: the subsampled batch. Other 2-D
                // kernels: one panel per thread (below), the padded batch (patch panels) or
                // one padded plane per rayon split (depthwise). N-d: the patch matrix of one
                // image.
                let whole = if super::conv_positions::chosen(x, w, o, c.groups) {
                    let n_pad = w[0].div_ceil(nr.max(1)).saturating_mul(nr);
                    super::conv_positions::block(x, w, o, c, n_pad).1
                } else if taps == 1 && c.window.strides.iter().any(|s| *s > 1) {
                    batch.saturating_mul(cin).saturating_mul(p)
                } else if x.len() == 4 {
                    let padded = super::padded::Padded::new(&x[2..], &o[2..], &w[2..], &c.window)
                        .plane_len()
                        .saturating_add(super::vmath::DEPTHWISE_SLACK);
                    batch
                        .saturating_mul(cin)
                        .max(threads.saturating_mul(4))
                        .saturating_mul(padded)
                } else {
                    c.groups.saturating_mul(ck).saturating_mul(p)
                };
                f32s(
                    whole.saturating_add(extra).saturating_add(
                        threads
                            .saturating_mul(ck.saturating_add(16))
                            .saturating_mul(nr),
                    ),
                )
            }
            ComputeOp::Linear { .. } | ComputeOp::LinearGroup { .. } | ComputeOp::MatMul => {
                f32s(threads.saturating_mul(last(shape(0)).saturating_add(16).saturating_mul(nr)))
            }
            ComputeOp::Elementwise { program } => {
                let regs = threads
                    .saturating_mul(program.steps.len())
                    .saturating_mul(last(&shapes[k.output.index()]).min(super::fused::EW_COLS));
                let converted: usize = k
                    .inputs
                    .iter()
                    .filter(|b| lir.buffer(**b).ty.dtype != rlx_ir::DType::F32)
                    .map(|b| numel(*b))
                    .fold(0, usize::saturating_add);
                f32s(regs.saturating_add(converted))
            }
            ComputeOp::Gather { .. } => numel(k.inputs[1]).saturating_mul(8),
            _ => 0,
        }
    };
    lir.kernels.iter().map(per_kernel).max().unwrap_or(0)
}
