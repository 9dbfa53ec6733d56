//! HIR passes, one file each. `crate::Pipeline` decides their order.

pub mod channels_last;
mod channels_last_shuffle;
pub mod cse;
pub mod dce;
pub mod fold_constants;
pub mod fuse_add_norm;
pub mod fuse_attention;
pub mod fuse_elementwise;
pub mod fuse_epilogue;
pub mod fuse_gelu;
pub mod fuse_qkv;
pub mod fuse_silu;
pub mod fuse_softmax;
pub mod fuse_swiglu;
pub mod simplify;
pub(crate) mod util;

/// What passes tell the compile report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassLog {
    /// Rewrites done, e.g. "attention: %12..%20 -> attention_packed".
    pub fusions: Vec<String>,
    /// Patterns that almost matched, with the reason they did not.
    pub near_misses: Vec<String>,
}
