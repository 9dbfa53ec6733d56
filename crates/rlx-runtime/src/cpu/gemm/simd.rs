//! The register-tiled micro-kernel, written once over a SIMD vector type: each ISA file
//! instantiates it with its intrinsics, lane count and row count.
//!
//! A tile is `R` rows x two vectors of columns. Every step broadcasts one element of each A row
//! (read in place from its row-major rows) and multiplies it into two vectors of the B panel.
//! A half tile (one vector of columns) computes an edge panel of half the width in place.

/// Defines `KERNEL: MicroKernel` for one ISA. `$feature` is the `target_feature` string, `$v`
/// the vector type, `$w` its lane count, `$mr` the maximum rows (a `match` arm per row count).
macro_rules! simd_micro_kernel {
    (
        isa: $isa:ident, feature: $feature:literal, vector: $v:ty, lanes: $w:literal,
        zero: $zero:ident, load: $load:ident, store: $store:ident,
        splat: $splat:ident, fma: $fma:ident, add: $add:ident, max: $max:ident, min: $min:ident,
        store_first: $store_first:ident, load_first: $load_first:ident,
        rows: [$($r:literal),+], max_rows: $mr:literal, run: $run:expr $(, fast: $fast:path)?
    ) => {
        #[cfg(target_arch = "x86_64")]
        use std::arch::x86_64::*;

        pub(super) const KERNEL: super::MicroKernel = super::MicroKernel {
            isa: crate::cpu::Isa::$isa,
            mr: $mr,
            nr: 2 * $w,
            tile,
            segs,
            run: $run,
            half: Some(half),
            half_segs: Some(half_segs),
        };

        /// # Safety
        /// The CPU has the ISA; see [`super::SegTileFn`] for the memory contract.
        #[cfg_attr(target_arch = "x86_64", target_feature(enable = $feature))]
        #[allow(clippy::too_many_arguments)]
        unsafe fn segs(
            rows: usize, offsets: &[usize], len: usize, a: *const f32, lda: usize,
            b: *const f32, ldb: usize, c: *mut f32, ldc: usize, accumulate: bool,
            epi: &super::TileEpilogue,
        ) {
            // SAFETY: forwarded contract; `rows` is clamped to the kernel's maximum.
            unsafe {
                $(if $fast(rows, offsets, len, a, lda, b, ldb, c, ldc, accumulate, epi) {
                    return;
                })?
                match rows.min($mr) {
                    $($r => pick::<$r, 2>(offsets, len, a, lda, b, ldb, c, ldc, accumulate, epi),)+
                    _ => {}
                }
            }
        }

        /// `segs_n` for the epilogue's form. A tile storing fewer columns, and one clamping
        /// to 6 (relu6), is its own instance: a run-time test among the stores made the
        /// compiler spill the accumulators (2.4x slower tiles; MobileNet v2's projections,
        /// which have no activation at all, when relu6 was a second test beside relu's).
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn pick<const R: usize, const V: usize>(
            offsets: &[usize], len: usize, a: *const f32, lda: usize, b: *const f32,
            ldb: usize, c: *mut f32, ldc: usize, accumulate: bool, epi: &super::TileEpilogue,
        ) {
            let partial = epi.cols < V * $w;
            let six = epi.act == super::StoreAct::Relu6;
            // SAFETY: forwarded contract.
            unsafe {
                match (partial, six) {
                    (false, false) => segs_n::<R, V, false, false>(offsets, len, a, lda, b, ldb, c, ldc, accumulate, epi),
                    (true, false) => segs_n::<R, V, true, false>(offsets, len, a, lda, b, ldb, c, ldc, accumulate, epi),
                    (false, true) => segs_n::<R, V, false, true>(offsets, len, a, lda, b, ldb, c, ldc, accumulate, epi),
                    (true, true) => segs_n::<R, V, true, true>(offsets, len, a, lda, b, ldb, c, ldc, accumulate, epi),
                }
            }
        }

        /// `V` vectors of columns per row: 2 (a whole panel) or 1 (its first half). Never
        /// inlined into the tile functions that choose it (one call per tile, as before the
        /// assembly tile existed).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        #[inline(never)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn segs_n<const R: usize, const V: usize, const PARTIAL: bool, const SIX: bool>(
            offsets: &[usize], len: usize, a: *const f32, lda: usize, b: *const f32,
            ldb: usize, c: *mut f32, ldc: usize, accumulate: bool, epi: &super::TileEpilogue,
        ) {
            // SAFETY: the caller guarantees R rows of len elements at a + offsets[s] (row
            // stride lda) for every segment, offsets.len() * len rows of V * lanes at b
            // (stride ldb), R rows of V * lanes at c (stride ldc), and epi's operands.
            unsafe {
                let mut lo: [$v; R] = [$zero(); R];
                let mut hi: [$v; R] = [$zero(); R];
                let mut bp = b;
                let mut fetched_b = 0;
                for &off in offsets {
                    let a = a.add(off);
                    // One step: an element of each A row times the B row at bp.
                    let mut step = |p: usize| {
                        let b0 = $load(bp);
                        let b1 = if V == 2 { $load(bp.add($w)) } else { b0 };
                        for r in 0..R {
                            let av = $splat(*a.add(r * lda + p));
                            lo[r] = $fma(av, b0, lo[r]);
                            if V == 2 {
                                hi[r] = $fma(av, b1, hi[r]);
                            }
                        }
                        bp = bp.add(ldb);
                    };
                    if epi.next_a.is_null() && epi.next_b.is_null() {
                        (0..len).for_each(&mut step);
                        continue;
                    }
                    // Runs of one cache line of each A row, each fetching the same line of
                    // the next tile's rows, and the next lines of B's next panel. (Only here:
                    // the runs cost 1-2% where nothing is fetched.)
                    let next = epi.next_a.wrapping_add(off);
                    for p0 in (0..len).step_by(16) {
                        if !epi.next_a.is_null() {
                            for r in 0..R {
                                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(r * lda + p0) as *const i8);
                            }
                        }
                        if !epi.next_b.is_null() {
                            for l in 0..epi.next_b_lines {
                                let line = (fetched_b + l) * 16;
                                _mm_prefetch::<_MM_HINT_T0>(epi.next_b.wrapping_add(line) as *const i8);
                            }
                            fetched_b += epi.next_b_lines;
                        }
                        (p0..(p0 + 16).min(len)).for_each(&mut step);
                    }
                }
                // Bias, residual and activation on the sums in registers, before the one store.
                // Without a bias the add is of -0.0, which leaves every sum as it is (-0.0
                // too). (Skipping it behind a branch here made the kernel 2.5x slower: the
                // compiler then spilled the accumulators.)
                let (b_lo, b_hi) = if epi.bias.is_null() {
                    ($splat(-0.0), $splat(-0.0))
                } else if V == 2 {
                    ($load(epi.bias), $load(epi.bias.add($w)))
                } else {
                    ($load(epi.bias), $splat(-0.0))
                };
                // Relu and relu6 (relu6 in its own instance, `SIX`).
                let relu = epi.act != super::StoreAct::None;
                // An edge panel's tile stores only its first columns (lanes of lo, then hi).
                debug_assert!(!PARTIAL || epi.res.is_null());
                let (cols_lo, cols_hi) = (epi.cols.min($w), epi.cols.saturating_sub($w).min($w));
                for r in 0..R {
                    let cr = c.add(r * ldc);
                    if PARTIAL && accumulate {
                        // Only the edge's columns of c are read (the row may end there).
                        lo[r] = $add(lo[r], $load_first(cr, cols_lo));
                        if V == 2 && cols_hi > 0 {
                            hi[r] = $add(hi[r], $load_first(cr.add($w), cols_hi));
                        }
                    } else if accumulate {
                        lo[r] = $add(lo[r], $load(cr));
                        if V == 2 {
                            hi[r] = $add(hi[r], $load(cr.add($w)));
                        }
                    }
                    lo[r] = $add(lo[r], b_lo);
                    hi[r] = $add(hi[r], b_hi);
                    if !epi.res.is_null() {
                        let rr = epi.res.add(r * epi.ld_res);
                        lo[r] = $add(lo[r], $load(rr));
                        if V == 2 {
                            hi[r] = $add(hi[r], $load(rr.add($w)));
                        }
                    }
                    if relu {
                        // max gives its second operand for NaN and for -0.0 against 0.0, as
                        // `if v < 0 { 0 } else { v }` does; min too (NaN kept).
                        lo[r] = $max($zero(), lo[r]);
                        hi[r] = $max($zero(), hi[r]);
                        if SIX {
                            lo[r] = $min($splat(6.0), lo[r]);
                            hi[r] = $min($splat(6.0), hi[r]);
                        }
                    }
                    if PARTIAL {
                        $store_first(cr, lo[r], cols_lo);
                        if V == 2 && cols_hi > 0 {
                            $store_first(cr.add($w), hi[r], cols_hi);
                        }
                        continue;
                    }
                    $store(cr, lo[r]);
                    if V == 2 {
                        $store(cr.add($w), hi[r]);
                    }
                }

            }
        }

        #[cfg(not(target_arch = "x86_64"))]
        #[allow(clippy::too_many_arguments)]
        unsafe fn segs_n<const R: usize, const V: usize, const PARTIAL: bool, const SIX: bool>(
            _: &[usize], _: usize, _: *const f32, _: usize, _: *const f32, _: usize,
            _: *mut f32, _: usize, _: bool, _: &super::TileEpilogue,
        ) {
            unreachable!("SIMD paths are only selected on x86-64 CPUs that have them")
        }

        /// # Safety
        /// The CPU has the ISA; see [`super::TileFn`] for the memory contract.
        #[cfg_attr(target_arch = "x86_64", target_feature(enable = $feature))]
        #[allow(clippy::too_many_arguments)]
        unsafe fn tile(
            rows: usize, k: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize,
            c: *mut f32, ldc: usize, accumulate: bool, epi: &super::TileEpilogue,
        ) {
            // SAFETY: forwarded contract; `rows` is clamped to the kernel's maximum.
            unsafe {
                $(if $fast(rows, &[0], k, a, lda, b, ldb, c, ldc, accumulate, epi) {
                    return;
                })?
                match rows.min($mr) {
                    // A plain tile is one K segment at offset 0.
                    $($r => pick::<$r, 2>(&[0], k, a, lda, b, ldb, c, ldc, accumulate, epi),)+
                    _ => {}
                }
            }
        }

        /// # Safety
        /// The CPU has the ISA; see [`super::TileFn`], with `nr / 2` columns of c, the bias
        /// and the residual (B's rows are still `ldb` apart).
        #[allow(clippy::too_many_arguments)]
        unsafe fn half(
            rows: usize, k: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize,
            c: *mut f32, ldc: usize, accumulate: bool, epi: &super::TileEpilogue,
        ) {
            // SAFETY: forwarded contract.
            unsafe { half_segs(rows, &[0], k, a, lda, b, ldb, c, ldc, accumulate, epi) }
        }

        /// # Safety
        /// The CPU has the ISA; see [`super::SegTileFn`], with `nr / 2` columns of c, the
        /// bias and the residual (B's rows are still `ldb` apart).
        #[allow(clippy::too_many_arguments)]
        unsafe fn half_segs(
            rows: usize, offsets: &[usize], len: usize, a: *const f32, lda: usize,
            b: *const f32, ldb: usize, c: *mut f32, ldc: usize, accumulate: bool,
            epi: &super::TileEpilogue,
        ) {
            // SAFETY: forwarded contract; `rows` is clamped to the kernel's maximum.
            unsafe {
                match rows.min($mr) {
                    $($r => pick::<$r, 1>(offsets, len, a, lda, b, ldb, c, ldc, accumulate, epi),)+
                    _ => {}
                }
            }
        }
    };
}
pub(super) use simd_micro_kernel;
