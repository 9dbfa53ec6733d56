//! A batch run one sample at a time: for a graph that computes each sample on its own
//! (`rlx_opt::per_sample`), with activations much larger than its weights, a batch variant
//! can run its one-sample variant once per sample. Each sample's activations then stay in
//! cache from layer to layer, where the whole batch's would stream through memory between
//! layers; the weights, read once per sample, are the smaller cost. The samples are spread
//! over the pool's threads (each runs its samples' kernels, lending a hand where another
//! falls behind). The results are the batch variant's up to rounding: the same ops on the same
//! rows, perhaps blocked otherwise.

use std::sync::Arc;

use rayon::ThreadPool;
use rayon::prelude::*;
use rlx_ir::{LirModule, TensorData};

use crate::backend::{Executable, StopCheck};
use crate::compiled::CompiledGraph;
use crate::params::ParamData;
use crate::tensor::{HostData, StateMut};
use crate::{Error, Result};

/// Activation bytes (the batch variant's arena) from which a batch runs sample by sample:
/// a few MiB no longer stay in a core's L2 from one layer to the next.
const MIN_ACTIVATIONS: usize = 4 << 20;
/// Activations must outweigh the weights this many times: each sample reads every weight
/// again (ResNet-50's 100 MB of weights against 8 or 16 images' activations stay batched;
/// MobileNet v2's 14 MB run 8 images apart, 1 thread 83.6 -> 66.1 ms, 2 threads 41.0 ->
/// 35.0; at 4 times they stayed batched, at 1 ResNet-50 b8 ran apart, 2 threads 280 -> 378).
const ACTIVATIONS_PER_WEIGHT: usize = 2;
/// Activation bytes per sample from which a sample is worth a run of its own: an image's
/// feature maps, not a row of an MLP (thousands of one-row runs would cost more than the
/// cache saves, and read the weights once per row).
const MIN_SAMPLE_ACTIVATIONS: usize = 256 << 10;

/// Whether the batch variant `lir` (of `samples` samples) runs faster sample by sample.
pub(crate) fn worth_it(lir: &LirModule, samples: usize) -> bool {
    let activations = lir.arena.as_ref().map_or(0, |a| a.size);
    let weights = lir.params.iter().fold(0usize, |acc, p| {
        acc.saturating_add(lir.static_bytes(p.buffer).unwrap_or(usize::MAX))
    });
    samples >= 2
        && lir.states.is_empty()
        && activations >= MIN_ACTIVATIONS
        && activations / samples >= MIN_SAMPLE_ACTIVATIONS
        && activations / ACTIVATIONS_PER_WEIGHT >= weights
}

/// The batch variant's executable: its one-sample variant run once per sample.
pub(crate) struct PerSample {
    /// The batch variant's module: what the graph is (its inputs, outputs and shapes).
    lir: Arc<LirModule>,
    one: Arc<CompiledGraph>,
    /// Elements of each input of the one-sample variant, in manifest order.
    one_numels: Vec<usize>,
    samples: usize,
    pool: Arc<ThreadPool>,
    /// The process that owns `pool`: a forked child runs on a pool of its own (`pool.rs`).
    pool_pid: u32,
}

impl PerSample {
    /// `one` is the variant of the same template with the batch symbol bound to 1.
    pub(crate) fn new(
        lir: Arc<LirModule>,
        one: Arc<CompiledGraph>,
        samples: usize,
        pool: Arc<ThreadPool>,
    ) -> Result<PerSample> {
        let (a, b) = (&lir, one.lir());
        let same_io = a.inputs.len() == b.inputs.len()
            && a.outputs.len() == b.outputs.len()
            && a.params.len() == b.params.len()
            && a.states.is_empty();
        if !same_io || samples == 0 {
            return Err(Error::Compile(format!(
                "`{}` cannot run sample by sample: its one-sample variant has other inputs, \
                 outputs or params",
                lir.name
            )));
        }
        Ok(PerSample {
            lir,
            one_numels: one.input_numels(),
            one,
            samples,
            pool,
            pool_pid: crate::fork_lock::current_pid(),
        })
    }
}

