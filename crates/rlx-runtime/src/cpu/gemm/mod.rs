//! Matrix products on our own packed GEMM: batched matmul with broadcast batch dims, and
//! linears (single or grouped) with a fused bias + activation epilogue.
//!
//! The layout follows BLIS: a driver (`driver.rs`: task split, K blocking, edges, epilogue)
//! around one register-tiled micro-kernel per ISA (`portable.rs`, `avx2.rs`, `avx512.rs`).
//! Weights are packed once into panels (`pack.rs`) and kept beside the bound param.

mod avx2;
mod avx512;
mod avx512_asm;
pub mod bf16;
pub mod driver;
pub mod int8;
mod pack;
mod portable;
mod shared_panels;
mod simd;

use rlx_ir::UnaryOp;

pub use bf16::PackedBf16;
pub use driver::{BSource, GemmJob};
pub use int8::{PackedI8, QuantA};
pub use pack::PackedB;

pub use crate::cpu::vmath::StoreAct;

use super::elementwise::broadcast_strides;
use super::isa::Isa;

/// What a tile does to its sums before it stores them (the last K block of a product): add
/// `nr` biases and `rows x nr` residuals, then its activation. Null pointers: nothing to add.
/// Also `next_a`, a hint: the next tile's A rows, fetched while this one computes.
#[derive(Clone, Copy)]
pub struct TileEpilogue {
    pub bias: *const f32,
    pub res: *const f32,
    pub ld_res: usize,
    pub act: StoreAct,
    /// The next tile's A (same offsets and row stride), fetched into L2 a line per row every
    /// 16 steps while this tile computes; null: nothing to fetch.
    pub next_a: *const f32,
    /// Floats fetched into L1 from here on, `next_b_lines` lines every 16 steps (the next
    /// panel of B, where the driver's burst per tile would be too large); null: nothing.
    pub next_b: *const f32,
    pub next_b_lines: usize,
    /// Columns stored: the tile's first `cols` (all of them when at least its width). An
    /// edge panel stores its channels in place, no wider (and reads no more of c when it
    /// accumulates); its bias is then padded to the tile's width and it has no residual.
    pub cols: usize,
}

impl TileEpilogue {
    /// Sums stored as they are.
    pub const NONE: TileEpilogue = TileEpilogue {
        bias: std::ptr::null(),
        res: std::ptr::null(),
        ld_res: 0,
        act: StoreAct::None,
        next_a: std::ptr::null(),
        next_b: std::ptr::null(),
        next_b_lines: 0,
        cols: usize::MAX,
    };

    pub fn is_none(&self) -> bool {
        self.bias.is_null() && self.res.is_null() && self.act == StoreAct::None
    }

    /// `c[r, j] = act(c[r, j] + bias[j] + res[r, j])` on a stored `rows x nr` block (for
    /// kernels that apply it after their store).
    ///
    /// # Safety
    /// `c` holds `rows` rows of `nr` (stride `ldc`); `bias` holds `nr`, `res` `rows` rows of
    /// `nr` (stride `ld_res`) where not null.
    pub unsafe fn apply(&self, rows: usize, nr: usize, c: *mut f32, ldc: usize) {
        if self.is_none() {
            return;
        }
        for r in 0..rows {
            for j in 0..nr {
                // SAFETY: the caller's contract.
                unsafe {
                    let mut v = *c.add(r * ldc + j);
                    if !self.bias.is_null() {
                        v += *self.bias.add(j);
                    }
                    if !self.res.is_null() {
                        v += *self.res.add(r * self.ld_res + j);
                    }
                    *c.add(r * ldc + j) = self.act.on_scalar(v);
                }
            }
        }
    }
}

/// One register tile: `c[r, 0..nr] (+)= sum_p a[r * lda + p] * b[p * ldb + 0..nr]` for
/// `r < rows` (1 ..= `mr`), adding to `c` when `accumulate`, then `epi`.
///
/// # Safety
/// `a` holds `rows` rows of `k` elements (row stride `lda`), `b` holds `k` rows of `nr`
/// (stride `ldb`), `c` holds `rows` rows of `nr` (stride `ldc`), `epi` as
/// [`TileEpilogue::apply`] says, and the CPU has the ISA.
pub type TileFn = unsafe fn(
    rows: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    epi: &TileEpilogue,
);

/// A register tile over K in segments (an implicit convolution's taps): segment `s` reads A
/// at `a + offsets[s]` (rows `lda` apart, `len` elements each), and B's rows run on through
/// the segments in order: `c[r, 0..nr] (+)= sum_s sum_p a[offsets[s] + r * lda + p] *
/// b[(s * len + p) * ldb + 0..nr]`. The sums stay in registers across segments.
///
/// # Safety
/// As [`TileFn`], with `k = offsets.len() * len` rows of B and every segment's rows inside A.
pub type SegTileFn = unsafe fn(
    rows: usize,
    offsets: &[usize],
    len: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    epi: &TileEpilogue,
);

