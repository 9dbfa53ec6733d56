//! The AVX-512 tile in assembly: the common case of `avx512.rs`'s kernel (1-8 rows, a whole
//! 32-column panel, nothing to prefetch, not added onto c) with its K segments, bias, residual and
//! relu or relu6. The intrinsic kernel computes the same sums in the same order: results are equal
//! bit for bit (`tiles_sum_in_k_order_bit_for_bit`). Written out, the steps run in rounds of four,
//! A and B addressed by displacements from pointers kept in registers, the K segments' loop around
//! them. MobileNet-like at batch 1 on one thread: its K = 27 stem (three segments of 9) 228.8 ->
//! 220.6 us, the pointwise products 0.3-0.6% faster.
//!
//! A row `r` of A (and of c and of the residual in the epilogue) is addressed from one of
//! three base registers, `g0 = row 0`, `g1 = row 3`, `g2 = row 6`, plus 0, 1 or 2 row strides.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;
#[cfg(target_arch = "x86_64")]
use std::mem::offset_of;

use super::TileEpilogue;

/// Added when a tile has no bias: -0.0 leaves every sum as it is.
#[cfg(target_arch = "x86_64")]
static NO_BIAS: [f32; 32] = [-0.0; 32];

/// Runs the tile `segs` describes (see [`super::SegTileFn`]) in assembly when it can: 1-8
/// rows, a whole panel stored, nothing to prefetch, not added onto c. False: the caller
/// computes it.
///
/// Every operand reaches the assembly in a register, and the epilogue's from `epi` itself.
/// The tile functions that call this carry the AVX-512 target feature so that the assembly
/// inlines into them: one more call level per tile (a function saving the six registers the
/// assembly takes) cost about 40 cycles a tile, more than the assembly saved.
///
/// # Safety
/// As [`super::SegTileFn`]; the CPU has AVX-512F.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn segs(
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
) -> bool {
    if accumulate || !epi.next_a.is_null() || !epi.next_b.is_null() || epi.cols < 32 {
        return false;
    }
    let f = std::mem::size_of::<f32>();
    let bias = if epi.bias.is_null() {
        NO_BIAS.as_ptr()
    } else {
        epi.bias
    };
    let ops = Operands {
        offsets: offsets.as_ptr(),
        end: offsets.as_ptr_range().end,
        len,
        a,
        lda: lda * f,
        b,
        ldb: ldb * f,
        c,
        ldc: ldc * f,
        bias,
    };
    // SAFETY: the caller's contract: every address the tile reads or writes is one the
    // intrinsic kernel would.
    unsafe {
        match rows {
            1 => tile1(ops, epi),
            2 => tile2(ops, epi),
            3 => tile3(ops, epi),
            4 => tile4(ops, epi),
            5 => tile5(ops, epi),
            6 => tile6(ops, epi),
            7 => tile7(ops, epi),
            8 => tile8(ops, epi),
            _ => return false,
        }
    }
    true
}

/// `n` 8-row tiles one after another (see [`super::MicroKernel::run`]): the assembly tile in a
/// loop, one K segment at offset 0, no per-tile dispatch.
///
/// # Safety
/// As [`super::RunFn`]; the CPU has AVX-512F.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run(
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    epi: &TileEpilogue,
) {
    let f = std::mem::size_of::<f32>();
    let offsets = [0usize];
    let mut epi = *epi;
    // Whole panels only (`segs`' fast path): nothing fetched from inside the tiles.
    debug_assert!(epi.cols >= 32 && epi.next_a.is_null() && epi.next_b.is_null());
    let bias = if epi.bias.is_null() {
        NO_BIAS.as_ptr()
    } else {
        epi.bias
    };
    for t in 0..n {
        let ops = Operands {
            offsets: offsets.as_ptr(),
            end: offsets.as_ptr_range().end,
            len: k,
            a: a.wrapping_add(t * 8 * lda),
            lda: lda * f,
            b,
            ldb: ldb * f,
            c: c.wrapping_add(t * 8 * ldc),
            ldc: ldc * f,
            bias,
        };
        // SAFETY: the caller's contract for tile t.
        unsafe { tile8(ops, &epi) };
        epi.res = epi.res.wrapping_add(8 * epi.ld_res);
    }
}

/// [`run`] where the assembly exists (the AVX-512 kernel's `MicroKernel::run`).
#[cfg(target_arch = "x86_64")]
pub(super) const RUN: Option<super::RunFn> = Some(run);
#[cfg(not(target_arch = "x86_64"))]
pub(super) const RUN: Option<super::RunFn> = None;

