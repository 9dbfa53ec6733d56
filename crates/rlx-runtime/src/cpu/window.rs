//! Window arithmetic shared by convolution and pooling: where each output position's taps
//! land in the input, per axis.

use rlx_ir::Window;

/// For each spatial axis, the input coordinate of (output position, kernel offset), or None
/// in the padding: `table[i][o * kernel[i] + k]`.
pub(super) fn source_tables(
    w: &Window,
    input: &[usize],
    output: &[usize],
) -> Vec<Vec<Option<usize>>> {
    (0..input.len())
        .map(|i| {
            (0..output[i] * w.kernel[i])
                .map(|ok| {
                    let (o, k) = (ok / w.kernel[i], ok % w.kernel[i]);
                    let at = (o * w.strides[i] + k * w.dilations[i]).checked_sub(w.pads[i])?;
                    (at < input[i]).then_some(at)
                })
                .collect()
        })
        .collect()
}

/// Row-major strides of `shape`.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Splits flat index `f` of `shape` into `idx`.
pub(super) fn unflatten(mut f: usize, shape: &[usize], idx: &mut [usize]) {
    for i in (0..shape.len()).rev() {
        idx[i] = f % shape[i];
        f /= shape[i];
    }
}

/// Calls `each(o, src)` for every output position `o` with the flat input offset of kernel
/// offset `kidx` (None in the padding).
pub(super) fn for_each_source(
    tables: &[Vec<Option<usize>>],
    kernel: &[usize],
    kidx: &[usize],
    out_sp: &[usize],
    in_strides: &[usize],
    mut each: impl FnMut(usize, Option<usize>),
) {
    let r = out_sp.len();
    let mut o = vec![0usize; r];
    let p: usize = out_sp.iter().product();
    for flat in 0..p {
        let mut off = Some(0usize);
        for i in 0..r {
            off = match (off, tables[i][o[i] * kernel[i] + kidx[i]]) {
                (Some(a), Some(c)) => Some(a + c * in_strides[i]),
                _ => None,
            };
        }
        each(flat, off);
        // Odometer over the output positions.
        for i in (0..r).rev() {
            o[i] += 1;
            if o[i] < out_sp[i] {
                break;
            }
            o[i] = 0;
        }
    }
}
