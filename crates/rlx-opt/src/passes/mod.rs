//! HIR passes, one file each. `crate::Pipeline` decides their order.

pub mod dce;
