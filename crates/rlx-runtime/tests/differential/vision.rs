//! The vision steps of the differential generator: convolutions over 1-3 spatial axes (one
//! group, grouped, depthwise with a channel multiplier; strides, dilations, asymmetric pads;
//! a bias, a residual and an activation for the optimizer to fuse; chains of them, which the
//! channels-last pass keeps in that layout), pools (max and average, `ceil_mode`,
//! `count_include_pad`, dilations), LRN, and argmax / argmin / top-k over exact values.
//!
//! Channels and spatial sizes are static (the vision ops require it), the batch may be the
//! symbol `b` (0 included). Sizes reach the kernels' special paths: 16+ channels (the
//! implicit GEMM), 3x3 stride 1 over 8x8+ outputs (Winograd), a first convolution of 1-4
//! channels (the stem that gathers its padded image), depthwise 3x3 rows in groups.

use rlx_ir::{DType, Dim, PoolKind, UnaryOp};

use crate::generator::{Entry, Fill, Gen, at, c, lo, numel_hi};

/// Elements an image may have at the largest binding.
const MAX_IMAGE: i64 = 20_000;

/// An f32 `[batch, c, spatial..]` value with static channels and spatial sizes.
fn image_like(e: &Entry) -> bool {
    e.dtype == DType::F32
        && (3..=5).contains(&e.shape.len())
        && e.shape[1..].iter().all(Dim::is_const)
        && at(&lo(), &e.shape[1]) >= 1
        && numel_hi(&e.shape) <= MAX_IMAGE
}

/// An image from the pool (recent ones first, so convolutions chain) or a new leaf.
fn image(g: &mut Gen) -> usize {
    if g.r.chance(2, 3)
        && let Some(x) = g.find(image_like)
    {
        return x;
    }
    // A third of the images are large enough for the kernels' fast paths.
    let fast = g.r.chance(1, 3);
    let rank = if fast { 4 } else { g.r.pick(&[4, 4, 4, 3, 5]) };
    let batch = g.r.pick(&[Dim::sym("b"), Dim::sym("b"), c(1), c(2)]);
    let channels = match fast {
        true => g.r.pick(&[16, 20, 32]),
        false => g.r.pick(&[1, 2, 3, 4, 8, 16]),
    };
    let side: &[i64] = match (rank, fast) {
        (3, _) => &[1, 2, 5, 9, 16, 30],
        (4, true) => &[8, 9, 12, 14],
        (4, false) => &[1, 2, 3, 5, 7, 8],
        _ => &[1, 2, 3, 4],
    };
    let mut shape = vec![batch, c(channels)];
    for _ in 2..rank {
        shape.push(c(g.r.pick(side)));
    }
    // Square images most of the time, as the kernels' fast paths see them.
    if rank == 4 && g.r.chance(2, 3) {
        shape[3] = shape[2].clone();
    }
    while numel_hi(&shape) > MAX_IMAGE {
        let i = 2 + g.r.below(rank - 2);
        shape[i] = c((shape[i].as_const().expect("static") / 2).max(1));
    }
    g.leaf(DType::F32, shape, Fill::Values)
}

/// Per spatial axis: kernel, stride, dilation, begin and end pads, the window fitting in the
/// padded axis. `pads_below_kernel`: each pad smaller than the window (as pools require).
fn window(g: &mut Gen, spatial: &[i64], pads_below_kernel: bool) -> [Vec<usize>; 4] {
    let square = g.r.chance(2, 3);
    let (k0, s0) = (g.r.pick(&[1, 2, 3, 3, 3, 5]), g.r.pick(&[1, 1, 2, 3]));
    // 3x3, stride 1 or 2, pads 1: the kernels' own paths (Winograd, depthwise row groups).
    if square && g.r.chance(1, 2) {
        let s = g.r.pick(&[1, 1, 2]);
        let n = spatial.len();
        return [vec![3; n], vec![s; n], vec![1; n], vec![1; 2 * n]];
    }
    let (mut kernel, mut strides, mut dilations, mut pads) = (vec![], vec![], vec![], vec![]);
    let mut ends = vec![];
    for &n in spatial {
        let n = n as usize;
        let (k, s) = match square {
            true => (k0, s0),
            false => (g.r.pick(&[1, 2, 3, 4]), g.r.pick(&[1, 2])),
        };
        let d = if g.r.chance(1, 5) { 2 } else { 1 };
        let span = d * (k - 1) + 1;
        let (mut b, mut e) = match g.r.below(3) {
            0 => (0, 0),
            1 => (span / 2, span / 2),
            _ => (g.r.below(3), g.r.below(3)),
        };
        if pads_below_kernel {
            (b, e) = (b.min(span - 1), e.min(span - 1));
        }
        // A window larger than the padded axis: pad its end (less than the window, as
        // `n + b >= 1`).
        if span > n + b + e {
            e = span - n - b;
        }
        kernel.push(k);
        strides.push(s);
        dilations.push(d);
        pads.push(b);
        ends.push(e);
    }
    pads.extend(ends);
    [kernel, strides, dilations, pads]
}

