//! Arbitrary builder sequences through the whole pipeline: build, template, specialize,
//! compile, run.

use rlx_ir::{
    BinaryOp, CompareOp, DType, Dim, DimBinding, HirModule, HirMut, ReduceOp, Shape, TensorData,
    UnaryOp, ValueId,
};
use rlx_runtime::cpu::Isa;
use rlx_runtime::{CompileOptions, Device, ModelCompilePipeline, TensorRef};

use crate::{Bytes, host};

/// Tensors larger than this are not filled or run (the run would only be slow).
const MAX_ELEMS: usize = 1 << 16;

const DTYPES: [DType; 6] = [
    DType::F32,
    DType::F32,
    DType::F32,
    DType::I64,
    DType::I32,
    DType::Bool,
];

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let hir = build(&mut b);
    let opts = CompileOptions {
        optimize: b.bool(),
        prepack: b.bool(),
        isa: Some(b.pick(&Isa::available())),
        num_threads: Some(1 + b.below(2)),
        ..CompileOptions::default()
    };
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    if pipe.build_template(|| hir.clone(), &opts).is_err() {
        return;
    }
    let Ok(store) = pipe.params().cloned() else {
        return;
    };
    for spec in store.specs() {
        if spec.numel > MAX_ELEMS {
            return;
        }
        let data = fill(&mut b, spec.dtype, spec.numel);
        let _ = store.set(&spec.name, host(&data));
    }
    for _ in 0..2 {
        let binding = DimBinding::new()
            .with("n", b.i64())
            .with("m", b.i64());
        let Ok(g) = pipe.get_or_compile(&binding, || hir.clone(), &opts) else {
            continue;
        };
        let mut feeds = Vec::new();
        for e in &g.manifest().inputs {
            let Some(shape) = e.shape.as_static() else {
                return;
            };
            let n: usize = shape.iter().product();
            if n > MAX_ELEMS {
                return;
            }
            feeds.push((e.name.clone(), fill(&mut b, e.dtype, n)));
        }
        let refs: Vec<(&str, TensorRef<'_>)> = feeds
            .iter()
            .map(|(name, d)| (name.as_str(), TensorRef { data: host(d), shape: None }))
            .collect();
        let _ = g.run(&refs);
    }
}

fn fill(b: &mut Bytes<'_>, dtype: DType, n: usize) -> TensorData {
    const F: [f32; 10] = [
        0.0,
        1.0,
        -2.5,
        0.5,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e-30,
        88.5,
    ];
    match dtype {
        DType::F32 => TensorData::F32((0..n).map(|_| b.pick(&F)).collect()),
        DType::I64 => TensorData::I64((0..n).map(|_| b.i64()).collect()),
        DType::I32 => TensorData::I32((0..n).map(|_| b.i64() as i32).collect()),
        DType::Bool => TensorData::Bool((0..n).map(|_| b.bool()).collect()),
    }
}

fn build(b: &mut Bytes<'_>) -> HirModule {
    let mut m = HirModule::new("fuzz");
    let mut g = HirMut::new(&mut m);
    const BOUNDS: [(i64, i64); 6] = [(0, 8), (1, 4), (0, 0), (1, 1 << 40), (3, 3), (0, 1 << 62)];
    let _ = g.dim("n", b.pick(&BOUNDS).0, b.pick(&BOUNDS).1);
    let _ = g.dim("m", b.pick(&BOUNDS).0, b.pick(&BOUNDS).1);
    let (n, mm) = (Dim::sym("n"), Dim::sym("m"));
    let dims = [
        Dim::constant(0),
        Dim::constant(1),
        Dim::constant(2),
        Dim::constant(3),
        Dim::constant(4),
        Dim::constant(8),
        Dim::constant(16),
        n.clone(),
        mm.clone(),
        &n + &Dim::constant(1),
        &n * &mm,
        &n - &Dim::constant(1),
        Dim::constant(1 << 40),
        Dim::sym("undeclared"),
    ];
    let mut vals: Vec<ValueId> = Vec::new();
    let steps = 1 + b.below(24);
    for i in 0..steps {
        let shape = |b: &mut Bytes<'_>| {
            let rank = b.below(5);
            Shape((0..rank).map(|_| b.pick(&dims)).collect())
        };
        let op = b.u8() % 22;
        if op >= 4 && vals.is_empty() {
            continue;
        }
        let v = |b: &mut Bytes<'_>| b.pick(&vals);
        let r = match op {
            0 => g.input(&format!("in{i}"), b.pick(&DTYPES), shape(b)),
            1 => g.param(&format!("p{i}"), b.pick(&DTYPES), shape(b)),
            2 => {
                let dims: Vec<usize> = (0..b.below(3)).map(|_| b.below(5)).collect();
                let n = dims.iter().product();
                let dtype = b.pick(&DTYPES);
                let data = fill(b, dtype, n);
                g.constant(&dims, data)
            }
            3 => g.scalar(b.pick(&[0.0, 1.0, -1.0, f32::NAN, 1e38])),
            4 => g.binary(b.pick(BinaryOp::ALL), v(b), v(b)),
            5 => g.unary(b.pick(UnaryOp::ALL), v(b)),
            6 => g.matmul(v(b), v(b)),
            7 => {
                let (x, w) = (v(b), v(b));
                let bias = b.bool().then(|| v(b));
                let act = b.bool().then(|| b.pick(UnaryOp::ALL));
                g.linear_with(x, w, bias, act, b.bool())
            }
            8 => g.softmax(v(b), b.i64()),
            9 => g.layer_norm(v(b), v(b), v(b), b.pick(&[1e-5, 0.0, -1.0])),
            10 => g.rms_norm(v(b), v(b), b.pick(&[1e-6, 0.0])),
            11 => {
                let axes: Vec<i64> = (0..b.below(3)).map(|_| b.i64()).collect();
                g.reduce(b.pick(ReduceOp::ALL), v(b), &axes, b.bool())
            }
            12 => g.reshape(v(b), shape(b)),
            13 => {
                let perm: Vec<usize> = (0..b.below(5)).map(|_| b.below(6)).collect();
                g.transpose(v(b), &perm)
            }
            14 => {
                let xs: Vec<ValueId> = (0..1 + b.below(3)).map(|_| v(b)).collect();
                g.concat(&xs, b.i64())
            }
            15 => {
                let x = v(b);
                let end = b.bool().then(|| b.pick(&dims));
                g.slice(x, b.i64(), b.pick(&dims), end)
            }
            16 => g.gather(v(b), v(b), b.i64()),
            17 => g.cast(v(b), b.pick(&DTYPES)),
            18 => g.compare(b.pick(CompareOp::ALL), v(b), v(b)),
            19 => g.where_(v(b), v(b), v(b)),
            20 => {
                let (q, k, val) = (v(b), v(b), v(b));
                let mask = b.bool().then(|| v(b));
                let scale = b.bool().then(|| b.pick(&[0.5, 0.0, f32::NAN]));
                g.attention(q, k, val, mask, scale, b.bool())
            }
            _ => {
                let x = v(b);
                g.output(&format!("out{i}"), x).map(|()| x)
            }
        };
        if let Ok(id) = r {
            vals.push(id);
        }
    }
    if let Some(&last) = vals.last() {
        let _ = g.output("y", last);
    }
    m
}
