//! The payload of an entry: a compile result in postcard form. A variant's entry leaves out
//! the HIR (it shares its template's).

use std::sync::Arc;

use rlx_ir::{HirModule, LirModule};
use rlx_opt::{CompileReport, CompileResult};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct StoredResult {
    pub hir: Option<HirModule>,
    pub lir: LirModule,
    pub fingerprint: u64,
    pub hir_ops_before: usize,
    pub hir_ops_after: usize,
    pub fusions: Vec<String>,
    pub near_misses: Vec<String>,
}

/// `result` as a payload; `with_hir` for a template.
pub fn encode_result(result: &CompileResult, with_hir: bool) -> Option<Vec<u8>> {
    let stored = StoredResult {
        hir: with_hir.then(|| (*result.hir).clone()),
        lir: result.lir.clone(),
        fingerprint: result.fingerprint,
        hir_ops_before: result.report.hir_ops_before,
        hir_ops_after: result.report.hir_ops_after,
        fusions: result.report.fusions.clone(),
        near_misses: result.report.near_misses.clone(),
    };
    postcard::to_allocvec(&stored).ok()
}

/// The compile result in `payload`, verified; `None` if it does not decode or verify (the
/// checksums passed, so that is a crafted or incompatible entry). A variant takes
/// `template_hir`; a template must carry its own.
pub fn decode_result(
    payload: &[u8],
    template_hir: Option<&Arc<HirModule>>,
) -> Option<CompileResult> {
    // Decoding and verifying touch every dim and shape of untrusted data: a panic anywhere in
    // there is a bad entry, not a crash.
    std::panic::catch_unwind(|| {
        let stored: StoredResult = postcard::from_bytes(payload).ok()?;
        let hir = match (stored.hir, template_hir) {
            (Some(h), None) => {
                h.verify().ok()?;
                Arc::new(h)
            }
            (None, Some(t)) => t.clone(),
            _ => return None,
        };
        stored.lir.verify().ok()?;
        let report = CompileReport {
            hir_ops_before: stored.hir_ops_before,
            hir_ops_after: stored.hir_ops_after,
            kernels: stored.lir.kernels.len(),
            fusions: stored.fusions,
            near_misses: stored.near_misses,
            ..CompileReport::default()
        };
        Some(CompileResult {
            hir,
            lir: stored.lir,
            report,
            fingerprint: stored.fingerprint,
        })
    })
    .ok()
    .flatten()
}
