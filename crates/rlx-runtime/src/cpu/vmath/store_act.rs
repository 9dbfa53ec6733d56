//! The activation a kernel applies to its sums as it stores them (GEMM tiles, depthwise
//! rows), where it has one.

use rlx_ir::UnaryOp;

use super::lanes::F32s;

/// None, relu or relu6 on sums being stored: `max(0, v)`, then for relu6 `min(6, v)`, each
/// keeping its second operand, so NaN stays NaN and -0.0 stays -0.0 (as `math::relu6`, `if v
/// < 0 { 0 } else { v }`). `repr(u8)`: the assembly GEMM tile reads it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreAct {
    #[default]
    None = 0,
    Relu = 1,
    Relu6 = 2,
}

impl StoreAct {
    /// The store form of `act`, where it has one (other activations run over the stored
    /// values).
    pub fn of(act: Option<UnaryOp>) -> Option<StoreAct> {
        match act {
            None => Some(StoreAct::None),
            Some(UnaryOp::Relu) => Some(StoreAct::Relu),
            Some(UnaryOp::Relu6) => Some(StoreAct::Relu6),
            Some(_) => None,
        }
    }

    /// `act`'s store form where `in_stores`, else none (applied after the store).
    pub fn fused(act: Option<UnaryOp>, in_stores: bool) -> StoreAct {
        StoreAct::of(act)
            .filter(|_| in_stores)
            .unwrap_or(StoreAct::None)
    }

    /// On a vector of sums.
    ///
    /// # Safety
    /// `V`'s ISA is available on this CPU.
    #[inline(always)]
    pub(super) unsafe fn on<V: F32s>(self, v: V) -> V {
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                StoreAct::None => v,
                StoreAct::Relu => v.at_least(V::splat(0.0)),
                StoreAct::Relu6 => v.at_least(V::splat(0.0)).at_most(V::splat(6.0)),
            }
        }
    }

    /// On one sum.
    #[inline(always)]
    pub fn on_scalar(self, v: f32) -> f32 {
        match self {
            StoreAct::None => v,
            StoreAct::Relu if v < 0.0 => 0.0,
            StoreAct::Relu => v,
            StoreAct::Relu6 => super::math::relu6(v),
        }
    }
}
