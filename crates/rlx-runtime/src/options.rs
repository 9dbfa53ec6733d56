//! Compile options.

use crate::cpu::Isa;

/// The number format linears compute in. Norms, softmax, attention and accumulations stay f32
/// whatever the precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    F32,
    /// Weights and GEMM inputs rounded to bf16, products accumulated in f32: `vdpbf16ps` on
    /// CPUs with AVX512-BF16; elsewhere bf16-rounded weights on the f32 kernels.
    Bf16,
    /// Weights quantized per output channel to s8 (symmetric, f32 scales), activations per
    /// row to u8 when the product runs; i32 accumulation (`vpdpbusd` on AVX512-VNNI), f32
    /// dequantized epilogue.
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> crate::Result<Precision> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(crate::Error::Compile(format!(
                "unknown precision {s:?}: expected \"f32\", \"bf16\" or \"int8\""
            ))),
        }
    }
}

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
    /// The linears' number format (packed weights of another precision are built once per
    /// param, beside the f32 ones).
    pub precision: Precision,
    /// A batch variant of a graph that computes each sample on its own, whose activations
    /// dwarf its weights, runs its one-sample variant once per sample (`per_sample.rs`);
    /// `false`: every batch runs as one.
    pub per_sample: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            num_threads: None,
            optimize: true,
            verify: cfg!(debug_assertions),
            isa: None,
            prepack: true,
            precision: Precision::F32,
            per_sample: true,
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
        // Named only when off, so the keys of existing variants stay as they were.
        let batches = if self.per_sample {
            ""
        } else {
            " per_sample=off"
        };
        format!(
            "optimize={} isa={isa} prepack={} precision={}{batches}",
            self.optimize,
            self.prepack,
            self.precision.name()
        )
    }
}
