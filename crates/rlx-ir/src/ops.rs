//! Op families shared by the HIR and the LIR: small `Copy` enums by family, and `ComputeOp`,
//! the one list of ops that compute (the HIR adds leaves and views; the LIR adds copies).

use std::fmt;
use std::sync::Arc;

use crate::{DType, Dim};

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($(#[$vm])* $v),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),*];

            pub fn name(self) -> &'static str {
                match self { $($name::$v => $s),* }
            }

            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|o| o.name() == s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum!(
    /// Elementwise binary arithmetic with numpy broadcasting; operands share one dtype.
    BinaryOp { Add => "add", Sub => "sub", Mul => "mul", Div => "div", Pow => "pow", Max => "max", Min => "min" }
);

named_enum!(
    /// Elementwise unary ops and activations (f32).
    UnaryOp {
        Relu => "relu",
        /// `min(max(x, 0), 6)` (ONNX `Clip(x, 0, 6)`, MobileNet's activation); NaN stays NaN.
        Relu6 => "relu6",
        /// `x * min(max(x / 6 + 1/2, 0), 1)` (ONNX HardSwish: `x * (x * alpha + beta)`
        /// clamped, alpha = 1/6 rounded to f32, beta = 0.5).
        HardSwish => "hard_swish",
        /// GELU with the exact erf form.
        Gelu => "gelu",
        /// GELU with the tanh approximation.
        GeluTanh => "gelu_tanh",
        Silu => "silu",
        Sigmoid => "sigmoid",
        Tanh => "tanh",
        Exp => "exp",
        Log => "log",
        Sqrt => "sqrt",
        Rsqrt => "rsqrt",
        Neg => "neg",
        Abs => "abs",
        Erf => "erf",
        Floor => "floor",
        Ceil => "ceil",
        /// To the nearest integer, ties to even (ONNX Round).
        Round => "round",
        /// -1, 0 or 1 (0 keeps its sign; NaN stays NaN).
        Sign => "sign",
        Sin => "sin",
        Cos => "cos",
        Tan => "tan",
        Asin => "asin",
        Acos => "acos",
        Atan => "atan",
        Sinh => "sinh",
        Cosh => "cosh",
        Asinh => "asinh",
        Acosh => "acosh",
        Atanh => "atanh",
    }
);

named_enum!(
    /// Elementwise comparisons with broadcasting; the result is bool.
    CompareOp { Eq => "eq", Ne => "ne", Lt => "lt", Le => "le", Gt => "gt", Ge => "ge" }
);

named_enum!(
    /// Reductions over a set of axes.
    ReduceOp { Sum => "reduce_sum", Mean => "reduce_mean", Max => "reduce_max" }
);

/// How fusion sees an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// One output element from the same-index input elements.
    Elementwise,
    /// Elementwise after broadcasting the inputs.
    Broadcast,
    Reduce,
    /// Anything else (matmul, norms, data movement).
    Opaque,
}

/// Owned tensor data of one dtype.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(d) => d.len(),
            TensorData::I64(d) => d.len(),
            TensorData::I32(d) => d.len(),
            TensorData::Bool(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        match self {
            TensorData::F32(d) => d.as_ptr().cast(),
            TensorData::I64(d) => d.as_ptr().cast(),
            TensorData::I32(d) => d.as_ptr().cast(),
            TensorData::Bool(d) => d.as_ptr().cast(),
        }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            TensorData::F32(d) => d.as_mut_ptr().cast(),
            TensorData::I64(d) => d.as_mut_ptr().cast(),
            TensorData::I32(d) => d.as_mut_ptr().cast(),
            TensorData::Bool(d) => d.as_mut_ptr().cast(),
        }
    }

    /// Zero-filled data, allocated without aborting on failure.
    pub fn zeros(
        dtype: DType,
        len: usize,
    ) -> Result<TensorData, std::collections::TryReserveError> {
        fn z<T: Clone + Default>(len: usize) -> Result<Vec<T>, std::collections::TryReserveError> {
            let mut v = Vec::new();
            v.try_reserve_exact(len)?;
            v.resize(len, T::default());
            Ok(v)
        }
        Ok(match dtype {
            DType::F32 => TensorData::F32(z(len)?),
            DType::I64 => TensorData::I64(z(len)?),
            DType::I32 => TensorData::I32(z(len)?),
            DType::Bool => TensorData::Bool(z(len)?),
        })
    }

    /// Element `i` as text, for printers.
    pub fn fmt_elem(&self, i: usize) -> String {
        match self {
            TensorData::F32(d) => format!("{:?}", d[i]),
            TensorData::I64(d) => d[i].to_string(),
            TensorData::I32(d) => d[i].to_string(),
            TensorData::Bool(d) => d[i].to_string(),
        }
    }
}

