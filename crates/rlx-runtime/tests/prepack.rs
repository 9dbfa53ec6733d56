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
