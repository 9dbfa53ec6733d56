//! Step 2: specialize a template for one binding — check the binding, evaluate every size,
//! plan the arena. No pass re-runs; the cost is a walk over the buffers plus the plan.

use std::time::Instant;

use rlx_ir::lir::KernelOp;
use rlx_ir::{ComputeOp, Dim, DimBinding, IrError, Result, Shape};

use crate::{CompileResult, Pipeline, memory_plan};

impl CompileResult {
    /// Binds the template's symbols to `binding` and plans memory for those sizes.
    pub fn specialize(&self, pipeline: &Pipeline, binding: &DimBinding) -> Result<CompileResult> {
        let t = Instant::now();
        if self.is_specialized() {
            rlx_ir::bail!(
                Binding,
                "`{}` is already specialized; specialize the template",
                self.lir.name
            );
        }
        check_binding(&self.lir.symbols, binding)?;
        let mut lir = self.lir.clone();
        for buf in &mut lir.buffers {
            let dims = buf.ty.shape.eval(binding)?;
            // An empty tensor may have huge other dims, but an array library (numpy) must
            // still be able to describe it: their product in bytes stays within isize.
            let extent = dims
                .iter()
                .filter(|&&d| d != 0)
                .try_fold(buf.ty.dtype.size(), |a, &d| a.checked_mul(d))
                .filter(|&n| n <= isize::MAX as usize);
            if extent.is_none() {
                rlx_ir::bail!(
                    Shape,
                    "shape {} is {dims:?} under {binding}: its nonzero dims span more than \
                     isize::MAX bytes of {}, which no array can describe",
                    buf.ty.shape,
                    buf.ty.dtype
                );
            }
            buf.ty.shape = Shape::new(&dims.iter().map(|&d| d as i64).collect::<Vec<_>>());
        }
        for c in &lir.checks {
            let (lhs, rhs) = (c.lhs.eval(binding)?, c.rhs.eval(binding)?);
            if lhs > rhs {
                rlx_ir::bail!(
                    Shape,
                    "{}: {} = {lhs} > {} = {rhs} under {binding}",
                    c.what,
                    c.lhs,
                    c.rhs
                );
            }
        }
        // Kernel attributes that are sizes become constants too.
        for k in &mut lir.kernels {
            if let KernelOp::Compute(ComputeOp::Slice { start, end, .. }) = &mut k.op {
                *start = Dim::constant(start.eval(binding)?);
                *end = Dim::constant(end.eval(binding)?);
            }
        }
        lir.checks.clear();
        lir.binding = Some(binding.clone());
        lir.arena = Some(memory_plan::plan(&lir)?);
        if pipeline.verify_each {
            lir.verify()?;
        }
        if crate::pipeline::debug_level() >= 3 {
            eprintln!("[rlx] specialized {binding}:\n{lir}");
        }
        let mut report = self.report.clone();
        report.specialize_time = t.elapsed();
        Ok(CompileResult {
            hir: self.hir.clone(),
            lir,
            report,
            fingerprint: self.fingerprint,
        })
    }
}

/// Every symbol bound and within bounds, and no name the template does not know.
fn check_binding(symbols: &[rlx_ir::Symbol], binding: &DimBinding) -> Result<()> {
    let unknown: Vec<&str> = binding
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !symbols.iter().any(|s| s.name == *k))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = symbols.iter().map(|s| s.name.as_str()).collect();
        rlx_ir::bail!(
            Binding,
            "unknown symbol(s) {unknown:?}; the template has {known:?}"
        );
    }
    let unbound: Vec<&str> = symbols
        .iter()
        .map(|s| s.name.as_str())
        .filter(|s| binding.get(s).is_none())
        .collect();
    if !unbound.is_empty() {
        return Err(IrError::Binding(format!(
            "symbol(s) {unbound:?} are not bound"
        )));
    }
    for s in symbols {
        s.check(binding.get(&s.name).expect("checked above"))?;
    }
    Ok(())
}
