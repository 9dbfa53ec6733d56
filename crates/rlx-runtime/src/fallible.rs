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
