//! Channels-last convolutions. A 2-D convolution the CPU runs faster over `[batch, h, w, c]`
//! (one group with 16+ input channels: an implicit GEMM with the channels as the product's
//! columns; depthwise: channels as vectors; a grouped 1x1 kernel: a product per group over
//! the positions) takes its input and residual transposed to that
//! layout and gives its output back through the inverse transpose. A transpose that undoes the
//! one before it is never made: a chain of such convolutions (ResNet's blocks, MobileNet's)
//! stays channels-last from the first to the last and pays one transpose at each end (none at
//! the start when the first is a stem of a few channels: it gathers its padded image from the
//! channel-major input). A 2-D
//! pool of a channels-last value pools it in that layout (as does one of many channels of
//! small channel-major planes, after a transpose), a global pool (a reduction over h
//! and w) reduces it there, and a concatenation of channels (or a unary map) of channels-last
//! values is made in that layout too, as is a channel shuffle (`channels_last_shuffle.rs`).
//! The back-transposes nothing reads are left to `dce`.

use std::collections::HashMap;

use rlx_ir::hir::{Node, Op, ValueId};
use rlx_ir::{ComputeOp, ConvAttrs, HirModule, PoolAttrs, Result, TensorType};

use super::PassLog;
use super::channels_last_shuffle::Shuffles;

/// `[n, c, h, w]` to `[n, h, w, c]`, and back.
const TO_LAST: [usize; 4] = [0, 2, 3, 1];
const TO_FIRST: [usize; 4] = [0, 3, 1, 2];
/// Input channels below which a one-group convolution stays channel-major (a 3-channel stem's
/// taps would be K segments of 3).
const MIN_CHANNELS: usize = 1;
/// Input channels up to which a one-group convolution whose input is not channels-last yet
/// (a stem) gathers its padded image straight from the channel-major input.
const GATHER_CHANNELS: usize = 4;
/// Channels and positions per plane within which a channel-major 2-D pool is transposed to
/// run channels-last (`small_planes`).
const POOL_CHANNELS: usize = 16;
const POOL_PLANE: usize = 56 * 56;

