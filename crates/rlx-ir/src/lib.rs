//! rlx-ir: the data of the rlx compiler — dtypes, symbolic dims, shapes, the HIR and LIR, dim
//! bindings, binding manifests and variant keys. Nothing here transforms graphs or runs them.

pub mod binding;
pub mod component;
pub mod dim;
pub mod dtype;
pub mod error;
pub mod hir;
pub mod key;
pub mod lir;
pub mod manifest;
pub mod ops;
pub mod shape;

pub use binding::DimBinding;
pub use component::{ModelComponent, ModelVariant};
pub use dim::{Dim, Symbol};
pub use dtype::DType;
pub use error::{IrError, Result};
pub use hir::{HirModule, HirMut, ValueId};
pub use lir::LirModule;
pub use manifest::{BindingManifest, ManifestDiff, ManifestEntry};
pub use ops::{
    BinaryOp, CompareOp, ComputeOp, Constant, ConvAttrs, EwProgram, EwStep, MaskKind, OpKind,
    PoolAttrs, PoolKind, ReduceOp, TensorData, UnaryOp, Window,
};
pub use shape::{Shape, TensorType};
