//! The safe Rust API cannot be made to read memory with the wrong sizes: a backend refuses an
//! inconsistent module, an executable refuses arguments of other sizes or dtypes, and a
//! compiled graph refuses an executable of another module.

mod common;

use std::sync::Arc;

use common::*;
use rlx_ir::lir::{BufferKind, KernelOp};
use rlx_ir::{DimBinding, Shape};
use rlx_runtime::{
    CompileOptions, CompiledGraph, Device, Error, HostData, ModelCompilePipeline, backend_for,
};

fn pipeline() -> ModelCompilePipeline {
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    pipe.build_template(mlp, &CompileOptions::new()).unwrap();
    for (name, w) in mlp_weights() {
        pipe.set_param(name, &w).unwrap();
    }
    pipe
}

fn specialized(pipe: &ModelCompilePipeline, batch: i64) -> rlx_ir::LirModule {
    let binding = DimBinding::new().with("batch", batch);
    pipe.specialize_template(&binding, &CompileOptions::new())
        .unwrap()
        .lir
}

fn compile(lir: rlx_ir::LirModule) -> rlx_runtime::Result<Box<dyn rlx_runtime::Executable>> {
    backend_for(Device::Cpu)?.compile_lir(Arc::new(lir), &CompileOptions::new())
}

fn expect_refused(lir: rlx_ir::LirModule, what: &str) {
    match compile(lir) {
        Err(e) => assert!(!e.to_string().is_empty(), "{what}"),
        Ok(_) => panic!("{what}: an inconsistent module was compiled"),
    }
}

#[test]
fn the_backend_refuses_a_module_whose_sizes_do_not_agree() {
    let pipe = pipeline();
    let good = specialized(&pipe, 4);
    compile(good.clone()).expect("the specialized module compiles");

    // A kernel's output shape edited after planning: the linear would write past it.
    let mut lir = good.clone();
    let out = lir.kernels[0].output;
    lir.buffers[out.index()].ty.shape = Shape::new(&[4, 2]);
    expect_refused(lir, "output shape edited");

    // An input grown: the first linear would read 100 rows from a 4-row feed.
    let mut lir = good.clone();
    let x = lir.inputs[0].buffer;
    lir.buffers[x.index()].ty.shape = Shape::new(&[100, 16]);
    expect_refused(lir, "input shape edited");

    // A temp moved past the end of the arena.
    let mut lir = good.clone();
    let plan = lir.arena.as_mut().unwrap();
    let temp = plan.offsets.iter().position(Option::is_some).unwrap();
    plan.offsets[temp] = Some(plan.size + 4096);
    expect_refused(lir, "arena offset edited");

    // A kernel reading a buffer that does not exist.
    let mut lir = good.clone();
    lir.kernels[0].inputs[0] = rlx_ir::lir::BufferId(10_000);
    expect_refused(lir, "unknown buffer");

    // An input slot pointing at a param buffer.
    let mut lir = good.clone();
    let p = lir.params[0].buffer;
    lir.inputs[0].buffer = p;
    expect_refused(lir, "slot of the wrong kind");

    // A copy kernel between buffers of different sizes.
    let mut lir = good;
    let k = &mut lir.kernels[0];
    k.op = KernelOp::Copy;
    k.inputs.truncate(1);
    assert!(matches!(
        lir.buffer(lir.kernels[0].inputs[0]).kind,
        BufferKind::Input
    ));
    expect_refused(lir, "copy of another size");
}

#[test]
fn an_executable_refuses_arguments_of_other_sizes_or_dtypes() {
    let pipe = pipeline();
    let exec = compile(specialized(&pipe, 4)).unwrap();
    let params = pipe.params().unwrap().snapshot().unwrap();
    let x = weights(5, 4 * 16);
    exec.execute(&[HostData::F32(&x)], &params, &mut [], None)
        .expect("matching arguments run");

    let short = &x[..16];
    let ints = vec![0i32; 4 * 16];
    let cases: Vec<(&str, Vec<HostData<'_>>, Vec<_>)> = vec![
        ("short input", vec![HostData::F32(short)], params.clone()),
        ("input dtype", vec![HostData::I32(&ints)], params.clone()),
        ("no inputs", vec![], params.clone()),
        (
            "params missing",
            vec![HostData::F32(&x)],
            params[..2].to_vec(),
        ),
        (
            "params swapped",
            vec![HostData::F32(&x)],
            vec![
                params[2].clone(),
                params[1].clone(),
                params[0].clone(),
                params[3].clone(),
            ],
        ),
    ];
    for (what, inputs, params) in cases {
        match exec.execute(&inputs, &params, &mut [], None) {
            Err(Error::Binding(msg)) => assert!(!msg.is_empty(), "{what}"),
            other => panic!("{what}: {:?}", other.map(|_| "ran")),
        }
    }
}

