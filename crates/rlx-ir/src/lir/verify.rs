//! The LIR verifier: schedule order, buffer kinds, and (when planned) arena placement.

use super::{BufferId, BufferKind, KernelOp, LirModule};
use crate::{IrError, Result, TensorType};

pub(super) fn verify(m: &LirModule) -> Result<()> {
    let mut problems = Vec::new();
    let n = m.buffers.len();
    let mut written = vec![false; n];
    // The kernel that updates each state buffer in place.
    let mut state_writer: Vec<Option<usize>> = vec![None; n];
    for (i, b) in m.buffers.iter().enumerate() {
        match b.kind {
            BufferKind::Input | BufferKind::Param | BufferKind::Const | BufferKind::State => {
                written[i] = true
            }
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
            BufferKind::State => check_state_write(m, k, &mut state_writer, &mut problems),
            kind => problems.push(format!("{at}: writes {out} of kind {kind:?}")),
        }
        // A state's old contents are read only by the kernel that updates it in place.
        for b in &kernel.inputs {
            let r = m.root(*b);
            if m.buffer(r).kind == BufferKind::State
                && state_writer[r.index()].is_none_or(|w| w > k)
            {
                problems.push(format!("{at}: reads state {b} before its cache_write"));
            }
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
    // Types and placement index buffers freely: only checked once every id is known.
    if problems.is_empty() {
        verify_types(m, &mut problems);
        if let Some(plan) = &m.arena {
            verify_plan(m, plan, &mut problems);
        }
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

/// Kernel `k` writes a state buffer: only a `cache_write` whose first operand is that same
/// buffer may, once per run.
fn check_state_write(
    m: &LirModule,
    k: usize,
    state_writer: &mut [Option<usize>],
    problems: &mut Vec<String>,
) {
    let kernel = &m.kernels[k];
    let out = kernel.output;
    let in_place = matches!(kernel.op, KernelOp::Compute(crate::ComputeOp::CacheWrite))
        && kernel.inputs.first() == Some(&out);
    if !in_place {
        problems.push(format!(
            "kernel {k} ({}): writes state {out}, which only a cache_write of that state may",
            kernel.op.name()
        ));
    } else if kernel.inputs[1..].iter().any(|b| m.root(*b) == out) {
        problems.push(format!(
            "kernel {k} (cache_write): reads its own state {out} as new rows"
        ));
    } else if state_writer[out.index()].replace(k).is_some() {
        problems.push(format!(
            "kernel {k} (cache_write): state {out} is written twice"
        ));
    }
}

/// Every kernel's output has the type its op infers from its inputs, copies and views keep
/// element count and dtype, constants hold as many elements as their buffer, I/O slots name
/// buffers of their kind. Shapes are compared where both are static (a specialized module: the
/// kernels trust exactly these sizes); templates are checked for dtypes only.
fn verify_types(m: &LirModule, problems: &mut Vec<String>) {
    use crate::hir::infer_compute;
    let numel = |b: BufferId| -> Option<usize> {
        m.buffer(b)
            .ty
            .shape
            .as_static()?
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
    };
    let specialized = m.arena.is_some();
    for (i, b) in m.buffers.iter().enumerate() {
        let id = BufferId(i as u32);
        if specialized && m.static_bytes(id).is_none() {
            problems.push(format!("{id}: shape {} has no byte size", b.ty.shape));
        }
        if let BufferKind::View { of } = b.kind {
            let same_count = match (numel(id), numel(of)) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            if b.ty.dtype != m.buffer(of).ty.dtype || !same_count {
                problems.push(format!("{id}: view of {of} with another dtype or size"));
            }
        }
    }
    for (k, kernel) in m.kernels.iter().enumerate() {
        let at = format!("kernel {k} ({})", kernel.op.name());
        let out = &m.buffer(kernel.output).ty;
        let ins: Vec<&TensorType> = kernel.inputs.iter().map(|b| &m.buffer(*b).ty).collect();
        match &kernel.op {
            KernelOp::Copy => {
                let ok = ins.len() == 1
                    && ins[0].dtype == out.dtype
                    && match (numel(kernel.inputs[0]), numel(kernel.output)) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    };
                if !ok {
                    problems.push(format!("{at}: copies {ins:?} into {out:?}"));
                }
            }
            KernelOp::Compute(op) => match infer_compute(op, &ins) {
                Err(e) => problems.push(format!("{at}: {e}")),
                Ok(ty) => {
                    let shapes_differ = match (ty.shape.as_static(), out.shape.as_static()) {
                        (Some(a), Some(b)) => a != b,
                        _ => specialized,
                    };
                    if ty.dtype != out.dtype || shapes_differ {
                        problems.push(format!(
                            "{at}: computes {} {} but writes {} {}",
                            ty.dtype, ty.shape, out.dtype, out.shape
                        ));
                    }
                }
            },
        }
    }
    for (b, c) in &m.constants {
        let buf = m.buffer(*b);
        let ok = buf.kind == BufferKind::Const
            && c.data.dtype() == buf.ty.dtype
            && numel(*b).is_none_or(|n| n == c.data.len());
        if !ok {
            problems.push(format!("{b}: constant does not fill its buffer"));
        }
    }
    let slots = [
        (&m.inputs, BufferKind::Input),
        (&m.params, BufferKind::Param),
        (&m.outputs, BufferKind::Output),
        (&m.states, BufferKind::State),
    ];
    for (list, kind) in slots {
        for slot in list.iter() {
            if slot.buffer.index() >= m.buffers.len() {
                problems.push(format!("`{}`: unknown buffer {}", slot.name, slot.buffer));
                continue;
            }
            let root = m.root(slot.buffer);
            if m.buffer(root).kind != kind {
                problems.push(format!("`{}`: {root} is not of kind {kind:?}", slot.name));
            }
        }
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
