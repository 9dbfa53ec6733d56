//! `BindingManifest`: the contract between a compiled variant and its caller — what goes in,
//! where each parameter sits in an aligned parameter block, and what comes out.

use std::fmt;

use crate::lir::{IoSlot, LirModule, align_up};
use crate::{DType, Dim, IrError, Result, Shape};

/// One input, param or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub name: String,
    pub dtype: DType,
    /// Symbolic in a template, static in a specialized variant.
    pub shape: Shape,
    /// Byte size (symbolic when the shape is).
    pub nbytes: Dim,
    /// Byte offset in the aligned parameter block; `None` for inputs and outputs.
    pub offset: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindingManifest {
    pub name: String,
    pub inputs: Vec<ManifestEntry>,
    pub params: Vec<ManifestEntry>,
    pub outputs: Vec<ManifestEntry>,
    /// Run-spanning state the caller's session holds (KV caches), updated in place.
    pub states: Vec<ManifestEntry>,
    /// Size of the parameter block when every param is laid out at its aligned offset.
    pub param_block_bytes: usize,
    /// Arena bytes of a specialized variant; `None` for a template.
    pub arena_bytes: Option<usize>,
}

impl BindingManifest {
    /// Reads the manifest off an LIR module (template or specialized).
    pub fn from_lir(lir: &LirModule) -> Result<BindingManifest> {
        let entry = |slot: &IoSlot| {
            let ty = &lir.buffer(slot.buffer).ty;
            ManifestEntry {
                name: slot.name.clone(),
                dtype: ty.dtype,
                shape: ty.shape.clone(),
                nbytes: ty.nbytes(),
                offset: None,
            }
        };
        let mut params: Vec<ManifestEntry> = lir.params.iter().map(entry).collect();
        let mut offset = 0usize;
        for p in &mut params {
            let bytes = p
                .nbytes
                .as_const()
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| {
                    IrError::Shape(format!(
                        "param `{}` has non-static size {}",
                        p.name, p.nbytes
                    ))
                })?;
            p.offset = Some(offset);
            offset = offset
                .checked_add(bytes)
                .and_then(align_up)
                .ok_or_else(|| IrError::Shape("parameter block size overflows".to_string()))?;
        }
        Ok(BindingManifest {
            name: lir.name.clone(),
            inputs: lir.inputs.iter().map(entry).collect(),
            params,
            outputs: lir.outputs.iter().map(entry).collect(),
            states: lir.states.iter().map(entry).collect(),
            param_block_bytes: offset,
            arena_bytes: lir.arena.as_ref().map(|a| a.size),
        })
    }

    pub fn param(&self, name: &str) -> Option<&ManifestEntry> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn input(&self, name: &str) -> Option<&ManifestEntry> {
        self.inputs.iter().find(|p| p.name == name)
    }

    /// What differs from `other` (the later manifest).
    pub fn diff(&self, other: &BindingManifest) -> ManifestDiff {
        let mut d = ManifestDiff::default();
        for (section, a, b) in [
            ("input", &self.inputs, &other.inputs),
            ("param", &self.params, &other.params),
            ("output", &self.outputs, &other.outputs),
            ("state", &self.states, &other.states),
        ] {
            for e in a {
                match b.iter().find(|x| x.name == e.name) {
                    None => d.removed.push(format!("{section} {}", e.name)),
                    Some(x) if x != e => d.changed.push(EntryChange {
                        section,
                        name: e.name.clone(),
                        before: e.clone(),
                        after: x.clone(),
                    }),
                    Some(_) => {}
                }
            }
            for x in b.iter().filter(|x| !a.iter().any(|e| e.name == x.name)) {
                d.added.push(format!("{section} {}", x.name));
            }
        }
        if self.arena_bytes != other.arena_bytes {
            d.arena_bytes = Some((self.arena_bytes, other.arena_bytes));
        }
        d
    }
}

/// One entry present in both manifests with different dtype, shape, size or offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryChange {
    pub section: &'static str,
    pub name: String,
    pub before: ManifestEntry,
    pub after: ManifestEntry,
}

/// Differences between two manifests (two variants, or two versions of a model).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<EntryChange>,
    pub arena_bytes: Option<(Option<usize>, Option<usize>)>,
}

impl ManifestDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.arena_bytes.is_none()
    }

    /// True when the parameter layout is the same, so one parameter block serves both.
    pub fn params_compatible(&self) -> bool {
        let touches_params = |s: &String| s.starts_with("param ");
        !self.added.iter().chain(&self.removed).any(touches_params)
            && !self.changed.iter().any(|c| c.section == "param")
    }
}

fn fmt_entry(f: &mut fmt::Formatter<'_>, section: &str, e: &ManifestEntry) -> fmt::Result {
    let offset = e
        .offset
        .map(|o| o.to_string())
        .unwrap_or_else(|| "-".to_string());
    let shape = e.shape.to_string();
    writeln!(
        f,
        "  {section:<7} {:<24} {:<5} {shape:<24} {:>14} {offset:>10}",
        e.name,
        e.dtype.name(),
        e.nbytes.to_string()
    )
}

impl fmt::Display for BindingManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "BindingManifest @{}", self.name)?;
        writeln!(
            f,
            "  {:<7} {:<24} {:<5} {:<24} {:>14} {:>10}",
            "kind", "name", "dtype", "shape", "bytes", "offset"
        )?;
        for e in &self.inputs {
            fmt_entry(f, "input", e)?;
        }
        for e in &self.params {
            fmt_entry(f, "param", e)?;
        }
        for e in &self.outputs {
            fmt_entry(f, "output", e)?;
        }
        for e in &self.states {
            fmt_entry(f, "state", e)?;
        }
        write!(f, "  param block {} bytes", self.param_block_bytes)?;
        match self.arena_bytes {
            Some(a) => writeln!(f, ", arena {a} bytes"),
            None => writeln!(f, ", arena planned per variant"),
        }
    }
}

impl fmt::Display for ManifestDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "ManifestDiff: identical");
        }
        writeln!(f, "ManifestDiff:")?;
        for a in &self.added {
            writeln!(f, "  + {a}")?;
        }
        for r in &self.removed {
            writeln!(f, "  - {r}")?;
        }
        for c in &self.changed {
            writeln!(
                f,
                "  ~ {} {}: {}{} {}B -> {}{} {}B",
                c.section,
                c.name,
                c.before.dtype,
                c.before.shape,
                c.before.nbytes,
                c.after.dtype,
                c.after.shape,
                c.after.nbytes
            )?;
        }
        if let Some((a, b)) = self.arena_bytes {
            writeln!(f, "  ~ arena {a:?} -> {b:?} bytes")?;
        }
        Ok(())
    }
}
