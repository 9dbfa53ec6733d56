//! Arena planning for a specialized LIR: liveness intervals of temps, then greedy-by-size
//! placement — largest temps first, each at the best-fitting gap among the temps already placed
//! that are live at the same time. Views share their root's bytes, so reshapes cost nothing.
//!
//! Conflicting temps are found through an index by start kernel plus the longest interval seen,
//! so long chains of short-lived temps (10^5 kernels) plan in near-linear time.

use std::collections::BTreeMap;

use rlx_ir::lir::{ArenaPlan, BufferId, BufferKind, LirModule, align_up};
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
    let max_live_bytes = max_live(&temps, lir.kernels.len());

    let mut order: Vec<usize> = (0..temps.len()).collect();
    order.sort_by(|&a, &b| {
        temps[b]
            .size
            .cmp(&temps[a].size)
            .then(temps[a].start.cmp(&temps[b].start))
    });
    let mut offsets = vec![None; lir.buffers.len()];
    let mut placed_by_start: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut longest = 0usize;
    let mut size = 0usize;
    for &t in &order {
        let me = &temps[t];
        // Placed temps live at the same time: start <= my end and end >= my start.
        let mut busy: Vec<(usize, usize)> = placed_by_start
            .range(me.start.saturating_sub(longest)..=me.end)
            .flat_map(|(_, v)| v.iter())
            .filter(|&&o| temps[o].end >= me.start)
            .map(|&o| (offsets[temps[o].id].expect("placed"), temps[o].size))
            .collect();
        busy.sort_unstable();
        let off = best_fit(&busy, me.size).ok_or_else(overflow)?;
        offsets[me.id] = Some(off);
        size = size.max(off.checked_add(me.size).ok_or_else(overflow)?);
        placed_by_start.entry(me.start).or_default().push(t);
        longest = longest.max(me.end - me.start);
    }
    Ok(ArenaPlan {
        offsets,
        size,
        temp_bytes,
        max_live_bytes,
    })
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

/// The largest total size of temps live at one kernel: a lower bound on any arena.
fn max_live(temps: &[Temp], kernels: usize) -> usize {
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
