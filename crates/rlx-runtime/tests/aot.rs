//! The disk cache from Rust: a second pipeline on the same directory reads the template and
//! the variant back (no passes, no specialization) with identical results; a damaged entry is
//! a counted miss that is rebuilt.

mod common;

use std::sync::Arc;

use common::*;
use rlx_ir::DimBinding;
use rlx_runtime::{AotCache, CompileOptions, Device, ModelCompilePipeline};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rlx-aot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run_once(aot: &Arc<AotCache>) -> (Vec<f32>, rlx_runtime::PipelineStats) {
    let opts = CompileOptions::new();
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    let binding = DimBinding::new().with("batch", 5);
    let g = pipe
        .get_or_specialize_aot(&binding, mlp, &opts, aot)
        .and_then(|g| {
            for (name, w) in mlp_weights() {
                g.set_param(name, &w)?;
            }
            Ok(g)
        })
        .unwrap();
    let x = weights(9, 5 * 16);
    let out = g.run(&[("x", (&x).into())]).unwrap();
    (out[0].as_f32().unwrap().to_vec(), pipe.stats().clone())
}

#[test]
fn a_second_pipeline_reads_template_and_variant_back() {
    let dir = temp_dir("round-trip");
    let aot = Arc::new(AotCache::open(&dir, None));
    let (first, s1) = run_once(&aot);
    assert!(!s1.template_from_disk && s1.variants_from_disk == 0);
    assert_eq!(aot.stats().writes, 2);
    let (second, s2) = run_once(&aot);
    assert!(s2.template_from_disk, "{s2:?}");
    assert_eq!(s2.variants_from_disk, 1);
    assert_eq!(first, second);
    assert_eq!(aot.stats().hits, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damaged_entries_are_counted_misses_and_rebuilt() {
    let dir = temp_dir("damage");
    let aot = Arc::new(AotCache::open(&dir, None));
    let (want, _) = run_once(&aot);
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rlx"))
        .collect();
    assert_eq!(entries.len(), 2);
    for (i, path) in entries.iter().enumerate() {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() / (2 + i);
        bytes[at] ^= 0x40;
        std::fs::write(path, &bytes).unwrap();
    }
    let aot = Arc::new(AotCache::open(&dir, None));
    let (got, s) = run_once(&aot);
    assert_eq!(got, want);
    assert!(!s.template_from_disk);
    assert_eq!(aot.stats().recovered, 2, "{:?}", aot.stats());
    // Rebuilt: the next pipeline hits both.
    let (again, s) = run_once(&aot);
    assert_eq!(again, want);
    assert!(s.template_from_disk && s.variants_from_disk == 1);
    let _ = std::fs::remove_dir_all(&dir);
}
