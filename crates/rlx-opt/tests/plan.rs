//! Lowering, specialization and the arena plan.

use rlx_ir::lir::BufferKind;
use rlx_ir::{DType, Dim, DimBinding, HirModule, HirMut, Shape, UnaryOp};
use rlx_opt::Pipeline;

fn chain(n: usize) -> HirModule {
    let mut m = HirModule::new("chain");
    let mut g = HirMut::new(&mut m);
    let b = g.dim("b", 0, 1 << 20).unwrap();
    let mut v = g
        .input("x", DType::F32, Shape(vec![b, Dim::constant(16)]))
        .unwrap();
    for _ in 0..n {
        v = g.unary(UnaryOp::Tanh, v).unwrap();
    }
    g.output("y", v).unwrap();
    m
}

#[test]
fn chain_reuses_two_slots() {
    let t = Pipeline::empty().compile_hir(chain(50)).unwrap();
    let s = t
        .specialize(&Pipeline::standard(), &DimBinding::new().with("b", 100))
        .unwrap();
    let plan = s.lir.arena.as_ref().unwrap();
    // 49 temps of 6400 bytes (the last op writes the output); a chain needs only two at a time.
    assert_eq!(plan.temp_bytes, 49 * 6400);
    assert_eq!(plan.max_live_bytes, 2 * 6400);
    assert_eq!(plan.size, 2 * 6400);
    s.lir.verify().unwrap();
}

#[test]
fn template_is_symbolic_and_specialization_is_concrete() {
    let t = Pipeline::standard().compile_hir(chain(3)).unwrap();
    assert!(t.lir.arena.is_none() && !t.is_specialized());
    assert_eq!(t.lir.buffers[0].ty.shape.to_string(), "[b, 16]");
    let s = t
        .specialize(&Pipeline::standard(), &DimBinding::new().with("b", 0))
        .unwrap();
    assert_eq!(s.lir.buffers[0].ty.shape, Shape::new(&[0, 16]));
    assert_eq!(s.fingerprint, t.fingerprint);
    assert!(
        s.specialize(&Pipeline::standard(), &DimBinding::new().with("b", 1))
            .is_err()
    );
    let text = s.lir.to_string();
    assert!(
        text.contains("lir @chain {b=0}") && text.contains("arena"),
        "{text}"
    );
}

#[test]
fn outputs_that_are_not_fresh_kernel_results_are_copied() {
    let mut m = HirModule::new("io");
    let mut g = HirMut::new(&mut m);
    let x = g.input("x", DType::F32, Shape::new(&[2, 3])).unwrap();
    let r = g.reshape(x, Shape::new(&[3, 2])).unwrap();
    let y = g.unary(UnaryOp::Relu, x).unwrap();
    g.set_outputs(vec![
        ("same".into(), x),
        ("view".into(), r),
        ("y".into(), y),
        ("y2".into(), y),
    ])
    .unwrap();
    let lir = rlx_opt::lower(&m).unwrap();
    lir.verify().unwrap();
    let kinds: Vec<_> = lir
        .outputs
        .iter()
        .map(|o| lir.buffer(o.buffer).kind)
        .collect();
    assert!(kinds.iter().all(|k| *k == BufferKind::Output));
    let copies = lir
        .kernels
        .iter()
        .filter(|k| k.op == rlx_ir::lir::KernelOp::Copy)
        .count();
    assert_eq!(copies, 3, "{lir}");
}

#[test]
fn hundred_thousand_ops_compile_and_specialize() {
    let t = Pipeline::empty().compile_hir(chain(100_000)).unwrap();
    let s = t
        .specialize(&Pipeline::standard(), &DimBinding::new().with("b", 2))
        .unwrap();
    assert_eq!(s.lir.kernels.len(), 100_000);
    assert_eq!(s.lir.arena.as_ref().unwrap().size, 2 * 128);
}

