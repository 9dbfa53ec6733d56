//! Plain loops over planes and rows that the compiler vectorizes, compiled once per ISA (the
//! crate's baseline is SSE2: outside a target-feature function the same loop runs 4 lanes).

use rlx_ir::{BinaryOp, UnaryOp};

use super::lanes::F32s;
use super::per_isa;
use crate::cpu::isa::Isa;
use crate::cpu::types::Num;

/// One 2-D depthwise plane over a zero-padded copy of its input: `rows` holds the padded rows
/// (`row_len` apart, each split by column phase when strided, with `N` floats of slack after
/// the last), so every tap of every output column reads inside; `offsets[kx]` is where tap
/// column `kx` of output column 0 sits in a row; `taps` the `kh x kw` weights.
pub struct DepthwisePlane<'a> {
    pub rows: &'a [f32],
    pub row_len: usize,
    pub ow: usize,
    /// Row stride and dilation.
    pub sh: usize,
    pub dh: usize,
    pub kh: usize,
    pub offsets: &'a [usize],
    pub taps: &'a [f32],
}

/// Slack the padded rows of a [`DepthwisePlane`] need after their end: one vector of the
/// widest ISA, read past the last output column and discarded.
pub const DEPTHWISE_SLACK: usize = 16;

per_isa!(
    /// Each output row of `dst` sums, tap by tap, whole vectors of a padded input row.
    ///
    /// # Safety
    /// `isa` is available on this CPU; `p.rows` holds the rows the window reaches plus
    /// `DEPTHWISE_SLACK` floats.
    pub unsafe fn depthwise_plane(p: &DepthwisePlane, dst: &mut [f32]) => depthwise_plane_v
);

#[inline(always)]
unsafe fn depthwise_plane_v<V: F32s>(p: &DepthwisePlane, dst: &mut [f32]) {
    debug_assert!(V::N <= DEPTHWISE_SLACK);
    let ow = p.ow.max(1);
    let mut ox = 0;
    // Columns in blocks of up to 4 vectors, rows in groups so that each tap feeds about 8
    // independent sums (one sum per vector would wait on the FMA latency at every tap).
    // SAFETY (all blocks): forwarded contract.
    unsafe {
        while ox < ow {
            let b = (ow - ox).div_ceil(V::N).min(4);
            match b {
                4 => rows_of::<V, 4, 2>(p, ox, dst),
                3 => rows_of::<V, 3, 2>(p, ox, dst),
                2 => rows_of::<V, 2, 4>(p, ox, dst),
                _ => rows_of::<V, 1, 8>(p, ox, dst),
            }
            ox += b * V::N;
        }
    }
}

/// Every output row's `B` vectors from column `ox`, `R` rows at a time.
#[inline(always)]
unsafe fn rows_of<V: F32s, const B: usize, const R: usize>(
    p: &DepthwisePlane,
    ox: usize,
    dst: &mut [f32],
) {
    let oh = dst.len() / p.ow.max(1);
    let mut oy = 0;
    // SAFETY: forwarded contract.
    unsafe {
        while oy + R <= oh {
            block::<V, B, R>(p, oy, ox, dst);
            oy += R;
        }
        while oy < oh {
            block::<V, B, 1>(p, oy, ox, dst);
            oy += 1;
        }
    }
}

/// Output rows `oy..oy + R`, `B` vectors of columns from `ox` (the lanes past `ow` are
/// computed from the slack and dropped).
#[inline(always)]
unsafe fn block<V: F32s, const B: usize, const R: usize>(
    p: &DepthwisePlane,
    oy: usize,
    ox: usize,
    dst: &mut [f32],
) {
    let (kw, ow) = (p.offsets.len(), p.ow);
    // SAFETY: the padded rows hold every tap of output columns < ow; the lanes past ow read
    // at most N - 1 further floats, inside the slack (caller's contract).
    unsafe {
        let mut acc = [[V::splat(0.0); B]; R];
        for ky in 0..p.kh {
            for (kx, &off) in p.offsets.iter().enumerate() {
                let w = V::splat(*p.taps.get_unchecked(ky * kw + kx));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let y = (oy + r) * p.sh + ky * p.dh;
                    let line = p.rows.as_ptr().add(y * p.row_len + ox + off);
                    for (b, a) in acc.iter_mut().enumerate() {
                        *a = w.fma(V::load(line.add(b * V::N)), *a);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let out = &mut dst[(oy + r) * ow..(oy + r + 1) * ow];
            for (b, a) in acc.iter().enumerate() {
                let x = ox + b * V::N;
                if x + V::N <= ow {
                    a.store(out.as_mut_ptr().add(x));
                } else {
                    let mut tail = [0.0f32; DEPTHWISE_SLACK];
                    a.store(tail.as_mut_ptr());
                    out[x..].copy_from_slice(&tail[..ow - x]);
                }
            }
        }
    }
}

per_isa!(
    /// `run[i] = act(run[i] + bias + res[i])` over one channel's run of a convolution's output
    /// (`res`, when given, as long as `run`): a relu in the same pass, other activations after.
    ///
    /// # Safety
    /// `isa` is available on this CPU (slices bound every access).
    pub unsafe fn channel_epilogue(run: &mut [f32], bias: f32, res: Option<&[f32]>, act: Option<UnaryOp>) => channel_epilogue_v
);

#[inline(always)]
unsafe fn channel_epilogue_v<V: F32s>(
    run: &mut [f32],
    bias: f32,
    res: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    let relu = act == Some(UnaryOp::Relu);
    let n = match res {
        Some(r) => run.len().min(r.len()),
        None => run.len(),
    };
    let body = n - n % V::N;
    // SAFETY: every index below n is in bounds of run and res.
    unsafe {
        let (b, zero, p) = (V::splat(bias), V::splat(0.0), run.as_mut_ptr());
        let mut i = 0;
        while i < body {
            let mut v = V::load(p.add(i)).add(b);
            if let Some(r) = res {
                v = v.add(V::load(r.as_ptr().add(i)));
            }
            if relu {
                v = v.at_least(zero);
            }
            v.store(p.add(i));
            i += V::N;
        }
    }
    for (i, v) in run[..n].iter_mut().enumerate().skip(body) {
        let x = *v + bias + res.map_or(0.0, |r| r[i]);
        *v = if relu && x < 0.0 { 0.0 } else { x };
    }
    match act {
        Some(op) if !relu => super::unary_in_place(V::ISA, op, &mut run[..n]),
        _ => {}
    }
}

per_isa!(
    /// `dst[j] = op(a[j], b[j])`, one loop per op so each is a plain vector loop.
    ///
    /// # Safety
    /// `isa` is available on this CPU (slices bound every access).
    pub unsafe fn binary_map(op: BinaryOp, a: &[f32], b: &[f32], dst: &mut [f32]) => binary_map_v
);

#[inline(always)]
unsafe fn binary_map_v<V: F32s>(op: BinaryOp, a: &[f32], b: &[f32], dst: &mut [f32]) {
    match op {
        BinaryOp::Add => zip_map(a, b, dst, |x, y| x + y),
        BinaryOp::Sub => zip_map(a, b, dst, |x, y| x - y),
        BinaryOp::Mul => zip_map(a, b, dst, |x, y| x * y),
        BinaryOp::Div => zip_map(a, b, dst, |x, y| x / y),
        _ => zip_map(a, b, dst, |x, y| f32::binary(op, x, y)),
    }
}

#[inline(always)]
fn zip_map(a: &[f32], b: &[f32], dst: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    dst.iter_mut()
        .zip(a.iter().zip(b))
        .for_each(|(d, (x, y))| *d = f(*x, *y));
}
