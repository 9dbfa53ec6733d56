//! The pass pipeline, in order, readable top to bottom. Pass names drive the report and logs.

use std::sync::Arc;
use std::time::Instant;

use rlx_ir::key::stable_key;
use rlx_ir::{HirModule, Result};

use crate::{CompileReport, CompileResult, lower, passes};

/// A pass rewrites a module; it must leave it valid for the verifier.
pub type Pass = fn(HirModule) -> Result<HirModule>;

/// An ordered list of named passes, then lowering.
#[derive(Debug, Clone)]
pub struct Pipeline {
    passes: Vec<(&'static str, Pass)>,
    /// Run the verifier after every pass (on in tests and debug builds).
    pub verify_each: bool,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::standard()
    }
}

impl Pipeline {
    /// The standard pass list.
    pub fn standard() -> Pipeline {
        Pipeline {
            passes: vec![("dce", passes::dce::run)],
            verify_each: cfg!(debug_assertions),
        }
    }

    /// No passes: lowering only.
    pub fn empty() -> Pipeline {
        Pipeline {
            passes: vec![],
            verify_each: cfg!(debug_assertions),
        }
    }

    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|(n, _)| *n).collect()
    }

    /// **Step 1**: verify, run every pass, lower to a (symbolic) LIR template.
    pub fn compile_hir(&self, hir: HirModule) -> Result<CompileResult> {
        hir.verify()?;
        let mut report = CompileReport {
            hir_ops_before: hir.len(),
            ..Default::default()
        };
        let mut hir = hir;
        for (name, pass) in &self.passes {
            let t = Instant::now();
            hir = pass(hir)?;
            report.passes.push((name, t.elapsed()));
            if self.verify_each {
                hir.verify()?;
            }
        }
        report.hir_ops_after = hir.len();
        let t = Instant::now();
        let lir = lower(&hir)?;
        report.lower_time = t.elapsed();
        report.kernels = lir.kernels.len();
        if self.verify_each {
            lir.verify()?;
        }
        let text = hir.to_string();
        let fingerprint = stable_key(&["rlx-template/1", &self.pass_names().join(","), &text]);
        Ok(CompileResult {
            hir: Arc::new(hir),
            lir,
            report,
            fingerprint,
        })
    }
}
