//! Shared by the differential and per-op tests: compile a HIR through `ModelCompilePipeline`
//! with and without passes, run it, and compare with `reference::evaluate`.
#![allow(dead_code)]

use rlx_ir::{DimBinding, HirModule, TensorData};
pub use rlx_runtime::cpu::Isa;
use rlx_runtime::{
    CompileOptions, Device, HostData, ModelCompilePipeline, Result, Tensor, TensorRef, reference,
};

/// f32 results agree element by element when `|a - b| <= ATOL + RTOL * max(|a|, |b|)` (or both
/// are NaN); ints and bools must be equal. One allowance scales with the tensor: an element that
/// is small because its sum cancelled (a 700-term product chained into two more, say) carries
/// the rounding of the large terms it came from, so `SCALE_TOL * max |reference|` is allowed
/// too — 2e-5 of the largest element, far below what a wrong element moves.
pub const RTOL: f32 = 1e-4;
pub const ATOL: f32 = 1e-5;
pub const SCALE_TOL: f32 = 2e-5;

pub fn tref(d: &TensorData) -> TensorRef<'_> {
    let data = match d {
        TensorData::F32(v) => HostData::F32(v),
        TensorData::I64(v) => HostData::I64(v),
        TensorData::I32(v) => HostData::I32(v),
        TensorData::Bool(v) => HostData::Bool(v),
    };
    TensorRef { data, shape: None }
}

pub type Named = (String, TensorData);

pub fn refs(v: &[Named]) -> Vec<(&str, TensorRef<'_>)> {
    v.iter().map(|(n, d)| (n.as_str(), tref(d))).collect()
}

pub fn options(optimize: bool) -> CompileOptions {
    CompileOptions {
        num_threads: Some(2),
        optimize,
        verify: true,
        ..CompileOptions::default()
    }
}

/// The kernel paths each check runs: every ISA this CPU has (weights pre-packed), and the
/// widest one reading weights in place (`prepack = false`).
pub fn kernel_paths() -> Vec<(Isa, bool)> {
    let mut paths: Vec<(Isa, bool)> = Isa::available().into_iter().map(|i| (i, true)).collect();
    paths.push((Isa::best(), false));
    paths
}

/// A pipeline for `hir` with `params` bound.
pub fn pipeline(hir: &HirModule, optimize: bool, params: &[Named]) -> Result<ModelCompilePipeline> {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    pipe.build_template(|| hir.clone(), &options(optimize))?;
    for (name, data) in params {
        pipe.set_param(name, tref(data))?;
    }
    Ok(pipe)
}

pub fn run(
    pipe: &mut ModelCompilePipeline,
    hir: &HirModule,
    optimize: bool,
    binding: &DimBinding,
    inputs: &[Named],
) -> Result<Vec<Tensor>> {
    let g = pipe.get_or_compile(binding, || hir.clone(), &options(optimize))?;
    g.run(&refs(inputs))
}

pub fn reference(
    hir: &HirModule,
    binding: &DimBinding,
    inputs: &[Named],
    params: &[Named],
) -> Result<Vec<Tensor>> {
    reference::evaluate(hir, binding, &refs(inputs), &refs(params))
}

pub fn f32_close(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ATOL + RTOL * a.abs().max(b.abs())
}