/// A tile's operands, each passed to the assembly in a register (strides in bytes).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Operands {
    offsets: *const usize,
    end: *const usize,
    len: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    /// 32 values ([`NO_BIAS`] when the tile has none).
    bias: *const f32,
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn segs(
    _: usize,
    _: &[usize],
    _: usize,
    _: *const f32,
    _: usize,
    _: *const f32,
    _: usize,
    _: *mut f32,
    _: usize,
    _: bool,
    _: &TileEpilogue,
) -> bool {
    false
}

/// One K step at A displacement `$disp` (bytes) and B row `$b`: the B row's two vectors in
/// zmm28 / zmm29, each A element broadcast from memory by the multiply-add itself (`{1to16}`),
/// once per sum. (A `vbroadcastss` into a register shared by the row's two multiply-adds: the
/// K = 64 / 32 pointwise products of MobileNet-like took 1.6% / 3.3% longer on Zen 4.)
macro_rules! step {
    ($disp:literal, $b:literal; $(($lo:literal, $hi:literal, $row:literal)),+) => {
        concat!(
            "vmovups zmm28, [", $b, "]\n",
            "vmovups zmm29, [", $b, " + 64]\n",
            $(
                "vfmadd231ps ", $lo, ", zmm28, dword ptr [", $row, " + ", $disp, "]{{1to16}}\n",
                "vfmadd231ps ", $hi, ", zmm29, dword ptr [", $row, " + ", $disp, "]{{1to16}}\n",
            )+
        )
    };
}

/// The base registers of rows 3 and 6 from `g0` (row 0) and the row stride `l`.
macro_rules! bases {
    () => {
        "lea {g1}, [{g0} + {l}*2]\nadd {g1}, {l}\nlea {g2}, [{g1} + {l}*2]\nadd {g2}, {l}"
    };
}

/// A tile of the listed rows: `(low sums, high sums, row address)`.
macro_rules! tile {
    ($name:ident; $(($lo:literal, $hi:literal, $row:literal)),+) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn $name(ops: Operands, epi: &TileEpilogue) {
            // SAFETY: `segs`' contract; every register written is declared.
            unsafe {
                asm!(
                    concat!($("vxorps ", $lo, ", ", $lo, ", ", $lo, "\n", "vxorps ", $hi, ", ", $hi, ", ", $hi, "\n",)+),
                    "cmp {o}, {end}",
                    "je 6f",
                    // Each segment: A's rows from its offset; four steps per round, then one
                    // at a time.
                    "2:",
                    "mov {g0}, qword ptr [{o}]",
                    "shl {g0}, 2",
                    "add {g0}, {a}",
                    bases!(),
                    "mov {k}, {n}",
                    "shr {k}, 2",
                    "jz 4f",
                    ".p2align 6",
                    "3:",
                    step!("0", "{b}"; $(($lo, $hi, $row)),+),
                    step!("4", "{b} + {ldb}"; $(($lo, $hi, $row)),+),
                    "lea {b}, [{b} + {ldb}*2]",
                    step!("8", "{b}"; $(($lo, $hi, $row)),+),
                    step!("12", "{b} + {ldb}"; $(($lo, $hi, $row)),+),
                    "lea {b}, [{b} + {ldb}*2]",
                    "add {g0}, 16",
                    "add {g1}, 16",
                    "add {g2}, 16",
                    "dec {k}",
                    "jnz 3b",
                    "4:",
                    "mov {k}, {n}",
                    "and {k}, 3",
                    "jz 5f",
                    "7:",
                    step!("0", "{b}"; $(($lo, $hi, $row)),+),
                    "add {g0}, 4",
                    "add {g1}, 4",
                    "add {g2}, 4",
                    "add {b}, {ldb}",
                    "dec {k}",
                    "jnz 7b",
                    "5:",
                    "add {o}, 8",
                    "cmp {o}, {end}",
                    "jne 2b",
                    // The epilogue, in the intrinsic kernel's order: + bias, + residual, relu,
                    // store. The row registers now address the residual, then c.
                    "6:",
                    "vmovups zmm28, [{bias}]",
                    "vmovups zmm29, [{bias} + 64]",
                    concat!($("vaddps ", $lo, ", ", $lo, ", zmm28\n", "vaddps ", $hi, ", ", $hi, ", zmm29\n",)+),
                    "mov {g0}, qword ptr [{e} + {res}]",
                    "test {g0}, {g0}",
                    "jz 8f",
                    "mov {l}, qword ptr [{e} + {ld_res}]",
                    "shl {l}, 2",
                    bases!(),
                    concat!($("vaddps ", $lo, ", ", $lo, ", [", $row, "]\n", "vaddps ", $hi, ", ", $hi, ", [", $row, " + 64]\n",)+),
                    "8:",
                    "cmp byte ptr [{e} + {act}], 0",
                    "je 9f",
                    // max(0, v) gives v for NaN and for -0.0, as the intrinsic kernel does;
                    // relu6 then min(6, v), NaN kept too.
                    "vxorps zmm27, zmm27, zmm27",
                    concat!($("vmaxps ", $lo, ", zmm27, ", $lo, "\n", "vmaxps ", $hi, ", zmm27, ", $hi, "\n",)+),
                    "cmp byte ptr [{e} + {act}], 2",
                    "jne 9f",
                    // 6.0f32.
                    "mov {k:e}, 0x40C00000",
                    "vpbroadcastd zmm27, {k:e}",
                    concat!($("vminps ", $lo, ", zmm27, ", $lo, "\n", "vminps ", $hi, ", zmm27, ", $hi, "\n",)+),
                    "9:",
                    "mov {g0}, {c}",
                    "mov {l}, {ldc}",
                    bases!(),
                    concat!($("vmovups [", $row, "], ", $lo, "\n", "vmovups [", $row, " + 64], ", $hi, "\n",)+),
                    // Clean upper vector state for the SSE code that runs next (the executor,
                    // other kernels): without it a 14 x 14 x 256 global mean after a pointwise
                    // layer took 7.3 us instead of 4.4.
                    "vzeroupper",
                    e = in(reg) epi,
                    o = inout(reg) ops.offsets => _,
                    end = in(reg) ops.end,
                    n = in(reg) ops.len,
                    a = in(reg) ops.a,
                    l = inout(reg) ops.lda => _,
                    b = inout(reg) ops.b => _,
                    ldb = in(reg) ops.ldb,
                    c = in(reg) ops.c,
                    ldc = in(reg) ops.ldc,
                    bias = in(reg) ops.bias,
                    g0 = out(reg) _,
                    g1 = out(reg) _,
                    g2 = out(reg) _,
                    k = out(reg) _,
                    res = const offset_of!(TileEpilogue, res),
                    ld_res = const offset_of!(TileEpilogue, ld_res),
                    act = const offset_of!(TileEpilogue, act),
                    out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                    out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                    out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                    out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                    out("zmm27") _, out("zmm28") _, out("zmm29") _,
                    options(nostack),
                );
            }
        }
    };
}