#[test]
fn a_compiled_graph_refuses_an_executable_of_another_module() {
    let pipe = pipeline();
    let small = Arc::new(specialized(&pipe, 4));
    let big = specialized(&pipe, 400);
    let exec = compile(big).unwrap();
    let store = pipe.params().unwrap().clone();
    match CompiledGraph::new(small.clone(), exec, store.clone(), Device::Cpu) {
        Err(Error::Binding(msg)) => assert!(msg.contains("another module"), "{msg}"),
        other => panic!("{:?}", other.map(|_| "accepted")),
    }
    let exec = compile((*small).clone()).unwrap();
    CompiledGraph::new(small, exec, store, Device::Cpu).expect("its own module is accepted");
}

/// `o = kv_attention(q, cache_write(kc, k, pos), cache_write(vc, k, pos), pos)` at batch 1.
fn cached_attention() -> rlx_ir::LirModule {
    use rlx_ir::{DType, HirModule, HirMut};
    let mut m = HirModule::new("kv");
    let mut g = HirMut::new(&mut m);
    let q = g.input("q", DType::F32, Shape::new(&[1, 2, 3, 4])).unwrap();
    let k = g.input("k", DType::F32, Shape::new(&[1, 1, 3, 4])).unwrap();
    let pos = g.input("pos", DType::I64, Shape::new(&[1])).unwrap();
    let kc = g
        .state("kc", DType::F32, Shape::new(&[1, 1, 8, 4]))
        .unwrap();
    let vc = g
        .state("vc", DType::F32, Shape::new(&[1, 1, 8, 4]))
        .unwrap();
    let kc = g.cache_write(kc, k, pos).unwrap();
    let vc = g.cache_write(vc, k, pos).unwrap();
    let o = g.kv_attention(q, kc, vc, pos, None).unwrap();
    g.output("o", o).unwrap();
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    pipe.build_template(|| m.clone(), &CompileOptions::new())
        .unwrap();
    pipe.specialize_template(&DimBinding::new(), &CompileOptions::new())
        .unwrap()
        .lir
}

#[test]
fn the_backend_refuses_edited_state_writes() {
    let good = cached_attention();
    compile(good.clone()).expect("the specialized module compiles");
    let writes: Vec<usize> = (0..good.kernels.len())
        .filter(|&k| good.kernels[k].op.name() == "cache_write")
        .collect();
    assert_eq!(writes.len(), 2);
    let (kc, vc) = (good.states[0].buffer, good.states[1].buffer);

    // The new rows read from the state being written (an overlapping copy).
    let mut lir = good.clone();
    lir.kernels[writes[0]].inputs[1] = kc;
    expect_refused(lir, "cache_write reads its own state");

    // A state written by a kernel that is not its cache write.
    let mut lir = good.clone();
    let att = lir
        .kernels
        .iter()
        .position(|k| k.op.name() == "kv_attention")
        .unwrap();
    lir.kernels[att].output = vc;
    expect_refused(lir, "attention writes a state");

    // A state read before it is written.
    let mut lir = good.clone();
    lir.kernels.swap(writes[1], writes[1] + 1);
    expect_refused(lir, "attention before the cache write of its values");

    // One cache write pointed at the other state: written twice, the other never.
    let mut lir = good.clone();
    lir.kernels[writes[1]].inputs[0] = kc;
    lir.kernels[writes[1]].output = kc;
    expect_refused(lir, "a state written twice");

    // A state slot naming a buffer of another kind.
    let mut lir = good.clone();
    lir.states[0].buffer = lir.inputs[0].buffer;
    expect_refused(lir, "a state slot on an input");

    // The arguments: a state of the wrong size, or missing.
    let exec = compile(good.clone()).unwrap();
    let (q, k, pos) = (vec![0.5f32; 24], vec![0.25f32; 12], vec![0i64]);
    let inputs = [HostData::F32(&q), HostData::F32(&k), HostData::I64(&pos)];
    let (mut a, mut b, mut small) = (vec![0f32; 32], vec![0f32; 32], vec![0f32; 31]);
    use rlx_runtime::StateMut;
    let mut states = [StateMut::F32(&mut a), StateMut::F32(&mut small)];
    assert!(
        exec.execute(&inputs, &[], &mut states, None).is_err(),
        "short state"
    );
    assert!(
        exec.execute(&inputs, &[], &mut [], None).is_err(),
        "no states"
    );
    let mut states = [StateMut::F32(&mut a), StateMut::F32(&mut b)];
    exec.execute(&inputs, &[], &mut states, None)
        .expect("good arguments run");
    assert_eq!(&a[..12], &k[..], "the keys went into the cache");
}
