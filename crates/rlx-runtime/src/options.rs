//! Compile options.

/// Options for the three compile steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Threads for kernels; `None` uses `RLX_NUM_THREADS` or the number of cores.
    pub num_threads: Option<usize>,
    /// Run the passes (`false`: lowering only, for differential testing).
    pub optimize: bool,
    /// Run the IR verifier after every pass and after specialization.
    pub verify: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            num_threads: None,
            optimize: true,
            verify: cfg!(debug_assertions),
        }
    }
}

impl CompileOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// The options that change generated code, as canonical text for cache keys.
    pub fn key_text(&self) -> String {
        format!("optimize={}", self.optimize)
    }
}
