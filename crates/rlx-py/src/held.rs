//! `HeldRef`: a strong reference to a Python object that may be dropped on a thread that does
//! not hold the GIL (a bound param's array, released by the last run that read it).
//!
//! pyo3 queues such a decref in its own pool behind a std mutex, and a child forked while
//! another thread holds that mutex hangs at its next pyo3 call. Here the queue is a
//! `ForkLock`, drained by the next rlx call that holds the GIL ([`release_pending`]).

use pyo3::ffi;
use pyo3::prelude::*;
use rlx_runtime::ForkLock;

pub struct HeldRef(*mut ffi::PyObject);

// SAFETY: the pointer is only dereferenced with the GIL held (`bind`, `Drop` when attached,
// `release_pending`); elsewhere it is only moved into the queue.
unsafe impl Send for HeldRef {}
unsafe impl Sync for HeldRef {}

/// Objects whose last reference was dropped without the GIL (as addresses).
static PENDING: ForkLock<Vec<usize>> = ForkLock::new(Vec::new());

impl HeldRef {
    pub fn new(obj: Bound<'_, PyAny>) -> HeldRef {
        HeldRef(obj.into_ptr())
    }

    pub fn bind<'a, 'py>(&'a self, py: Python<'py>) -> Borrowed<'a, 'py, PyAny> {
        // SAFETY: `self` owns a strong reference, so the object is alive; the GIL is held.
        unsafe { Borrowed::from_ptr(py, self.0) }
    }
}

impl Drop for HeldRef {
    fn drop(&mut self) {
        // SAFETY: PyGILState_Check only reads this thread's state; with the GIL held the
        // reference this value owns is released at once.
        unsafe {
            if ffi::PyGILState_Check() == 1 {
                ffi::Py_DECREF(self.0);
                return;
            }
        }
        PENDING.lock().push(self.0 as usize);
    }
}

/// Releases the references dropped without the GIL since the last call.
pub fn release_pending(_py: Python<'_>) {
    let pending = std::mem::take(&mut *PENDING.lock());
    for p in pending {
        // SAFETY: each address is a strong reference a `HeldRef` gave up; the GIL is held.
        unsafe { ffi::Py_DECREF(p as *mut ffi::PyObject) };
    }
}
