//! Elementwise fusion: chains of f32 unary ops, f32 binary ops (with broadcasting), casts to
//! f32 and earlier fused programs become one `elementwise` kernel whenever the producer has a
//! single user. Programs are capped in length so long chains are cut into pieces instead of
//! growing without bound. Ops of other dtypes and multi-user values stay as they are, and so
//! does a producer its consumer would broadcast over many elements (`repeated_by_broadcast`):
//! computed at its own shape once, not once per element of the consumer.

use std::sync::Arc;

use rlx_ir::hir::{Op, ValueId};
use rlx_ir::{ComputeOp, DType, Dim, EwProgram, EwStep, HirModule, Result, Shape};

use super::PassLog;
use super::util::{const_scalar, use_counts};

/// Longest program a kernel interprets; longer chains are split.
const MAX_STEPS: usize = 32;

/// Steps an inlined producer would repeat over the elements its consumer broadcasts it to,
/// above which it runs as a kernel of its own at its own shape (about what one kernel's
/// dispatch costs).
const BROADCAST_WORK: usize = 8192;

/// A program under construction and the values its `Load`s read.
#[derive(Clone, Default)]
struct Partial {
    steps: Vec<EwStep>,
    leaves: Vec<ValueId>,
    /// Number of original ops folded in.
    ops: usize,
}

impl Partial {
    /// Appends operand `v` — inlined when `inline` has its program — and returns its register.
    /// `rank` is the rank of the op being built: a one-element constant of no greater rank
    /// cannot change the broadcast shape, so it may become a `Const` step.
    fn operand(
        &mut self,
        m: &HirModule,
        v: ValueId,
        inline: Option<&Partial>,
        rank: usize,
    ) -> usize {
        if let Some(p) = inline {
            let base = self.steps.len();
            for s in &p.steps {
                let step = match *s {
                    EwStep::Load(n) => return_load(self, m, p.leaves[n], rank),
                    EwStep::Const(c) => EwStep::Const(c),
                    EwStep::Unary(op, a) => EwStep::Unary(op, a + base),
                    EwStep::Binary(op, a, b) => EwStep::Binary(op, a + base, b + base),
                };
                self.steps.push(step);
            }
            self.ops += p.ops;
            return self.steps.len() - 1;
        }
        let step = return_load(self, m, v, rank);
        self.steps.push(step);
        self.steps.len() - 1
    }
}

/// A load of `v` (or its value, when `v` is a one-element f32 constant).
fn return_load(p: &mut Partial, m: &HirModule, v: ValueId, rank: usize) -> EwStep {
    if let Some(c) = const_scalar(m, v).filter(|_| m.nodes[v.index()].ty.shape.rank() <= rank) {
        return EwStep::Const(c);
    }
    let n = p.leaves.iter().position(|l| *l == v).unwrap_or_else(|| {
        p.leaves.push(v);
        p.leaves.len() - 1
    });
    EwStep::Load(n)
}

/// Whether program `q` (value `v`'s) inlined into an op of shape `to` would be repeated over
/// more than `BROADCAST_WORK` extra elements' steps: `to` broadcasts `v` along axes of known
/// length (a squeeze-excitation's gate `hard_sigmoid(s)`, `[n, c, 1, 1]`, scaling `[n, c, h,
/// w]`: computed once per channel, not once per pixel). Symbolic axes count as one.
fn repeated_by_broadcast(m: &HirModule, v: ValueId, q: &Partial, to: &Shape) -> bool {
    let from = m.nodes[v.index()].ty.shape.dims();
    let known = |d: &Dim| d.as_const().and_then(|c| usize::try_from(c).ok());
    let own: usize = from.iter().filter_map(known).product();
    // Elements of `to` per element of `v` along the broadcast axes (right-aligned).
    let spread: usize = (0..to.rank())
        .rev()
        .zip(
            (0..from.len())
                .rev()
                .map(Some)
                .chain(std::iter::repeat(None)),
        )
        .filter(|(_, f)| f.is_none_or(|f| from[f].as_const() == Some(1)))
        .filter_map(|(t, _)| known(&to.dims()[t]))
        .product();
    let steps = q
        .steps
        .iter()
        .filter(|s| matches!(s, EwStep::Unary(..) | EwStep::Binary(..)));
    let extra = steps
        .count()
        .saturating_mul(own)
        .saturating_mul(spread.saturating_sub(1));
    extra > BROADCAST_WORK
}

