//! `ParamStore`: the weights of one pipeline, shared by every variant compiled from it.
//!
//! A slot holds owned memory (a copy) or borrowed memory (for example a numpy array, kept alive
//! by an owner object the store holds). Kernels read the bytes where they lie. Binding a slot
//! replaces an `Arc`, so a run that already took a snapshot keeps the old weights until it ends.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rlx_ir::{BindingManifest, DType};

use crate::ForkLock;
use crate::error::fail;
use crate::fallible::try_copy;
use crate::names::hint;
use crate::{HostData, Result, TensorData};

/// Name, dtype and static shape of one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub numel: usize,
}

/// One bound parameter: its bytes, and data derived from them (packed GEMM panels) that is
/// built on first use and dropped with the binding, so rebinding invalidates it. Only a
/// `ParamStore` makes one (after checking dtype, size and alignment), so kernels may trust
/// `as_ptr` for `nbytes` bytes of `dtype`.
pub struct ParamData {
    storage: ParamStorage,
    dtype: DType,
    /// A `ForkLock`: packing a big weight holds it for milliseconds, and a child forked
    /// meanwhile must still be able to pack.
    derived: ForkLock<Vec<Derived>>,
    /// Where packed panels of this param are shared with other processes (see
    /// `ParamStore::set_shared_dir`), if anywhere.
    shared_dir: Option<Arc<std::path::PathBuf>>,
}

