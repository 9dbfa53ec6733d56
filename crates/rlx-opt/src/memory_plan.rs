//! Arena planning for a specialized LIR: liveness intervals of temps, then a linear scan over
//! the schedule that places each new temp in the best-fitting free hole (or grows the arena)
//! and frees temps after their last reader. O(n log n), so 10^5-kernel graphs plan quickly.

use std::collections::{BTreeMap, BTreeSet};

use rlx_ir::lir::{ArenaPlan, BufferKind, LirModule, align_up};
use rlx_ir::{IrError, Result};

/// Plans offsets for every temp of `lir` (whose shapes must be static).
pub fn plan(lir: &LirModule) -> Result<ArenaPlan> {
    let n = lir.buffers.len();
    let intervals = lir.temp_intervals();
    let mut sizes = vec![0usize; n];
    let mut starts: Vec<Vec<usize>> = vec![Vec::new(); lir.kernels.len()];
    let mut ends: Vec<Vec<usize>> = vec![Vec::new(); lir.kernels.len()];
    let mut temp_bytes = 0usize;
    let overflow = || IrError::Shape(format!("arena of `{}` overflows", lir.name));
    for (i, b) in lir.buffers.iter().enumerate() {
        if b.kind != BufferKind::Temp {
            continue;
        }
        let bytes = lir
            .static_bytes(rlx_ir::lir::BufferId(i as u32))
            .ok_or_else(|| {
                IrError::Shape(format!("temp b{i} has non-static shape {}", b.ty.shape))
            })?;
        sizes[i] = align_up(bytes.max(1)).ok_or_else(overflow)?;
        temp_bytes = temp_bytes.checked_add(sizes[i]).ok_or_else(overflow)?;
        if let Some((s, e)) = intervals[i] {
            starts[s].push(i);
            ends[e].push(i);
        }
    }

    let mut offsets = vec![None; n];
    let mut free = FreeList::default();
    let mut top = 0usize;
    let (mut live, mut max_live) = (0usize, 0usize);
    for k in 0..lir.kernels.len() {
        for &i in &starts[k] {
            let off = match free.take_best_fit(sizes[i]) {
                Some(off) => off,
                None => {
                    let off = top;
                    top = top.checked_add(sizes[i]).ok_or_else(overflow)?;
                    off
                }
            };
            offsets[i] = Some(off);
            live += sizes[i];
        }
        max_live = max_live.max(live);
        for &i in &ends[k] {
            free.give_back(offsets[i].expect("placed when it started"), sizes[i]);
            live -= sizes[i];
        }
    }
    // Temps never touched by a kernel cannot exist after DCE, but place them anyway.
    for i in 0..n {
        if lir.buffers[i].kind == BufferKind::Temp && offsets[i].is_none() {
            offsets[i] = Some(top);
            top = top.checked_add(sizes[i]).ok_or_else(overflow)?;
        }
    }
    Ok(ArenaPlan {
        offsets,
        size: top,
        temp_bytes,
        max_live_bytes: max_live,
    })
}

/// Free holes, indexed by offset (to merge neighbours) and by size (to find the best fit).
#[derive(Default)]
struct FreeList {
    by_offset: BTreeMap<usize, usize>,
    by_size: BTreeSet<(usize, usize)>,
}

impl FreeList {
    fn take_best_fit(&mut self, size: usize) -> Option<usize> {
        let &(hole, off) = self.by_size.range((size, 0)..).next()?;
        self.remove(off, hole);
        if hole > size {
            self.insert(off + size, hole - size);
        }
        Some(off)
    }

    fn give_back(&mut self, mut off: usize, mut size: usize) {
        if let Some((&prev, &psize)) = self.by_offset.range(..off).next_back()
            && prev + psize == off
        {
            self.remove(prev, psize);
            off = prev;
            size += psize;
        }
        if let Some(&nsize) = self.by_offset.get(&(off + size)) {
            self.remove(off + size, nsize);
            size += nsize;
        }
        self.insert(off, size);
    }

    fn insert(&mut self, off: usize, size: usize) {
        self.by_offset.insert(off, size);
        self.by_size.insert((size, off));
    }

    fn remove(&mut self, off: usize, size: usize) {
        self.by_offset.remove(&off);
        self.by_size.remove(&(size, off));
    }
}
