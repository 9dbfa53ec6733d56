//! What a compile step produces: LIR (template or specialized) plus a report.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rlx_ir::{HirModule, LirModule};

/// Timings and counts of one compile step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompileReport {
    /// Each pass run, in order, with its time.
    pub passes: Vec<(&'static str, Duration)>,
    pub hir_ops_before: usize,
    pub hir_ops_after: usize,
    pub kernels: usize,
    pub lower_time: Duration,
    /// Time of the specialization that made this result (zero for a template).
    pub specialize_time: Duration,
    /// Rewrites the passes did.
    pub fusions: Vec<String>,
    /// Patterns that almost matched, and why they did not.
    pub near_misses: Vec<String>,
}

impl fmt::Display for CompileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "compile report: {} HIR ops -> {} after passes -> {} kernels",
            self.hir_ops_before, self.hir_ops_after, self.kernels
        )?;
        for (name, t) in &self.passes {
            writeln!(f, "  pass {name:<16} {t:>10.1?}")?;
        }
        writeln!(f, "  lower            {:>10.1?}", self.lower_time)?;
        if !self.specialize_time.is_zero() {
            writeln!(f, "  specialize       {:>10.1?}", self.specialize_time)?;
        }
        for x in &self.fusions {
            writeln!(f, "  fused: {x}")?;
        }
        for x in &self.near_misses {
            writeln!(f, "  near miss: {x}")?;
        }
        Ok(())
    }
}

/// A compiled template, or one variant specialized from it.
#[derive(Debug, Clone)]
pub struct CompileResult {
    /// The HIR after passes, shared by the template and all its specializations.
    pub hir: Arc<HirModule>,
    pub lir: LirModule,
    pub report: CompileReport,
    /// Stable structural key of the template (blake3 over its printed IR and pass list).
    pub fingerprint: u64,
}

impl CompileResult {
    pub fn is_specialized(&self) -> bool {
        self.lir.binding.is_some()
    }
}
