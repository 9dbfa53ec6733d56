//! Allocations sized by user data (param copies, converted operands, masks, indices) made
//! fallibly: a size the machine cannot give is `Error::Memory` (Python `MemoryError`), not an
//! abort.

use crate::{Error, Result};

/// `xs` mapped through `f` into a new vector, or `Error::Memory` naming `what`.
pub fn try_map<T, U>(what: &str, xs: &[T], f: impl Fn(&T) -> U) -> Result<Vec<U>> {
    let mut v = Vec::new();
    v.try_reserve_exact(xs.len()).map_err(|_| {
        Error::Memory(format!(
            "cannot allocate {} bytes for {what}",
            xs.len().saturating_mul(std::mem::size_of::<U>())
        ))
    })?;
    v.extend(xs.iter().map(f));
    Ok(v)
}

/// A copy of `xs`, or `Error::Memory` naming `what`.
pub fn try_copy<T: Copy>(what: &str, xs: &[T]) -> Result<Vec<T>> {
    try_map(what, xs, |x| *x)
}

/// `len` default (zero) values, or `Error::Memory` naming `what`.
pub fn try_zeroed<T: Clone + Default>(what: &str, len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        Error::Memory(format!(
            "cannot allocate {} bytes for {what}",
            len.saturating_mul(std::mem::size_of::<T>())
        ))
    })?;
    v.resize(len, T::default());
    Ok(v)
}

/// Grows `buf` to at least `len` elements (never shrinks), or `Error::Memory` naming `what`.
/// For scratch buffers kept between calls.
pub fn grow<T: Clone + Default>(buf: &mut Vec<T>, len: usize, what: &str) -> Result<()> {
    if buf.len() < len {
        buf.try_reserve(len - buf.len()).map_err(|_| {
            Error::Memory(format!(
                "cannot allocate {} bytes for {what}",
                len.saturating_mul(std::mem::size_of::<T>())
            ))
        })?;
        buf.resize(len, T::default());
    }
    Ok(())
}

/// Runs `body` with the scratch kept in `key`, taken out for the call and put back after: a
/// call that starts on the same thread meanwhile (rayon runs other jobs on a worker that
/// waits inside a parallel loop) finds it empty and makes its own, instead of finding it
/// borrowed.
pub fn with_scratch<S: Default + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<S>>,
    body: impl FnOnce(&mut S) -> R,
) -> R {
    let mut scratch = key.take();
    let r = body(&mut scratch);
    key.set(scratch);
    r
}
