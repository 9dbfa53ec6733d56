//! The LIR verifier: schedule order, buffer kinds, and (when planned) arena placement.

use super::{BufferKind, LirModule};
use crate::{IrError, Result};

pub(super) fn verify(m: &LirModule) -> Result<()> {
    let mut problems = Vec::new();
    let n = m.buffers.len();
    let mut written = vec![false; n];
    for (i, b) in m.buffers.iter().enumerate() {
        match b.kind {
            BufferKind::Input | BufferKind::Param => written[i] = true,
            BufferKind::View { of } if of.index() >= i => {
                problems.push(format!("b{i}: view of {of}, which is not an earlier buffer"))
            }
            _ => {}
        }
    }
    for (k, kernel) in m.kernels.iter().enumerate() {
        let at = format!("kernel {k} ({})", kernel.op.name());
        if let Some(b) = kernel.inputs.iter().chain([&kernel.output]).find(|b| b.index() >= n) {
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
            problems.push(format!("output `{}` ({}) is never written", slot.name, slot.buffer));
        }
    }
    if let Some(plan) = &m.arena {
        verify_plan(m, plan, &mut problems);
    }
    if problems.is_empty() { Ok(()) } else { Err(IrError::Verify { what: "LIR", problems }) }
}

fn verify_plan(m: &LirModule, plan: &super::ArenaPlan, problems: &mut Vec<String>) {
    if plan.offsets.len() != m.buffers.len() {
        problems.push("arena plan does not cover every buffer".to_string());
        return;
    }
    let iv = m.temp_intervals();
    let mut placed = Vec::new();
    for (i, b) in m.buffers.iter().enumerate() {
        let id = super::BufferId(i as u32);
        match (b.kind, plan.offsets[i]) {
            (BufferKind::Temp, Some(off)) => {
                let Some(bytes) = m.static_bytes(id) else {
                    problems.push(format!("{id}: planned but its shape {} is not static", b.ty.shape));
                    continue;
                };
                if off % super::ALIGN != 0 || off + bytes > plan.size {
                    problems.push(format!("{id}: [{off}, {}) misaligned or past arena size {}", off + bytes, plan.size));
                }
                if let Some(live) = iv[i] {
                    placed.push((id, off, off + bytes, live));
                }
            }
            (BufferKind::Temp, None) => problems.push(format!("{id}: temp without an arena offset")),
            (_, Some(_)) => problems.push(format!("{id}: only temps live in the arena")),
            _ => {}
        }
    }
    for (i, a) in placed.iter().enumerate() {
        for b in &placed[i + 1..] {
            let time = a.3.0 <= b.3.1 && b.3.0 <= a.3.1;
            let space = a.1 < b.2 && b.1 < a.2;
            if time && space {
                problems.push(format!("{} and {} are live together and overlap in the arena", a.0, b.0));
            }
        }
    }
}
