//! Reference convolution, pooling and LRN: plain loops in f64 over every output element and
//! every window position, straight from the ONNX definitions.

use ndarray::ArrayD;
use rlx_ir::{ConvAttrs, PoolAttrs, PoolKind, Window};

use super::relayout;
use crate::Result;

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Every index of `shape` in row-major order.
fn positions(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    let st = strides(shape);
    (0..n)
        .map(|f| shape.iter().zip(&st).map(|(d, s)| f / s % d).collect())
        .collect()
}

/// The input coordinate of output position `o`, kernel offset `k`, axis `i`; None in padding.
fn source(w: &Window, i: usize, o: usize, k: usize, n: usize) -> Option<usize> {
    let at = (o * w.strides[i] + k * w.dilations[i]).checked_sub(w.pads[i])?;
    (at < n).then_some(at)
}

pub(super) fn conv(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    residual: Option<&ArrayD<f32>>,
    c: &ConvAttrs,
    shape: &[usize],
) -> Result<ArrayD<f32>> {
    if c.channels_last {
        // The channel-major convolution of the permuted operands, permuted back.
        let first = |a: &ArrayD<f32>| a.view().permuted_axes(vec![0, 3, 1, 2]).to_owned();
        let residual = residual.map(first);
        let plain = ConvAttrs {
            channels_last: false,
            input_channel_major: false,
            ..c.clone()
        };
        let nchw = [shape[0], shape[3], shape[1], shape[2]];
        let x = match c.input_channel_major {
            true => x.clone(),
            false => first(x),
        };
        let out = conv(&x, w, bias, residual.as_ref(), &plain, &nchw)?;
        return Ok(out
            .permuted_axes(vec![0, 2, 3, 1])
            .as_standard_layout()
            .into_owned());
    }
    let res: Vec<f32> = residual.map_or_else(Vec::new, |r| r.iter().copied().collect());
    let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
    let (xv, wv): (Vec<f32>, Vec<f32>) = (x.iter().copied().collect(), w.iter().copied().collect());
    let (xst, wst) = (strides(&xs), strides(&ws));
    let (m, cg) = (ws[0], ws[1]);
    let per_group = m / c.groups;
    let spatial_out = &shape[2..];
    let kernels = positions(&ws[2..]);
    let mut out = Vec::with_capacity(shape.iter().product());
    for n in 0..shape[0] {
        for oc in 0..m {
            let g = oc / per_group;
            for o in positions(spatial_out) {
                let mut acc = bias.map_or(0.0, |b| f64::from(b.as_slice().map_or(0.0, |s| s[oc])));
                for ic in 0..cg {
                    for k in &kernels {
                        let src: Option<Vec<usize>> = (0..k.len())
                            .map(|i| source(&c.window, i, o[i], k[i], xs[2 + i]))
                            .collect();
                        let Some(src) = src else { continue };
                        let xi = n * xst[0]
                            + (g * cg + ic) * xst[1]
                            + src.iter().zip(&xst[2..]).map(|(a, s)| a * s).sum::<usize>();
                        let wi = oc * wst[0]
                            + ic * wst[1]
                            + k.iter().zip(&wst[2..]).map(|(a, s)| a * s).sum::<usize>();
                        acc += f64::from(xv[xi]) * f64::from(wv[wi]);
                    }
                }
                // The epilogue in f64 as a linear's: + residual, then the activation.
                if let Some(r) = res.get(out.len()) {
                    acc += f64::from(*r);
                }
                out.push(c.act.map_or(acc, |op| super::ops::unary(op, acc)) as f32);
            }
        }
    }
    relayout(out, shape)
}

pub(super) fn pool(x: &ArrayD<f32>, p: &PoolAttrs, shape: &[usize]) -> Result<ArrayD<f32>> {
    if p.channels_last {
        let plain = PoolAttrs {
            channels_last: false,
            ..p.clone()
        };
        let x = x.view().permuted_axes(vec![0, 3, 1, 2]).to_owned();
        let out = pool(&x, &plain, &[shape[0], shape[3], shape[1], shape[2]])?;
        return Ok(out
            .permuted_axes(vec![0, 2, 3, 1])
            .as_standard_layout()
            .into_owned());
    }
    let xs = x.shape().to_vec();
    let xv: Vec<f32> = x.iter().copied().collect();
    let xst = strides(&xs);
    let kernels = positions(&p.window.kernel);
    let mut out = Vec::with_capacity(shape.iter().product());
    for n in 0..shape[0] {
        for ch in 0..shape[1] {
            for o in positions(&shape[2..]) {
                let (mut max, mut sum, mut count, mut padded) =
                    (f64::NEG_INFINITY, 0.0f64, 0usize, 0usize);
                for k in &kernels {
                    // Positions inside the padded input (for count_include_pad), and real ones.
                    let mut inside_pads = true;
                    let mut src = Vec::with_capacity(k.len());
                    for i in 0..k.len() {
                        let at = o[i] * p.window.strides[i] + k[i] * p.window.dilations[i];
                        inside_pads &=
                            at < xs[2 + i] + p.window.pads[i] + p.window.pads[k.len() + i];
                        src.push(source(&p.window, i, o[i], k[i], xs[2 + i]));
                    }
                    padded += usize::from(inside_pads);
                    let Some(src) = src.into_iter().collect::<Option<Vec<usize>>>() else {
                        continue;
                    };
                    let xi = n * xst[0]
                        + ch * xst[1]
                        + src.iter().zip(&xst[2..]).map(|(a, s)| a * s).sum::<usize>();
                    let v = f64::from(xv[xi]);
                    max = if v.is_nan() || max.is_nan() {
                        f64::NAN
                    } else {
                        max.max(v)
                    };
                    sum += v;
                    count += 1;
                }
                out.push(match p.kind {
                    PoolKind::Max => max as f32,
                    PoolKind::Avg => {
                        let div = if p.count_include_pad { padded } else { count };
                        (sum / div.max(1) as f64) as f32
                    }
                });
            }
        }
    }
    relayout(out, shape)
}

pub(super) fn lrn(
    x: &ArrayD<f32>,
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
) -> Result<ArrayD<f32>> {
    let xs = x.shape().to_vec();
    let xv: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    let (c, inner) = (xs[1], xs[2..].iter().product::<usize>());
    let (lo, hi) = ((size - 1) / 2, size / 2);
    let out: Vec<f32> = (0..xv.len())
        .map(|i| {
            let (n, ch, r) = (i / (c * inner), i / inner % c, i % inner);
            let sq: f64 = (ch.saturating_sub(lo)..(ch + hi + 1).min(c))
                .map(|j| xv[(n * c + j) * inner + r].powi(2))
                .sum();
            let d = (f64::from(bias) + f64::from(alpha) / size as f64 * sq).powf(f64::from(beta));
            (xv[i] / d) as f32
        })
        .collect();
    relayout(out, &xs)
}
