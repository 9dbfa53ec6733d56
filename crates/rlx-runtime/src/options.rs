//! Compile options.

use crate::cpu::Isa;

/// Options for the three compile steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Threads for kernels; `None` uses `RLX_NUM_THREADS` or the number of cores.
    pub num_threads: Option<usize>,
    /// Run the passes (`false`: lowering only, for differential testing).
    pub optimize: bool,
    /// Run the IR verifier after every pass and after specialization.
    pub verify: bool,
    /// The CPU kernels' instruction set; `None` uses `RLX_ISA` or the best the CPU has.
    pub isa: Option<Isa>,
    /// Pack weights into GEMM panels once, kept beside the bound param and shared by every
    /// variant (`false`: kernels read the bound arrays as they are, no extra memory).
    pub prepack: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            num_threads: None,
            optimize: true,
            verify: cfg!(debug_assertions),
            isa: None,
            prepack: true,
        }
    }
}

impl CompileOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// The options that change generated code, as canonical text for cache keys.
    pub fn key_text(&self) -> String {
        // The resolved path (RLX_ISA or the CPU's best), so keys differ where the code does.
        let isa = Isa::resolve(self.isa).map_or("invalid", Isa::name);
        format!(
            "optimize={} isa={isa} prepack={}",
            self.optimize, self.prepack
        )
    }
}