/// A convolution of an image, then maybe a residual of its shape and an activation.
pub(crate) fn conv(g: &mut Gen) -> Option<usize> {
    let x = image(g);
    let e = g.e(x);
    let cin = e.shape[1].as_const()? as usize;
    let spatial: Vec<i64> = e.shape[2..].iter().filter_map(Dim::as_const).collect();
    let divisors: Vec<usize> = (2..=cin).filter(|d| cin.is_multiple_of(*d)).collect();
    let (groups, m) = match g.r.below(6) {
        0..=2 if cin >= 16 => (1, g.r.pick(&[16, 17, 32])),
        0..=2 => (1, g.r.pick(&[1, 3, 8, 16, 17, 32])),
        3 | 4 => (cin, cin * g.r.pick(&[1, 1, 1, 2])),
        _ if !divisors.is_empty() => {
            let groups = g.r.pick(&divisors);
            (groups, groups * g.r.pick(&[1, 2, 3]))
        }
        _ => (1, 4),
    };
    let [kernel, strides, dilations, pads] = window(g, &spatial, false);
    let mut ws = vec![c(m as i64), c((cin / groups) as i64)];
    ws.extend(kernel.iter().map(|&k| c(k as i64)));
    let fan_in = cin / groups * kernel.iter().product::<usize>();
    let w = g.leaf(DType::F32, ws, Fill::Scaled(-(fan_in.ilog2() as i32)));
    let bias = match g.r.chance(1, 2) {
        true => Some(g.leaf(DType::F32, vec![c(m as i64)], Fill::Values)),
        false => None,
    };
    let (xv, wv, bv) = (e.v, g.pool[w].v, bias.map(|b| g.pool[b].v));
    let v =
        g.g.conv(xv, wv, bv, &strides, &pads, &dilations, groups)
            .ok()?;
    let mut y = g.push(v, false);
    // Sigmoid and tanh squash the rounding of large sums (a matmul chain's values) below the
    // comparison's scale allowance: only over exact operands, whose sums stay near 1.
    let mut squash = e.exact;
    if g.r.chance(1, 2) {
        let shape = g.e(y).shape;
        let r = match g.find(|o| o.dtype == DType::F32 && o.shape == shape) {
            Some(r) if g.r.chance(1, 2) => r,
            _ => g.leaf(DType::F32, shape, Fill::Values),
        };
        squash &= g.pool[r].exact;
        y = match g.r.chance(1, 2) {
            true => g.binary(rlx_ir::BinaryOp::Add, y, r),
            false => g.binary(rlx_ir::BinaryOp::Add, r, y),
        };
    }
    if g.r.chance(1, 2) {
        let act = match squash {
            true => g.r.pick(&[
                UnaryOp::Relu,
                UnaryOp::Silu,
                UnaryOp::Sigmoid,
                UnaryOp::Tanh,
            ]),
            false => g.r.pick(&[UnaryOp::Relu, UnaryOp::Relu, UnaryOp::Silu]),
        };
        y = g.unary(act, y);
    }
    Some(y)
}

/// A pool, an LRN, or an arg-reduction / top-k.
pub(crate) fn other(g: &mut Gen) -> Option<usize> {
    match g.r.below(4) {
        0 | 1 => {
            let x = image(g);
            let e = g.e(x);
            let spatial: Vec<i64> = e.shape[2..].iter().filter_map(Dim::as_const).collect();
            let [kernel, strides, dilations, pads] = window(g, &spatial, true);
            let kind = g.r.pick(&[PoolKind::Max, PoolKind::Avg]);
            let (ceil, include_pad) = (g.r.chance(1, 3), g.r.chance(1, 2));
            let v =
                g.g.pool(
                    kind,
                    e.v,
                    &kernel,
                    &strides,
                    &pads,
                    &dilations,
                    ceil,
                    include_pad,
                )
                .ok()?;
            Some(g.push(v, kind == PoolKind::Max && e.exact))
        }
        2 => {
            let x = image(g);
            let size = g.r.pick(&[1, 2, 3, 5]);
            // A large alpha squashes a rounded input's range (x / (1 + a x^2) of a sum that
            // cancelled), below the comparison's scale allowance: only for exact inputs.
            let alpha = match g.pool[x].exact {
                true => g.r.pick(&[1e-4, 0.5]),
                false => 1e-4,
            };
            let beta = g.r.pick(&[0.75, 0.5, 1.0]);
            let bias = g.r.pick(&[1.0, 2.0]);
            let v = g.g.lrn(g.pool[x].v, size, alpha, beta, bias).ok()?;
            Some(g.push(v, false))
        }
        _ => {
            // Only exact values: a rounding difference must not move an index.
            let x = g.find(|e| e.exact && e.dtype != DType::Bool && !e.shape.is_empty())?;
            let e = g.e(x);
            let axis = g.r.below(e.shape.len());
            let signed = axis as i64
                - if g.r.chance(1, 2) {
                    e.shape.len() as i64
                } else {
                    0
                };
            let v = match g.r.chance(1, 2) {
                true => {
                    let (max, keep, last) = (g.r.chance(1, 2), g.r.chance(1, 2), g.r.chance(1, 3));
                    g.g.arg_reduce(e.v, max, signed, keep, last).ok()?
                }
                false => {
                    let k =
                        g.r.below(at(&lo(), &e.shape[axis]).clamp(0, 4) as usize + 1);
                    g.g.top_k(e.v, signed, k, g.r.chance(1, 2)).ok()?
                }
            };
            Some(g.push(v, true))
        }
    }
}
