//! All numpy borrowing lives here: an array's dtype, layout and alignment are checked, then its
//! memory goes to the core in place (as an input slice or a borrowed parameter kept alive by the
//! array object); run outputs become new arrays that own their data.

use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyWeakrefReference};
use rlx_ir::DType;
use rlx_runtime::{HostData, ParamStore, PreparedParam, Tensor, TensorData};

use crate::dims::numpy_name;
use crate::errors::{BindingError, DTypeError, ShapeError, to_py};
use crate::held::{HeldRef, release_pending};

/// The rlx dtype of `arr`, if rlx can read its memory as is (native byte order, plain dtype).
fn rlx_dtype(arr: &Bound<'_, PyUntypedArray>) -> Option<DType> {
    let d = arr.dtype();
    if d.is_native_byteorder() == Some(false) || d.has_fields() || d.has_subarray() {
        return None;
    }
    match (d.kind(), d.itemsize()) {
        (b'f', 4) => Some(DType::F32),
        (b'i', 8) => Some(DType::I64),
        (b'i', 4) => Some(DType::I32),
        (b'b', 1) => Some(DType::Bool),
        _ => None,
    }
}

/// An array of an rlx dtype, C-contiguous and aligned, whose memory is read in place.
pub struct ArrayView<'py> {
    pub arr: Bound<'py, PyUntypedArray>,
    pub dtype: DType,
    pub shape: Vec<usize>,
    ptr: *const u8,
    numel: usize,
}

fn descr_ptr(arr: &Bound<'_, PyUntypedArray>) -> usize {
    // SAFETY: `arr` is a live ndarray; reading its `descr` field is what PyArray_DESCR does.
    unsafe { (*arr.as_array_ptr()).fields.descr as usize }
}

fn data_ptr(arr: &Bound<'_, PyUntypedArray>) -> *const u8 {
    // SAFETY: `arr` is a live ndarray; reading its `data` field is what numpy's PyArray_DATA does.
    unsafe { (*arr.as_array_ptr()).fields.data as *const u8 }
}

/// Checks `obj` and views it. `what` names it in errors ("input `x`"); `copy_hint` adds the
/// `copy=True` way out to the message where the caller accepts it.
pub fn view<'py>(
    what: &str,
    obj: &Bound<'py, PyAny>,
    expected: Option<DType>,
    copy_hint: bool,
) -> PyResult<ArrayView<'py>> {
    let want = expected.map(numpy_name).unwrap_or("float32");
    let or_copy = if copy_hint {
        " (or bind with copy=True)"
    } else {
        ""
    };
    let arr = obj.cast::<PyUntypedArray>().map_err(|_| {
        // The qualified name, so a numpy scalar reads "numpy.float32", not "float32".
        let ty = obj
            .get_type()
            .fully_qualified_name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        DTypeError::new_err(format!(
            "{what}: expected a numpy.ndarray of {want}, got {ty}; convert with np.asarray(x, dtype=np.{want}){or_copy}"
        ))
    })?;
    let text = arr.dtype().str().map(|s| s.to_string()).unwrap_or_default();
    let dtype = match rlx_dtype(arr) {
        Some(d) if expected.is_none_or(|e| e == d) => d,
        _ => {
            return Err(DTypeError::new_err(format!(
                "{what}: expected {want}, got {text}; rlx never casts silently: convert with \
                 arr.astype(np.{want}){or_copy}"
            )));
        }
    };
    let shape = arr.shape().to_vec();
    let numel = shape.iter().product::<usize>();
    let strides = arr.strides();
    let ptr = data_ptr(arr);
    if numel > 1 && strides.iter().any(|s| *s < 0) {
        return Err(BindingError::new_err(format!(
            "{what} is negatively strided (strides {strides:?}, e.g. a reversed view): rlx reads \
             arrays in place and never ignores strides; pass np.ascontiguousarray(arr){or_copy}"
        )));
    }
    if !arr.is_c_contiguous() {
        return Err(BindingError::new_err(format!(
            "{what} is not C-contiguous (shape {shape:?}, strides {strides:?}): rlx reads arrays \
             in place and never ignores strides; pass np.ascontiguousarray(arr){or_copy}"
        )));
    }
    if !arr.is_aligned() || !(ptr as usize).is_multiple_of(dtype.size()) {
        return Err(BindingError::new_err(format!(
            "{what} is misaligned (data at {ptr:p} is not a multiple of {} bytes); pass an aligned \
             copy made with np.array(arr){or_copy}",
            dtype.size()
        )));
    }
    let v = ArrayView {
        arr: arr.clone(),
        dtype,
        shape,
        ptr,
        numel,
    };
    // A byte other than 0 or 1 is not a valid Rust bool (a uint8 array viewed as bool).
    if dtype == DType::Bool && unsafe { slice::<u8>(ptr, numel) }.iter().any(|b| *b > 1) {
        return Err(DTypeError::new_err(format!(
            "{what}: bool array holds bytes other than 0 and 1"
        )));
    }
    Ok(v)
}

