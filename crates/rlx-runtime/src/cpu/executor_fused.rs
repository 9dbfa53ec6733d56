//! The executor's arms for the fused ops that passes produce (elementwise programs,
//! add + layer norm, scaled softmax, grouped linears, packed attention).

use rlx_ir::lir::{BufferId, Kernel};
use rlx_ir::{ComputeOp, DType, MaskKind};

use super::attention::{self, AttnSpec, HeadLayout};
use super::executor::{Addrs, CpuExecutable, last};
use super::types::{CastTo, with_any};
use super::{OutPtr, elementwise, fused, gemm};
use crate::Result;
use crate::fallible::{try_copy, try_map};

impl CpuExecutable {
    /// Runs one fused kernel; `ins` are its operands with shapes and dtypes.
    pub(super) fn run_fused(
        &self,
        op: &ComputeOp,
        k: &Kernel,
        ins: &[(BufferId, &[usize], DType)],
        out_shape: &[usize],
        addrs: &Addrs,
    ) -> Result<()> {
        // SAFETY: as in `run_kernel`: a verified schedule and plan; the elementwise and
        // add_layer_norm arms go through raw pointers because their output may reuse an operand.
        unsafe {
            let f32_in = |i: usize| self.get::<f32>(addrs, ins[i].0);
            let f32_out = || self.get_mut::<f32>(addrs, k.output);
            match op {
                ComputeOp::ScaledSoftmax { axis, scale } => {
                    let s = ins[0].1;
                    let bias = ins
                        .get(1)
                        .map(|(b, bs, _)| (self.get::<f32>(addrs, *b), *bs));
                    let (n, inner) = (s[*axis], s[axis + 1..].iter().product());
                    fused::scaled_softmax(f32_in(0), bias, *scale, s, n, inner, f32_out())
                }
                ComputeOp::Elementwise { program } => {
                    // Raw pointers throughout: the output may reuse an f32 operand in place.
                    let inputs: Vec<fused::EwInput> = ins
                        .iter()
                        .map(|(b, shape, dt)| {
                            let owned = (*dt != DType::F32)
                                .then(|| {
                                    with_any!(*dt, T => {
                                        let x: &[T] = self.get(addrs, *b);
                                        try_map("a converted operand", x, |v| CastTo::<f32>::cast(*v))
                                    })
                                })
                                .transpose()?;
                            let ptr = owned
                                .as_ref()
                                .map_or(addrs.0[b.index()] as *const f32, |v| v.as_ptr());
                            Ok(fused::EwInput {
                                ptr,
                                owned,
                                strides: elementwise::broadcast_strides(shape, out_shape),
                            })
                        })
                        .collect::<Result<_>>()?;
                    let out = OutPtr(addrs.0[k.output.index()] as *mut f32);
                    fused::elementwise(
                        program,
                        &inputs,
                        out,
                        self.numel[k.output.index()],
                        out_shape,
                    )
                }
                ComputeOp::AddLayerNorm { eps } => {
                    let d = last(ins[0].1);
                    let rows = self.numel[k.output.index()].checked_div(d).unwrap_or(0);
                    let ptr = |i: usize| addrs.0[ins[i].0.index()] as *const f32;
                    let out = OutPtr(addrs.0[k.output.index()] as *mut f32);
                    fused::add_layer_norm(ptr(0), ptr(1), f32_in(2), f32_in(3), *eps, d, rows, out)
                }
                ComputeOp::LinearGroup {
                    parts,
                    has_bias,
                    transpose_w,
                } => {
                    let per = if *has_bias { 2 } else { 1 };
                    let group: Vec<gemm::LinearPart> = (0..*parts)
                        .map(|p| {
                            (
                                self.weight(addrs, ins[1 + p * per].0, *transpose_w),
                                has_bias.then(|| f32_in(2 + p * per)),
                                ins[1 + p * per].1[usize::from(!*transpose_w)],
                            )
                        })
                        .collect();
                    gemm::linear_group(self.isa, f32_in(0), &group, last(ins[0].1), f32_out())?
                }
                ComputeOp::AttentionPacked {
                    heads,
                    head_dim,
                    offsets,
                    scale,
                    causal,
                    mask,
                } => {
                    let (q, kk) = (ins[0].1, ins[1].1);
                    let (sq, sk, d) = (q[1], kk[1], *head_dim);
                    let src =
                        |i: usize, seq: usize| HeadLayout::packed(seq, ins[i].1[2], offsets[i], d);
                    let layout = [
                        src(0, sq),
                        src(1, sk),
                        src(2, sk),
                        HeadLayout::packed(sq, heads * d, 0, d),
                    ];
                    let spec = AttnSpec {
                        batch: q[0],
                        heads: *heads,
                        kv_heads: *heads,
                        sq,
                        sk,
                        d,
                        dv: d,
                        scale: *scale,
                        causal: *causal,
                        layout,
                        bf16_mix: self.gemm_precision()
                            == super::executor_plan::GemmPrecision::Bf16,
                    };
                    let m: Option<Vec<f32>> = match (mask, ins.get(3)) {
                        (MaskKind::Keep, Some((b, _, _))) => Some(self.keep_mask(addrs, *b)?),
                        (MaskKind::Bias, Some((b, _, _))) => {
                            Some(try_copy("an attention mask", self.get::<f32>(addrs, *b))?)
                        }
                        _ => None,
                    };
                    attention::attention(
                        self.isa,
                        f32_in(0),
                        f32_in(1),
                        f32_in(2),
                        m.as_deref(),
                        &spec,
                        f32_out(),
                    )?
                }
                _ => unreachable!("run_kernel sends only fused ops here"),
            }
        }
        Ok(())
    }
}
