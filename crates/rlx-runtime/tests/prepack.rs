//! Pre-packed weights: packed once per binding, shared by every variant, dropped on rebind,
//! absent with `prepack = false`; results equal with and without packing on every ISA.

mod common;

use common::*;
use rlx_ir::DimBinding;
use rlx_runtime::cpu::Isa;
use rlx_runtime::{CompileOptions, Device, ModelCompilePipeline};

fn pipeline(opts: &CompileOptions) -> ModelCompilePipeline {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    pipe.build_template(mlp, opts).unwrap();
    for (name, w) in mlp_weights() {
        pipe.set_param(name, &w).unwrap();
    }
    pipe
}

fn batch(n: i64) -> DimBinding {
    DimBinding::new().with("batch", n)
}

#[test]
fn packed_panels_are_built_once_and_shared_by_every_variant() {
    let opts = CompileOptions::new();
    let mut pipe = pipeline(&opts);
    let store = pipe.params().unwrap().clone();
    assert!(
        store.derived_addrs("w1").is_empty(),
        "nothing packed before a compile"
    );
    pipe.get_or_compile(&batch(3), mlp, &opts).unwrap();
    let first = store.derived_addrs("w1");
    assert_eq!(first.len(), 1, "one packed copy of w1");
    let bytes = store.derived_bytes();
    assert!(bytes >= (16 * 24 + 24 * 8) * 4, "{bytes} bytes packed");
    // A second variant, and runs of both: the same panels, nothing packed again.
    let g = pipe.get_or_compile(&batch(1000), mlp, &opts).unwrap();
    let x = weights(9, 1000 * 16);
    g.run(&[("x", (&x).into())]).unwrap();
    assert_eq!(store.derived_addrs("w1"), first);
    assert_eq!(store.derived_bytes(), bytes);
    // Rebinding drops the old panels; the next run packs the new weight.
    let w1 = weights(7, 16 * 24);
    pipe.set_param("w1", &w1).unwrap();
    assert!(store.derived_addrs("w1").is_empty());
    g.run(&[("x", (&x).into())]).unwrap();
    assert_eq!(store.derived_addrs("w1").len(), 1);
}

#[test]
fn prepack_off_reads_the_bound_arrays_and_agrees_on_every_isa() {
    let x = weights(5, 37 * 16);
    let want = naive_mlp(&x, &mlp_weights());
    for isa in Isa::available() {
        for prepack in [true, false] {
            let opts = CompileOptions {
                isa: Some(isa),
                prepack,
                ..CompileOptions::new()
            };
            let mut pipe = pipeline(&opts);
            let g = pipe.get_or_compile(&batch(37), mlp, &opts).unwrap();
            let out = g.run(&[("x", (&x).into())]).unwrap();
            let err = max_abs_diff(out[0].as_f32().unwrap(), &want);
            assert!(err < 1e-5, "{isa} prepack={prepack}: max abs error {err}");
            let packed = pipe.params().unwrap().derived_bytes();
            assert_eq!(
                packed == 0,
                !prepack,
                "{isa} prepack={prepack}: {packed} bytes"
            );
        }
    }
}

#[test]
fn an_isa_the_cpu_lacks_is_an_error_not_a_crash() {
    for isa in Isa::ALL.into_iter().filter(|i| !i.supported()) {
        let opts = CompileOptions {
            isa: Some(isa),
            ..CompileOptions::new()
        };
        let mut pipe = pipeline(&opts);
        let err = pipe.get_or_compile(&batch(2), mlp, &opts).unwrap_err();
        assert!(err.to_string().contains(isa.name()), "{err}");
    }
}

/// One "process": a pipeline on `dir` (or none) with the MLP bound; returns its output on a
/// fixed batch and the bytes of packed panels it holds privately.
fn run_with_shared(dir: Option<&std::path::Path>, opts: &CompileOptions) -> (Vec<f32>, usize) {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    if let Some(d) = dir {
        pipe.set_aot(Some(std::sync::Arc::new(rlx_runtime::AotCache::open(
            d, None,
        ))));
    }
    pipe.build_template(mlp, opts).unwrap();
    for (name, w) in mlp_weights() {
        pipe.set_param(name, &w).unwrap();
    }
    let g = pipe.get_or_compile(&batch(7), mlp, opts).unwrap();
    let x = weights(3, 7 * 16);
    let y = g.run(&[("x", (&x).into())]).unwrap()[0]
        .as_f32()
        .unwrap()
        .to_vec();
    (y, pipe.params().unwrap().derived_bytes())
}

fn pack_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("packed"))
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "pack"));
    v.sort();
    v
}

#[test]
fn packed_panels_are_shared_through_files_and_damage_is_a_miss() {
    let dir = std::env::temp_dir().join(format!("rlx-shared-panels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for precision in [rlx_runtime::Precision::F32, rlx_runtime::Precision::Bf16] {
        // bf16 on a CPU without bf16 dots: rounded f32 panels, shared the same way.
        let isa = if precision == rlx_runtime::Precision::Bf16 {
            Some(Isa::Avx2)
        } else {
            None
        };
        if isa.is_some_and(|i| !i.supported()) {
            continue;
        }
        let opts = CompileOptions {
            precision,
            isa,
            ..CompileOptions::new()
        };
        let (want, private) = run_with_shared(None, &opts);
        assert!(private > 0, "without a directory the panels are private");
        // The first process writes the files, a second maps them: same results, nothing private.
        let (first, private) = run_with_shared(Some(&dir), &opts);
        assert_eq!(first, want);
        assert_eq!(private, 0, "panels mapped from the shared files");
        let files = pack_files(&dir);
        assert!(!files.is_empty(), "no panel files in {dir:?}");
        let (second, _) = run_with_shared(Some(&dir), &opts);
        assert_eq!(second, want);
        // A damaged file (a flipped payload byte, a truncation) is rebuilt and replaced.
        for (i, f) in files.iter().enumerate() {
            let mut bytes = std::fs::read(f).unwrap();
            if i % 2 == 0 {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x40;
            } else {
                bytes.truncate(bytes.len() / 2);
            }
            std::fs::write(f, bytes).unwrap();
        }
        let (again, private) = run_with_shared(Some(&dir), &opts);
        assert_eq!(again, want, "{precision:?}: a damaged panel file was used");
        assert_eq!(private, 0);
    }
    // A directory that cannot be created: panels stay private, results unchanged.
    let blocker = dir.join("blocked");
    std::fs::write(&blocker, b"a file where the directory should be").unwrap();
    let (y, private) = run_with_shared(Some(&blocker), &CompileOptions::new());
    assert_eq!(y, run_with_shared(None, &CompileOptions::new()).0);
    assert!(private > 0);
    let _ = std::fs::remove_dir_all(&dir);
}
