//! Arena planning for a specialized LIR: liveness intervals of temps, then greedy-by-size
//! placement — largest temps first, each at the best-fitting gap among the temps already placed
//! that are live at the same time. Views share their root's bytes, so reshapes cost nothing, and
//! an elementwise kernel writes over an operand it reads for the last time (in place).
//!
//! Conflicting temps are found through an index by start kernel plus the longest interval seen,
//! so long chains of short-lived temps (10^5 kernels) plan in near-linear time.

use std::collections::BTreeMap;

use rlx_ir::lir::{ArenaPlan, BufferId, BufferKind, Kernel, KernelOp, LirModule, align_up};
use rlx_ir::{ComputeOp, DType};
use rlx_ir::{IrError, Result};

struct Temp {
    id: usize,
    size: usize,
    start: usize,
    end: usize,
}

/// Plans offsets for every temp of `lir` (whose shapes must be static).
pub fn plan(lir: &LirModule) -> Result<ArenaPlan> {
    let overflow = || IrError::Shape(format!("arena of `{}` overflows", lir.name));
    let intervals = lir.temp_intervals();
    let mut temps = Vec::new();
    let mut temp_bytes = 0usize;
    // Temps no kernel touches (none after DCE) get the interval of the last kernel.
    let last = lir.kernels.len().saturating_sub(1);
    for (i, b) in lir.buffers.iter().enumerate() {
        if b.kind != BufferKind::Temp {
            continue;
        }
        let bytes = lir.static_bytes(BufferId(i as u32)).ok_or_else(|| {
            IrError::Shape(format!("temp b{i} has non-static shape {}", b.ty.shape))
        })?;
        let size = align_up(bytes.max(1)).ok_or_else(overflow)?;
        temp_bytes = temp_bytes.checked_add(size).ok_or_else(overflow)?;
        let (start, end) = intervals[i].unwrap_or((last, last));
        temps.push(Temp {
            id: i,
            size,
            start,
            end,
        });
    }
    let in_place = in_place_pairs(lir, &temps, &intervals);
    let blocks = merge_in_place(temps, &in_place);
    let max_live_bytes = max_live(&blocks, lir.kernels.len());

    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by(|&a, &b| {
        blocks[b]
            .size
            .cmp(&blocks[a].size)
            .then(blocks[a].start.cmp(&blocks[b].start))
    });
    let mut block_off = vec![0usize; blocks.len()];
    let mut placed_by_start: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut longest = 0usize;
    let mut size = 0usize;
    for &t in &order {
        let me = &blocks[t];
        // Placed blocks live at the same time: start <= my end and end >= my start.
        let mut busy: Vec<(usize, usize)> = placed_by_start
            .range(me.start.saturating_sub(longest)..=me.end)
            .flat_map(|(_, v)| v.iter())
            .filter(|&&o| blocks[o].end >= me.start)
            .map(|&o| (block_off[o], blocks[o].size))
            .collect();
        busy.sort_unstable();
        let off = best_fit(&busy, me.size).ok_or_else(overflow)?;
        block_off[t] = off;
        size = size.max(off.checked_add(me.size).ok_or_else(overflow)?);
        placed_by_start.entry(me.start).or_default().push(t);
        longest = longest.max(me.end - me.start);
    }
    let mut offsets = vec![None; lir.buffers.len()];
    for (b, off) in blocks.iter().zip(&block_off) {
        for &id in &b.members {
            offsets[id] = Some(*off);
        }
    }
    Ok(ArenaPlan {
        offsets,
        size,
        temp_bytes,
        max_live_bytes,
        in_place,
    })
}

/// Temps that share bytes over time: a chain of in-place writes, placed as one block.
struct Block {
    members: Vec<usize>,
    size: usize,
    start: usize,
    end: usize,
}