/// # Safety
/// `ptr` must point to `n` initialized, aligned `T`s that outlive `'a`.
unsafe fn slice<'a, T>(ptr: *const u8, n: usize) -> &'a [T] {
    if n == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(ptr.cast::<T>(), n) }
    }
}

impl ArrayView<'_> {
    /// The elements, in place. Valid while the array is neither freed nor resized; the caller
    /// holds `self.arr`, and resizing an array something else references needs refcheck=False.
    pub fn host_data(&self) -> HostData<'_> {
        let (p, n) = (self.ptr, self.numel);
        // SAFETY: `view` checked dtype, contiguity and alignment; `self.arr` keeps the memory alive.
        unsafe {
            match self.dtype {
                DType::F32 => HostData::F32(slice(p, n)),
                DType::I64 => HostData::I64(slice(p, n)),
                DType::I32 => HostData::I32(slice(p, n)),
                DType::Bool => HostData::Bool(slice(p, n)),
            }
        }
    }
}

/// A bound array kept alive by the parameter store, and pinned in place (see [`pin`]).
struct BorrowedArray {
    obj: HeldRef,
    /// The array's dtype descriptor when bound (a fast first check that it is unchanged).
    descr: usize,
    #[allow(dead_code)] // held for its effect on numpy, never read
    pins: Pins,
}

/// Weak references that keep arrays where they are (held for their effect on numpy).
pub struct Pins(#[allow(dead_code)] Vec<HeldRef>);

/// Pins the memory `arr` reads: a weak reference to `arr` and to every ndarray it is a view
/// of. numpy refuses to resize (reallocate) an array that has weak references, even with
/// `refcheck=False`, so while the pins live a run can read the memory with the GIL released.
/// (A buffer export would not do: `resize(refcheck=False)` ignores exports.)
pub fn pin(arr: &Bound<'_, PyAny>) -> PyResult<Pins> {
    let mut pins = Vec::new();
    let mut cur = arr.clone();
    // The chain of bases is short (a view of a view of the owner); bounded all the same.
    for _ in 0..64 {
        if cur.cast::<PyUntypedArray>().is_err() {
            break;
        }
        pins.push(HeldRef::new(PyWeakrefReference::new(&cur)?.into_any()));
        let base = cur.getattr(intern!(cur.py(), "base"))?;
        if base.is_none() {
            break;
        }
        cur = base;
    }
    Ok(Pins(pins))
}

/// A param checked and ready to go into the store.
struct Prepared<'py> {
    name: String,
    view: ArrayView<'py>,
    /// Copy the bytes into the store (the caller asked for a copy and the array needed none).
    copy_bytes: bool,
}

fn prepare<'py>(
    store: &ParamStore,
    name: &str,
    obj: &Bound<'py, PyAny>,
    copy: bool,
) -> PyResult<Prepared<'py>> {
    let spec = &store.specs()[store.index_of(name).map_err(to_py)?];
    let what = format!("param `{name}`");
    let strict = view(&what, obj, Some(spec.dtype), true);
    let (view, copy_bytes) = match strict {
        Ok(v) => (v, copy),
        Err(e) if !copy => return Err(e),
        // copy=True may convert: numpy makes a fresh, aligned, C-ordered array of the right
        // dtype, which nobody else references, so it is borrowed without a second copy.
        Err(_) => {
            let py = obj.py();
            let kw = PyDict::new(py);
            kw.set_item("dtype", numpy_name(spec.dtype))?;
            kw.set_item("order", "C")?;
            kw.set_item("copy", true)?;
            let fresh = py
                .import("numpy")?
                .getattr("array")?
                .call((obj,), Some(&kw))
                .map_err(|e| {
                    DTypeError::new_err(format!(
                        "{what}: cannot convert to {} with copy=True: {e}",
                        numpy_name(spec.dtype)
                    ))
                })?;
            (view(&what, &fresh, Some(spec.dtype), false)?, false)
        }
    };
    if view.shape != spec.shape {
        return Err(ShapeError::new_err(format!(
            "{what}: expected shape {:?}, got {:?}",
            spec.shape, view.shape
        )));
    }
    Ok(Prepared {
        name: name.to_string(),
        view,
        copy_bytes,
    })
}

/// The store's checked binding for `p`: a copy, or the array itself (pinned, kept alive).
fn to_store(store: &ParamStore, p: Prepared<'_>) -> PyResult<PreparedParam> {
    if p.copy_bytes {
        return store
            .prepare_copy(&p.name, p.view.host_data())
            .map_err(to_py);
    }
    let v = p.view;
    let owner = BorrowedArray {
        obj: HeldRef::new(v.arr.clone().into_any()),
        descr: descr_ptr(&v.arr),
        pins: pin(v.arr.as_any())?,
    };
    // SAFETY: `view` checked dtype, shape, contiguity and alignment; the store keeps `owner` (a
    // reference to the array, and pins that stop numpy from reallocating it) while the slot
    // holds the pointer.
    unsafe { store.prepare_borrowed(&p.name, v.dtype, &v.shape, v.ptr, Box::new(owner)) }
        .map_err(to_py)
}

