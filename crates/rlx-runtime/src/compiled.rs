//! `CompiledGraph`: one specialized variant, ready to run. Immutable after compile; `run` takes
//! `&self` and may be called from many threads at once.

use std::sync::Arc;

use rlx_ir::{BindingManifest, DimBinding, LirModule};

use crate::error::fail;
use crate::names::hint;
use crate::{
    Device, Executable, HostData, ParamStore, Result, StateMut, StopCheck, Tensor, TensorRef,
};

pub struct CompiledGraph {
    lir: Arc<LirModule>,
    manifest: BindingManifest,
    /// Concrete input shapes, in manifest order.
    input_shapes: Vec<Vec<usize>>,
    output_shapes: Vec<Vec<usize>>,
    exec: Box<dyn Executable>,
    params: Arc<ParamStore>,
    device: Device,
    /// Nanoseconds of the last completed run (0: none yet), shared by every handle.
    last_run_ns: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for CompiledGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledGraph")
            .field("name", &self.lir.name)
            .field("binding", &self.lir.binding)
            .finish()
    }
}

impl CompiledGraph {
    /// Wraps an executable for the specialized `lir`, reading weights from `params`.
    pub fn new(
        lir: Arc<LirModule>,
        exec: Box<dyn Executable>,
        params: Arc<ParamStore>,
        device: Device,
    ) -> Result<Self> {
        if !std::ptr::eq(exec.module(), &*lir) && *exec.module() != *lir {
            fail!(
                Binding,
                "the executable was compiled from another module than `{}`",
                lir.name
            );
        }
        let manifest = BindingManifest::from_lir(&lir)?;
        let shapes = |entries: &[rlx_ir::ManifestEntry]| -> Result<Vec<Vec<usize>>> {
            entries
                .iter()
                .map(|e| match e.shape.as_static() {
                    Some(s) => Ok(s),
                    None => fail!(
                        Compile,
                        "`{}` has symbolic shape {}: specialize first",
                        e.name,
                        e.shape
                    ),
                })
                .collect()
        };
        let input_shapes = shapes(&manifest.inputs)?;
        let output_shapes = shapes(&manifest.outputs)?;
        // The executable reads params with the sizes and dtypes this LIR was planned for: a
        // store of another graph (same names, other shapes) would be read out of bounds.
        let specs = params.specs();
        let same = manifest.params.len() == specs.len()
            && manifest.params.iter().zip(specs).all(|(e, s)| {
                e.name == s.name
                    && e.dtype == s.dtype
                    && e.shape.as_static().as_deref() == Some(s.shape.as_slice())
            });
        if !same {
            let show = |v: Vec<String>| v.join(", ");
            fail!(
                Binding,
                "this variant was planned for params [{}] but the parameter store holds [{}]: a \
                 specialized graph only runs against the pipeline it came from",
                show(
                    manifest
                        .params
                        .iter()
                        .map(|e| format!("{} {}{}", e.name, e.dtype, e.shape))
                        .collect()
                ),
                show(
                    specs
                        .iter()
                        .map(|s| format!("{} {}{:?}", s.name, s.dtype, s.shape))
                        .collect()
                )
            );
        }
        exec.prepare(&params.bound_slots())?;
        Ok(CompiledGraph {
            lir,
            manifest,
            input_shapes,
            output_shapes,
            exec,
            params,
            device,
            last_run_ns: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn manifest(&self) -> &BindingManifest {
        &self.manifest
    }

    pub fn lir(&self) -> &LirModule {
        &self.lir
    }

    /// How long the last completed run took (`None` before the first), on any thread.
    pub fn last_run_time(&self) -> Option<std::time::Duration> {
        match self.last_run_ns.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            ns => Some(std::time::Duration::from_nanos(ns)),
        }
    }

    /// Bytes this variant holds of its own: its arena and constants (params are shared). A
    /// batch run sample by sample has no arena of its own (its one-sample variant's counts in
    /// that variant's entry).
    pub fn memory_bytes(&self) -> usize {
        let arena = match self.samples_apart() {
            Some(_) => 0,
            None => self.lir.arena.as_ref().map_or(0, |p| p.size),
        };
        self.lir.constants.iter().fold(arena, |acc, (b, _)| {
            acc.saturating_add(self.lir.static_bytes(*b).unwrap_or(0))
        })
    }

    pub fn binding(&self) -> Option<&DimBinding> {
        self.lir.binding.as_ref()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The kernels' instruction set and how packed linears compute, for reports.
    pub fn kernel_paths(&self) -> (Option<&'static str>, Option<&'static str>) {
        (self.exec.isa(), self.exec.gemm_precision())
    }

    /// The parameter store this graph reads (shared with its pipeline's other variants).
    pub fn params(&self) -> &Arc<ParamStore> {
        &self.params
    }

    /// Binds a copy of `data` to param `name`, for every graph sharing this store.
    pub fn set_param<'a>(&self, name: &str, data: impl Into<TensorRef<'a>>) -> Result<()> {
        self.params.set(name, data.into().data)
    }

    /// How many samples of a batch run one at a time, each through the one-sample variant
    /// (`CompileOptions::per_sample`); `None` when the batch runs as one.
    pub fn samples_apart(&self) -> Option<usize> {
        self.exec.samples_apart()
    }

    /// Elements of each input, in manifest order.
    pub(crate) fn input_numels(&self) -> Vec<usize> {
        self.input_shapes
            .iter()
            .map(|s| s.iter().product())
            .collect()
    }

    /// The executable that runs this graph.
    pub(crate) fn executable(&self) -> &dyn Executable {
        &*self.exec
    }

    pub fn input_shape(&self, i: usize) -> &[usize] {
        &self.input_shapes[i]
    }

    pub fn output_shape(&self, i: usize) -> &[usize] {
        &self.output_shapes[i]
    }

    /// Runs on named inputs; returns the outputs in manifest order.
    pub fn run(&self, inputs: &[(&str, TensorRef<'_>)]) -> Result<Vec<Tensor>> {
        self.run_until(inputs, None)
    }

    /// As [`Self::run`], asking `stop` between kernels whether to end early
    /// (`Error::Cancelled`); the graph stays usable after a cancelled run.
    pub fn run_until(
        &self,
        inputs: &[(&str, TensorRef<'_>)],
        stop: Option<StopCheck<'_>>,
    ) -> Result<Vec<Tensor>> {
        self.run_stateful(inputs, &mut [], stop)
    }

    /// Runs a graph with states (KV caches): `states` are read and updated in place, one per
    /// manifest state, by name. Stateless graphs take an empty list.
    pub fn run_stateful(
        &self,
        inputs: &[(&str, TensorRef<'_>)],
        states: &mut [(&str, StateMut<'_>)],
        stop: Option<StopCheck<'_>>,
    ) -> Result<Vec<Tensor>> {
        let ordered = self.order_inputs(inputs)?;
        let mut states = self.order_states(states)?;
        let params = self.params.snapshot()?;
        let started = std::time::Instant::now();
        let data = self.exec.execute(&ordered, &params, &mut states, stop)?;
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_run_ns
            .store(took.max(1), std::sync::atomic::Ordering::Relaxed);
        Ok(self
            .manifest
            .outputs
            .iter()
            .zip(&self.output_shapes)
            .zip(data)
            .map(|((e, shape), data)| Tensor {
                name: e.name.clone(),
                shape: shape.clone(),
                data,
            })
            .collect())
    }

    /// As [`Self::run_stateful`], but the run happens on a helper thread while the calling
    /// thread calls `poll` every `every`; when `poll` returns true the run stops at the next
    /// kernel boundary and this returns `Error::Cancelled`. For callers that must stay
    /// responsive (Python's Ctrl-C), at the price of one thread start per call.
    pub fn run_polling(
        &self,
        inputs: &[(&str, TensorRef<'_>)],
        states: &mut [(&str, StateMut<'_>)],
        every: std::time::Duration,
        poll: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Tensor>> {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let check = || stop.load(std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let check = &check;
            s.spawn(move || {
                let _ = tx.send(self.run_stateful(inputs, states, Some(check)));
            });
            loop {
                match rx.recv_timeout(every) {
                    Ok(result) => return result,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if poll() {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(crate::Error::Compile(
                            "the run thread ended without a result".into(),
                        ));
                    }
                }
            }
        })
    }

    /// Matches states to the manifest by name, checking dtype and size.
    fn order_states<'a>(&self, given: &'a mut [(&str, StateMut<'_>)]) -> Result<Vec<StateMut<'a>>> {
        let expected = &self.manifest.states;
        let names: Vec<&str> = expected.iter().map(|e| e.name.as_str()).collect();
        if let Some((n, _)) = given.iter().find(|(n, _)| !names.contains(n)) {
            fail!(
                Binding,
                "unknown state `{n}`{}; this graph's states are {names:?}",
                hint(n, names.iter().copied())
            );
        }
        let mut slots: Vec<Option<StateMut<'a>>> = (0..expected.len()).map(|_| None).collect();
        for (name, data) in given.iter_mut() {
            let i = names.iter().position(|n| n == name).expect("checked above");
            let e = &expected[i];
            let numel = e
                .shape
                .as_static()
                .map_or(0, |s| s.iter().product::<usize>());
            if data.dtype() != e.dtype || data.len() != numel {
                fail!(
                    Shape,
                    "state `{name}`: this variant reads {numel} {} elements {}, got {} {}",
                    e.dtype,
                    e.shape,
                    data.len(),
                    data.dtype()
                );
            }
            let view: StateMut<'a> = match data {
                StateMut::F32(d) => StateMut::F32(d),
                StateMut::I64(d) => StateMut::I64(d),
                StateMut::I32(d) => StateMut::I32(d),
                StateMut::Bool(d) => StateMut::Bool(d),
            };
            if slots[i].replace(view).is_some() {
                fail!(Binding, "state `{name}` given more than once");
            }
        }
        let missing: Vec<&str> = names
            .iter()
            .zip(&slots)
            .filter(|(_, s)| s.is_none())
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            fail!(
                Binding,
                "missing state(s) {missing:?}: a graph with KV caches runs with its session's states"
            );
        }
        Ok(slots.into_iter().flatten().collect())
    }

    /// Matches inputs to the manifest, checking names, dtypes and shapes; all problems with
    /// names are reported together.
    fn order_inputs<'a>(&self, inputs: &[(&str, TensorRef<'a>)]) -> Result<Vec<HostData<'a>>> {
        let expected = &self.manifest.inputs;
        let known = || expected.iter().map(|e| e.name.as_str());
        let mut problems = Vec::new();
        for (name, _) in inputs {
            if !expected.iter().any(|e| e.name == *name) {
                problems.push(format!("unknown input `{name}`{}", hint(name, known())));
            } else if inputs.iter().filter(|(n, _)| n == name).count() > 1 {
                problems.push(format!("input `{name}` given more than once"));
            }
        }
        let missing: Vec<&str> = known()
            .filter(|n| !inputs.iter().any(|(m, _)| m == n))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("missing input(s) {missing:?}"));
        }
        if !problems.is_empty() {
            problems.dedup();
            fail!(
                Binding,
                "{}; expected inputs {:?}",
                problems.join("; "),
                known().collect::<Vec<_>>()
            );
        }
        let mut out = Vec::with_capacity(expected.len());
        for (e, shape) in expected.iter().zip(&self.input_shapes) {
            let t = inputs
                .iter()
                .find(|(n, _)| *n == e.name)
                .expect("checked above")
                .1;
            if t.data.dtype() != e.dtype {
                fail!(
                    DType,
                    "input `{}`: expected {}, got {}",
                    e.name,
                    e.dtype,
                    t.data.dtype()
                );
            }
            if let Some(given) = t.shape {
                if given.len() != shape.len() {
                    fail!(
                        Shape,
                        "input `{}`: expected rank {} {shape:?}, got {given:?}",
                        e.name,
                        shape.len()
                    );
                }
                if let Some(d) = (0..shape.len()).find(|&d| given[d] != shape[d]) {
                    fail!(
                        Shape,
                        "input `{}` dim {d}: got {}, expected {} (shape {shape:?})",
                        e.name,
                        given[d],
                        shape[d]
                    );
                }
            }
            let numel: usize = shape.iter().product();
            if t.data.len() != numel {
                fail!(
                    Shape,
                    "input `{}`: expected {numel} elements {shape:?}, got {}",
                    e.name,
                    t.data.len()
                );
            }
            out.push(t.data);
        }
        Ok(out)
    }
}
