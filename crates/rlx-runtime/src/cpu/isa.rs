//! The instruction-set paths the CPU kernels have, chosen once per process from CPU feature
//! detection (or `RLX_ISA`), and per graph by `CompileOptions::isa`.

use std::sync::OnceLock;

use crate::{Error, Result};

/// One family of kernels. Ordered from the most portable to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, auto-vectorized for the build target (SSE2 on x86-64).
    Scalar,
    /// 256-bit AVX2 + FMA.
    Avx2,
    /// 512-bit AVX-512 (F, with FMA).
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    pub fn parse(s: &str) -> Result<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" => Ok(Isa::Avx512),
            other => Err(Error::Compile(format!(
                "unknown ISA `{other}`: expected one of scalar, avx2, avx512"
            ))),
        }
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Isa::Avx2.supported() && std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every path this CPU can run, most portable first (tests run each).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    /// The widest path this CPU has.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.supported())
            .unwrap_or(Isa::Scalar)
    }

    /// `isa` if given (an error when the CPU lacks it), else `RLX_ISA`, else the best path.
    pub fn resolve(isa: Option<Isa>) -> Result<Isa> {
        let isa = match isa {
            Some(i) => i,
            None => return default_isa(),
        };
        if !isa.supported() {
            return Err(Error::Compile(format!(
                "ISA `{}` was asked for but this CPU does not support it (available: {})",
                isa.name(),
                names(&Isa::available())
            )));
        }
        Ok(isa)
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn names(isas: &[Isa]) -> String {
    isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
}

/// The process default: `RLX_ISA` when set (checked against the CPU), else the best path.
/// Read once; a bad value is an error every time it is asked for.
pub fn default_isa() -> Result<Isa> {
    static DEFAULT: OnceLock<std::result::Result<Isa, String>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| match std::env::var("RLX_ISA") {
            Ok(v) if !v.trim().is_empty() => Isa::parse(&v)
                .and_then(|i| Isa::resolve(Some(i)))
                .map_err(|e| format!("RLX_ISA: {e}")),
            _ => Ok(Isa::best()),
        })
        .clone()
        .map_err(Error::Compile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_errors() {
        for i in Isa::ALL {
            assert_eq!(Isa::parse(i.name()).unwrap(), i);
        }
        assert!(Isa::parse("sse9").is_err());
        assert!(Isa::available().contains(&Isa::Scalar));
        assert_eq!(Isa::resolve(Some(Isa::Scalar)).unwrap(), Isa::Scalar);
    }
}
