//! Portable micro-kernel: up to 4 rows x 16 columns in plain arrays, which the compiler
//! vectorizes for the build target (SSE2 on x86-64). Runs on every CPU.

use super::{MicroKernel, TileEpilogue};

const NR: usize = 16;

pub(super) const KERNEL: MicroKernel = MicroKernel {
    isa: crate::cpu::Isa::Scalar,
    mr: 4,
    nr: NR,
    tile,
    segs,
    run: None,
    half: None,
    half_segs: None,
};

/// # Safety
/// See [`super::SegTileFn`].
#[allow(clippy::too_many_arguments)]
unsafe fn segs(
    rows: usize,
    offsets: &[usize],
    len: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    epi: &TileEpilogue,
) {
    // One segment at a time, the first writing and the rest adding (the sums go through c),
    // the epilogue after the last.
    let last = offsets.len().saturating_sub(1);
    // Earlier segments store the same columns, without the epilogue.
    let partial = TileEpilogue {
        cols: epi.cols,
        ..TileEpilogue::NONE
    };
    for (s, &off) in offsets.iter().enumerate() {
        // SAFETY: forwarded contract: segment s reads rows at a + off and B rows s * len ...
        unsafe {
            tile(
                rows,
                len,
                a.add(off),
                lda,
                b.add(s * len * ldb),
                ldb,
                c,
                ldc,
                accumulate || s > 0,
                if s == last { epi } else { &partial },
            )
        };
    }
}

/// # Safety
/// See [`super::TileFn`].
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    rows: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    epi: &TileEpilogue,
) {
    // SAFETY: forwarded contract.
    unsafe {
        let cols = epi.cols.min(NR);
        match rows {
            1 => rows_n::<1>(k, a, lda, b, ldb, (c, ldc, cols), accumulate),
            2 => rows_n::<2>(k, a, lda, b, ldb, (c, ldc, cols), accumulate),
            3 => rows_n::<3>(k, a, lda, b, ldb, (c, ldc, cols), accumulate),
            4 => rows_n::<4>(k, a, lda, b, ldb, (c, ldc, cols), accumulate),
            _ => return,
        }
        epi.apply(rows, cols, c, ldc);
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn rows_n<const R: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    (c, ldc, cols): (*mut f32, usize, usize),
    accumulate: bool,
) {
    let mut acc = [[0.0f32; NR]; R];
    // SAFETY: R rows of k elements at a (stride lda), k rows of NR at b (stride ldb), R rows
    // of `cols` at c (stride ldc), as the caller guarantees.
    unsafe {
        for p in 0..k {
            let brow = &*(b.add(p * ldb) as *const [f32; NR]);
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = *a.add(r * lda + p);
                for (c, b) in acc.iter_mut().zip(brow) {
                    *c += av * b;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let crow = std::slice::from_raw_parts_mut(c.add(r * ldc), cols);
            for (c, v) in crow.iter_mut().zip(acc) {
                *c = if accumulate { *c + v } else { *v };
            }
        }
    }
}