fn fusable(m: &HirModule, i: usize) -> bool {
    let n = &m.nodes[i];
    n.ty.dtype == DType::F32
        && matches!(
            &n.op,
            Op::Compute(
                ComputeOp::Unary(_)
                    | ComputeOp::Binary(_)
                    | ComputeOp::Elementwise { .. }
                    | ComputeOp::Cast { to: DType::F32 }
            )
        )
}

pub fn run(mut m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    let uses = use_counts(&m);
    let mut partial: Vec<Option<Partial>> = vec![None; m.nodes.len()];
    let mut absorbed = vec![false; m.nodes.len()];
    for i in 0..m.nodes.len() {
        if !fusable(&m, i) {
            continue;
        }
        let node = &m.nodes[i];
        let mut p = Partial {
            ops: 1,
            ..Default::default()
        };
        let mut regs = Vec::with_capacity(node.inputs.len());
        for v in &node.inputs {
            let src = partial[v.index()].as_ref().filter(|q| {
                uses[v.index()] == 1
                    && p.steps.len() + q.steps.len() < MAX_STEPS
                    && !m.outputs.iter().any(|o| o.value == *v)
                    && !repeated_by_broadcast(&m, *v, q, &node.ty.shape)
            });
            if src.is_some() {
                absorbed[v.index()] = true;
            }
            regs.push(p.operand(&m, *v, src, node.ty.shape.rank()));
        }
        match &node.op {
            Op::Compute(ComputeOp::Unary(op)) => p.steps.push(EwStep::Unary(*op, regs[0])),
            Op::Compute(ComputeOp::Binary(op)) => {
                p.steps.push(EwStep::Binary(*op, regs[0], regs[1]))
            }
            Op::Compute(ComputeOp::Cast { .. }) => {}
            Op::Compute(ComputeOp::Elementwise { program }) => {
                p.ops = p.ops.max(2);
                continue_with(&mut p, program, &regs);
            }
            _ => unreachable!("fusable() admits only these ops"),
        }
        partial[i] = Some(p);
    }
    for i in 0..m.nodes.len() {
        let Some(p) = partial[i].take() else { continue };
        // A chain over constants alone has no operand to read: leave it to the kernels.
        if absorbed[i] || p.ops < 2 || p.leaves.is_empty() {
            continue;
        }
        let op = Op::Compute(ComputeOp::Elementwise {
            program: Arc::new(EwProgram { steps: p.steps }),
        });
        // Constants folded into the program no longer take part in broadcasting: keep the
        // fusion only if the operands still give the op its type.
        if rlx_ir::hir::infer_type(&m, &op, &p.leaves).ok().as_ref() != Some(&m.nodes[i].ty) {
            log.near_misses.push(format!(
                "elementwise: %{i} kept apart: inlined constants would change its shape"
            ));
            continue;
        }
        m.nodes[i].op = op;
        m.nodes[i].inputs = p.leaves;
        log.fusions
            .push(format!("elementwise: {} ops -> %{i}", p.ops));
    }
    Ok(m)
}

/// Appends `program`'s steps with its loads mapped to the registers `regs` already in `p`.
fn continue_with(p: &mut Partial, program: &EwProgram, regs: &[usize]) {
    let mut map = Vec::with_capacity(program.steps.len());
    for s in &program.steps {
        let step = match *s {
            EwStep::Load(n) => {
                map.push(regs[n]);
                continue;
            }
            EwStep::Const(c) => EwStep::Const(c),
            EwStep::Unary(op, a) => EwStep::Unary(op, map[a]),
            EwStep::Binary(op, a, b) => EwStep::Binary(op, map[a], map[b]),
        };
        p.steps.push(step);
        map.push(p.steps.len() - 1);
    }
    // The result must be the last register; max(x, x) is an exact move.
    let last = *map.last().expect("non-empty program");
    if last != p.steps.len() - 1 {
        p.steps
            .push(EwStep::Binary(rlx_ir::BinaryOp::Max, last, last));
    }
}