/// A constant tensor baked into the graph (small: shape tables, scales, masks).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Constant {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Every op that computes a new tensor from its operands. Operand lists are in the comments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ComputeOp {
    /// `a @ b` over the last two axes, leading axes broadcast. `[a, b]`
    MatMul,
    /// `act(x @ w + bias)`, `w` is `[in, out]`. `[x, w]` or `[x, w, bias]`
    /// With `transpose_w`, `w` is `[out, in]` (PyTorch's layout) and is read transposed in place.
    Linear {
        activation: Option<UnaryOp>,
        transpose_w: bool,
    },
    /// `[a, b]`
    Binary(BinaryOp),
    /// `[x]`
    Unary(UnaryOp),
    /// `[a, b]` → bool
    Compare(CompareOp),
    /// `cond ? a : b` with broadcasting. `[cond (bool), a, b]`
    Where,
    /// `[x]`
    Softmax { axis: usize },
    /// Over the last axis. `[x, gamma, beta]`
    LayerNorm { eps: f32 },
    /// `x / sqrt(mean(x^2) + eps) * gamma` over the last axis. `[x, gamma]`
    RmsNorm { eps: f32 },
    /// Rotary position embedding, half rotation (Llama, Qwen2): over `x = [batch, heads, seq,
    /// dim]`, position `offset[b] + s` and frequency `theta^(-2i/dim)`, the pair
    /// `(x[i], x[i + dim/2])` is rotated by position x frequency. `offset` is an i64 or i32
    /// tensor of `batch` (or 1) values read at run time, so decode steps at any past length run
    /// the same variant. `[x, offset]`
    Rotary { theta: f32 },
    /// `[x]`; `axes` sorted and unique.
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keep_dim: bool,
    },
    /// `[x]`
    Transpose { perm: Vec<usize> },
    /// `[x0, x1, ...]`
    Concat { axis: usize },
    /// `x[start:end]` along `axis` (step 1); bounds checked when specializing. `[x]`
    Slice { axis: usize, start: Dim, end: Dim },
    /// `data.take(indices, axis)`; indices i64/i32, negative counts from the end, out of
    /// range is an error at run time. `[data, indices]`
    Gather { axis: usize },
    /// `[x]`
    Cast { to: DType },
    /// Scaled dot-product attention over `[batch, heads, seq, dim]` tensors, with an optional
    /// padding mask `[batch, key_len]` (non-zero = attend) or a causal mask.
    /// `[q, k, v]` or `[q, k, v, mask]`
    Attention { scale: f32, causal: bool },
    /// Writes new keys (or values) into a cache in place: rows `pos[b] .. pos[b] + seq` of each
    /// head of `cache = [batch, heads, ctx, dim]` take `new = [batch, heads, seq, dim]`; the
    /// result is the updated cache. `cache` must be a state leaf used only here, so the write
    /// can happen in the state's own memory. A row past `ctx` is an error at run time.
    /// `[cache, new, pos]` with `pos` i64 or i32 of `batch` (or 1) values.
    CacheWrite,
    /// Causal attention over a cache: query `i` of row `b` sits at position `pos[b] + i` and
    /// attends to keys `0 ..= pos[b] + i` of `k, v = [batch, kv_heads, ctx, dim]` (the valid
    /// prefix; the rest of the cache is never read). `q = [batch, heads, seq, dim]`,
    /// `kv_heads` divides `heads`. `[q, k, v, pos]`
    KvAttention { scale: f32 },
    /// SwiGLU's gate: `silu(x[..., :n]) * x[..., n:]` over a last axis of `2n`
    /// (the gate and up projections side by side, as one `linear_group` writes them). `[x]`
    SwiGlu,
    /// N-d convolution (cross-correlation, as ONNX Conv) of `x = [batch, c, spatial..]` with
    /// `w = [m, c / groups, kernel..]`, plus `bias = [m]`. `pads` holds the begin pads of each
    /// spatial axis, then the end pads. Spatial sizes are static. `[x, w]` or `[x, w, bias]`,
    /// then the residual when the attrs fuse one: `act(conv + bias + residual)`.
    Conv(ConvAttrs),
    /// Max or average pooling over the spatial axes of `x = [batch, c, spatial..]`, ONNX
    /// semantics (`ceil_mode`; average pooling counts pads only with `count_include_pad`). `[x]`
    Pool(PoolAttrs),
    /// The index (i64) of the largest (`max`) or smallest element along `axis`, the first of
    /// equal ones or the last with `last`; a NaN counts as the extreme (as numpy). `[x]`
    ArgReduce {
        max: bool,
        axis: usize,
        keep_dim: bool,
        last: bool,
    },
    /// The indices (i64) of the `k` largest (or smallest) elements along `axis`, in order, the
    /// lower index first among equal ones; a NaN ranks above every number (ONNX TopK). The
    /// values are a gather of `x` at these indices. `[x]`
    TopK {
        axis: usize,
        k: usize,
        largest: bool,
    },
    /// Local response normalization across channels (ONNX LRN):
    /// `x / (bias + alpha / size * sum of x^2 over the size channels around)^beta`. `[x]`
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },

    // ---- fused ops, produced by passes (or built directly) ----
    /// An elementwise program over broadcast inputs of any dtype (loaded as f32); f32 result.
    Elementwise { program: Arc<EwProgram> },
    /// `layer_norm(a + b)` over the last axis. `[a, b, gamma, beta]`
    AddLayerNorm { eps: f32 },
    /// `softmax(x * scale + bias)` over `axis`; the bias broadcasts to `x`. `[x]` or `[x, bias]`
    ScaledSoftmax { axis: usize, scale: f32 },
    /// Several linears over one input, their outputs side by side on the last axis.
    /// `[x, w0, b0, w1, b1, ...]` with biases, `[x, w0, w1, ...]` without.
    LinearGroup {
        parts: usize,
        has_bias: bool,
        transpose_w: bool,
    },
    /// Attention reading heads straight from `[batch, seq, width]` sources: head `h` of q is
    /// columns `offsets[0] + h*head_dim ..` of `q_src` (likewise k, v); writes `[batch, sq,
    /// heads*head_dim]` with heads merged. `[q_src, k_src, v_src]` or `+ mask` where the mask
    /// has `batch * sk` elements (`[b, sk]` or `[b, 1, 1, sk]`).
    AttentionPacked {
        heads: usize,
        head_dim: usize,
        offsets: [usize; 3],
        scale: f32,
        causal: bool,
        mask: MaskKind,
    },
}

