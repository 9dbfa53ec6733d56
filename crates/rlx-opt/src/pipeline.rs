//! The pass pipeline, in order, readable top to bottom. Pass names drive the report and logs.

use std::sync::Arc;
use std::time::Instant;

use rlx_ir::key::stable_key;
use rlx_ir::{HirModule, IrError, Result};

use crate::passes::PassLog;
use crate::{CompileReport, CompileResult, lower, passes};

/// A pass rewrites a module (and notes what it did); it must leave it valid for the verifier.
pub type Pass = fn(HirModule, &mut PassLog) -> Result<HirModule>;

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
        let passes: Vec<(&'static str, Pass)> = vec![
            ("fold_constants", passes::fold_constants::run),
            ("simplify", passes::simplify::run),
            ("fuse_gelu", passes::fuse_gelu::run),
            ("fuse_silu", passes::fuse_silu::run),
            ("cse", passes::cse::run),
            ("dce", passes::dce::run),
            // Bias adds join their matmuls first, so q/k/v projections are linears for fuse_qkv.
            ("fuse_epilogue", passes::fuse_epilogue::run),
            // Attention before the elementwise fusions that would take its scale and mask ops.
            ("fuse_attention", passes::fuse_attention::run),
            // Drops the unfused attention ops, whose uses would hide single-user producers.
            ("dce", passes::dce::run),
            ("fuse_qkv", passes::fuse_qkv::run),
            // Gate and up projections of a SwiGLU MLP: after fuse_epilogue folded the silu.
            ("fuse_swiglu", passes::fuse_swiglu::run),
            ("fuse_softmax", passes::fuse_softmax::run),
            ("fuse_add_norm", passes::fuse_add_norm::run),
            ("fuse_elementwise", passes::fuse_elementwise::run),
            // Last: convolutions with every epilogue they can take (a residual read in the
            // layout it was made in); drops nothing, the back-transposes no one reads go next.
            ("channels_last", passes::channels_last::run),
            ("dce", passes::dce::run),
        ];
        Pipeline {
            passes,
            verify_each: cfg!(debug_assertions),
        }
    }

    /// The standard passes named in `names`, run in the order given (for tests and tools).
    pub fn only(names: &[&str]) -> Result<Pipeline> {
        let std = Pipeline::standard();
        let passes = names
            .iter()
            .map(|n| match std.passes.iter().find(|(m, _)| m == n) {
                Some(p) => Ok(*p),
                None => Err(IrError::Graph(format!(
                    "unknown pass `{n}`; passes are {:?}",
                    std.pass_names()
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Pipeline {
            passes,
            verify_each: std.verify_each,
        })
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
        // A user mistake, reported as one (the verifier would call it an rlx bug).
        if hir.outputs.is_empty() {
            return Err(IrError::Graph(format!(
                "graph `{}` has no outputs: mark at least one value with output(name, value)",
                hir.name
            )));
        }
        hir.verify()?;
        let mut report = CompileReport {
            hir_ops_before: hir.len(),
            ..Default::default()
        };
        let debug = debug_level();
        let mut hir = hir;
        let mut log = PassLog::default();
        for (name, pass) in &self.passes {
            let t = Instant::now();
            hir = pass(hir, &mut log)?;
            report.passes.push((name, t.elapsed()));
            if self.verify_each {
                hir.verify().map_err(|e| match e {
                    IrError::Verify { what, mut problems } => {
                        problems.insert(0, format!("after pass `{name}`:"));
                        IrError::Verify { what, problems }
                    }
                    other => other,
                })?;
            }
            if debug >= 2 {
                eprintln!("[rlx] IR after {name}:\n{hir}");
            }
        }
        report.fusions = log.fusions;
        report.near_misses = log.near_misses;
        report.hir_ops_after = hir.len();
        let t = Instant::now();
        let lir = lower(&hir)?;
        report.lower_time = t.elapsed();
        report.kernels = lir.kernels.len();
        if self.verify_each {
            lir.verify()?;
        }
        if debug >= 1 {
            eprintln!("[rlx] {report}");
        }
        if debug >= 3 {
            eprintln!("[rlx] LIR template:\n{lir}");
        }
        // The whole IR (constants included), not its abbreviated text.
        let structure = rlx_ir::key::structural_digest(&hir)
            .map(|d| rlx_ir::key::hex(&d))
            .unwrap_or_else(|| hir.to_string());
        let fingerprint = stable_key(&["rlx-template/2", &self.pass_names().join(","), &structure]);
        Ok(CompileResult {
            hir: Arc::new(hir),
            lir,
            report,
            fingerprint,
        })
    }
}

/// `RLX_DEBUG`: 0 quiet, 1 compile report, 2 + IR after every pass, 3 + LIR and arena plans.
pub fn debug_level() -> u8 {
    std::env::var("RLX_DEBUG")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
