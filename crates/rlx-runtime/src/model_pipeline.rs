//! `ModelCompilePipeline`: compile a symbolic graph once into a template (step 1), specialize it
//! per dim binding (step 2), compile each variant for a device (step 3), and keep a bounded
//! cache of compiled variants (by count and optionally bytes; FIFO or LRU). One `ParamStore`
//! serves every variant. With an [`AotCache`] the template and the variants also persist on
//! disk (`model_pipeline_aot.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rlx_ir::key::stable_key;
use rlx_ir::{BindingManifest, DimBinding, HirModule, ModelComponent};
use rlx_opt::CompileResult;

use crate::aot::AotCache;
use crate::error::fail;
use crate::{CompileOptions, CompiledGraph, Device, ParamStore, Result, TensorRef, stages};

/// Counters and accumulated times of one pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub template_time: Duration,
    pub specializations: u64,
    pub specialize_time: Duration,
    pub compiles: u64,
    pub compile_time: Duration,
    /// The template came from the disk cache (no passes ran).
    pub template_from_disk: bool,
    /// Variants specialized from the disk cache instead of from the template.
    pub variants_from_disk: u64,
    /// Bytes the cached variants hold (arenas and constants; packed weights are shared and
    /// counted by the parameter store).
    pub bytes: usize,
}

/// Which cached variant leaves first when the cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// The oldest compiled (the seed's policy).
    #[default]
    Fifo,
    /// The least recently used.
    Lru,
}

pub struct ModelCompilePipeline {
    device: Device,
    capacity: usize,
    max_bytes: Option<usize>,
    eviction: Eviction,
    template: Option<CompileResult>,
    /// The template's batch symbol when it computes each sample on its own (found with the
    /// template).
    per_sample: Option<String>,
    params: Option<Arc<ParamStore>>,
    entries: HashMap<u64, (Arc<CompiledGraph>, usize)>,
    order: VecDeque<u64>,
    stats: PipelineStats,
    pub(crate) aot: Option<Arc<AotCache>>,
}

impl ModelCompilePipeline {
    /// A pipeline caching up to 8 variants.
    pub fn new(device: Device) -> Self {
        Self::with_capacity(device, 8).expect("8 is a valid capacity")
    }

    /// A pipeline caching up to `capacity` variants (at least 1).
    pub fn with_capacity(device: Device, capacity: usize) -> Result<Self> {
        if capacity == 0 {
            fail!(Compile, "ModelCompilePipeline capacity must be >= 1, got 0");
        }
        Ok(ModelCompilePipeline {
            device,
            capacity,
            max_bytes: None,
            eviction: Eviction::Fifo,
            template: None,
            per_sample: None,
            params: None,
            entries: HashMap::new(),
            order: VecDeque::new(),
            stats: PipelineStats::default(),
            aot: None,
        })
    }

    /// Also bound the cache by the bytes its variants hold (at least one variant stays), and
    /// choose what leaves first.
    pub fn set_eviction(&mut self, eviction: Eviction, max_bytes: Option<usize>) {
        self.eviction = eviction;
        self.max_bytes = max_bytes;
    }

    /// Persist the template and variants in `aot` (or stop, with `None`). Packed weight
    /// panels of params bound from now on are shared through `<aot dir>/packed` as well (one
    /// copy per machine for every process using the directory).
    pub fn set_aot(&mut self, aot: Option<Arc<AotCache>>) {
        self.aot = aot;
        if let Some(store) = &self.params {
            store.set_shared_dir(self.shared_panel_dir());
        }
    }

    fn shared_panel_dir(&self) -> Option<std::path::PathBuf> {
        self.aot.as_ref()?.dir().map(|d| d.join("packed"))
    }