#[test]
fn dce_drops_dead_ops_and_overflow_is_an_error() {
    let mut m = chain(2);
    let mut g = HirMut::new(&mut m);
    let x = rlx_ir::ValueId(0);
    g.unary(UnaryOp::Exp, x).unwrap();
    let t = Pipeline::only(&["dce"]).unwrap().compile_hir(m).unwrap();
    assert_eq!((t.report.hir_ops_before, t.report.hir_ops_after), (4, 3));
    let huge = DimBinding::new().with("b", 1 << 20);
    assert!(t.specialize(&Pipeline::standard(), &huge).is_ok());
    let mut m = HirModule::new("big");
    let mut g = HirMut::new(&mut m);
    let n = g.dim("n", 1, i64::MAX).unwrap();
    let x = g.input("x", DType::F32, Shape(vec![n.clone(), n])).unwrap();
    let y = g.unary(UnaryOp::Relu, x).unwrap();
    g.output("y", y).unwrap();
    let t = Pipeline::standard().compile_hir(m).unwrap();
    let e = t
        .specialize(&Pipeline::standard(), &DimBinding::new().with("n", 1 << 40))
        .unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
}

#[test]
fn lir_verifier_catches_overlapping_live_temps() {
    let t = Pipeline::empty().compile_hir(chain(4)).unwrap();
    let mut s = t
        .specialize(&Pipeline::standard(), &DimBinding::new().with("b", 3))
        .unwrap();
    let plan = s.lir.arena.as_mut().unwrap();
    let temps: Vec<usize> = (0..plan.offsets.len())
        .filter(|i| plan.offsets[*i].is_some())
        .collect();
    // Temps 0 and 1 are both live at the kernel that reads one and writes the other.
    plan.offsets[temps[1]] = plan.offsets[temps[0]];
    let e = s.lir.verify().unwrap_err().to_string();
    assert!(e.contains("overlap"), "{e}");
}

#[test]
fn chains_fuse_into_capped_elementwise_programs() {
    let t = Pipeline::standard().compile_hir(chain(100)).unwrap();
    // 100 tanh ops in programs of at most 32 steps (each op is a step, plus one load).
    assert_eq!(t.lir.kernels.len(), 4, "{}", t.report);
    assert!(Pipeline::only(&["nope"]).is_err());
}

#[test]
fn elementwise_kernels_write_in_place() {
    // 100 tanh ops fuse into 4 programs; the 2nd and 3rd overwrite the temp they read last.
    let t = Pipeline::standard().compile_hir(chain(100)).unwrap();
    let s = t
        .specialize(&Pipeline::standard(), &DimBinding::new().with("b", 100))
        .unwrap();
    let plan = s.lir.arena.as_ref().unwrap();
    assert_eq!(plan.in_place.len(), 2, "{}", s.lir);
    assert_eq!((plan.size, plan.max_live_bytes), (6400, 6400));
    s.lir.verify().unwrap();
    // A tampered pair (output not at its input's offset) is caught.
    let mut bad = s.lir.clone();
    let (out, _) = bad.arena.as_ref().unwrap().in_place[0];
    bad.arena.as_mut().unwrap().offsets[out.index()] = Some(6400);
    bad.arena.as_mut().unwrap().size = 12800;
    assert!(bad.verify().is_err());
}

#[test]
fn a_broadcast_f32_binary_op_writes_over_its_full_size_operand() {
    // tanh(x) * s with s [b, 1, 8] broadcast over [b, 16, 8]: the product goes over tanh's
    // temp, which it reads for the last time. tanh(x) + x2, both full size, is not a
    // program at run time (no fusion here) and stays out of place.
    let mut m = HirModule::new("gate");
    let mut g = HirMut::new(&mut m);
    let b = g.dim("b", 1, 64).unwrap();
    let shape = |n: i64| Shape(vec![b.clone(), Dim::constant(n), Dim::constant(8)]);
    let x = g.input("x", DType::F32, shape(16)).unwrap();
    let s = g.input("s", DType::F32, shape(1)).unwrap();
    let t = g.unary(UnaryOp::Tanh, x).unwrap();
    let y = g.mul(t, s).unwrap();
    let u = g.unary(UnaryOp::Tanh, y).unwrap();
    let z = g.add(u, x).unwrap();
    g.output("z", z).unwrap();
    let t = Pipeline::empty().compile_hir(m).unwrap();
    let s = t
        .specialize(&Pipeline::empty(), &DimBinding::new().with("b", 2))
        .unwrap();
    let plan = s.lir.arena.as_ref().unwrap();
    let kernel_of = |out| s.lir.kernels.iter().position(|k| k.output == out).unwrap();
    let ops: Vec<&str> = plan
        .in_place
        .iter()
        .map(|(out, _)| s.lir.kernels[kernel_of(*out)].op.name())
        .collect();
    assert_eq!(ops, ["mul"], "{}", s.lir);
    s.lir.verify().unwrap();
}