/// Window geometry shared by convolution and pooling: per spatial axis.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begin pads of every spatial axis, then end pads.
    pub pads: Vec<usize>,
}

impl Window {
    /// Output size of spatial axis `i` over an input of `n` (None: the window does not fit).
    pub fn out_size(&self, i: usize, n: usize, ceil: bool) -> Option<usize> {
        let rank = self.kernel.len();
        let span = self.dilations[i]
            .checked_mul(self.kernel[i].checked_sub(1)?)?
            .checked_add(1)?;
        let padded = n
            .checked_add(self.pads[i])?
            .checked_add(self.pads[rank + i])?;
        let room = padded.checked_sub(span)?;
        let s = self.strides[i];
        let mut out = if ceil { room.div_ceil(s) } else { room / s } + 1;
        // A last window that would start in the end padding is dropped (ONNX's ceil_mode rule).
        if ceil && (out - 1) * s >= n + self.pads[i] {
            out -= 1;
        }
        Some(out)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel={:?} strides={:?} dilations={:?} pads={:?}",
            self.kernel, self.strides, self.dilations, self.pads
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ConvAttrs {
    /// The kernel sizes come from the weight's shape; `window.kernel` repeats them.
    pub window: Window,
    pub groups: usize,
    /// Fused epilogue (`fuse_epilogue`): a residual of the output's shape added after the bias,
    /// as the last input.
    #[serde(default)]
    pub residual: bool,
    /// Fused epilogue: an activation applied last.
    #[serde(default)]
    pub act: Option<UnaryOp>,
    /// 2-D only: `x`, the residual and the output are laid out `[batch, h, w, c]`
    /// (`channels_last` pass); the weight stays `[m, c / groups, kh, kw]`.
    #[serde(default)]
    pub channels_last: bool,
    /// With `channels_last`, `x` alone stays `[batch, c, h, w]`: the convolution gathers its
    /// padded channels-last image from it (the pass's choice for a stem of a few channels,
    /// which would otherwise be transposed and then padded, two copies for one).
    #[serde(default)]
    pub input_channel_major: bool,
}

impl ConvAttrs {
    /// An unfused convolution.
    pub fn new(window: Window, groups: usize) -> ConvAttrs {
        ConvAttrs {
            window,
            groups,
            residual: false,
            act: None,
            channels_last: false,
            input_channel_major: false,
        }
    }

    /// Whether the output may take over its residual's memory (the arena planner's choice when
    /// this is the residual's last use): a channels-last 1x1 kernel without pads, of one group
    /// or of several at stride 1, whose products add their sums onto the residual in place.
    /// Every other convolution reads its residual after it has stored into the output.
    pub fn sums_onto_residual(&self) -> bool {
        self.residual
            && self.channels_last
            && !self.input_channel_major
            && (self.groups == 1 || self.window.strides.iter().all(|s| *s == 1))
            && self.window.kernel.iter().all(|k| *k == 1)
            && self.window.pads.iter().all(|p| *p == 0)
    }

    /// Whether this convolution, with weight shape `ws`, is a grouped 1x1 kernel of stride 1
    /// without pads and not depthwise: one product per group over the positions (ShuffleNet's),
    /// which the `channels_last` pass takes and the CPU runs as such.
    pub fn grouped_pointwise(&self, ws: &[usize]) -> bool {
        let w = &self.window;
        self.groups > 1
            && ws.len() == 4
            && !(ws[1] == 1 && self.groups == ws[0])
            && ws[2..] == [1, 1]
            && w.pads.iter().all(|p| *p == 0)
            && w.strides.iter().all(|s| *s == 1)
    }

    /// Whether `inputs` (the op's input count) include a bias: `[x, w, bias?, residual?]`.
    pub fn has_bias(&self, inputs: usize) -> bool {
        inputs == 3 + usize::from(self.residual)
    }
}

named_enum!(
    /// The reduction of a pooling window.
    PoolKind { Max => "max_pool", Avg => "avg_pool" }
);

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PoolAttrs {
    pub kind: PoolKind,
    pub window: Window,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
    /// 2-D only: `x` and the output are laid out `[batch, h, w, c]` (`channels_last` pass).
    #[serde(default)]
    pub channels_last: bool,
}

/// How an attention mask operand is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MaskKind {
    None,
    /// Non-zero = attend (a padding mask).
    Keep,
    /// Added to the scaled scores (f32, e.g. `-10000 * (1 - mask)`).
    Bias,
}

/// One step of an elementwise program; step `i` defines register `i`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum EwStep {
    /// Operand `n` of the op, converted to f32.
    Load(usize),
    Const(f32),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
}

