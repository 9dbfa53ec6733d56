//! Lowering: HIR → LIR template. One kernel per compute op, reshapes become views, and every
//! graph output gets a buffer of its own that the caller receives.

use rlx_ir::hir::Op;
use rlx_ir::lir::{Buffer, BufferId, BufferKind, DimCheck, IoSlot, Kernel, KernelOp};
use rlx_ir::{ComputeOp, Dim};
use rlx_ir::{HirModule, LirModule, Result};

pub fn lower(hir: &HirModule) -> Result<LirModule> {
    let mut lir = LirModule {
        name: hir.name.clone(),
        symbols: hir.symbols.clone(),
        ..Default::default()
    };
    let mut buf_of: Vec<BufferId> = Vec::with_capacity(hir.nodes.len());
    for node in &hir.nodes {
        let ins: Vec<BufferId> = node.inputs.iter().map(|v| buf_of[v.index()]).collect();
        let new = |lir: &mut LirModule, kind| push_buffer(lir, kind, node.ty.clone());
        let id = match &node.op {
            Op::Input { name } => {
                let b = new(&mut lir, BufferKind::Input);
                lir.inputs.push(IoSlot {
                    name: name.clone(),
                    buffer: b,
                });
                b
            }
            Op::Param { name } => {
                let b = new(&mut lir, BufferKind::Param);
                lir.params.push(IoSlot {
                    name: name.clone(),
                    buffer: b,
                });
                b
            }
            Op::State { name } => {
                let b = new(&mut lir, BufferKind::State);
                lir.states.push(IoSlot {
                    name: name.clone(),
                    buffer: b,
                });
                b
            }
            Op::Constant(c) => {
                let b = new(&mut lir, BufferKind::Const);
                lir.constants.push((b, c.clone()));
                b
            }
            Op::Reshape { .. } => new(&mut lir, BufferKind::View { of: ins[0] }),
            Op::Compute(op) => {
                if let ComputeOp::Slice { axis, start, end } = op {
                    let dim = hir.ty(node.inputs[0])?.shape.0[*axis].clone();
                    let what = format!("slice [{start}, {end}) of axis {axis} (size {dim})");
                    lir.checks.push(DimCheck {
                        lhs: Dim::constant(0),
                        rhs: start.clone(),
                        what: what.clone(),
                    });
                    lir.checks.push(DimCheck {
                        lhs: start.clone(),
                        rhs: end.clone(),
                        what: what.clone(),
                    });
                    lir.checks.push(DimCheck {
                        lhs: end.clone(),
                        rhs: dim,
                        what,
                    });
                }
                // The cache write updates its state in place: its result is the state buffer.
                let out = if *op == ComputeOp::CacheWrite {
                    ins[0]
                } else {
                    new(&mut lir, BufferKind::Temp)
                };
                lir.kernels.push(Kernel {
                    op: KernelOp::Compute(op.clone()),
                    inputs: ins,
                    output: out,
                });
                out
            }
        };
        buf_of.push(id);
    }
    for o in &hir.outputs {
        let b = buf_of[o.value.index()];
        // A kernel result not yet handed out becomes the output itself; anything else (an
        // input, a param, a view, a value returned twice) is copied into a fresh output.
        let buffer = if lir.buffer(b).kind == BufferKind::Temp {
            lir.buffers[b.index()].kind = BufferKind::Output;
            b
        } else {
            let ty = lir.buffer(b).ty.clone();
            let out = push_buffer(&mut lir, BufferKind::Output, ty);
            lir.kernels.push(Kernel {
                op: KernelOp::Copy,
                inputs: vec![b],
                output: out,
            });
            out
        };
        lir.outputs.push(IoSlot {
            name: o.name.clone(),
            buffer,
        });
    }
    Ok(lir)
}

fn push_buffer(lir: &mut LirModule, kind: BufferKind, ty: rlx_ir::TensorType) -> BufferId {
    let id = BufferId(lir.buffers.len() as u32);
    lir.buffers.push(Buffer { kind, ty });
    id
}