/// Compares outputs; `exact[i]` asks for bit-for-bit agreement of output `i` (NaN == NaN).
pub fn compare(got: &[Tensor], want: &[Tensor], exact: &[bool]) -> std::result::Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} outputs, reference has {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let exact = exact.get(i).copied().unwrap_or(false);
        if g.name != w.name || g.shape != w.shape || g.dtype() != w.dtype() {
            return Err(format!(
                "output {i}: got `{}` {}{:?}, reference `{}` {}{:?}",
                g.name,
                g.dtype(),
                g.shape,
                w.name,
                w.dtype(),
                w.shape
            ));
        }
        let bad = match (&g.data, &w.data) {
            (TensorData::F32(a), TensorData::F32(b)) => {
                let scale = b
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold(0.0f32, |m, v| m.max(v.abs()));
                a.iter().zip(b).position(|(x, y)| {
                    if exact {
                        !(x == y || x.is_nan() && y.is_nan())
                    } else {
                        !(f32_close(*x, *y) || (x - y).abs() <= SCALE_TOL * scale)
                    }
                })
            }
            (a, b) => (0..a.len()).find(|&j| a.fmt_elem(j) != b.fmt_elem(j)),
        };
        if let Some(j) = bad {
            return Err(format!(
                "output {i} `{}` {:?} element {j}: got {}, reference {} ({})",
                g.name,
                g.shape,
                g.data.fmt_elem(j),
                w.data.fmt_elem(j),
                if exact { "exact" } else { "tolerance" }
            ));
        }
    }
    Ok(())
}

/// Reference vs compiled (with and without passes, on every kernel path) on each binding;
/// returns the reference outputs of the last binding. Panics with a description on any
/// disagreement.
pub fn check(
    hir: &HirModule,
    params: &[Named],
    runs: &[(DimBinding, Vec<Named>)],
    exact: &[bool],
) -> Vec<Tensor> {
    let mut last = Vec::new();
    for optimize in [false, true] {
        let mut pipe = pipeline(hir, optimize, params)
            .unwrap_or_else(|e| panic!("template (optimize={optimize}): {e}\n{hir}"));
        for (binding, inputs) in runs {
            let want = reference(hir, binding, inputs, params)
                .unwrap_or_else(|e| panic!("reference under {binding}: {e}\n{hir}"));
            for (isa, prepack) in kernel_paths() {
                let opts = CompileOptions {
                    isa: Some(isa),
                    prepack,
                    ..options(optimize)
                };
                let path = format!("optimize={optimize} isa={isa} prepack={prepack}");
                let got = pipe
                    .get_or_compile(binding, || hir.clone(), &opts)
                    .and_then(|g| g.run(&refs(inputs)))
                    .unwrap_or_else(|e| panic!("compiled ({path}) under {binding}: {e}\n{hir}"));
                if let Err(e) = compare(&got, &want, exact) {
                    panic!("{path} under {binding}: {e}\n{hir}");
                }
            }
            last = want;
        }
    }
    last
}

/// Deterministic values in `[-scale, scale]`.
pub fn spread(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| (((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0) * scale)
        .collect()
}

/// Linears of the reduced-precision tests, weights `[out, in]`: `y0 = gelu(x @ w0^T + b0)`,
/// and `y1 = silu(x @ wg^T) * (x @ wu^T)` (a linear group once fused); `x` is `[rows, k]`.
pub fn linears(k: usize, n: usize) -> rlx_ir::HirModule {
    use rlx_ir::{DType, Dim, HirModule, HirMut, Shape, UnaryOp};
    let mut m = HirModule::new("linears");
    let mut g = HirMut::new(&mut m);
    let rows = g.dim("rows", 1, 512).unwrap();
    let x = g
        .input("x", DType::F32, Shape(vec![rows, Dim::constant(k as i64)]))
        .unwrap();
    let (k, n) = (k as i64, n as i64);
    let w0 = g.param("w0", DType::F32, Shape::new(&[n, k])).unwrap();
    let b0 = g.param("b0", DType::F32, Shape::new(&[n])).unwrap();
    let wg = g.param("wg", DType::F32, Shape::new(&[n, k])).unwrap();
    let wu = g.param("wu", DType::F32, Shape::new(&[n, k])).unwrap();
    let y0 = g.linear_t(x, w0, Some(b0), Some(UnaryOp::Gelu)).unwrap();
    let gate = g.linear_t(x, wg, None, Some(UnaryOp::Silu)).unwrap();
    let up = g.linear_t(x, wu, None, None).unwrap();
    let y1 = g.binary(rlx_ir::BinaryOp::Mul, gate, up).unwrap();
    g.output("y0", y0).unwrap();
    g.output("y1", y1).unwrap();
    m
}
