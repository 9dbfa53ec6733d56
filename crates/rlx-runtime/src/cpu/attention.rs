//! Scaled dot-product attention: `softmax(q k^T * scale + mask) v` per (batch, head, query
//! block), the two products on the GEMM micro-kernels and a per-thread score buffer. Heads are
//! addressed through strides, so the same kernel reads `[b, h, s, d]` tensors and heads packed
//! side by side in the columns of `[b, s, width]` sources (the fused `attention_packed`),
//! without copies.

use std::cell::RefCell;

use rayon::prelude::*;

use super::OutPtr;
use super::attention_bf16::{self, Bf16Operands};
use super::gemm::{self, BSource, GemmJob};
use super::isa::Isa;
use super::norm::causal_live;
use super::vmath;
use crate::Result;
use crate::fallible::{grow, with_scratch};

/// Where head `h` of batch `b` starts in one operand, and the stride between its rows.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    pub batch_stride: usize,
    pub head_stride: usize,
    pub offset: usize,
    pub row_stride: usize,
}

impl HeadLayout {
    /// A contiguous `[batch, heads, seq, dim]` tensor.
    pub fn bhsd(heads: usize, seq: usize, dim: usize) -> HeadLayout {
        HeadLayout {
            batch_stride: heads * seq * dim,
            head_stride: seq * dim,
            offset: 0,
            row_stride: dim,
        }
    }

    /// Heads of size `dim` side by side from column `offset` of a `[batch, seq, width]` tensor.
    pub fn packed(seq: usize, width: usize, offset: usize, dim: usize) -> HeadLayout {
        HeadLayout {
            batch_stride: seq * width,
            head_stride: dim,
            offset,
            row_stride: width,
        }
    }

    pub(super) fn at(&self, b: usize, h: usize) -> usize {
        b * self.batch_stride + h * self.head_stride + self.offset
    }
}

/// Sizes, options and operand layouts of one attention call.
pub struct AttnSpec {
    pub batch: usize,
    pub heads: usize,
    /// Heads of k and v (grouped-query attention): query head `h` reads kv head
    /// `h / (heads / kv_heads)`. Equal to `heads` for plain multi-head attention.
    pub kv_heads: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
    pub causal: bool,
    /// Layouts of q, k, v and the output.
    pub layout: [HeadLayout; 4],
    /// `p v` on the bf16 kernel (`precision="bf16"` on a CPU with AVX512-BF16): probabilities
    /// and values rounded to bf16, f32 accumulation. Scores and softmax stay f32.
    pub bf16_mix: bool,
}

/// Queries per task: a block's scores (`QB x sk`) stay in L1/L2 and batch 1 still has
/// `heads x seq / QB` tasks to spread over the cores.
pub(super) const QB: usize = 64;
/// The widest micro-kernel panel (AVX-512: 32 columns).
const MAX_NR: usize = 32;