pub fn run(m: HirModule, log: &mut PassLog) -> Result<HirModule> {
    if !m.nodes.iter().any(|n| eligible(&m, n)) {
        return Ok(m);
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(m.nodes.len() + 8);
    let mut remap: Vec<ValueId> = Vec::with_capacity(m.nodes.len());
    // A value's channels-last form, where one exists: the convolution behind a back-transpose,
    // or a transpose made once and shared by every convolution that reads the value.
    let mut last: HashMap<ValueId, ValueId> = HashMap::new();
    let (mut count, mut pools, mut reduces, mut others) = (0, 0, 0, 0);
    let (mut shuffles, mut shuffled) = (Shuffles::default(), 0);
    for node in &m.nodes {
        let inputs: Vec<ValueId> = node.inputs.iter().map(|v| remap[v.index()]).collect();
        // A 2-D pool of a value already channels-last pools it there; so does a pool of many
        // channels of small planes, transposed first (the channel-major pool runs scalar loops
        // over short rows: ShuffleNet's 272 planes of 14x14 took 69 us, against ORT's 4).
        if let Op::Compute(ComputeOp::Pool(p)) = &node.op
            && node.ty.shape.rank() == 4
            && (last.contains_key(&inputs[0]) || small_planes(&nodes[inputs[0].index()].ty))
        {
            let x = channels_last(&mut nodes, &mut last, inputs[0]);
            let attrs = PoolAttrs {
                channels_last: true,
                ..p.clone()
            };
            let pool = Op::Compute(ComputeOp::Pool(attrs));
            remap.push(push_last(&mut nodes, &mut last, pool, vec![x], &node.ty));
            pools += 1;
            continue;
        }
        // A concatenation of channels of values all channels-last, or a unary map of one,
        // stays channels-last (the concat along the last axis): fire modules, inception
        // blocks and dense blocks keep their chains instead of a transpose each way.
        let same_layout = match &node.op {
            Op::Compute(ComputeOp::Concat { axis: 1 }) => Some(ComputeOp::Concat { axis: 3 }),
            Op::Compute(ComputeOp::Unary(u)) => Some(ComputeOp::Unary(*u)),
            _ => None,
        };
        if let Some(op) = same_layout
            && node.ty.shape.rank() == 4
            && let Some(xs) = inputs
                .iter()
                .map(|v| last.get(v).copied())
                .collect::<Option<Vec<_>>>()
        {
            let op = Op::Compute(op);
            remap.push(push_last(&mut nodes, &mut last, op, xs, &node.ty));
            others += 1;
            continue;
        }
        // An elementwise program (or a lone binary op) over channels-last values of its shape
        // and per-channel operands ([c, 1, 1] or [1, c, 1, 1], read as [c]; [n, c, 1, 1], read
        // as [n, 1, 1, c]) or scalars runs channels-last: a BatchNorm that could not be folded,
        // and its activation, between convolutions; a squeeze-excitation's scale.
        if let Op::Compute(ComputeOp::Elementwise { .. } | ComputeOp::Binary(_)) = &node.op
            && node.ty.shape.rank() == 4
            && let Some(xs) = elementwise_operands(&mut nodes, &last, &inputs, &node.ty)
        {
            remap.push(push_last(
                &mut nodes,
                &mut last,
                node.op.clone(),
                xs,
                &node.ty,
            ));
            others += 1;
            continue;
        }
        // A sum, mean or max over h and w (a global pool) of a value already channels-last
        // reduces it there: the positions of each image are rows of c, and the kept `[n, 1, 1,
        // c]` is the `[n, c, 1, 1]` asked for, element for element.
        if let Op::Compute(ComputeOp::Reduce { op, axes, keep_dim }) = &node.op
            && axes[..] == [2, 3]
            && let Some(&x) = last.get(&inputs[0])
        {
            let keep = *keep_dim;
            let reduce = Op::Compute(ComputeOp::Reduce {
                op: *op,
                axes: vec![1, 2],
                keep_dim: keep,
            });
            let ty = match keep {
                true => TensorType::new(node.ty.dtype, node.ty.shape.permuted(&TO_LAST)),
                false => node.ty.clone(),
            };
            let mut v = push(&mut nodes, reduce, vec![x], ty);
            if keep {
                let shape = node.ty.shape.clone();
                v = push(&mut nodes, Op::Reshape { shape }, vec![v], node.ty.clone());
            }
            remap.push(v);
            reduces += 1;
            continue;
        }
        let Op::Compute(ComputeOp::Conv(c)) = &node.op else {
            let v = push(&mut nodes, node.op.clone(), inputs.clone(), node.ty.clone());
            shuffles.step(&mut nodes, &mut last, (node, &inputs, v));
            shuffled += usize::from(last.contains_key(&v));
            remap.push(v);
            continue;
        };
        if !eligible(&m, node) {
            remap.push(push(&mut nodes, node.op.clone(), inputs, node.ty.clone()));
            continue;
        }
        let mut ins = inputs;
        let ws = nodes[ins[1].index()]
            .ty
            .shape
            .as_static()
            .unwrap_or_default();
        // The weight is static (eligible). The image is gathered, padded, for any kernel but
        // an unpadded 1x1.
        let gathered = c.groups == 1
            && ws.get(1).is_some_and(|c| *c <= GATHER_CHANNELS)
            && (c.window.kernel.iter().any(|k| *k > 1) || c.window.pads.iter().any(|p| *p > 0))
            && !last.contains_key(&ins[0]);
        if !gathered {
            ins[0] = channels_last(&mut nodes, &mut last, ins[0]);
        }
        if c.residual {
            let r = ins.len() - 1;
            ins[r] = channels_last(&mut nodes, &mut last, ins[r]);
        }
        let attrs = ConvAttrs {
            channels_last: true,
            input_channel_major: gathered,
            ..c.clone()
        };
        let conv = Op::Compute(ComputeOp::Conv(attrs));
        remap.push(push_last(&mut nodes, &mut last, conv, ins, &node.ty));
        count += 1;
    }
    log.fusions.push(format!(
        "channels_last: {count} convolutions, {pools} pools, {reduces} global reductions, \
         {shuffled} channel shuffles and {others} concatenations, unary maps and elementwise \
         programs run over [batch, h, w, c]"
    ));
    Ok(super::util::renumbered(m, nodes, &remap))
}

/// Whether a channel-major `[n, c, h, w]` value pools faster transposed: at least
/// `POOL_CHANNELS` channels (a vector's worth per position) of planes of at most `POOL_PLANE`
/// positions (larger planes run whole vector rows channel-major, and their transposes cost
/// more).
fn small_planes(ty: &TensorType) -> bool {
    ty.shape
        .as_static()
        .is_some_and(|s| s.len() == 4 && s[1] >= POOL_CHANNELS && s[2] * s[3] <= POOL_PLANE)
}

/// Whether `n` is a channel-major 2-D convolution with a static weight that runs faster
/// channels-last: one group with at least `MIN_CHANNELS` input channels, depthwise with one
/// output channel per input channel, or a grouped 1x1 kernel of stride 1 without pads (a
/// product per group over the positions; ShuffleNet's).
fn eligible(m: &HirModule, n: &Node) -> bool {
    let Op::Compute(ComputeOp::Conv(c)) = &n.op else {
        return false;
    };
    let x = &m.nodes[n.inputs[0].index()].ty.shape;
    let Some(ws) = m.nodes[n.inputs[1].index()].ty.shape.as_static() else {
        return false;
    };
    let one_group = c.groups == 1 && ws[1] >= MIN_CHANNELS;
    let depthwise = ws[1] == 1 && c.groups == ws[0];
    !c.channels_last
        && x.rank() == 4
        && ws.len() == 4
        && (one_group || depthwise || c.grouped_pointwise(&ws))
}

/// An elementwise program's operands for its channels-last form, or None: each input is a
/// value of the output's shape with a channels-last form, a per-channel operand (`[c, 1, 1]`
/// or `[1, c, 1, 1]`, reshaped to `[c]`, free), one per image and channel (`[n, c, 1, 1]`,
/// the same floats as `[n, 1, 1, c]`: a reshape) or a one-element operand. At least one must
/// be channels-last already.
fn elementwise_operands(
    nodes: &mut Vec<Node>,
    last: &HashMap<ValueId, ValueId>,
    inputs: &[ValueId],
    ty: &TensorType,
) -> Option<Vec<ValueId>> {
    let c = ty.shape.dims()[1].clone();
    let one = rlx_ir::Dim::constant(1);
    if !inputs.iter().any(|v| last.contains_key(v)) {
        return None;
    }
    let mut out = Vec::with_capacity(inputs.len());
    for v in inputs {
        let vt = nodes[v.index()].ty.clone();
        let d = vt.shape.dims();
        if let Some(l) = last.get(v).filter(|_| vt.shape == ty.shape) {
            out.push(*l);
        } else if vt
            .shape
            .as_static()
            .is_some_and(|s| s.iter().product::<usize>() == 1)
        {
            out.push(*v);
        } else if d.len() >= 3
            && d.len() <= 4
            && d[d.len() - 3] == c
            && d[d.len() - 2..].iter().all(|x| *x == one)
            && d[..d.len() - 3].iter().all(|x| *x == one)
        {
            let shape = rlx_ir::Shape::from_dims(vec![c.clone()]);
            let t = TensorType::new(vt.dtype, shape.clone());
            out.push(push(nodes, Op::Reshape { shape }, vec![*v], t));
        } else if d.len() == 4
            && d[0] == ty.shape.dims()[0]
            && d[1] == c
            && d[2] == one
            && d[3] == one
        {
            let shape = vt.shape.permuted(&TO_LAST);
            let t = TensorType::new(vt.dtype, shape.clone());
            out.push(push(nodes, Op::Reshape { shape }, vec![*v], t));
        } else {
            return None;
        }
    }
    Some(out)
}

/// `v` in channels-last layout: its known form, else a new transpose (remembered).
fn channels_last(
    nodes: &mut Vec<Node>,
    last: &mut HashMap<ValueId, ValueId>,
    v: ValueId,
) -> ValueId {
    if let Some(l) = last.get(&v) {
        return *l;
    }
    let ty = &nodes[v.index()].ty;
    let ty = TensorType::new(ty.dtype, ty.shape.permuted(&TO_LAST));
    let t = push(nodes, transpose(&TO_LAST), vec![v], ty);
    last.insert(v, t);
    t
}

/// `op` over `inputs` made channels-last (the type `ty` permuted) and the transpose back to
/// `ty`, remembered as each other's form: the back-transpose, which `dce` drops when only
/// channels-last readers follow.
fn push_last(
    nodes: &mut Vec<Node>,
    last: &mut HashMap<ValueId, ValueId>,
    op: Op,
    inputs: Vec<ValueId>,
    ty: &TensorType,
) -> ValueId {
    let v = push(
        nodes,
        op,
        inputs,
        TensorType::new(ty.dtype, ty.shape.permuted(&TO_LAST)),
    );
    let back = push(nodes, transpose(&TO_FIRST), vec![v], ty.clone());
    last.insert(back, v);
    back
}

pub(super) fn transpose(perm: &[usize]) -> Op {
    Op::Compute(ComputeOp::Transpose {
        perm: perm.to_vec(),
    })
}

pub(super) fn push(nodes: &mut Vec<Node>, op: Op, inputs: Vec<ValueId>, ty: TensorType) -> ValueId {
    nodes.push(Node { op, inputs, ty });
    ValueId(nodes.len() as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlx_ir::{DType, HirMut, Shape, Window};

    fn window(k: usize) -> Window {
        Window {
            kernel: vec![k, k],
            strides: vec![1, 1],
            pads: vec![k / 2; 4],
            dilations: vec![1, 1],
        }
    }

    /// `m` through this pass and `dce`, verified.
    fn optimized(m: HirModule) -> HirModule {
        let mut log = PassLog::default();
        let m = super::super::dce::run(run(m, &mut log).unwrap(), &mut log).unwrap();
        m.verify().unwrap();
        m
    }

    #[test]
    fn a_chain_of_convolutions_pays_one_transpose_each_way() {
        let mut m = HirModule::new("chain");
        let mut b = HirMut::new(&mut m);
        let x = b
            .input("x", DType::F32, Shape::new(&[2, 32, 8, 8]))
            .unwrap();
        let w1 = b
            .param("w1", DType::F32, Shape::new(&[32, 32, 3, 3]))
            .unwrap();
        let w2 = b
            .param("w2", DType::F32, Shape::new(&[32, 1, 3, 3]))
            .unwrap();
        let w3 = b
            .param("w3", DType::F32, Shape::new(&[8, 4, 3, 3]))
            .unwrap();
        let c1 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(3), 1)), vec![x, w1])
            .unwrap();
        let c2 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(3), 32)), vec![c1, w2])
            .unwrap();
        // Eight groups of four channels, a 3x3 kernel: stays channel-major.
        let c3 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(3), 8)), vec![c2, w3])
            .unwrap();
        b.output("y", c3).unwrap();
        let m = optimized(m);
        let ops: Vec<String> = m
            .nodes
            .iter()
            .filter(|n| !n.op.is_leaf())
            .map(|n| match &n.op {
                Op::Compute(ComputeOp::Conv(c)) => format!("conv{}", u8::from(c.channels_last)),
                o => o.name().to_string(),
            })
            .collect();
        assert_eq!(
            ops,
            ["transpose", "conv1", "conv1", "transpose", "conv0"],
            "{m}"
        );
        assert_eq!(
            m.nodes[m.outputs[0].value.index()].ty.shape,
            Shape::new(&[2, 8, 8, 8])
        );
    }

    #[test]
    fn a_stem_gathers_its_image_from_the_channel_major_input() {
        let mut m = HirModule::new("stem");
        let mut b = HirMut::new(&mut m);
        let x = b
            .input("x", DType::F32, Shape::new(&[2, 3, 16, 16]))
            .unwrap();
        let w1 = b
            .param("w1", DType::F32, Shape::new(&[16, 3, 3, 3]))
            .unwrap();
        // A 1x1 kernel over the same three channels reads them channels-last, transposed.
        let w2 = b
            .param("w2", DType::F32, Shape::new(&[16, 3, 1, 1]))
            .unwrap();
        let c1 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(3), 1)), vec![x, w1])
            .unwrap();
        let c2 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(1), 1)), vec![x, w2])
            .unwrap();
        b.output("y1", c1).unwrap();
        b.output("y2", c2).unwrap();
        let m = optimized(m);
        let ops: Vec<String> = m
            .nodes
            .iter()
            .filter(|n| !n.op.is_leaf())
            .map(|n| match &n.op {
                Op::Compute(ComputeOp::Conv(c)) => {
                    format!(
                        "conv{}{}",
                        u8::from(c.channels_last),
                        u8::from(c.input_channel_major)
                    )
                }
                o => o.name().to_string(),
            })
            .collect();
        assert_eq!(
            ops,
            ["conv11", "transpose", "transpose", "conv10", "transpose"],
            "{m}"
        );
    }

    #[test]
    fn a_channel_shuffle_between_grouped_convolutions_keeps_the_chain() {
        // A ShuffleNet unit: grouped 1x1, shuffle of 4 groups, depthwise 3x3, grouped 1x1.
        // The shuffled value is an output too: its channel-major steps stay for that reader.
        for shuffled_out in [false, true] {
            let mut m = HirModule::new("unit");
            let mut b = HirMut::new(&mut m);
            let x = b
                .input("x", DType::F32, Shape::new(&[1, 16, 8, 8]))
                .unwrap();
            let w =
                |b: &mut HirMut, n: &str, s: &[i64]| b.param(n, DType::F32, Shape::new(s)).unwrap();
            let (w1, w2, w3) = (
                w(&mut b, "w1", &[16, 4, 1, 1]),
                w(&mut b, "w2", &[16, 1, 3, 3]),
                w(&mut b, "w3", &[16, 4, 1, 1]),
            );
            let conv = |b: &mut HirMut, k, groups, ins| {
                b.compute(ComputeOp::Conv(ConvAttrs::new(window(k), groups)), ins)
                    .unwrap()
            };
            let g1 = conv(&mut b, 1, 4, vec![x, w1]);
            let split = b.reshape(g1, Shape::new(&[1, 4, 4, 8, 8])).unwrap();
            let swap = ComputeOp::Transpose {
                perm: vec![0, 2, 1, 3, 4],
            };
            let swapped = b.compute(swap, vec![split]).unwrap();
            let s = b.reshape(swapped, Shape::new(&[1, 16, 8, 8])).unwrap();
            let dw = conv(&mut b, 3, 16, vec![s, w2]);
            let g2 = conv(&mut b, 1, 4, vec![dw, w3]);
            b.output("y", g2).unwrap();
            if shuffled_out {
                b.output("s", s).unwrap();
            }
            let m = optimized(m);
            let ops: Vec<String> = m
                .nodes
                .iter()
                .filter(|n| !n.op.is_leaf())
                .map(|n| match &n.op {
                    Op::Compute(ComputeOp::Transpose { perm }) => format!("transpose{perm:?}"),
                    o => o.name().to_string(),
                })
                .collect();
            let want: &[&str] = match shuffled_out {
                false => &[
                    "transpose[0, 2, 3, 1]",
                    "conv",
                    "reshape",
                    "transpose[0, 1, 2, 4, 3]",
                    "reshape",
                    "conv",
                    "conv",
                    "transpose[0, 3, 1, 2]",
                ],
                // Each channel-major step (of the back-transposed grouped convolution) beside
                // its channels-last form.
                true => &[
                    "transpose[0, 2, 3, 1]",
                    "conv",
                    "transpose[0, 3, 1, 2]",
                    "reshape",
                    "reshape",
                    "transpose[0, 2, 1, 3, 4]",
                    "transpose[0, 1, 2, 4, 3]",
                    "reshape",
                    "reshape",
                    "conv",
                    "conv",
                    "transpose[0, 3, 1, 2]",
                ],
            };
            assert_eq!(ops, want, "{m}");
        }
    }

    #[test]
    fn a_concat_of_channels_and_a_relu_keep_the_chain() {
        // A fire module: two convolutions of one value, concatenated, relu, then a third.
        let mut m = HirModule::new("fire");
        let mut b = HirMut::new(&mut m);
        let x = b
            .input("x", DType::F32, Shape::new(&[1, 16, 8, 8]))
            .unwrap();
        let w = |b: &mut HirMut, n: &str, s: &[i64]| b.param(n, DType::F32, Shape::new(s)).unwrap();
        let (w1, w2, w3) = (
            w(&mut b, "w1", &[8, 16, 1, 1]),
            w(&mut b, "w2", &[8, 16, 3, 3]),
            w(&mut b, "w3", &[4, 16, 1, 1]),
        );
        let c1 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(1), 1)), vec![x, w1])
            .unwrap();
        let c2 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(3), 1)), vec![x, w2])
            .unwrap();
        let cat = b
            .compute(ComputeOp::Concat { axis: 1 }, vec![c1, c2])
            .unwrap();
        let r = b
            .compute(ComputeOp::Unary(rlx_ir::UnaryOp::Relu), vec![cat])
            .unwrap();
        let c3 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(1), 1)), vec![r, w3])
            .unwrap();
        b.output("y", c3).unwrap();
        let m = optimized(m);
        let ops: Vec<String> = m
            .nodes
            .iter()
            .filter(|n| !n.op.is_leaf())
            .map(|n| match &n.op {
                Op::Compute(ComputeOp::Concat { axis }) => format!("concat{axis}"),
                o => o.name().to_string(),
            })
            .collect();
        assert_eq!(
            ops,
            [
                "transpose",
                "conv",
                "conv",
                "concat3",
                "relu",
                "conv",
                "transpose"
            ],
            "{m}"
        );
    }

    #[test]
    fn a_per_channel_elementwise_program_keeps_the_chain() {
        use rlx_ir::{BinaryOp, EwProgram, EwStep, UnaryOp};
        // conv -> relu(x * s + t) with s [8, 1, 1] and t [1, 8, 1, 1] -> conv; and a program
        // whose operand is neither per channel nor one element stays channel-major.
        let mut m = HirModule::new("bn");
        let mut b = HirMut::new(&mut m);
        let x = b
            .input("x", DType::F32, Shape::new(&[1, 16, 8, 8]))
            .unwrap();
        let w1 = b
            .param("w1", DType::F32, Shape::new(&[8, 16, 3, 3]))
            .unwrap();
        let w2 = b
            .param("w2", DType::F32, Shape::new(&[4, 8, 1, 1]))
            .unwrap();
        let s = b.param("s", DType::F32, Shape::new(&[8, 1, 1])).unwrap();
        let t = b.param("t", DType::F32, Shape::new(&[1, 8, 1, 1])).unwrap();
        let rows = b.param("rows", DType::F32, Shape::new(&[8, 1])).unwrap();
        let program = |steps| ComputeOp::Elementwise {
            program: std::sync::Arc::new(EwProgram { steps }),
        };
        let bn = program(vec![
            EwStep::Load(0),
            EwStep::Load(1),
            EwStep::Binary(BinaryOp::Mul, 0, 1),
            EwStep::Load(2),
            EwStep::Binary(BinaryOp::Add, 2, 3),
            EwStep::Unary(UnaryOp::Relu, 4),
        ]);
        let by_row = program(vec![
            EwStep::Load(0),
            EwStep::Load(1),
            EwStep::Binary(BinaryOp::Mul, 0, 1),
        ]);
        let c1 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(3), 1)), vec![x, w1])
            .unwrap();
        let e = b.compute(bn, vec![c1, s, t]).unwrap();
        let c2 = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(1), 1)), vec![e, w2])
            .unwrap();
        let r = b.compute(by_row, vec![c1, rows]).unwrap();
        b.output("y", c2).unwrap();
        b.output("r", r).unwrap();
        let m = optimized(m);
        let ops: Vec<&str> = m
            .nodes
            .iter()
            .filter(|n| !matches!(n.op, Op::Input { .. } | Op::Param { .. }))
            .map(|n| n.op.name())
            .collect();
        assert_eq!(
            ops,
            [
                "transpose",
                "conv",
                "transpose",
                "reshape",
                "reshape",
                "elementwise",
                "conv",
                "transpose",
                "elementwise"
            ],
            "{m}"
        );
    }

    #[test]
    fn a_global_pool_reduces_the_channels_last_value() {
        let mut m = HirModule::new("gap");
        let mut b = HirMut::new(&mut m);
        let x = b
            .input("x", DType::F32, Shape::new(&[2, 16, 8, 8]))
            .unwrap();
        let w = b
            .param("w", DType::F32, Shape::new(&[32, 16, 3, 3]))
            .unwrap();
        let c = b
            .compute(ComputeOp::Conv(ConvAttrs::new(window(3), 1)), vec![x, w])
            .unwrap();
        let mut reduce = |keep_dim| {
            let op = ComputeOp::Reduce {
                op: rlx_ir::ReduceOp::Mean,
                axes: vec![2, 3],
                keep_dim,
            };
            b.compute(op, vec![c]).unwrap()
        };
        let (kept, flat) = (reduce(true), reduce(false));
        b.output("kept", kept).unwrap();
        b.output("flat", flat).unwrap();
        let m = optimized(m);
        let ops: Vec<String> = m
            .nodes
            .iter()
            .filter(|n| !matches!(n.op, Op::Input { .. } | Op::Param { .. }))
            .map(|n| match &n.op {
                Op::Compute(ComputeOp::Reduce { axes, .. }) => format!("reduce{axes:?}"),
                o => o.name().to_string(),
            })
            .collect();
        // No transpose back: both reductions read the convolution's channels-last output.
        assert_eq!(
            ops,
            [
                "transpose",
                "conv",
                "reduce[1, 2]",
                "reshape",
                "reduce[1, 2]"
            ],
            "{m}"
        );
        let shape = |o: usize| m.nodes[m.outputs[o].value.index()].ty.shape.clone();
        assert_eq!(shape(0), Shape::new(&[2, 32, 1, 1]));
        assert_eq!(shape(1), Shape::new(&[2, 32]));
    }

    #[test]
    fn pools_of_many_small_channel_major_planes_run_channels_last() {
        // A depthwise conv of another input makes the pass run; the pool reads x, channel-major.
        let pooled = |xs: &[i64]| {
            let mut m = HirModule::new("pool");
            let mut b = HirMut::new(&mut m);
            let x = b.input("x", DType::F32, Shape::new(xs)).unwrap();
            let y = b.input("y", DType::F32, Shape::new(xs)).unwrap();
            let w = b
                .param("w", DType::F32, Shape::new(&[xs[1], 1, 3, 3]))
                .unwrap();
            let c = b
                .compute(
                    ComputeOp::Conv(ConvAttrs::new(window(3), xs[1] as usize)),
                    vec![y, w],
                )
                .unwrap();
            let p = b
                .pool(
                    rlx_ir::PoolKind::Avg,
                    x,
                    &[3, 3],
                    &[2, 2],
                    &[1; 4],
                    &[],
                    false,
                    false,
                )
                .unwrap();
            b.output("c", c).unwrap();
            b.output("p", p).unwrap();
            let m = optimized(m);
            m.nodes
                .iter()
                .any(|n| matches!(&n.op, Op::Compute(ComputeOp::Pool(p)) if p.channels_last))
        };
        // 16 channels of 14x14: transposed.
        assert!(pooled(&[1, 16, 14, 14]));
        // Fewer channels than a vector, or planes larger than 56x56: channel-major.
        assert!(!pooled(&[1, 8, 14, 14]));
        assert!(!pooled(&[1, 16, 60, 60]));
    }
}