/// `n` whole tiles in a row (see [`MicroKernel::run`]), each as [`TileFn`] with `accumulate`
/// false.
///
/// # Safety
/// As [`TileFn`] for each of the `n` tiles.
pub type RunFn = unsafe fn(
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    epi: &TileEpilogue,
);

/// An ISA's micro-kernel and its tile size.
#[derive(Clone, Copy)]
pub struct MicroKernel {
    pub isa: Isa,
    pub mr: usize,
    pub nr: usize,
    pub tile: TileFn,
    pub segs: SegTileFn,
    /// `n` tiles of `mr` rows one after another (A, c and the residual `mr` rows further each
    /// time), one K segment of a whole panel, not added onto c: a small-K product's run of
    /// tiles without the driver's per-tile work (~50 cycles a tile; a K = 32 tile computes
    /// for 512).
    pub run: Option<RunFn>,
    /// A tile of the first `nr / 2` columns of a panel (`TileFn`'s contract with half the
    /// columns of c, bias and residual): an edge panel of exactly that width (16 of a 48- or
    /// 16-channel layer) computed in place, not as a whole panel into a buffer.
    pub half: Option<TileFn>,
    /// `segs` of the first `nr / 2` columns of a panel (`half`'s contract): an implicit
    /// convolution's edge panel of at most that width (a 16-channel stem's only panel).
    pub half_segs: Option<SegTileFn>,
}

/// The tile shape of the bf16 and int8 kernels (8 x 32, their own tile functions), with the
/// ISA their shared epilogue runs on. `tile` is never called through these.
const fn wide(isa: Isa) -> MicroKernel {
    MicroKernel {
        isa,
        mr: 8,
        nr: 32,
        tile: portable::KERNEL.tile,
        segs: portable::KERNEL.segs,
        run: None,
        half: None,
        half_segs: None,
    }
}
static WIDE: [MicroKernel; 3] = [wide(Isa::Scalar), wide(Isa::Avx2), wide(Isa::Avx512)];

/// The kernel that runs products with `w`: bf16 and int8 panels have the 8 x 32 tile shape.
fn kernel_for(isa: Isa, w: Weight) -> &'static MicroKernel {
    match w {
        Weight::Bf16(_) => &avx512::KERNEL,
        Weight::Int8(_) => &WIDE[Isa::ALL.iter().position(|i| *i == isa).unwrap_or(0)],
        _ => kernel(isa),
    }
}

/// A weight packed once per bound param, as the precision asks.
#[derive(Clone)]
pub enum Packed {
    F32(std::sync::Arc<PackedB>),
    Bf16(std::sync::Arc<PackedBf16>),
    Int8(std::sync::Arc<PackedI8>),
}

impl Packed {
    pub fn weight(&self) -> Weight<'_> {
        match self {
            Packed::F32(p) => Weight::Packed(p),
            Packed::Bf16(p) => Weight::Bf16(p),
            Packed::Int8(p) => Weight::Int8(p),
        }
    }
}

/// The micro-kernel of `isa` (the caller checked the CPU supports it).
pub fn kernel(isa: Isa) -> &'static MicroKernel {
    match isa {
        Isa::Scalar => &portable::KERNEL,
        Isa::Avx2 => &avx2::KERNEL,
        Isa::Avx512 => &avx512::KERNEL,
    }
}

