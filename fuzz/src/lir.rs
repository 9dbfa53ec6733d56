//! A specialized module (linear, layer norm, attention, softmax, a reshape view) edited at
//! random and handed to the CPU backend: what `compile_lir` accepts must run safely.

use std::sync::Arc;

use rlx_ir::lir::{BufferId, BufferKind, KernelOp};
use rlx_ir::{
    BindingManifest, DType, Dim, DimBinding, HirModule, HirMut, LirModule, Shape, TensorData,
};
use rlx_runtime::{CompileOptions, Device, HostData, ModelCompilePipeline, ParamStore, backend_for};

use crate::{Bytes, host};

fn model() -> Option<HirModule> {
    let mut m = HirModule::new("lir-fuzz");
    let mut g = HirMut::new(&mut m);
    let s = g.dim("s", 1, 64).ok()?;
    let d = Dim::constant(8);
    let x = g
        .input("x", DType::F32, Shape(vec![Dim::constant(1), s.clone(), d.clone()]))
        .ok()?;
    let w = g.param("w", DType::F32, Shape::new(&[8, 8])).ok()?;
    let gamma = g.param("gamma", DType::F32, Shape::new(&[8])).ok()?;
    let beta = g.param("beta", DType::F32, Shape::new(&[8])).ok()?;
    let h = g.linear(x, w, None, None).ok()?;
    let h = g.layer_norm(h, gamma, beta, 1e-5).ok()?;
    let four = Shape(vec![Dim::constant(1), Dim::constant(2), s, Dim::constant(4)]);
    let q = g.reshape(h, four).ok()?;
    let a = g.attention(q, q, q, None, None, true).ok()?;
    let y = g.softmax(a, -1).ok()?;
    g.output("y", y).ok()?;
    Some(m)
}

fn edit(b: &mut Bytes<'_>, lir: &mut LirModule) {
    let nb = lir.buffers.len();
    let id = |b: &mut Bytes<'_>| BufferId(b.below(nb + 2) as u32);
    for _ in 0..1 + b.below(4) {
        match b.u8() % 9 {
            0 => {
                let i = b.below(nb);
                let shape = &mut lir.buffers[i].ty.shape;
                if !shape.0.is_empty() {
                    let j = b.below(shape.0.len());
                    shape.0[j] = Dim::constant(b.pick(&[0, 1, 2, 3, 64, 1 << 20, -1]));
                }
            }
            1 => {
                if let Some(plan) = lir.arena.as_mut() {
                    let i = b.below(plan.offsets.len());
                    plan.offsets[i] = b.bool().then(|| usize::from(b.u16()) * 4);
                }
            }
            2 => {
                if let Some(plan) = lir.arena.as_mut() {
                    plan.size = usize::from(b.u16());
                }
            }
            3 => {
                let k = b.below(lir.kernels.len());
                let kernel = &mut lir.kernels[k];
                if !kernel.inputs.is_empty() {
                    let j = b.below(kernel.inputs.len());
                    kernel.inputs[j] = id(b);
                }
            }
            4 => {
                let k = b.below(lir.kernels.len());
                lir.kernels[k].output = id(b);
            }
            5 => {
                let i = b.below(nb);
                let of = BufferId(b.below(nb) as u32);
                lir.buffers[i].kind = b.pick(&[
                    BufferKind::Input,
                    BufferKind::Param,
                    BufferKind::Temp,
                    BufferKind::Output,
                    BufferKind::View { of },
                ]);
            }
            6 => {
                let i = b.below(nb);
                lir.buffers[i].ty.dtype = b.pick(&[DType::F32, DType::I64, DType::Bool]);
            }
            7 => {
                let (k1, k2) = (b.below(lir.kernels.len()), b.below(lir.kernels.len()));
                lir.kernels[k1].op = lir.kernels[k2].op.clone();
            }
            _ => {
                let k = b.below(lir.kernels.len());
                lir.kernels[k].op = KernelOp::Copy;
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let Some(hir) = model() else { return };
    let opts = CompileOptions {
        num_threads: Some(1),
        ..CompileOptions::default()
    };
    let mut pipe = ModelCompilePipeline::new(Device::Cpu);
    if pipe.build_template(|| hir, &opts).is_err() {
        return;
    }
    let binding = DimBinding::new().with("s", 1 + b.below(64) as i64);
    let Ok(spec) = pipe.specialize_template(&binding, &opts) else {
        return;
    };
    let mut lir = spec.lir;
    edit(&mut b, &mut lir);
    let Ok(backend) = backend_for(Device::Cpu) else {
        return;
    };
    let Ok(exec) = backend.compile_lir(Arc::new(lir), &opts) else {
        return;
    };
    // Accepted: run it with arguments its own manifest describes.
    let Ok(manifest) = BindingManifest::from_lir(exec.module()) else {
        return;
    };
    let Ok(store) = ParamStore::from_manifest(&manifest) else {
        return;
    };
    let mut owned = Vec::new();
    for e in manifest.params.iter().chain(&manifest.inputs) {
        let n: usize = e.shape.as_static().unwrap_or_default().iter().product();
        if n > 1 << 20 {
            return;
        }
        owned.push(match e.dtype {
            DType::F32 => TensorData::F32(vec![0.5; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![true; n]),
        });
    }
    let (params, inputs) = owned.split_at(manifest.params.len());
    for (e, d) in manifest.params.iter().zip(params) {
        let _ = store.set(&e.name, host(d));
    }
    let Ok(params) = store.snapshot() else { return };
    let inputs: Vec<HostData<'_>> = inputs.iter().map(host).collect();
    let _ = exec.execute(&inputs, &params, None);
}