/// Binds every `name -> array` of `params`. All names and arrays are checked before any slot
/// changes, so a failed call leaves the store as it was; the new set becomes visible at once
/// (a concurrent run sees the old set or the new one, never a mix).
pub fn bind_params(store: &ParamStore, params: &Bound<'_, PyDict>, copy: bool) -> PyResult<()> {
    release_pending(params.py());
    let mut unknown = Vec::new();
    let mut items = Vec::with_capacity(params.len());
    for (k, v) in params.iter() {
        let name: String = k
            .cast::<PyString>()
            .map_err(|_| {
                BindingError::new_err(format!("param names must be str, got {}", k.get_type()))
            })?
            .to_str()?
            .to_string();
        match store.index_of(&name) {
            Ok(_) => items.push((name, v)),
            Err(e) => unknown.push(
                e.to_string()
                    .trim_start_matches("binding error: ")
                    .to_string(),
            ),
        }
    }
    if !unknown.is_empty() {
        return Err(BindingError::new_err(unknown.join("; ")));
    }
    let prepared = items
        .iter()
        .map(|(n, v)| to_store(store, prepare(store, n, v, copy)?))
        .collect::<PyResult<Vec<_>>>()?;
    store.commit(prepared).map_err(to_py)
}

pub fn bind_param(
    store: &ParamStore,
    name: &str,
    obj: &Bound<'_, PyAny>,
    copy: bool,
) -> PyResult<()> {
    let p = to_store(store, prepare(store, name, obj, copy)?)?;
    store.commit(vec![p]).map_err(to_py)
}

/// Before a run: a bound array must still be what was bound. Its memory cannot move (bound
/// arrays are pinned, see [`pin`]), but `arr.shape = ...` or `arr.dtype = ...` reinterpret it
/// in place, and a bool param must still hold only 0 and 1 (a uint8 view of the same memory
/// can write other bytes, which are not valid Rust bools).
pub fn check_borrowed(py: Python<'_>, store: &ParamStore) -> PyResult<()> {
    release_pending(py);
    // Under the slot lock: only reads of ndarray fields (no Python code runs); the error, if
    // any, is made after.
    let bad = store.with_slots(|slots| {
        for (i, (spec, slot)) in store.specs().iter().zip(slots).enumerate() {
            let Some(slot) = slot else {
                continue;
            };
            let owner = slot.owner().and_then(|o| o.downcast_ref::<BorrowedArray>());
            if let Some(owner) = owner {
                let obj = owner.obj.bind(py);
                let Ok(arr) = obj.cast::<PyUntypedArray>() else {
                    return Some((i, false));
                };
                let same = arr.shape() == spec.shape.as_slice()
                    && data_ptr(&arr) == slot.as_ptr()
                    && arr.is_c_contiguous()
                    && (descr_ptr(&arr) == owner.descr || rlx_dtype(&arr) == Some(spec.dtype));
                if !same {
                    return Some((i, false));
                }
            }
            if spec.dtype == DType::Bool {
                // SAFETY: the slot holds numel bytes (checked at bind; pinned since).
                let bytes = unsafe { slice::<u8>(slot.as_ptr(), spec.numel) };
                if bytes.iter().any(|b| *b > 1) {
                    return Some((i, true));
                }
            }
        }
        None
    });
    let Some((i, bool_bytes)) = bad else {
        return Ok(());
    };
    let spec = &store.specs()[i];
    if bool_bytes {
        return Err(DTypeError::new_err(format!(
            "param `{}`: the bound bool array now holds bytes other than 0 and 1 (written \
             through another view); bind a valid bool array again",
            spec.name
        )));
    }
    let now = store
        .slot(i)
        .and_then(|slot| {
            let owner = slot.owner()?.downcast_ref::<BorrowedArray>()?;
            let arr = owner.obj.bind(py).cast::<PyUntypedArray>().ok()?.to_owned();
            Some(format!("shape {:?}, dtype {}", arr.shape(), arr.dtype()))
        })
        .unwrap_or_else(|| "not an ndarray".to_string());
    Err(BindingError::new_err(format!(
        "param `{}`: the bound array was changed in place after binding (now {now}; bound as \
         {:?} {}); bind it again",
        spec.name,
        spec.shape,
        numpy_name(spec.dtype)
    )))
}

/// A run output as a new numpy array that owns the output's memory (no copy).
pub fn output_to_py<'py>(py: Python<'py>, t: Tensor) -> PyResult<Bound<'py, PyAny>> {
    fn arr<'py, T: numpy::Element>(
        py: Python<'py>,
        v: Vec<T>,
        shape: Vec<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyArray1::from_vec(py, v).reshape(shape)?.into_any())
    }
    match t.data {
        TensorData::F32(v) => arr(py, v, t.shape),
        TensorData::I64(v) => arr(py, v, t.shape),
        TensorData::I32(v) => arr(py, v, t.shape),
        TensorData::Bool(v) => arr(py, v, t.shape),
    }
}