/// One piece of derived data: a kind tag and variant (for example panel width), the value
/// and its size in bytes.
struct Derived {
    key: (&'static str, u64),
    value: Arc<dyn Any + Send + Sync>,
    bytes: usize,
}

/// The entry under `key`, as a `T`.
fn find<T: Any + Send + Sync>(entries: &[Derived], key: (&'static str, u64)) -> Option<Arc<T>> {
    let d = entries.iter().find(|d| d.key == key)?;
    d.value.clone().downcast::<T>().ok()
}

/// The bytes behind one bound parameter.
enum ParamStorage {
    Owned(TensorData),
    /// Memory owned elsewhere; holding `owner` keeps the memory alive, and it is dropped when
    /// the slot is replaced.
    Borrowed {
        ptr: *const u8,
        nbytes: usize,
        owner: Box<dyn Any + Send + Sync>,
    },
}

// SAFETY: borrowed memory is only read by kernels; `set_borrowed`'s contract makes the caller
// guarantee it stays valid while `owner` lives. Owned data is plain `Vec`s.
unsafe impl Send for ParamStorage {}
unsafe impl Sync for ParamStorage {}

impl ParamData {
    fn new(storage: ParamStorage, dtype: DType) -> ParamData {
        ParamData {
            storage,
            dtype,
            derived: ForkLock::new(Vec::new()),
            shared_dir: None,
        }
    }

    /// The directory where this param's packed panels are shared between processes.
    pub fn shared_dir(&self) -> Option<&std::path::Path> {
        self.shared_dir.as_deref().map(|p| p.as_path())
    }

    /// A hash of the bound bytes (computed once): packed copies shared on disk are named by it.
    /// Not to be called from inside a `derived` builder (the same lock).
    pub fn content_hash(&self) -> Result<[u8; 32]> {
        let h = self.derived(("content_hash", 0), || {
            // SAFETY: the store checked the binding holds nbytes readable bytes.
            let bytes = unsafe { std::slice::from_raw_parts(self.as_ptr(), self.nbytes()) };
            Ok((*blake3::hash(bytes).as_bytes(), 0))
        })?;
        Ok(*h)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The size of the bound data in bytes.
    pub fn nbytes(&self) -> usize {
        match &self.storage {
            ParamStorage::Owned(d) => d.len() * self.dtype.size(),
            ParamStorage::Borrowed { nbytes, .. } => *nbytes,
        }
    }

    pub fn as_ptr(&self) -> *const u8 {
        match &self.storage {
            ParamStorage::Owned(d) => d.as_ptr(),
            ParamStorage::Borrowed { ptr, .. } => *ptr,
        }
    }

    /// What keeps borrowed memory alive (for its binder to re-check), `None` for a copy.
    pub fn owner(&self) -> Option<&(dyn Any + Send + Sync)> {
        match &self.storage {
            ParamStorage::Owned(_) => None,
            ParamStorage::Borrowed { owner, .. } => Some(owner.as_ref()),
        }
    }

    pub fn is_borrowed(&self) -> bool {
        matches!(self.storage, ParamStorage::Borrowed { .. })
    }

    /// The derived value under `key`, built by `build` the first time (concurrent callers wait
    /// for that one build). `bytes` is its size, for stats.
    pub fn derived<T: Any + Send + Sync>(
        &self,
        key: (&'static str, u64),
        build: impl FnOnce() -> Result<(T, usize)>,
    ) -> Result<Arc<T>> {
        let mut entries = self.derived.lock();
        if let Some(v) = find(&entries, key) {
            return Ok(v);
        }
        let (value, bytes) = build()?;
        let value = Arc::new(value);
        entries.retain(|d| d.key != key);
        entries.push(Derived {
            key,
            value: value.clone(),
            bytes,
        });
        Ok(value)
    }

    /// The derived value under `key` if it was built already.
    pub fn derived_cached<T: Any + Send + Sync>(&self, key: (&'static str, u64)) -> Option<Arc<T>> {
        find(&self.derived.lock(), key)
    }

    /// Bytes held by derived data.
    pub fn derived_bytes(&self) -> usize {
        let entries = self.derived.lock();
        entries.iter().map(|d| d.bytes).sum()
    }

    /// Addresses of the derived values (tests check two variants share one).
    pub fn derived_addrs(&self) -> Vec<usize> {
        let entries = self.derived.lock();
        entries
            .iter()
            .map(|d| Arc::as_ptr(&d.value) as *const u8 as usize)
            .collect()
    }
}

/// A checked binding of one param, made visible by [`ParamStore::commit`].
pub struct PreparedParam {
    store: u64,
    index: usize,
    data: ParamData,
}

/// All parameter slots of one pipeline, in manifest order.
pub struct ParamStore {
    specs: Vec<ParamSpec>,
    /// Replaced all at once by `commit` (a run's snapshot sees one whole binding); a
    /// `ForkLock`, so a child forked while another thread binds can still bind and run.
    slots: ForkLock<Vec<Option<Arc<ParamData>>>>,
    /// Tells this store's prepared bindings from another's.
    id: u64,
    /// Where params bound from now on share their packed panels with other processes.
    shared_dir: ForkLock<Option<Arc<std::path::PathBuf>>>,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamStore")
            .field("params", &self.specs.len())
            .field("missing", &self.missing())
            .finish()
    }
}

impl ParamStore {
    /// Empty slots for every param of `manifest` (whose param shapes are static).
    pub fn from_manifest(manifest: &BindingManifest) -> Result<ParamStore> {
        let mut specs = Vec::with_capacity(manifest.params.len());
        for p in &manifest.params {
            let Some(shape) = p.shape.as_static() else {
                fail!(Shape, "param `{}` has non-static shape {}", p.name, p.shape)
            };
            let numel = shape.iter().product();
            specs.push(ParamSpec {
                name: p.name.clone(),
                dtype: p.dtype,
                shape,
                numel,
            });
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let slots = ForkLock::new(vec![None; specs.len()]);
        Ok(ParamStore {
            specs,
            slots,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shared_dir: ForkLock::new(None),
        })
    }

    /// Shares the packed panels of params bound from now on through files in `dir` (named by
    /// a hash of the weight and the layout, memory-mapped read-only): processes that load the
    /// same weights hold one copy between them, and a new one skips packing. `None` keeps
    /// packed panels in each process's memory.
    pub fn set_shared_dir(&self, dir: Option<std::path::PathBuf>) {
        *self.shared_dir.lock() = dir.map(Arc::new);
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Index of `name`, or a binding error listing close names.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        match self.specs.iter().position(|s| s.name == name) {
            Some(i) => Ok(i),
            None => fail!(
                Binding,
                "unknown param `{name}`{}; params are {:?}",
                hint(name, self.specs.iter().map(|s| s.name.as_str())),
                self.specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Binds `name` to a copy of `data`.
    pub fn set(&self, name: &str, data: HostData<'_>) -> Result<()> {
        self.commit(vec![self.prepare_copy(name, data)?])
    }

    /// A checked copy of `data` for `name`, not yet visible to runs (see [`Self::commit`]).
    pub fn prepare_copy(&self, name: &str, data: HostData<'_>) -> Result<PreparedParam> {
        let i = self.index_of(name)?;
        self.check(i, data.dtype(), None, data.len())?;
        let dtype = data.dtype();
        let owned = match data {
            HostData::F32(d) => TensorData::F32(try_copy("a param copy", d)?),
            HostData::I64(d) => TensorData::I64(try_copy("a param copy", d)?),
            HostData::I32(d) => TensorData::I32(try_copy("a param copy", d)?),
            HostData::Bool(d) => TensorData::Bool(try_copy("a param copy", d)?),
        };
        Ok(self.prepared(i, ParamStorage::Owned(owned), dtype))
    }

    /// Binds `name` to memory owned elsewhere, without copying.
    ///
    /// # Safety
    /// As [`Self::prepare_borrowed`].
    pub unsafe fn set_borrowed(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        ptr: *const u8,
        owner: Box<dyn Any + Send + Sync>,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        let p = unsafe { self.prepare_borrowed(name, dtype, shape, ptr, owner)? };
        self.commit(vec![p])
    }

    /// A checked binding of `name` to memory owned elsewhere, not yet visible to runs.
    ///
    /// # Safety
    /// `ptr` must point to `numel(shape)` initialized, aligned elements of `dtype` that stay valid
    /// and are not freed while `owner` is alive (the store drops `owner` when the slot is
    /// replaced or the store is dropped).
    pub unsafe fn prepare_borrowed(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        ptr: *const u8,
        owner: Box<dyn Any + Send + Sync>,
    ) -> Result<PreparedParam> {
        let i = self.index_of(name)?;
        let numel: usize = shape.iter().product();
        self.check(i, dtype, Some(shape), numel)?;
        if !(ptr as usize).is_multiple_of(dtype.size()) {
            fail!(
                Binding,
                "param `{name}`: data at {ptr:p} is not aligned to {} bytes",
                dtype.size()
            );
        }
        let nbytes = numel * dtype.size();
        let storage = ParamStorage::Borrowed { ptr, nbytes, owner };
        Ok(self.prepared(i, storage, dtype))
    }

    fn prepared(&self, index: usize, storage: ParamStorage, dtype: DType) -> PreparedParam {
        PreparedParam {
            store: self.id,
            index,
            data: ParamData {
                shared_dir: self.shared_dir.lock().clone(),
                ..ParamData::new(storage, dtype)
            },
        }
    }

    /// Makes prepared bindings visible, all at once: a run that starts meanwhile sees every
    /// old binding or every new one, never a mix. The replaced data (maybe Python objects) is
    /// dropped after the lock is released.
    pub fn commit(&self, items: Vec<PreparedParam>) -> Result<()> {
        if items.iter().any(|p| p.store != self.id) {
            fail!(Binding, "a prepared param of another parameter store");
        }
        let old: Vec<_> = {
            let mut slots = self.slots.lock();
            items
                .into_iter()
                .map(|p| slots[p.index].replace(Arc::new(p.data)))
                .collect()
        };
        drop(old);
        Ok(())
    }

    fn check(&self, i: usize, dtype: DType, shape: Option<&[usize]>, numel: usize) -> Result<()> {
        let s = &self.specs[i];
        if dtype != s.dtype {
            fail!(
                DType,
                "param `{}`: expected {}, got {dtype}",
                s.name,
                s.dtype
            );
        }
        if let Some(shape) = shape
            && shape != s.shape.as_slice()
        {
            fail!(
                Shape,
                "param `{}`: expected shape {:?}, got {shape:?}",
                s.name,
                s.shape
            );
        }
        if numel != s.numel {
            fail!(
                Shape,
                "param `{}`: expected {} elements ({:?}), got {numel}",
                s.name,
                s.numel,
                s.shape
            );
        }
        Ok(())
    }

    /// Unbinds `name`.
    pub fn clear(&self, name: &str) -> Result<()> {
        let i = self.index_of(name)?;
        let old = self.slots.lock()[i].take();
        drop(old);
        Ok(())
    }

    /// Address of the bytes kernels read for `name`, if bound.
    pub fn data_ptr(&self, name: &str) -> Option<usize> {
        let i = self.specs.iter().position(|s| s.name == name)?;
        let slots = self.slots.lock();
        slots[i].as_ref().map(|d| d.as_ptr() as usize)
    }

    pub fn is_bound(&self, name: &str) -> bool {
        self.data_ptr(name).is_some()
    }

    /// Names of params not bound yet.
    pub fn missing(&self) -> Vec<String> {
        let slots = self.slots.lock();
        self.specs
            .iter()
            .zip(slots.iter())
            .filter(|(_, s)| s.is_none())
            .map(|(p, _)| p.name.clone())
            .collect()
    }

    /// Slot `i` as it is now.
    pub fn slot(&self, i: usize) -> Option<Arc<ParamData>> {
        self.slots.lock().get(i)?.clone()
    }

    /// Calls `f` with every slot as it is now, under the store's lock (no copies of the slot
    /// table: for checks before each run). `f` must not bind params of this store.
    pub fn with_slots<R>(&self, f: impl FnOnce(&[Option<Arc<ParamData>>]) -> R) -> R {
        f(&self.slots.lock())
    }

    /// Every slot as it is now, bound or not.
    pub fn bound_slots(&self) -> Vec<Option<Arc<ParamData>>> {
        self.slots.lock().clone()
    }

    /// Bytes of derived data (packed weights) over every bound param.
    pub fn derived_bytes(&self) -> usize {
        self.bound_slots()
            .iter()
            .flatten()
            .map(|d| d.derived_bytes())
            .sum()
    }

    /// Addresses of `name`'s derived data (empty when unbound or nothing was derived).
    pub fn derived_addrs(&self, name: &str) -> Vec<usize> {
        let Ok(i) = self.index_of(name) else {
            return Vec::new();
        };
        self.bound_slots()[i]
            .as_ref()
            .map_or_else(Vec::new, |d| d.derived_addrs())
    }

    /// Every slot, for one run; an error names every unbound param.
    pub fn snapshot(&self) -> Result<Vec<Arc<ParamData>>> {
        let slots = self.slots.lock();
        if slots.iter().any(Option::is_none) {
            drop(slots);
            fail!(Binding, "params not bound: {:?}", self.missing());
        }
        Ok(slots
            .iter()
            .map(|s| s.clone().expect("checked above"))
            .collect())
    }
}