    pub fn aot(&self) -> Option<&Arc<AotCache>> {
        self.aot.as_ref()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// **Step 1**: compile the symbolic HIR into the template, once. Later calls return the
    /// existing template without calling `build_hir`.
    pub fn build_template<F>(
        &mut self,
        build_hir: F,
        options: &CompileOptions,
    ) -> Result<&CompileResult>
    where
        F: FnOnce() -> HirModule,
    {
        if self.template.is_none() {
            let t = Instant::now();
            let hir = build_hir();
            let template = match self.load_template(&hir, options) {
                Some(t) => {
                    self.stats.template_from_disk = true;
                    t
                }
                None => {
                    let t = stages::pipeline_for(self.device, options).compile_hir(hir.clone())?;
                    self.store_template(&hir, options, &t);
                    t
                }
            };
            let manifest = BindingManifest::from_lir(&template.lir)?;
            let store = ParamStore::from_manifest(&manifest)?;
            store.set_shared_dir(self.shared_panel_dir());
            self.params = Some(Arc::new(store));
            self.per_sample = rlx_opt::per_sample_symbol(&template.hir);
            self.template = Some(template);
            self.stats.template_time += t.elapsed();
        }
        Ok(self.template.as_ref().expect("set above"))
    }

    /// Same as [`Self::build_template`]: make sure the template exists.
    pub fn ensure_template<F>(
        &mut self,
        build_hir: F,
        options: &CompileOptions,
    ) -> Result<&CompileResult>
    where
        F: FnOnce() -> HirModule,
    {
        self.build_template(build_hir, options)
    }

    pub fn template_result(&self) -> Option<&CompileResult> {
        self.template.as_ref()
    }

    fn template(&self) -> Result<&CompileResult> {
        match &self.template {
            Some(t) => Ok(t),
            None => fail!(Compile, "no template yet: call build_template first"),
        }
    }

    /// The template's manifest (symbolic shapes for inputs and outputs).
    pub fn template_binding_manifest(&self) -> Result<BindingManifest> {
        Ok(BindingManifest::from_lir(&self.template()?.lir)?)
    }

    /// The parameter store every variant of this pipeline reads.
    pub fn params(&self) -> Result<&Arc<ParamStore>> {
        self.template()?;
        Ok(self.params.as_ref().expect("created with the template"))
    }

    /// Binds a copy of `data` to param `name`, for every variant.
    pub fn set_param<'a>(&self, name: &str, data: impl Into<TensorRef<'a>>) -> Result<()> {
        self.params()?.set(name, data.into().data)
    }

    /// **Step 2**: bind the symbols and re-plan buffers. Does not touch the cache.
    pub fn specialize_template(
        &self,
        binding: &DimBinding,
        options: &CompileOptions,
    ) -> Result<CompileResult> {
        let template = self.template()?;
        Ok(template.specialize(&stages::pipeline_for(self.device, options), binding)?)
    }

    /// **Step 3**: a device executable for specialized LIR, reading this pipeline's params.
    pub fn compile_lir(
        &self,
        specialized: CompileResult,
        options: &CompileOptions,
    ) -> Result<CompiledGraph> {
        let t = self.template()?;
        let ours = Arc::ptr_eq(&specialized.hir, &t.hir)
            || (specialized.fingerprint == t.fingerprint && *specialized.hir == *t.hir);
        if !ours {
            fail!(
                Binding,
                "`{}` was specialized from another template than this pipeline's `{}`: a \
                 specialized graph only compiles in the pipeline it came from",
                specialized.lir.name,
                t.lir.name
            );
        }
        let params = self.params()?.clone();
        let backend = crate::registry::backend_for(self.device)?;
        let lir = Arc::new(specialized.lir);
        let exec = backend.compile_lir(lir.clone(), options)?;
        CompiledGraph::new(lir, exec, params, self.device)
    }

    /// The cache key of `binding`: template fingerprint, device, code-changing options and the
    /// binding sorted by symbol, through a fixed hash — the same in every process.
    pub fn key_for(&self, binding: &DimBinding, options: &CompileOptions) -> Result<u64> {
        let t = self.template()?;
        let fp = format!("{:016x}", t.fingerprint);
        let version = env!("CARGO_PKG_VERSION");
        Ok(stable_key(&[
            "rlx-variant/1",
            version,
            &fp,
            self.device.name(),
            &options.key_text(),
            &binding.to_string(),
        ]))
    }

    /// Template (once) → specialize → compile, cached by [`Self::key_for`]. A hit costs a hash.
    pub fn get_or_compile<F>(
        &mut self,
        binding: &DimBinding,
        build_hir: F,
        options: &CompileOptions,
    ) -> Result<Arc<CompiledGraph>>
    where
        F: FnOnce() -> HirModule,
    {
        self.build_template(build_hir, options)?;
        self.variant(binding, options)
    }

