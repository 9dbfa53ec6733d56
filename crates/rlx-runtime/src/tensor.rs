//! Host tensors handed to and returned from runs.

use rlx_ir::{DType, TensorData};

/// Borrowed element data of one input.
#[derive(Debug, Clone, Copy)]
pub enum HostData<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    Bool(&'a [bool]),
}

impl HostData<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::I64(_) => DType::I64,
            HostData::I32(_) => DType::I32,
            HostData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            HostData::F32(d) => d.len(),
            HostData::I64(d) => d.len(),
            HostData::I32(d) => d.len(),
            HostData::Bool(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        match self {
            HostData::F32(d) => d.as_ptr().cast(),
            HostData::I64(d) => d.as_ptr().cast(),
            HostData::I32(d) => d.as_ptr().cast(),
            HostData::Bool(d) => d.as_ptr().cast(),
        }
    }
}

/// Element data of one state (a KV cache), read and updated in place by a run.
#[derive(Debug)]
pub enum StateMut<'a> {
    F32(&'a mut [f32]),
    I64(&'a mut [i64]),
    I32(&'a mut [i32]),
    Bool(&'a mut [bool]),
}

impl StateMut<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            StateMut::F32(_) => DType::F32,
            StateMut::I64(_) => DType::I64,
            StateMut::I32(_) => DType::I32,
            StateMut::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            StateMut::F32(d) => d.len(),
            StateMut::I64(d) => d.len(),
            StateMut::I32(d) => d.len(),
            StateMut::Bool(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            StateMut::F32(d) => d.as_mut_ptr().cast(),
            StateMut::I64(d) => d.as_mut_ptr().cast(),
            StateMut::I32(d) => d.as_mut_ptr().cast(),
            StateMut::Bool(d) => d.as_mut_ptr().cast(),
        }
    }
}

impl<'a> From<&'a mut TensorData> for StateMut<'a> {
    fn from(d: &'a mut TensorData) -> Self {
        match d {
            TensorData::F32(v) => StateMut::F32(v),
            TensorData::I64(v) => StateMut::I64(v),
            TensorData::I32(v) => StateMut::I32(v),
            TensorData::Bool(v) => StateMut::Bool(v),
        }
    }
}

/// An input read in place: data plus, optionally, the shape the caller claims for it.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub data: HostData<'a>,
    /// When given, checked dim by dim against the manifest; otherwise only the length is.
    pub shape: Option<&'a [usize]>,
}

impl<'a> TensorRef<'a> {
    pub fn new(data: HostData<'a>, shape: &'a [usize]) -> Self {
        TensorRef {
            data,
            shape: Some(shape),
        }
    }
}

macro_rules! tensor_ref_from {
    ($($t:ty => $v:ident),*) => {$(
        impl<'a> From<&'a [$t]> for TensorRef<'a> {
            fn from(d: &'a [$t]) -> Self { TensorRef { data: HostData::$v(d), shape: None } }
        }
        impl<'a, const N: usize> From<&'a [$t; N]> for TensorRef<'a> {
            fn from(d: &'a [$t; N]) -> Self { TensorRef { data: HostData::$v(d), shape: None } }
        }
        impl<'a> From<&'a Vec<$t>> for TensorRef<'a> {
            fn from(d: &'a Vec<$t>) -> Self { TensorRef { data: HostData::$v(d), shape: None } }
        }
    )*};
}
tensor_ref_from!(f32 => F32, i64 => I64, i32 => I32, bool => Bool);

/// A named output of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(d) => Some(d),
            _ => None,
        }
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
}
