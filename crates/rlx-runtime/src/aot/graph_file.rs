//! A symbolic graph (HIR) as bytes, for front ends that cache an import (the ONNX importer):
//! the entry layout of [`super::format`] (magic, version, checksums) around postcard.

use rlx_ir::HirModule;

use crate::error::fail;
use crate::{Error, Result};

fn key() -> String {
    format!("rlx-graph/2 rlx={}", env!("CARGO_PKG_VERSION"))
}

pub fn graph_to_bytes(hir: &HirModule) -> Result<Vec<u8>> {
    let payload = postcard::to_allocvec(hir)
        .map_err(|e| Error::Compile(format!("cannot encode graph `{}`: {e}", hir.name)))?;
    Ok(super::format::encode(&key(), &payload))
}

/// The graph in `bytes`, verified; a `ModelFormat` error for anything else (another rlx
/// version's file included).
pub fn graph_from_bytes(bytes: &[u8]) -> Result<HirModule> {
    let payload = match super::format::decode(bytes, &key()) {
        Ok(p) => p,
        Err(why) => fail!(
            ModelFormat,
            "not a graph file of this rlx version ({why:?})"
        ),
    };
    let decoded = std::panic::catch_unwind(|| {
        let hir: HirModule = postcard::from_bytes(payload).ok()?;
        hir.verify().ok()?;
        Some(hir)
    });
    match decoded {
        Ok(Some(hir)) => Ok(hir),
        _ => fail!(
            ModelFormat,
            "the graph file does not decode to a valid graph"
        ),
    }
}