/// `(output, input)` pairs where an elementwise kernel may write its output over an f32 operand
/// it reads for the last time: same shape (no broadcast, so each element is read only where it
/// is written), same size, not read through another view in the same kernel. Also a
/// pointwise convolution over its residual (`ConvAttrs::sums_onto_residual`).
fn in_place_pairs(
    lir: &LirModule,
    temps: &[Temp],
    intervals: &[Option<(usize, usize)>],
) -> Vec<(BufferId, BufferId)> {
    let size_of: std::collections::HashMap<usize, usize> =
        temps.iter().map(|t| (t.id, t.size)).collect();
    let mut pairs = Vec::new();
    for (k, kernel) in lir.kernels.iter().enumerate() {
        let residual = kernel.inputs.len().saturating_sub(1);
        let (eligible, alone): (&[usize], bool) = match &kernel.op {
            KernelOp::Compute(ComputeOp::Elementwise { .. }) => (&[0, 1, 2, 3, 4, 5, 6, 7], false),
            KernelOp::Compute(ComputeOp::AddLayerNorm { .. }) => (&[0, 1], false),
            // An f32 binary op with a broadcast operand: the runtime runs it as an
            // elementwise program (`executor.rs`), over the operand it reads for the last time.
            KernelOp::Compute(ComputeOp::Binary(_)) if broadcast_f32(lir, kernel) => {
                (&[0, 1], false)
            }
            // The residual (last input), which no other input may share: the product reads
            // its input while it stores over the residual.
            KernelOp::Compute(ComputeOp::Conv(c)) if c.sums_onto_residual() => {
                (std::slice::from_ref(&residual), true)
            }
            _ => continue,
        };
        let out = kernel.output;
        let out_ty = &lir.buffer(out).ty;
        if lir.buffer(out).kind != BufferKind::Temp {
            continue;
        }
        let candidate = eligible
            .iter()
            .filter_map(|&i| kernel.inputs.get(i))
            .find(|&&b| {
                let root = lir.root(b);
                lir.buffer(root).kind == BufferKind::Temp
                    && intervals[root.index()].is_some_and(|(_, end)| end == k)
                    && size_of.get(&root.index()) == size_of.get(&out.index())
                    && kernel
                        .inputs
                        .iter()
                        .filter(|x| lir.root(**x) == root)
                        .all(|x| lir.buffer(*x).ty == *out_ty)
                    && (!alone
                        || kernel
                            .inputs
                            .iter()
                            .filter(|x| lir.root(**x) == root)
                            .count()
                            == 1)
            });
        if let Some(&b) = candidate {
            pairs.push((out, lir.root(b)));
        }
    }
    pairs
}

/// Whether a two-operand kernel has an f32 output and an operand of fewer bytes than it.
fn broadcast_f32(lir: &LirModule, kernel: &Kernel) -> bool {
    let out = lir.static_bytes(kernel.output);
    let smaller = |b: &BufferId| matches!((lir.static_bytes(*b), out), (Some(n), Some(o)) if n < o);
    lir.buffer(kernel.output).ty.dtype == DType::F32
        && kernel.inputs.len() == 2
        && kernel.inputs.iter().any(smaller)
}

/// Groups temps joined by in-place pairs into blocks with the union of their live intervals.
fn merge_in_place(temps: Vec<Temp>, pairs: &[(BufferId, BufferId)]) -> Vec<Block> {
    let index: std::collections::HashMap<usize, usize> =
        temps.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    // Each output joins the block of the input it overwrites; pairs come in schedule order,
    // so the input's block already exists.
    let mut block_of: Vec<usize> = (0..temps.len()).collect();
    for &(out, inp) in pairs {
        let (o, i) = (index[&out.index()], index[&inp.index()]);
        block_of[o] = block_of[i];
    }
    let mut blocks: Vec<Option<Block>> = (0..temps.len()).map(|_| None).collect();
    for (t, temp) in temps.iter().enumerate() {
        let b = blocks[block_of[t]].get_or_insert(Block {
            members: vec![],
            size: 0,
            start: temp.start,
            end: temp.end,
        });
        b.members.push(temp.id);
        b.size = b.size.max(temp.size);
        b.start = b.start.min(temp.start);
        b.end = b.end.max(temp.end);
    }
    blocks.into_iter().flatten().collect()
}

/// The smallest gap between `busy` blocks (sorted by offset) that holds `size`, else the end.
fn best_fit(busy: &[(usize, usize)], size: usize) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None; // (gap, offset)
    let mut cursor = 0usize;
    for &(off, len) in busy {
        if off > cursor {
            let gap = off - cursor;
            if gap >= size && best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, cursor));
            }
        }
        cursor = cursor.max(off.checked_add(len)?);
    }
    Some(best.map_or(cursor, |(_, o)| o))
}

/// The largest total size of blocks live at one kernel: a lower bound on any arena.
fn max_live(temps: &[Block], kernels: usize) -> usize {
    let mut delta = vec![0isize; kernels + 1];
    for t in temps {
        delta[t.start] += t.size as isize;
        delta[t.end + 1] -= t.size as isize;
    }
    let (mut live, mut max) = (0isize, 0isize);
    for d in delta {
        live += d;
        max = max.max(live);
    }
    max as usize
}
