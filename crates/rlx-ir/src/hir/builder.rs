//! `HirMut`: the graph builder. Every method infers the result type at once, so a shape or
//! dtype mistake is reported where it is made. Axes may be negative (counted from the end).

use std::sync::Arc;

use super::{HirModule, Op, ValueId};
use crate::ops::{BinaryOp, CompareOp, ComputeOp, Constant, ReduceOp, TensorData, UnaryOp};
use crate::{DType, Dim, Result, Shape, TensorType};

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

    fn ty(&self, v: ValueId) -> Result<&TensorType> {
        self.m.ty(v)
    }

    fn axis(&self, v: ValueId, axis: i64, op: &str) -> Result<usize> {
        self.ty(v)?.shape.axis(axis, op)
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

    /// State that outlives a run (a KV cache), held by the caller's session and updated in
    /// place by the one [`Self::cache_write`] that must take it.
    pub fn state(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<ValueId> {
        self.leaf(
            Op::State {
                name: name.to_string(),
            },
            dtype,
            shape,
        )
    }

    /// A constant tensor of static `shape`.
    pub fn constant(&mut self, shape: &[usize], data: TensorData) -> Result<ValueId> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        crate::ensure!(
            numel == Some(data.len()),
            Shape,
            "constant of shape {shape:?} needs {numel:?} elements, got {}",
            data.len()
        );
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let ty = TensorType::new(data.dtype(), Shape::new(&dims));
        let c = Constant {
            shape: shape.to_vec(),
            data,
        };
        Ok(self.m.push_typed(Op::Constant(Arc::new(c)), vec![], ty))
    }

    /// A one-element f32 constant of shape `[1]`: it broadcasts against any operand of rank >= 1.
    pub fn scalar(&mut self, value: f32) -> Result<ValueId> {
        self.constant(&[1], TensorData::F32(vec![value]))
    }

    fn leaf(&mut self, op: Op, dtype: DType, shape: Shape) -> Result<ValueId> {
        let (Op::Input { name } | Op::Param { name } | Op::State { name }) = &op else {
            unreachable!("named leaf op")
        };
        crate::ensure!(
            !shape.0.iter().any(Dim::is_overflow),
            Shape,
            "{} `{name}`: a size overflows 64-bit arithmetic (shape {shape})",
            op.name()
        );
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
            .chain(self.m.states())
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

    /// Appends a compute op.
    pub fn compute(&mut self, op: ComputeOp, inputs: Vec<ValueId>) -> Result<ValueId> {
        self.m.push(Op::Compute(op), inputs)
    }

    /// `act(x @ w^T + bias)` with `w` stored `[out, in]` (PyTorch / safetensors layout), read
    /// transposed in place so weights bind without a copy.
    pub fn linear_t(
        &mut self,
        x: ValueId,
        w: ValueId,
        bias: Option<ValueId>,
        activation: Option<UnaryOp>,
    ) -> Result<ValueId> {
        self.linear_with(x, w, bias, activation, true)
    }

    /// `act(x @ w + bias)`; `w` is `[in, out]`.
    pub fn linear(
        &mut self,
        x: ValueId,
        w: ValueId,
        bias: Option<ValueId>,
        activation: Option<UnaryOp>,
    ) -> Result<ValueId> {
        self.linear_with(x, w, bias, activation, false)
    }

    /// A linear with the weight layout given: `[in, out]`, or `[out, in]` when `transpose_w`.
    pub fn linear_with(
        &mut self,
        x: ValueId,
        w: ValueId,
        bias: Option<ValueId>,
        activation: Option<UnaryOp>,
        transpose_w: bool,
    ) -> Result<ValueId> {
        let mut ins = vec![x, w];
        ins.extend(bias);
        self.compute(
            ComputeOp::Linear {
                activation,
                transpose_w,
            },
            ins,
        )
    }

    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.compute(ComputeOp::MatMul, vec![a, b])
    }

    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.compute(ComputeOp::Binary(op), vec![a, b])
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn unary(&mut self, op: UnaryOp, x: ValueId) -> Result<ValueId> {
        self.compute(ComputeOp::Unary(op), vec![x])
    }

    pub fn gelu(&mut self, x: ValueId) -> Result<ValueId> {
        self.unary(UnaryOp::Gelu, x)
    }

    pub fn compare(&mut self, op: CompareOp, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.compute(ComputeOp::Compare(op), vec![a, b])
    }

    /// `cond ? a : b`, broadcasting all three.
    pub fn where_(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.compute(ComputeOp::Where, vec![cond, a, b])
    }

    pub fn softmax(&mut self, x: ValueId, axis: i64) -> Result<ValueId> {
        let axis = self.axis(x, axis, "softmax")?;
        self.compute(ComputeOp::Softmax { axis }, vec![x])
    }

    /// Layer norm over the last axis with scale `gamma` and shift `beta`.
    pub fn layer_norm(
        &mut self,
        x: ValueId,
        gamma: ValueId,
        beta: ValueId,
        eps: f32,
    ) -> Result<ValueId> {
        self.compute(ComputeOp::LayerNorm { eps }, vec![x, gamma, beta])
    }

    /// RMS norm over the last axis with scale `gamma`.
    pub fn rms_norm(&mut self, x: ValueId, gamma: ValueId, eps: f32) -> Result<ValueId> {
        self.compute(ComputeOp::RmsNorm { eps }, vec![x, gamma])
    }

    /// Rotary position embedding of `x` (`[batch, heads, seq, dim]`) at positions
    /// `offset[b] + s` (see [`ComputeOp::Rotary`]).
    pub fn rotary(&mut self, x: ValueId, offset: ValueId, theta: f32) -> Result<ValueId> {
        self.compute(ComputeOp::Rotary { theta }, vec![x, offset])
    }

    /// Writes `new` into the KV cache `cache` (a state) at rows `pos[b] ..`; returns the
    /// updated cache (see [`ComputeOp::CacheWrite`]).
    pub fn cache_write(&mut self, cache: ValueId, new: ValueId, pos: ValueId) -> Result<ValueId> {
        self.compute(ComputeOp::CacheWrite, vec![cache, new, pos])
    }

    /// Causal attention of `q` over the valid prefix of the caches `k`, `v` at run-time
    /// positions `pos` (see [`ComputeOp::KvAttention`]); scale `1/sqrt(dim)` by default.
    pub fn kv_attention(
        &mut self,
        q: ValueId,
        k: ValueId,
        v: ValueId,
        pos: ValueId,
        scale: Option<f32>,
    ) -> Result<ValueId> {
        let scale = match scale {
            Some(s) => s,
            None => default_scale(&self.ty(q)?.shape),
        };
        self.compute(ComputeOp::KvAttention { scale }, vec![q, k, v, pos])
    }

    /// `silu(x[..., :n]) * x[..., n:]` (see [`ComputeOp::SwiGlu`]).
    pub fn swiglu(&mut self, x: ValueId) -> Result<ValueId> {
        self.compute(ComputeOp::SwiGlu, vec![x])
    }

    /// Convolution of `x = [batch, c, spatial..]` with `w = [m, c / groups, kernel..]` (see
    /// [`ComputeOp::Conv`]). Empty `strides` / `dilations` mean 1, empty `pads` 0.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: ValueId,
        w: ValueId,
        bias: Option<ValueId>,
        strides: &[usize],
        pads: &[usize],
        dilations: &[usize],
        groups: usize,
    ) -> Result<ValueId> {
        let ws = self.ty(w)?.shape.as_static().unwrap_or_default();
        let kernel = ws.get(2..).map(<[usize]>::to_vec).unwrap_or_default();
        let window = default_window(kernel, strides, pads, dilations);
        let mut ins = vec![x, w];
        ins.extend(bias);
        self.compute(ComputeOp::Conv(crate::ConvAttrs::new(window, groups)), ins)
    }

    /// Max or average pooling (see [`ComputeOp::Pool`]); defaults as for [`Self::conv`].
    #[allow(clippy::too_many_arguments)]
    pub fn pool(
        &mut self,
        kind: crate::PoolKind,
        x: ValueId,
        kernel: &[usize],
        strides: &[usize],
        pads: &[usize],
        dilations: &[usize],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Result<ValueId> {
        let window = default_window(kernel.to_vec(), strides, pads, dilations);
        let attrs = crate::PoolAttrs {
            kind,
            window,
            ceil_mode,
            count_include_pad,
            channels_last: false,
        };
        self.compute(ComputeOp::Pool(attrs), vec![x])
    }

    /// The index of the largest (`max`) or smallest element along `axis` (see
    /// [`ComputeOp::ArgReduce`]).
    pub fn arg_reduce(
        &mut self,
        x: ValueId,
        max: bool,
        axis: i64,
        keep_dim: bool,
        last: bool,
    ) -> Result<ValueId> {
        let axis = self.axis(x, axis, if max { "argmax" } else { "argmin" })?;
        self.compute(
            ComputeOp::ArgReduce {
                max,
                axis,
                keep_dim,
                last,
            },
            vec![x],
        )
    }

    /// The indices of the `k` largest (or smallest) elements along `axis` (see
    /// [`ComputeOp::TopK`]).
    pub fn top_k(&mut self, x: ValueId, axis: i64, k: usize, largest: bool) -> Result<ValueId> {
        let axis = self.axis(x, axis, "top_k")?;
        self.compute(ComputeOp::TopK { axis, k, largest }, vec![x])
    }

    /// Local response normalization across channels (see [`ComputeOp::Lrn`]).
    pub fn lrn(
        &mut self,
        x: ValueId,
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    ) -> Result<ValueId> {
        self.compute(
            ComputeOp::Lrn {
                size,
                alpha,
                beta,
                bias,
            },
            vec![x],
        )
    }

    /// Reduces over `axes` (all axes when empty).
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        x: ValueId,
        axes: &[i64],
        keep_dim: bool,
    ) -> Result<ValueId> {
        let rank = self.ty(x)?.shape.rank();
        let mut ax = if axes.is_empty() {
            (0..rank).collect()
        } else {
            axes.iter()
                .map(|&a| self.axis(x, a, op.name()))
                .collect::<Result<Vec<_>>>()?
        };
        ax.sort_unstable();
        let before = ax.len();
        ax.dedup();
        crate::ensure!(
            ax.len() == before,
            Graph,
            "{}: repeated axis in {axes:?}",
            op.name()
        );
        self.compute(
            ComputeOp::Reduce {
                op,
                axes: ax,
                keep_dim,
            },
            vec![x],
        )
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
            let total = self.ty(x)?.shape.numel();
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
        self.compute(
            ComputeOp::Transpose {
                perm: perm.to_vec(),
            },
            vec![x],
        )
    }

    pub fn concat(&mut self, xs: &[ValueId], axis: i64) -> Result<ValueId> {
        crate::ensure!(!xs.is_empty(), Graph, "concat needs at least one operand");
        let axis = self.axis(xs[0], axis, "concat")?;
        self.compute(ComputeOp::Concat { axis }, xs.to_vec())
    }

    /// `x[start:end]` along `axis`, step 1. A negative constant bound counts from the end;
    /// `end = None` means to the end. Symbolic bounds are checked when specializing.
    pub fn slice(
        &mut self,
        x: ValueId,
        axis: i64,
        start: Dim,
        end: Option<Dim>,
    ) -> Result<ValueId> {
        let axis = self.axis(x, axis, "slice")?;
        for b in std::iter::once(&start).chain(end.as_ref()) {
            if let Some(sym) = b.symbols().into_iter().find(|s| self.m.symbol(s).is_none()) {
                crate::bail!(
                    Graph,
                    "slice bound `{b}` uses symbol `{sym}`, which the graph does not declare; \
                     declare it with its bounds first (dims={{\"{sym}\": (min, max)}})"
                );
            }
        }
        let d = self.ty(x)?.shape.0[axis].clone();
        let norm = |b: Dim| match b.as_const() {
            Some(c) if c < 0 => &d + &b,
            _ => b,
        };
        let (start, end) = (norm(start), end.map(norm).unwrap_or_else(|| d.clone()));
        self.compute(ComputeOp::Slice { axis, start, end }, vec![x])
    }

    /// `data.take(indices, axis)`; indices are i64 or i32, checked at run time.
    pub fn gather(&mut self, data: ValueId, indices: ValueId, axis: i64) -> Result<ValueId> {
        let axis = self.axis(data, axis, "gather")?;
        self.compute(ComputeOp::Gather { axis }, vec![data, indices])
    }

    pub fn cast(&mut self, x: ValueId, to: DType) -> Result<ValueId> {
        self.compute(ComputeOp::Cast { to }, vec![x])
    }

    /// Attention over `[batch, heads, seq, dim]` q, k, v; `scale` defaults to 1/sqrt(dim);
    /// `mask` is a `[batch, key_len]` padding mask (non-zero = attend).
    pub fn attention(
        &mut self,
        q: ValueId,
        k: ValueId,
        v: ValueId,
        mask: Option<ValueId>,
        scale: Option<f32>,
        causal: bool,
    ) -> Result<ValueId> {
        let scale = match scale {
            Some(s) => s,
            None => default_scale(&self.ty(q)?.shape),
        };
        let mut ins = vec![q, k, v];
        ins.extend(mask);
        self.compute(ComputeOp::Attention { scale, causal }, ins)
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

/// Attention's default scale, `1/sqrt(head dim)`, from `q = [batch, heads, seq, dim]`.
fn default_scale(q: &Shape) -> f32 {
    let d = q.0.get(3).and_then(Dim::as_const).unwrap_or(1).max(1);
    1.0 / (d as f32).sqrt()
}

/// A window over `kernel`, with strides and dilations 1 and pads 0 where not given.
fn default_window(
    kernel: Vec<usize>,
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
) -> crate::Window {
    let rank = kernel.len();
    let or = |v: &[usize], n: usize, fill: usize| {
        if v.is_empty() {
            vec![fill; n]
        } else {
            v.to_vec()
        }
    };
    crate::Window {
        strides: or(strides, rank, 1),
        dilations: or(dilations, rank, 1),
        pads: or(pads, 2 * rank, 0),
        kernel,
    }
}