/// A linear's weight: panels built ahead of time, or the bound array read as it is.
#[derive(Clone, Copy)]
pub enum Weight<'a> {
    Packed(&'a PackedB),
    /// bf16 panels, for the AVX512-BF16 kernel.
    Bf16(&'a PackedBf16),
    /// Per-column int8 panels (u8 x s8 products, dequantized).
    Int8(&'a PackedI8),
    /// `[k, n]`, or `[n, k]` when `transposed`.
    Raw {
        w: &'a [f32],
        transposed: bool,
    },
}

impl<'a> Weight<'a> {
    /// The B operand; an int8 weight pairs with the product's quantized A, `qa`.
    fn source(self, k: usize, n: usize, qa: Option<&'a QuantA>) -> BSource<'a> {
        match self {
            Weight::Packed(p) => BSource::Packed(p),
            Weight::Bf16(p) => BSource::PackedBf16(p),
            Weight::Int8(b) => match qa {
                Some(a) => BSource::Int8 { b, a },
                None => unreachable!("int8 weights come with their quantized A"),
            },
            Weight::Raw {
                w,
                transposed: false,
            } => BSource::Rows {
                ptr: w.as_ptr(),
                ld: n,
            },
            Weight::Raw {
                w,
                transposed: true,
            } => BSource::Cols {
                ptr: w.as_ptr(),
                ld: k,
            },
        }
    }
}

/// Sizes of one linear: `x[.., k] @ w -> [.., n]`.
pub struct LinearSpec {
    pub k: usize,
    pub n: usize,
    pub act: Option<UnaryOp>,
}

/// `x` (`m` rows of `k`) quantized once when any of `weights` is int8.
fn quantized_a(x: &[f32], m: usize, k: usize, weights: &[Weight]) -> crate::Result<Option<QuantA>> {
    if !weights.iter().any(|w| matches!(w, Weight::Int8(_))) {
        return Ok(None);
    }
    // SAFETY: x holds m rows of k (the callers' contract).
    unsafe { QuantA::new(x.as_ptr(), m, k, k) }.map(Some)
}

/// `out[r, :] = act(x[r, :] @ w + bias)` over all leading rows of `x`.
///
/// The caller guarantees `x` holds `rows x k`, `w` holds `k x n`, `out` holds `rows x n`.
pub fn linear(
    isa: Isa,
    x: &[f32],
    w: Weight,
    bias: Option<&[f32]>,
    spec: &LinearSpec,
    out: &mut [f32],
) -> crate::Result<()> {
    if spec.n == 0 || out.is_empty() {
        return Ok(());
    }
    let m = out.len() / spec.n;
    let qa = quantized_a(x, m, spec.k, &[w])?;
    let job = GemmJob {
        m,
        n: spec.n,
        k: spec.k,
        a: x.as_ptr(),
        lda: spec.k,
        b: w.source(spec.k, spec.n, qa.as_ref()),
        c: out.as_mut_ptr(),
        ldc: spec.n,
        bias,
        act: spec.act,
        residual: None,
    };
    // SAFETY: x is [m, k], w is [k, n] (in its layout), out is [m, n] and borrowed mutably.
    unsafe { driver::run(kernel_for(isa, w), &[job]) };
    Ok(())
}

/// One part of a linear group: weight, optional bias `[n]`, and `n`.
pub type LinearPart<'a> = (Weight<'a>, Option<&'a [f32]>, usize);

/// `out[:, cols_p] = x @ w_p + b_p` for each part p, written side by side (row stride = the
/// sum of the parts' widths). The weights stay where they are bound: no concatenated copy.
pub fn linear_group(
    isa: Isa,
    x: &[f32],
    parts: &[LinearPart<'_>],
    k: usize,
    out: &mut [f32],
) -> crate::Result<()> {
    let total: usize = parts.iter().map(|p| p.2).sum();
    if total == 0 || out.is_empty() {
        return Ok(());
    }
    let m = out.len() / total;
    let weights: Vec<Weight> = parts.iter().map(|p| p.0).collect();
    let qa = quantized_a(x, m, k, &weights)?;
    let mut col = 0;
    let jobs: Vec<GemmJob> = parts
        .iter()
        .map(|(w, bias, n)| {
            let job = GemmJob {
                m,
                n: *n,
                k,
                a: x.as_ptr(),
                lda: k,
                b: w.source(k, *n, qa.as_ref()),
                // SAFETY: col + n <= total, so the part's columns lie inside each out row.
                c: unsafe { out.as_mut_ptr().add(col) },
                ldc: total,
                bias: *bias,
                act: None,
                residual: None,
            };
            col += n;
            job
        })
        .collect();
    // SAFETY: parts write disjoint column ranges of out ([m, total]); x is [m, k]. Parts of
    // one precision share a kernel (a group is packed as one precision).
    let kern = parts.first().map_or(kernel(isa), |p| kernel_for(isa, p.0));
    unsafe { driver::run(kern, &jobs) };
    Ok(())
}

/// Batched `a[..., m, k] @ b[..., k, n]` into `out[..., m, n]`, batch dims broadcast.
pub fn matmul(
    isa: Isa,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = a_shape[a_shape.len() - 1];
    if m * n == 0 {
        return;
    }
    let batch_shape = &out_shape[..r - 2];
    let a_batch = broadcast_strides(&a_shape[..a_shape.len() - 2], batch_shape);
    let b_batch = broadcast_strides(&b_shape[..b_shape.len() - 2], batch_shape);
    let batches = out.len() / (m * n);
    let jobs: Vec<GemmJob> = (0..batches)
        .map(|bi| {
            // Offsets of this batch in a and b (in matrices), through the broadcast strides.
            let (mut ao, mut bo, mut rem) = (0, 0, bi);
            for d in (0..batch_shape.len()).rev() {
                let idx = rem % batch_shape[d];
                rem /= batch_shape[d];
                ao += idx * a_batch[d];
                bo += idx * b_batch[d];
            }
            GemmJob {
                m,
                n,
                k,
                a: a[ao * m * k..].as_ptr(),
                lda: k,
                b: BSource::Rows {
                    ptr: b[bo * k * n..].as_ptr(),
                    ld: n,
                },
                // SAFETY: batch bi owns out[bi*m*n..(bi+1)*m*n].
                c: unsafe { out.as_mut_ptr().add(bi * m * n) },
                ldc: n,
                bias: None,
                act: None,
                residual: None,
            }
        })
        .collect();
    // SAFETY: each batch writes its own [m, n] block of out; a and b hold their batches.
    unsafe { driver::run(kernel(isa), &jobs) }
}

#[cfg(test)]
mod tests;