thread_local! {
    /// Per-thread score block, reused by every attention call on this thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The keys of every head in GEMM panel layout, built by the calling thread once per call
    /// and read by every task; kept between calls so runs do not allocate.
    static KEYS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[b, h, i, :] = sum_j p[i, j] v[b, h, j, :]` with `p = softmax(scale q_i . k_j + mask[b, j])`
/// over the keys `j` allowed by the additive mask (0 keeps a key, -inf drops it) and, if causal,
/// `j + sq <= i + sk` (aligned to the last keys). A query with no key to attend gets zeros.
///
/// One task per (batch, head, block of `QB` queries): `q_blk k^T` and `p v` run on the GEMM
/// micro-kernel of `isa`, the softmax between them on the block's rows in per-thread scratch.
pub fn attention(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    s: &AttnSpec,
    out: &mut [f32],
) -> Result<()> {
    if out.is_empty() || s.sq * s.dv == 0 {
        return Ok(());
    }
    let kern = gemm::kernel(isa);
    if s.bf16_mix && gemm::bf16::supported() {
        return attention_bf16::with_operands(k, v, s, |ops| {
            blocks_of_queries(kern, q, v, Keys::Bf16(ops), mask, s, out)
        });
    }
    with_scratch(&KEYS, |keys| {
        pack_keys(k, s, kern.nr, keys)?;
        let kt = OutPtr(keys.as_mut_ptr());
        blocks_of_queries(kern, q, v, Keys::F32(kt), mask, s, out)
    })
}

/// Where a call's keys are: f32 panels (`pack_keys`), or bf16 operands for both products.
#[derive(Clone, Copy)]
enum Keys<'a> {
    F32(OutPtr),
    Bf16(&'a Bf16Operands<'a>),
}

/// Every kv head's keys, times the softmax scale, as `k^T` panels: kv head (b, h) at
/// `(b * kv_heads + h) * head_len`, panel j holding keys `j * nr ..` as `d` rows of `nr`. Columns past `sk` in the last panel are left
/// as they are: the score GEMM computes them into its edge tile and never stores them.
fn pack_keys(k: &[f32], s: &AttnSpec, nr: usize, keys: &mut Vec<f32>) -> Result<()> {
    let head_len = s.sk.div_ceil(nr) * nr * s.d;
    let len = s.batch * s.kv_heads * head_len;
    grow(keys, len, "attention keys")?;
    let lk = s.layout[1];
    keys[..len]
        .par_chunks_mut(head_len.max(1))
        .enumerate()
        .for_each(|(bh, dst)| {
            let base = lk.at(bh / s.kv_heads, bh % s.kv_heads);
            for (jp, panel) in dst.chunks_mut(nr * s.d).enumerate() {
                let cols = (s.sk - jp * nr).min(nr);
                // The panel's keys (nr <= MAX_NR), as slices: no allocation per panel.
                let mut rows: [&[f32]; MAX_NR] = [&[]; MAX_NR];
                for (c, row) in rows.iter_mut().enumerate().take(cols) {
                    let at = base + (jp * nr + c) * lk.row_stride;
                    *row = &k[at..at + s.d];
                }
                // The softmax scale is applied here, once per key, not once per score.
                for (p, out) in panel.chunks_mut(nr).enumerate() {
                    for (o, row) in out.iter_mut().zip(&rows[..cols]) {
                        *o = row[p] * s.scale;
                    }
                }
            }
        });
    Ok(())
}

/// The tasks over (batch, head, block of queries), reading keys from `keys` (`pack_keys`).
fn blocks_of_queries(
    kern: &gemm::MicroKernel,
    q: &[f32],
    v: &[f32],
    keys: Keys,
    mask: Option<&[f32]>,
    s: &AttnSpec,
    out: &mut [f32],
) -> Result<()> {
    let (sq, sk, d, dv) = (s.sq, s.sk, s.d, s.dv);
    let [lq, _, lv, lo] = s.layout;
    let head_len = sk.div_ceil(kern.nr) * kern.nr * d;
    let ptr = OutPtr(out.as_mut_ptr());
    let blocks = sq.div_ceil(QB);
    let task = |t: usize| {
        let (bh, blk) = (t / blocks, t % blocks);
        let (b, h) = (bh / s.heads, bh % s.heads);
        // The kv head this query head reads (grouped-query attention).
        let kvh = h / (s.heads / s.kv_heads.max(1)).max(1);
        let (i0, i1) = (blk * QB, ((blk + 1) * QB).min(sq));
        // Keys any query of the block may see.
        let n = if s.causal {
            causal_live(i1 - 1, sq, sk)
        } else {
            sk
        };
        SCORES.with_borrow_mut(|p| -> Result<()> {
            grow(p, (i1 - i0) * n.max(1), "attention scores")?;
            // SAFETY: the layouts address heads inside q, k, v and out (shape inference
            // checked the sizes); p holds (i1 - i0) x n scores; this task writes only rows
            // i0..i1 of head h of batch b of `out`, which no other task touches.
            unsafe {
                let (bkv, rows) = (b * s.kv_heads + kvh, i1 - i0);
                let qa = q.as_ptr().add(lq.at(b, h) + i0 * lq.row_stride);
                match keys {
                    _ if n == 0 => {}
                    Keys::Bf16(ops) => ops.scores(s, bkv, qa, lq.row_stride, rows, n, p),
                    Keys::F32(keys) => {
                        let scores = GemmJob {
                            m: rows,
                            n,
                            k: d,
                            a: qa,
                            lda: lq.row_stride,
                            b: BSource::Panels {
                                ptr: keys.get().add(bkv * head_len),
                            },
                            c: p.as_mut_ptr(),
                            ldc: n,
                            bias: None,
                            act: None,
                            residual: None,
                        };
                        gemm::driver::run_serial(kern, &scores);
                    }
                }
                let add = mask.map(|m| &m[b * sk..b * sk + n]);
                let mut norm = [0.0f32; QB];
                for (r, row) in p.chunks_mut(n.max(1)).enumerate().take(i1 - i0) {
                    let i = i0 + r;
                    let live = if s.causal { causal_live(i, sq, sk) } else { sk };
                    norm[r] = vmath::softmax_row_unnormalized(kern.isa, row, live.min(n), add, 1.0);
                }
                let o = ptr.get().add(lo.at(b, h) + i0 * lo.row_stride);
                match keys {
                    Keys::Bf16(ops) if Bf16Operands::mixes(s, n) => {
                        ops.mix(s, bkv, p, rows, n, o, lo.row_stride)
                    }
                    _ => {
                        let mix = GemmJob {
                            m: rows,
                            n: dv,
                            k: n,
                            a: p.as_ptr(),
                            lda: n.max(1),
                            b: BSource::Rows {
                                ptr: v.as_ptr().add(lv.at(b, kvh)),
                                ld: lv.row_stride,
                            },
                            c: o,
                            ldc: lo.row_stride,
                            bias: None,
                            act: None,
                            residual: None,
                        };
                        gemm::driver::run_serial(kern, &mix);
                    }
                }
                // Softmax's last step on the dv-wide output rows (p holds exp(x - max)).
                for (r, f) in norm.iter().enumerate().take(i1 - i0) {
                    let row = std::slice::from_raw_parts_mut(o.add(r * lo.row_stride), dv);
                    row.iter_mut().for_each(|x| *x *= f);
                }
            }
            Ok(())
        })
    };
    let tasks = s.batch * s.heads * blocks;
    if tasks * QB * sk * (d + dv) < 1 << 16 {
        (0..tasks).try_for_each(task)
    } else {
        (0..tasks).into_par_iter().try_for_each(task)
    }
}

#[cfg(test)]
mod probe {
    use super::*;

    #[test]
    #[ignore = "timing probe: cargo test --release -p rlx-runtime --lib attention -- --ignored --nocapture"]
    fn probe_attention_speed() {
        let pool = crate::cpu::thread_pool(None).unwrap();
        for (batch, seq) in [(1, 128), (8, 128), (1, 512)] {
            let (heads, d) = (12, 32);
            let width = heads * d;
            let x: Vec<f32> = (0..batch * seq * width)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
                .collect();
            let mut out = vec![0.0f32; x.len()];
            let l = HeadLayout::packed(seq, width, 0, d);
            let spec = AttnSpec {
                batch,
                heads,
                kv_heads: heads,
                sq: seq,
                sk: seq,
                d,
                dv: d,
                scale: 0.17,
                causal: false,
                layout: [l; 4],
                bf16_mix: false,
            };
            let isa = Isa::best();
            let reps = 50;
            let t = std::time::Instant::now();
            pool.install(|| {
                (0..reps).for_each(|_| attention(isa, &x, &x, &x, None, &spec, &mut out).unwrap())
            });
            let all = t.elapsed().as_secs_f64() / reps as f64;
            let mut keys = Vec::new();
            let t = std::time::Instant::now();
            pool.install(|| (0..reps).for_each(|_| pack_keys(&x, &spec, 32, &mut keys).unwrap()));
            let pack = t.elapsed().as_secs_f64() / reps as f64;
            let flops = 4.0 * (batch * heads * seq * seq * d) as f64;
            println!(
                "({batch},{seq}): {:.0} us ({:.0} GFLOP/s), packing keys {:.0} us",
                all * 1e6,
                flops / all / 1e9,
                pack * 1e6
            );
            // The parts of one task, repeated for every task, on this thread.
            let kern = gemm::kernel(isa);
            let tasks = batch * heads * seq.div_ceil(QB);
            let mut p = vec![0.0f32; QB * seq];
            let time = |f: &mut dyn FnMut()| {
                let t = std::time::Instant::now();
                for _ in 0..tasks {
                    f();
                }
                t.elapsed().as_secs_f64() * 1e6
            };
            let scores = time(&mut || unsafe {
                let job = GemmJob {
                    m: QB,
                    n: seq,
                    k: d,
                    a: x.as_ptr(),
                    lda: width,
                    b: BSource::Panels { ptr: keys.as_ptr() },
                    c: p.as_mut_ptr(),
                    ldc: seq,
                    bias: None,
                    act: None,
                    residual: None,
                };
                gemm::driver::run_serial(kern, &job)
            });
            let soft = time(&mut || {
                for row in p.chunks_mut(seq) {
                    vmath::softmax_row(isa, row, seq, None, 0.17);
                }
            });
            let mix = time(&mut || unsafe {
                let job = GemmJob {
                    m: QB,
                    n: d,
                    k: seq,
                    a: p.as_ptr(),
                    lda: seq,
                    b: BSource::Rows {
                        ptr: x.as_ptr(),
                        ld: width,
                    },
                    c: out.as_mut_ptr(),
                    ldc: width,
                    bias: None,
                    act: None,
                    residual: None,
                };
                gemm::driver::run_serial(kern, &job)
            });
            println!(
                "   one thread, all tasks: scores {scores:.0} us, softmax {soft:.0} us, p.v {mix:.0} us"
            );
        }
    }
}
