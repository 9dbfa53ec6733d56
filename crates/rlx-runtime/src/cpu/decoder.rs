//! Decoder kernels: the in-place KV-cache write, attention over the valid prefix of a cache,
//! and SwiGLU's gate. Positions are run-time values, so one variant serves every past length.

use std::cell::RefCell;

use rayon::prelude::*;

use super::attention::{self, AttnSpec, HeadLayout};
use super::isa::Isa;
use super::{OutPtr, vmath};
use crate::error::fail;
use crate::{Error, Result};

/// Query rows per kv head up to which attention reads the cache directly (decode); above,
/// it runs on the GEMM micro-kernels like any attention (prefill).
const DIRECT_ROWS: usize = 16;
/// (row, kv head) pairs below which decode attention splits each group into single heads.
const MIN_TASKS: usize = 8;

thread_local! {
    /// Per-thread score rows of the direct path.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Each row's position, checked: `seq` rows from it must fit a cache of `ctx`. `pos` holds
/// `batch` values or one for all.
pub fn row_positions(
    what: &str,
    pos: &[i64],
    batch: usize,
    seq: usize,
    ctx: usize,
) -> Result<Vec<usize>> {
    if pos.len() != 1 && pos.len() != batch {
        fail!(
            Shape,
            "{what}: {} positions for a batch of {batch}",
            pos.len()
        );
    }
    (0..batch)
        .map(|b| {
            let p = pos[if pos.len() == 1 { 0 } else { b }];
            match usize::try_from(p) {
                Ok(p) if p.checked_add(seq).is_some_and(|e| e <= ctx) => Ok(p),
                _ => fail!(
                    Shape,
                    "{what}: row {b} at position {p} with {seq} new does not fit a context of {ctx}"
                ),
            }
        })
        .collect()
}

/// `cache[b, h, pos[b] + t, :] = new[b, h, t, :]`; `cache` is `[batch, heads, ctx, dim]`, `new`
/// `[batch, heads, seq, dim]`.
pub fn cache_write(
    cache: &mut [f32],
    ctx: usize,
    new: &[f32],
    shape: &[usize],
    pos: &[i64],
) -> Result<()> {
    let &[batch, heads, seq, dim] = shape else {
        fail!(Shape, "cache_write of shape {shape:?}: expected 4 dims");
    };
    let at = row_positions("cache_write", pos, batch, seq, ctx)?;
    let block = seq * dim;
    if block == 0 {
        return Ok(());
    }
    for (bh, src) in new.chunks(block).enumerate() {
        let (b, h) = (bh / heads, bh % heads);
        let start = ((b * heads + h) * ctx + at[b]) * dim;
        cache[start..start + block].copy_from_slice(src);
    }
    Ok(())
}

/// Sizes of one attention over a cache.
pub struct KvSpec {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq: usize,
    pub ctx: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
}

/// Query `i` of row `b` (at position `pos[b] + i`) attends to keys `0 ..= pos[b] + i` of the
/// caches `k = [batch, kv_heads, ctx, d]`, `v = [.., dv]`; `q` is `[batch, heads, seq, d]` and
/// `out` `[batch, heads, seq, dv]`.
#[allow(clippy::too_many_arguments)]
pub fn kv_attention(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[i64],
    s: &KvSpec,
    out: &mut [f32],
) -> Result<()> {
    let at = row_positions("kv_attention", pos, s.batch, s.seq, s.ctx)?;
    if out.is_empty() || s.kv_heads == 0 {
        return Ok(());
    }
    let group = s.heads / s.kv_heads;
    if group * s.seq <= DIRECT_ROWS {
        return direct(isa, q, k, v, &at, s, out);
    }
    // One blocked attention per row: row b sees `pos[b] + seq` keys, causal bottom-aligned.
    for (b, &p) in at.iter().enumerate() {
        let sk = p + s.seq;
        let cache = |width: usize| HeadLayout {
            batch_stride: 0,
            head_stride: s.ctx * width,
            offset: b * s.kv_heads * s.ctx * width,
            row_stride: width,
        };
        let rows = |width: usize| HeadLayout {
            offset: b * s.heads * s.seq * width,
            ..HeadLayout::bhsd(s.heads, s.seq, width)
        };
        let spec = AttnSpec {
            batch: 1,
            heads: s.heads,
            kv_heads: s.kv_heads,
            sq: s.seq,
            sk,
            d: s.d,
            dv: s.dv,
            scale: s.scale,
            causal: true,
            layout: [rows(s.d), cache(s.d), cache(s.dv), rows(s.dv)],
            bf16_mix: false,
        };
        attention::attention(isa, q, k, v, None, &spec, out)?;
    }
    Ok(())
}

/// Few queries per kv head (decode): each task takes query heads of one kv head's group (rows
/// consecutive in `[batch, heads, seq, d]`) straight against the cache's valid prefix. A
/// group is split into single heads when there are fewer than `MIN_TASKS` (row, kv head) pairs,
/// too few to spread evenly over threads (batch 1, 3 kv heads on 2 threads): the extra reads of
/// the keys hit the cache.
fn direct(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    at: &[usize],
    s: &KvSpec,
    out: &mut [f32],
) -> Result<()> {
    let group = s.heads / s.kv_heads;
    let pairs = s.batch * s.kv_heads;
    let split = if pairs < MIN_TASKS { group } else { 1 };
    let heads_per_task = group / split;
    let rows = heads_per_task * s.seq;
    let ptr = OutPtr(out.as_mut_ptr());
    let task = |t: usize| -> Result<()> {
        let (pair, part) = (t / split, t % split);
        let (b, kvh) = (pair / s.kv_heads, pair % s.kv_heads);
        let live: Vec<usize> = (0..rows).map(|r| at[b] + r % s.seq + 1).collect();
        let n = at[b] + s.seq;
        SCORES.with_borrow_mut(|scores| -> Result<()> {
            if scores.len() < rows * n {
                scores
                    .try_reserve(rows * n - scores.len())
                    .map_err(|_| Error::Memory("cannot allocate attention scores".into()))?;
                scores.resize(rows * n, 0.0);
            }
            let first = (b * s.heads + kvh * group + part * heads_per_task) * s.seq;
            let cache = (b * s.kv_heads + kvh) * s.ctx;
            // SAFETY: shape inference sized q, k, v and out; `row_positions` keeps every row
            // inside the cache; this task alone writes its heads' output rows.
            unsafe {
                vmath::attend_rows(
                    isa,
                    q.as_ptr().add(first * s.d),
                    s.d,
                    k.as_ptr().add(cache * s.d),
                    v.as_ptr().add(cache * s.dv),
                    s.dv,
                    &live,
                    s.scale,
                    scores,
                    ptr.get().add(first * s.dv),
                    s.dv,
                );
            }
            Ok(())
        })
    };
    let tasks = pairs * split;
    let work = tasks * rows * (at.iter().max().copied().unwrap_or(0) + s.seq) * (s.d + s.dv);
    if work < 1 << 15 {
        (0..tasks).try_for_each(task)
    } else {
        (0..tasks).into_par_iter().try_for_each(task)
    }
}

/// `out[r, i] = silu(x[r, i]) * x[r, n + i]` over rows of `2n`.
pub fn swiglu(isa: Isa, x: &[f32], n: usize, out: &mut [f32]) {
    if n == 0 {
        return;
    }
    let rows = out.len() / n;
    let body = |(o, xr): (&mut [f32], &[f32])| {
        let (gate, up) = xr.split_at(n);
        vmath::unary_map(isa, rlx_ir::UnaryOp::Silu, gate, o);
        o.iter_mut().zip(up).for_each(|(a, u)| *a *= u);
    };
    if rows * n < 1 << 14 {
        out.chunks_mut(n).zip(x.chunks(2 * n)).for_each(body);
    } else {
        out.par_chunks_mut(n)
            .zip(x.par_chunks(2 * n))
            .for_each(body);
    }
}
