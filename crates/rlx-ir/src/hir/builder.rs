//! `HirMut`: the graph builder. Every method infers the result type at once, so a shape or
//! dtype mistake is reported where it is made.

use super::{HirModule, Op, ValueId};
use crate::{BinaryOp, DType, Dim, Result, Shape, TensorType, UnaryOp};

/// Builds a [`HirModule`] in place.
pub struct HirMut<'m> {
    m: &'m mut HirModule,
}

impl<'m> HirMut<'m> {
    pub fn new(m: &'m mut HirModule) -> Self {
        HirMut { m }
    }

    pub fn module(&self) -> &HirModule {
        self.m
    }

    /// Declares symbol `name` with inclusive bounds; returns it as a dim.
    pub fn dim(&mut self, name: &str, min: i64, max: i64) -> Result<Dim> {
        self.m.add_symbol(name, min, max)
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<ValueId> {
        self.leaf(
            Op::Input {
                name: name.to_string(),
            },
            dtype,
            shape,
        )
    }

    /// A weight; its shape must be static so one parameter layout serves every variant.
    pub fn param(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<ValueId> {
        crate::ensure!(
            shape.is_static(),
            Shape,
            "param `{name}` shape {shape} must be static"
        );
        self.leaf(
            Op::Param {
                name: name.to_string(),
            },
            dtype,
            shape,
        )
    }

    fn leaf(&mut self, op: Op, dtype: DType, shape: Shape) -> Result<ValueId> {
        let (Op::Input { name } | Op::Param { name }) = &op else {
            unreachable!("leaf op")
        };
        crate::ensure!(
            !name.is_empty(),
            Graph,
            "{} name must not be empty",
            op.name()
        );
        if let Some((_, v)) = self
            .m
            .inputs()
            .chain(self.m.params())
            .find(|(n, _)| n == name)
        {
            crate::bail!(Graph, "name `{name}` is already used by {v}");
        }
        for d in &shape.0 {
            for s in d.symbols() {
                crate::ensure!(
                    self.m.symbol(s).is_some(),
                    Graph,
                    "{} `{name}`: symbol `{s}` is not declared (declare it with dim())",
                    op.name()
                );
            }
            if let Some(c) = d.as_const() {
                crate::ensure!(c >= 0, Shape, "{} `{name}`: negative dim {c}", op.name());
            }
        }
        Ok(self.m.push_typed(op, vec![], TensorType::new(dtype, shape)))
    }

    /// `x @ w (+ bias)` with an optional activation; `w` is `[in, out]`.
    pub fn linear(
        &mut self,
        x: ValueId,
        w: ValueId,
        bias: Option<ValueId>,
        activation: Option<UnaryOp>,
    ) -> Result<ValueId> {
        let mut ins = vec![x, w];
        ins.extend(bias);
        self.m.push(Op::Linear { activation }, ins)
    }

    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.m.push(Op::MatMul, vec![a, b])
    }

    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.m.push(Op::Binary(op), vec![a, b])
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn unary(&mut self, op: UnaryOp, x: ValueId) -> Result<ValueId> {
        self.m.push(Op::Unary(op), vec![x])
    }

    pub fn gelu(&mut self, x: ValueId) -> Result<ValueId> {
        self.unary(UnaryOp::Gelu, x)
    }

    /// Softmax over `axis` (negative counts from the end).
    pub fn softmax(&mut self, x: ValueId, axis: i64) -> Result<ValueId> {
        let axis = self.m.ty(x)?.shape.axis(axis, "softmax")?;
        self.m.push(Op::Softmax { axis }, vec![x])
    }

    /// Layer norm over the last axis with scale `gamma` and shift `beta`.
    pub fn layer_norm(
        &mut self,
        x: ValueId,
        gamma: ValueId,
        beta: ValueId,
        eps: f32,
    ) -> Result<ValueId> {
        self.m.push(Op::LayerNorm { eps }, vec![x, gamma, beta])
    }

    /// Reshape; at most one dim may be the constant -1, inferred by exact symbolic division.
    pub fn reshape(&mut self, x: ValueId, shape: Shape) -> Result<ValueId> {
        let minus_one = Dim::constant(-1);
        let holes = shape.0.iter().filter(|d| **d == minus_one).count();
        crate::ensure!(
            holes <= 1,
            Shape,
            "reshape to {shape}: at most one dim may be -1"
        );
        let shape = if holes == 1 {
            let total = self.m.ty(x)?.shape.numel();
            let known = Dim::product(shape.0.iter().filter(|d| **d != minus_one));
            let Some(inferred) = total.div_exact(&known) else {
                crate::bail!(
                    Shape,
                    "reshape to {shape}: cannot infer -1 from {total} / {known}"
                )
            };
            Shape(
                shape
                    .0
                    .iter()
                    .map(|d| {
                        if *d == minus_one {
                            inferred.clone()
                        } else {
                            d.clone()
                        }
                    })
                    .collect(),
            )
        } else {
            shape
        };
        self.m.push(Op::Reshape { shape }, vec![x])
    }

    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> Result<ValueId> {
        self.m.push(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            vec![x],
        )
    }

    /// Adds one named output.
    pub fn output(&mut self, name: &str, v: ValueId) -> Result<()> {
        let mut outs: Vec<(String, ValueId)> = self
            .m
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.value))
            .collect();
        outs.push((name.to_string(), v));
        self.m.set_outputs(outs)
    }

    /// Replaces the outputs.
    pub fn set_outputs(&mut self, outputs: Vec<(String, ValueId)>) -> Result<()> {
        self.m.set_outputs(outputs)
    }
}