/// Sample `i` of `d` (elements `i * one ..`) when `d` holds `n` samples of `one` elements,
/// else all of `d` (an input shared by every sample).
fn sample<'a>(d: &HostData<'a>, one: usize, n: usize, i: usize) -> HostData<'a> {
    if d.len() != one.saturating_mul(n) || d.len() == one {
        return *d;
    }
    let r = i * one..(i + 1) * one;
    match d {
        HostData::F32(v) => HostData::F32(&v[r]),
        HostData::I64(v) => HostData::I64(&v[r]),
        HostData::I32(v) => HostData::I32(&v[r]),
        HostData::Bool(v) => HostData::Bool(&v[r]),
    }
}

/// Per-sample outputs, one list per sample, joined along axis 0.
fn join(per_sample: Vec<Vec<TensorData>>, outputs: usize) -> Result<Vec<TensorData>> {
    if per_sample.is_empty() || per_sample.iter().any(|outs| outs.len() != outputs) {
        return Err(Error::Compile(format!(
            "a sample's run did not give the graph's {outputs} outputs"
        )));
    }
    let mut joined = Vec::with_capacity(outputs);
    for o in 0..outputs {
        let parts = per_sample.iter().map(|outs| &outs[o]);
        let total = parts.clone().map(TensorData::len).sum();
        let first = &per_sample[0][o];
        let mut all = TensorData::zeros(first.dtype(), total)
            .map_err(|_| Error::Memory(format!("cannot allocate output {o} ({total} elements)")))?;
        let mut at = 0;
        for p in parts {
            match (&mut all, p) {
                (TensorData::F32(a), TensorData::F32(p)) => a[at..at + p.len()].copy_from_slice(p),
                (TensorData::I64(a), TensorData::I64(p)) => a[at..at + p.len()].copy_from_slice(p),
                (TensorData::I32(a), TensorData::I32(p)) => a[at..at + p.len()].copy_from_slice(p),
                (TensorData::Bool(a), TensorData::Bool(p)) => {
                    a[at..at + p.len()].copy_from_slice(p)
                }
                _ => {
                    return Err(Error::Compile(format!(
                        "output {o} changed dtype between samples"
                    )));
                }
            }
            at += p.len();
        }
        joined.push(all);
    }
    Ok(joined)
}

impl Executable for PerSample {
    fn execute(
        &self,
        inputs: &[HostData<'_>],
        params: &[Arc<ParamData>],
        states: &mut [StateMut<'_>],
        stop: Option<StopCheck<'_>>,
    ) -> Result<Vec<TensorData>> {
        if !states.is_empty() {
            return Err(Error::Binding(format!(
                "`{}` runs sample by sample and takes no states",
                self.lir.name
            )));
        }
        let one = &self.one_numels;
        if inputs.len() != one.len() {
            return Err(Error::Binding(format!(
                "`{}` takes {} inputs, got {}",
                self.lir.name,
                one.len(),
                inputs.len()
            )));
        }
        let exec = self.one.executable();
        let run = |i: usize| {
            let mine: Vec<HostData> = inputs
                .iter()
                .zip(one)
                .map(|(d, n)| sample(d, *n, self.samples, i))
                .collect();
            exec.execute(&mine, params, &mut [], stop)
        };
        let all = || {
            (0..self.samples)
                .into_par_iter()
                .map(run)
                .collect::<Result<Vec<_>>>()
        };
        let outs = crate::cpu::run_on(&self.pool, self.pool_pid, false, all)??;
        join(outs, self.lir.outputs.len())
    }

    fn prepare(&self, params: &[Option<Arc<ParamData>>]) -> Result<()> {
        self.one.executable().prepare(params)
    }

    fn module(&self) -> &LirModule {
        &self.lir
    }

    fn isa(&self) -> Option<&'static str> {
        self.one.executable().isa()
    }

    fn gemm_precision(&self) -> Option<&'static str> {
        self.one.executable().gemm_precision()
    }

    fn samples_apart(&self) -> Option<usize> {
        Some(self.samples)
    }
}