tile!(tile1; ("zmm0", "zmm1", "{g0}"));
tile!(tile2; ("zmm0", "zmm1", "{g0}"), ("zmm2", "zmm3", "{g0} + {l}"));
tile!(tile3; ("zmm0", "zmm1", "{g0}"), ("zmm2", "zmm3", "{g0} + {l}"),
    ("zmm4", "zmm5", "{g0} + {l}*2"));
tile!(tile4; ("zmm0", "zmm1", "{g0}"), ("zmm2", "zmm3", "{g0} + {l}"),
    ("zmm4", "zmm5", "{g0} + {l}*2"), ("zmm6", "zmm7", "{g1}"));
tile!(tile5; ("zmm0", "zmm1", "{g0}"), ("zmm2", "zmm3", "{g0} + {l}"),
    ("zmm4", "zmm5", "{g0} + {l}*2"), ("zmm6", "zmm7", "{g1}"),
    ("zmm8", "zmm9", "{g1} + {l}"));
tile!(tile6; ("zmm0", "zmm1", "{g0}"), ("zmm2", "zmm3", "{g0} + {l}"),
    ("zmm4", "zmm5", "{g0} + {l}*2"), ("zmm6", "zmm7", "{g1}"),
    ("zmm8", "zmm9", "{g1} + {l}"), ("zmm10", "zmm11", "{g1} + {l}*2"));
tile!(tile7; ("zmm0", "zmm1", "{g0}"), ("zmm2", "zmm3", "{g0} + {l}"),
    ("zmm4", "zmm5", "{g0} + {l}*2"), ("zmm6", "zmm7", "{g1}"),
    ("zmm8", "zmm9", "{g1} + {l}"), ("zmm10", "zmm11", "{g1} + {l}*2"),
    ("zmm12", "zmm13", "{g2}"));
tile!(tile8; ("zmm0", "zmm1", "{g0}"), ("zmm2", "zmm3", "{g0} + {l}"),
    ("zmm4", "zmm5", "{g0} + {l}*2"), ("zmm6", "zmm7", "{g1}"),
    ("zmm8", "zmm9", "{g1} + {l}"), ("zmm10", "zmm11", "{g1} + {l}*2"),
    ("zmm12", "zmm13", "{g2}"), ("zmm14", "zmm15", "{g2} + {l}"));
