//! The LIR text form.

use std::fmt;

use super::{BufferKind, KernelOp, LirModule};

impl fmt::Display for LirModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lir @{}", self.name)?;
        if let Some(b) = &self.binding {
            write!(f, " {b}")?;
        }
        f.write_str(" {\n")?;
        let offsets = self.arena.as_ref().map(|a| &a.offsets);
        for (i, b) in self.buffers.iter().enumerate() {
            write!(f, "  b{i}: {}", b.ty)?;
            let slot_name = |slots: &[super::IoSlot]| {
                slots
                    .iter()
                    .find(|s| s.buffer.index() == i)
                    .map(|s| s.name.clone())
                    .unwrap_or_default()
            };
            match b.kind {
                BufferKind::Input => write!(f, " input \"{}\"", slot_name(&self.inputs))?,
                BufferKind::Param => write!(f, " param \"{}\"", slot_name(&self.params))?,
                BufferKind::Output => write!(f, " output \"{}\"", slot_name(&self.outputs))?,
                BufferKind::State => write!(f, " state \"{}\"", slot_name(&self.states))?,
                BufferKind::Temp => f.write_str(" temp")?,
                BufferKind::Const => f.write_str(" const")?,
                BufferKind::View { of } => write!(f, " view {of}")?,
            }
            if let Some(Some(off)) = offsets.map(|o| o[i]) {
                write!(f, " @{off}")?;
            }
            f.write_str("\n")?;
        }
        for k in &self.kernels {
            let args: Vec<String> = k.inputs.iter().map(|b| b.to_string()).collect();
            write!(f, "  {} = {}({})", k.output, k.op.name(), args.join(", "))?;
            if let KernelOp::Compute(c) = &k.op {
                f.write_str(&c.attrs())?;
            }
            f.write_str("\n")?;
        }
        if let Some(a) = &self.arena {
            writeln!(
                f,
                "  arena {} bytes (temps {} bytes, max live {} bytes)",
                a.size, a.temp_bytes, a.max_live_bytes
            )?;
        }
        f.write_str("}\n")
    }
}