/// A straight-line program; the last register is the result.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct EwProgram {
    pub steps: Vec<EwStep>,
}

impl fmt::Display for EwProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            let sep = if i > 0 { "; " } else { "" };
            match s {
                EwStep::Load(n) => write!(f, "{sep}r{i}=in{n}")?,
                EwStep::Const(c) => write!(f, "{sep}r{i}={c:?}")?,
                EwStep::Unary(op, a) => write!(f, "{sep}r{i}={op}(r{a})")?,
                EwStep::Binary(op, a, b) => write!(f, "{sep}r{i}={op}(r{a}, r{b})")?,
            }
        }
        Ok(())
    }
}

impl ComputeOp {
    pub fn name(&self) -> &'static str {
        match self {
            ComputeOp::MatMul => "matmul",
            ComputeOp::Linear { .. } => "linear",
            ComputeOp::Binary(b) => b.name(),
            ComputeOp::Unary(u) => u.name(),
            ComputeOp::Compare(c) => c.name(),
            ComputeOp::Where => "where",
            ComputeOp::Softmax { .. } => "softmax",
            ComputeOp::LayerNorm { .. } => "layer_norm",
            ComputeOp::RmsNorm { .. } => "rms_norm",
            ComputeOp::Rotary { .. } => "rotary",
            ComputeOp::Reduce { op, .. } => op.name(),
            ComputeOp::Transpose { .. } => "transpose",
            ComputeOp::Concat { .. } => "concat",
            ComputeOp::Slice { .. } => "slice",
            ComputeOp::Gather { .. } => "gather",
            ComputeOp::Cast { .. } => "cast",
            ComputeOp::Attention { .. } => "attention",
            ComputeOp::CacheWrite => "cache_write",
            ComputeOp::KvAttention { .. } => "kv_attention",
            ComputeOp::SwiGlu => "swiglu",
            ComputeOp::Conv(_) => "conv",
            ComputeOp::Pool(p) => p.kind.name(),
            ComputeOp::Lrn { .. } => "lrn",
            ComputeOp::ArgReduce { max: true, .. } => "argmax",
            ComputeOp::ArgReduce { max: false, .. } => "argmin",
            ComputeOp::TopK { .. } => "top_k",
            ComputeOp::Elementwise { .. } => "elementwise",
            ComputeOp::AddLayerNorm { .. } => "add_layer_norm",
            ComputeOp::ScaledSoftmax { .. } => "scaled_softmax",
            ComputeOp::LinearGroup { .. } => "linear_group",
            ComputeOp::AttentionPacked { .. } => "attention_packed",
        }
    }

    pub fn kind(&self) -> OpKind {
        match self {
            ComputeOp::Unary(_) | ComputeOp::Cast { .. } => OpKind::Elementwise,
            ComputeOp::Elementwise { .. } => OpKind::Broadcast,
            ComputeOp::Binary(_) | ComputeOp::Compare(_) | ComputeOp::Where => OpKind::Broadcast,
            ComputeOp::Reduce { .. } => OpKind::Reduce,
            // Listed, not `_`: a new op must choose its fusion class.
            ComputeOp::MatMul
            | ComputeOp::Linear { .. }
            | ComputeOp::Softmax { .. }
            | ComputeOp::LayerNorm { .. }
            | ComputeOp::RmsNorm { .. }
            | ComputeOp::Rotary { .. }
            | ComputeOp::Transpose { .. }
            | ComputeOp::Concat { .. }
            | ComputeOp::Slice { .. }
            | ComputeOp::Gather { .. }
            | ComputeOp::Attention { .. }
            | ComputeOp::CacheWrite
            | ComputeOp::KvAttention { .. }
            | ComputeOp::SwiGlu
            | ComputeOp::Conv(_)
            | ComputeOp::Pool(_)
            | ComputeOp::Lrn { .. }
            | ComputeOp::ArgReduce { .. }
            | ComputeOp::TopK { .. }
            | ComputeOp::AddLayerNorm { .. }
            | ComputeOp::ScaledSoftmax { .. }
            | ComputeOp::LinearGroup { .. }
            | ComputeOp::AttentionPacked { .. } => OpKind::Opaque,
        }
    }

    /// Attributes in the text form, e.g. ` axis=1`.
    pub fn attrs(&self) -> String {
        match self {
            ComputeOp::Linear {
                activation,
                transpose_w,
            } => {
                let act = activation.map(|a| format!(" act={a}")).unwrap_or_default();
                format!("{act}{}", if *transpose_w { " w=[out, in]" } else { "" })
            }
            ComputeOp::Softmax { axis }
            | ComputeOp::Concat { axis }
            | ComputeOp::Gather { axis } => {
                format!(" axis={axis}")
            }
            ComputeOp::LayerNorm { eps } | ComputeOp::RmsNorm { eps } => format!(" eps={eps:e}"),
            ComputeOp::Rotary { theta } => format!(" theta={theta:e}"),
            ComputeOp::Reduce { axes, keep_dim, .. } => {
                format!(" axes={axes:?} keep_dim={keep_dim}")
            }
            ComputeOp::Transpose { perm } => format!(" perm={perm:?}"),
            ComputeOp::Slice { axis, start, end } => format!(" axis={axis} range=[{start}, {end})"),
            ComputeOp::Cast { to } => format!(" to={to}"),
            ComputeOp::Attention { scale, causal } => format!(" scale={scale:e} causal={causal}"),
            ComputeOp::KvAttention { scale } => format!(" scale={scale:e}"),
            ComputeOp::Conv(c) => format!(
                " {} groups={}{}{}{}",
                c.window,
                c.groups,
                if c.residual { " +residual" } else { "" },
                c.act.map(|a| format!(" act={a}")).unwrap_or_default(),
                match (c.channels_last, c.input_channel_major) {
                    (true, true) => " channels_last input_channel_major",
                    (true, false) => " channels_last",
                    (false, _) => "",
                }
            ),
            ComputeOp::Pool(p) => format!(
                " {} ceil_mode={} count_include_pad={}{}",
                p.window,
                p.ceil_mode,
                p.count_include_pad,
                if p.channels_last {
                    " channels_last"
                } else {
                    ""
                }
            ),
            ComputeOp::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => format!(" size={size} alpha={alpha:e} beta={beta:e} bias={bias:e}"),
            ComputeOp::ArgReduce {
                axis,
                keep_dim,
                last,
                ..
            } => format!(" axis={axis} keep_dim={keep_dim} last={last}"),
            ComputeOp::TopK { axis, k, largest } => {
                format!(" axis={axis} k={k} largest={largest}")
            }
            ComputeOp::Elementwise { program } => format!(" {{{program}}}"),
            ComputeOp::AddLayerNorm { eps } => format!(" eps={eps:e}"),
            ComputeOp::ScaledSoftmax { axis, scale } => format!(" axis={axis} scale={scale:e}"),
            ComputeOp::LinearGroup {
                parts,
                has_bias,
                transpose_w,
            } => {
                format!(
                    " parts={parts} bias={has_bias}{}",
                    if *transpose_w { " w=[out, in]" } else { "" }
                )
            }
            ComputeOp::AttentionPacked {
                heads,
                head_dim,
                offsets,
                scale,
                causal,
                mask,
            } => {
                format!(
                    " heads={heads} head_dim={head_dim} offsets={offsets:?} scale={scale:e} causal={causal} mask={mask:?}"
                )
            }
            // Listed, not `_`: attributes are part of the printed IR and so of the template
            // fingerprint, and a new op must not leave its own out by default.
            ComputeOp::MatMul
            | ComputeOp::Binary(_)
            | ComputeOp::Unary(_)
            | ComputeOp::Compare(_)
            | ComputeOp::Where
            | ComputeOp::CacheWrite
            | ComputeOp::SwiGlu => String::new(),
        }
    }
}
