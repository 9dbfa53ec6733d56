//! The LIR verifier: schedule order, buffer kinds, and (when planned) arena placement.

use super::{BufferKind, LirModule};
use crate::{IrError, Result};

pub(super) fn verify(m: &LirModule) -> Result<()> {
    let mut problems = Vec::new();
    let n = m.buffers.len();
    let mut written = vec![false; n];
    for (i, b) in m.buffers.iter().enumerate() {
        match b.kind {
            BufferKind::Input | BufferKind::Param | BufferKind::Const => written[i] = true,
            BufferKind::View { of } if of.index() >= i => problems.push(format!(
                "b{i}: view of {of}, which is not an earlier buffer"
            )),
            _ => {}
        }
    }
    for (k, kernel) in m.kernels.iter().enumerate() {
        let at = format!("kernel {k} ({})", kernel.op.name());
        if let Some(b) = kernel
            .inputs
            .iter()
            .chain([&kernel.output])
            .find(|b| b.index() >= n)
        {
            problems.push(format!("{at}: unknown buffer {b}"));
            continue;
        }
        for b in &kernel.inputs {
            if !written[m.root(*b).index()] {
                problems.push(format!("{at}: reads {b} before it is written"));
            }
        }
        let out = kernel.output;
        match m.buffer(out).kind {
            BufferKind::Temp | BufferKind::Output => {
                if std::mem::replace(&mut written[out.index()], true) {
                    problems.push(format!("{at}: {out} is written twice"));
                }
            }
            kind => problems.push(format!("{at}: writes {out} of kind {kind:?}")),
        }
    }
    for slot in &m.outputs {
        if slot.buffer.index() >= n || !written[m.root(slot.buffer).index()] {
            problems.push(format!(
                "output `{}` ({}) is never written",
                slot.name, slot.buffer
            ));
        }
    }
    if let Some(plan) = &m.arena {
        verify_plan(m, plan, &mut problems);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IrError::Verify {
            what: "LIR",
            problems,
        })
    }
}

fn verify_plan(m: &LirModule, plan: &super::ArenaPlan, problems: &mut Vec<String>) {
    if plan.offsets.len() != m.buffers.len() {
        problems.push("arena plan does not cover every buffer".to_string());
        return;
    }
    let mut iv = m.temp_intervals();
    for &(out, inp) in &plan.in_place {
        let writer = m.kernels.iter().position(|k| k.output == out);
        let ok = writer.is_some_and(|k| {
            m.kernels[k].inputs.iter().any(|b| m.root(*b) == inp)
                && iv[inp.index()].is_some_and(|(_, end)| end == k)
                && plan.offsets[out.index()].is_some()
                && plan.offsets[out.index()] == plan.offsets[inp.index()]
        });
        if !ok {
            problems.push(format!(
                "{out} in place of {inp}: not the last reader's output at the same offset"
            ));
            continue;
        }
        // The input hands its bytes over at its last reader: it is no longer live there.
        if let (Some(k), Some(live)) = (writer, iv[inp.index()].as_mut()) {
            live.1 = k.saturating_sub(1).max(live.0);
        }
    }
    let mut placed = Vec::new();
    for (i, b) in m.buffers.iter().enumerate() {
        let id = super::BufferId(i as u32);
        match (b.kind, plan.offsets[i]) {
            (BufferKind::Temp, Some(off)) => {
                let Some(bytes) = m.static_bytes(id) else {
                    problems.push(format!(
                        "{id}: planned but its shape {} is not static",
                        b.ty.shape
                    ));
                    continue;
                };
                if off % super::ALIGN != 0 || off + bytes > plan.size {
                    problems.push(format!(
                        "{id}: [{off}, {}) misaligned or past arena size {}",
                        off + bytes,
                        plan.size
                    ));
                }
                if let Some(live) = iv[i] {
                    placed.push((id, off, off + bytes, live));
                }
            }
            (BufferKind::Temp, None) => {
                problems.push(format!("{id}: temp without an arena offset"))
            }
            (_, Some(_)) => problems.push(format!("{id}: only temps live in the arena")),
            _ => {}
        }
    }
    check_disjoint(&placed, m.kernels.len(), problems);
}

/// Buffers live at the same kernel must not share bytes. A sweep over the schedule keeps the
/// live buffers ordered by offset, so each new one is checked against its two neighbours only.
fn check_disjoint(
    placed: &[(super::BufferId, usize, usize, (usize, usize))],
    kernels: usize,
    problems: &mut Vec<String>,
) {
    use std::collections::BTreeMap;
    let mut starts: Vec<Vec<usize>> = vec![Vec::new(); kernels];
    let mut ends: Vec<Vec<usize>> = vec![Vec::new(); kernels];
    for (i, p) in placed.iter().enumerate() {
        if p.1 < p.2 && p.3.1 < kernels {
            starts[p.3.0].push(i);
            ends[p.3.1].push(i);
        }
    }
    let mut live: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for k in 0..kernels {
        for &i in &starts[k] {
            let (id, lo, hi, _) = placed[i];
            let before = live.range(..(lo, i)).next_back().map(|(_, j)| *j);
            let after = live.range((lo, i)..).next().map(|(_, j)| *j);
            for j in before.into_iter().chain(after) {
                let (other, olo, ohi, _) = placed[j];
                if lo < ohi && olo < hi {
                    problems.push(format!(
                        "{id} and {other} are live together and overlap in the arena"
                    ));
                }
            }
            live.insert((lo, i), i);
        }
        for &i in &ends[k] {
            live.remove(&(placed[i].1, i));
        }
    }
}