    /// As [`Self::get_or_compile`] with the template built.
    fn variant(
        &mut self,
        binding: &DimBinding,
        options: &CompileOptions,
    ) -> Result<Arc<CompiledGraph>> {
        let key = self.key_for(binding, options)?;
        if let Some((g, _)) = self.entries.get(&key) {
            let g = g.clone();
            self.stats.hits += 1;
            if self.eviction == Eviction::Lru
                && let Some(i) = self.order.iter().position(|k| *k == key)
            {
                self.order.remove(i);
                self.order.push_back(key);
            }
            return Ok(g);
        }
        self.stats.misses += 1;
        let t = Instant::now();
        let loaded = self.load_variant(binding, options);
        let from_disk = loaded.is_some();
        let specialized = match loaded {
            Some(s) => s,
            None => {
                let s = self.specialize_template(binding, options)?;
                self.store_variant(binding, options, &s);
                s
            }
        };
        self.stats.specializations += 1;
        self.stats.specialize_time += t.elapsed();
        let t = Instant::now();
        let split = self.per_sample_variant(binding, &specialized, options)?;
        let compiled = match split {
            Some(c) => Ok(c),
            None => self.compile_lir(specialized, options),
        };
        let compiled = match compiled {
            Ok(c) => {
                self.stats.variants_from_disk += u64::from(from_disk);
                c
            }
            // A variant from disk that does not compile here: discard it, specialize anew.
            Err(_) if from_disk => {
                self.discard_variant(binding, options);
                let s = self.specialize_template(binding, options)?;
                self.store_variant(binding, options, &s);
                self.compile_lir(s, options)?
            }
            Err(e) => return Err(e),
        };
        let compiled = Arc::new(compiled);
        self.stats.compiles += 1;
        self.stats.compile_time += t.elapsed();
        self.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// The batch variant `specialized` as its one-sample variant run once per sample, where
    /// the template computes each sample on its own and that is worth it
    /// (`per_sample::worth_it`); `None` otherwise.
    fn per_sample_variant(
        &mut self,
        binding: &DimBinding,
        specialized: &CompileResult,
        options: &CompileOptions,
    ) -> Result<Option<CompiledGraph>> {
        if !options.per_sample || self.device != Device::Cpu {
            return Ok(None);
        }
        let Some(symbol) = self.per_sample.clone() else {
            return Ok(None);
        };
        let samples = binding.get(&symbol).and_then(|n| usize::try_from(n).ok());
        let Some(samples) = samples.filter(|n| crate::per_sample::worth_it(&specialized.lir, *n))
        else {
            return Ok(None);
        };
        let mut one = binding.clone();
        one.set(&symbol, 1);
        // A batch symbol whose bounds exclude 1 keeps its batches whole.
        let Ok(graph) = self.variant(&one, options) else {
            return Ok(None);
        };
        let lir = Arc::new(specialized.lir.clone());
        let pool = crate::cpu::thread_pool(options.num_threads)?;
        let exec = crate::per_sample::PerSample::new(lir.clone(), graph, samples, pool)?;
        CompiledGraph::new(lir, Box::new(exec), self.params()?.clone(), self.device).map(Some)
    }

    /// The oldest (FIFO) or least recently used (LRU) variant leaves while the cache is full
    /// by count or over its byte bound. A graph still in use elsewhere lives on through its
    /// `Arc`.
    fn insert(&mut self, key: u64, graph: Arc<CompiledGraph>) {
        let bytes = graph.memory_bytes();
        let over = |p: &Self| {
            p.entries.len() >= p.capacity
                || p.max_bytes
                    .is_some_and(|m| p.stats.bytes.saturating_add(bytes) > m)
        };
        while !self.entries.is_empty() && over(self) {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = self.entries.remove(&old) {
                self.stats.bytes = self.stats.bytes.saturating_sub(b);
            }
            self.stats.evictions += 1;
        }
        self.entries.insert(key, (graph, bytes));
        self.stats.bytes = self.stats.bytes.saturating_add(bytes);
        self.order.push_back(key);
    }

    /// The manifest of one variant, without compiling or caching it.
    pub fn binding_manifest_for_binding(
        &self,
        binding: &DimBinding,
        options: &CompileOptions,
    ) -> Result<BindingManifest> {
        Ok(BindingManifest::from_lir(
            &self.specialize_template(binding, options)?.lir,
        )?)
    }

    pub fn binding_manifest_for_component(
        &self,
        component: &ModelComponent,
        options: &CompileOptions,
    ) -> Result<BindingManifest> {
        self.binding_manifest_for_binding(&component.dim_binding(), options)
    }

    /// [`Self::get_or_compile`] for a component's binding, with its manifest.
    pub fn get_or_compile_component<F>(
        &mut self,
        component: &ModelComponent,
        build_hir: F,
        options: &CompileOptions,
    ) -> Result<(Arc<CompiledGraph>, BindingManifest)>
    where
        F: FnOnce() -> HirModule,
    {
        let graph = self.get_or_compile(&component.dim_binding(), build_hir, options)?;
        let manifest = graph.manifest().clone();
        Ok((graph, manifest))
    }

    pub fn contains(&self, key: u64) -> bool {
        self.entries.contains_key(&key)
    }

    /// Keys in eviction order (oldest first).
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.order.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
