//! The high-level IR: a graph of typed ops over values, kept in topological order.
//!
//! Each node defines one value; `ValueId(n)` is node `n`. Inputs of a node always refer to
//! earlier nodes, so a module is acyclic by construction and every walk is a plain loop.

mod builder;
mod infer;
mod infer_decoder;
mod infer_fused;
mod infer_vision;
mod print;
mod verify;

use std::fmt;
use std::sync::Arc;

pub use builder::HirMut;
pub use infer::{infer_compute, infer_type};

use crate::ops::{ComputeOp, Constant};
use crate::{Dim, IrError, Result, Shape, Symbol, TensorType};

/// A value of the HIR: the index of the node that defines it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// HIR operations: leaves (whose type is given), views, and compute ops.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Input {
        name: String,
    },
    /// A weight: static shape, bound at run time, never folded as a constant.
    Param {
        name: String,
    },
    /// Memory that outlives a run (a decoder's KV cache): owned by the caller's session, read
    /// and updated in place by the one `cache_write` that takes it. Never folded or merged.
    State {
        name: String,
    },
    /// A small tensor baked into the graph.
    Constant(Arc<Constant>),
    /// Same elements, another shape: free at run time.
    Reshape {
        shape: Shape,
    },
    Compute(ComputeOp),
}

impl Op {
    /// The op's name in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::State { .. } => "state",
            Op::Constant(_) => "constant",
            Op::Reshape { .. } => "reshape",
            Op::Compute(c) => c.name(),
        }
    }

    /// Leaves carry their type; everything else has it inferred.
    pub fn is_leaf(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Param { .. } | Op::State { .. } | Op::Constant(_)
        )
    }

    pub fn compute(&self) -> Option<&ComputeOp> {
        match self {
            Op::Compute(c) => Some(c),
            _ => None,
        }
    }
}

/// One node: an op, its operands and the type of the value it defines.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub ty: TensorType,
}

/// A named graph output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    pub name: String,
    pub value: ValueId,
}

/// A model graph whose dims may be symbolic.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct HirModule {
    pub name: String,
    pub symbols: Vec<Symbol>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
}

impl HirModule {
    pub fn new(name: &str) -> HirModule {
        HirModule {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Declares a symbol with inclusive bounds and returns it as a dim. Re-declaring with the
    /// same bounds is allowed; with other bounds it is an error.
    pub fn add_symbol(&mut self, name: &str, min: i64, max: i64) -> Result<Dim> {
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        crate::ensure!(
            valid_name,
            Graph,
            "symbol name `{name}` must be an identifier"
        );
        crate::ensure!(
            0 <= min && min <= max,
            Binding,
            "symbol `{name}` bounds [{min}, {max}] must satisfy 0 <= min <= max"
        );
        if let Some(s) = self.symbol(name) {
            crate::ensure!(
                s.min == min && s.max == max,
                Graph,
                "symbol `{name}` already declared with bounds [{}, {}]",
                s.min,
                s.max
            );
        } else {
            self.symbols.push(Symbol {
                name: name.to_string(),
                min,
                max,
            });
        }
        Ok(Dim::sym(name))
    }

    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }

    pub fn node(&self, v: ValueId) -> Result<&Node> {
        self.nodes
            .get(v.index())
            .ok_or_else(|| IrError::Graph(format!("unknown value {v}")))
    }

    pub fn ty(&self, v: ValueId) -> Result<&TensorType> {
        Ok(&self.node(v)?.ty)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Appends a node after inferring its type (leaf ops must use `push_leaf`).
    pub fn push(&mut self, op: Op, inputs: Vec<ValueId>) -> Result<ValueId> {
        let ty = infer_type(self, &op, &inputs)?;
        check_no_overflow(&op, &ty)?;
        Ok(self.push_typed(op, inputs, ty))
    }

    /// Appends a node whose type the caller computed (leaves, constants, passes).
    pub(crate) fn push_typed(&mut self, op: Op, inputs: Vec<ValueId>, ty: TensorType) -> ValueId {
        let id = ValueId(self.nodes.len() as u32);
        self.nodes.push(Node { op, inputs, ty });
        id
    }

    /// Sets the named outputs, replacing earlier ones.
    pub fn set_outputs(&mut self, outputs: Vec<(String, ValueId)>) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (name, v) in &outputs {
            self.node(*v)?;
            crate::ensure!(
                seen.insert(name.as_str()),
                Graph,
                "duplicate output name `{name}`"
            );
        }
        self.outputs = outputs
            .into_iter()
            .map(|(name, value)| Output { name, value })
            .collect();
        Ok(())
    }

    /// Inputs in definition order: `(name, value)`.
    pub fn inputs(&self) -> impl Iterator<Item = (&str, ValueId)> {
        self.leaves(|op| matches!(op, Op::Input { .. }))
    }

    /// Params in definition order: `(name, value)`.
    pub fn params(&self) -> impl Iterator<Item = (&str, ValueId)> {
        self.leaves(|op| matches!(op, Op::Param { .. }))
    }

    /// States in definition order: `(name, value)`.
    pub fn states(&self) -> impl Iterator<Item = (&str, ValueId)> {
        self.leaves(|op| matches!(op, Op::State { .. }))
    }

    fn leaves(&self, keep: fn(&Op) -> bool) -> impl Iterator<Item = (&str, ValueId)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| keep(&n.op))
            .filter_map(|(i, n)| match &n.op {
                Op::Input { name } | Op::Param { name } | Op::State { name } => {
                    Some((name.as_str(), ValueId(i as u32)))
                }
                _ => None,
            })
    }

    /// Checks the whole module and reports every problem found.
    pub fn verify(&self) -> Result<()> {
        verify::verify(self)
    }
}

/// A size whose arithmetic overflowed i64 (see `Dim`) is a shape error where it first appears.
pub(crate) fn check_no_overflow(op: &Op, ty: &TensorType) -> Result<()> {
    if ty.shape.0.iter().any(Dim::is_overflow) {
        crate::bail!(
            Shape,
            "{}: a size of the result overflows 64-bit arithmetic (shape {})",
            op.name(),
            ty.shape
        );
    }
    Ok(())
}
