//! Shape inference of the vision ops: convolution, pooling and LRN over `[batch, c, spatial..]`
//! tensors. The batch may be symbolic; channels and spatial sizes must be static.

use super::infer::{all_f32, arity};
use crate::ops::{ComputeOp, Window};
use crate::{Dim, Result, Shape, TensorType};

pub(super) fn infer(op: &ComputeOp, tys: &[&TensorType]) -> Result<TensorType> {
    let name = op.name();
    match op {
        ComputeOp::Conv(c) => {
            let extra = usize::from(c.residual);
            arity(name, tys, 2 + extra, 3 + extra)?;
            all_f32(name, tys)?;
            let (x, w) = (&tys[0].shape, &tys[1].shape);
            crate::ensure!(
                c.channels_last || !c.input_channel_major,
                Shape,
                "{name}: input_channel_major is a channels-last convolution's option"
            );
            let first = channel_major(name, x, c.channels_last && !c.input_channel_major)?;
            let x = first.as_ref().unwrap_or(x);
            let spatial = image(name, x)?;
            let ws = w.as_static().filter(|s| s.len() == spatial.len() + 2);
            let Some(ws) = ws else {
                crate::bail!(
                    Shape,
                    "{name}: weight {w} must be static [m, c / groups, kernel..] for input {x}"
                );
            };
            let channels = static_dim(name, x, 1)?;
            let g = c.groups;
            crate::ensure!(
                g >= 1 && channels % g == 0 && ws[0] % g == 0 && ws[1] * g == channels,
                Shape,
                "{name}: {g} groups, input channels {channels}, weight {w}: groups must divide both \
                 channel counts and the weight must have c / groups = {} input channels",
                if g >= 1 { channels / g } else { 0 }
            );
            window(name, &c.window, spatial.len())?;
            crate::ensure!(
                c.window.kernel.as_slice() == &ws[2..],
                Shape,
                "{name}: kernel {:?} disagrees with the weight {w}",
                c.window.kernel
            );
            if c.has_bias(tys.len()) {
                let b = tys[2];
                crate::ensure!(
                    b.shape.as_static() == Some(vec![ws[0]]),
                    Shape,
                    "{name}: bias {} must be [{}]",
                    b.shape,
                    ws[0]
                );
            }
            let mut out = out_shape(name, x, &c.window, &spatial, false, ws[0])?;
            if c.channels_last {
                out = out.permuted(&[0, 2, 3, 1]);
            }
            if c.residual {
                let r = &tys[tys.len() - 1].shape;
                crate::ensure!(
                    *r == out,
                    Shape,
                    "{name}: residual {r} must have the output's shape {out}"
                );
            }
            Ok(TensorType::new(crate::DType::F32, out))
        }
        ComputeOp::Pool(p) => {
            arity(name, tys, 1, 1)?;
            all_f32(name, tys)?;
            let x = &tys[0].shape;
            let first = channel_major(name, x, p.channels_last)?;
            let x = first.as_ref().unwrap_or(x);
            let spatial = image(name, x)?;
            window(name, &p.window, spatial.len())?;
            let c = static_dim(name, x, 1)?;
            let mut out = out_shape(name, x, &p.window, &spatial, p.ceil_mode, c)?;
            if p.channels_last {
                out = out.permuted(&[0, 2, 3, 1]);
            }
            Ok(TensorType::new(crate::DType::F32, out))
        }
        ComputeOp::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => {
            arity(name, tys, 1, 1)?;
            all_f32(name, tys)?;
            image(name, &tys[0].shape)?;
            crate::ensure!(
                *size >= 1 && alpha.is_finite() && beta.is_finite() && bias.is_finite(),
                Graph,
                "{name}: size {size} must be >= 1 and alpha {alpha}, beta {beta}, bias {bias} finite"
            );
            Ok(tys[0].clone())
        }
        _ => crate::bail!(Graph, "{name} is not a vision op"),
    }
}

/// The static spatial sizes of `x = [batch, c, spatial..]` (at least one spatial axis).
fn image(name: &str, x: &Shape) -> Result<Vec<usize>> {
    crate::ensure!(
        x.rank() >= 3,
        Shape,
        "{name}: input {x} must be [batch, channels, spatial..] with at least one spatial axis"
    );
    (2..x.rank()).map(|i| static_dim(name, x, i)).collect()
}

/// A channels-last input `[batch, h, w, c]` as the channel-major shape it permutes (conv and
/// pool check that one), or None for a channel-major input.
fn channel_major(name: &str, x: &Shape, channels_last: bool) -> Result<Option<Shape>> {
    if !channels_last {
        return Ok(None);
    }
    crate::ensure!(
        x.rank() == 4,
        Shape,
        "{name}: a channels-last input must be [batch, h, w, c], not {x}"
    );
    Ok(Some(x.permuted(&[0, 3, 1, 2])))
}

fn static_dim(name: &str, x: &Shape, i: usize) -> Result<usize> {
    match x.0[i].as_const().and_then(|v| usize::try_from(v).ok()) {
        Some(v) => Ok(v),
        None => crate::bail!(Shape, "{name}: axis {i} of {x} must be static"),
    }
}

fn window(name: &str, w: &Window, rank: usize) -> Result<()> {
    let ok = w.kernel.len() == rank
        && w.strides.len() == rank
        && w.dilations.len() == rank
        && w.pads.len() == 2 * rank
        && w.kernel.iter().all(|k| *k >= 1)
        && w.strides.iter().all(|s| *s >= 1)
        && w.dilations.iter().all(|d| *d >= 1);
    crate::ensure!(
        ok,
        Graph,
        "{name}: {w} must give {rank} kernel sizes, strides and dilations (all >= 1) and {} pads",
        2 * rank
    );
    Ok(())
}

fn out_shape(
    name: &str,
    x: &Shape,
    w: &Window,
    spatial: &[usize],
    ceil: bool,
    channels: usize,
) -> Result<Shape> {
    let mut dims = vec![x.0[0].clone(), Dim::constant(channels as i64)];
    for (i, n) in spatial.iter().enumerate() {
        match w.out_size(i, *n, ceil) {
            Some(o) if o >= 1 => dims.push(Dim::constant(o as i64)),
            _ => crate::bail!(
                Shape,
                "{name}: the window ({w}) does not fit spatial axis {i} of size {n} with its pads"
            ),
        }
    }
    Ok(Shape(dims))
}
