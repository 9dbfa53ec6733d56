//! The HIR text form, used by `Display`, golden tests and cache keys.

use std::fmt;

use super::{HirModule, Op};

impl fmt::Display for HirModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hir @{}", self.name)?;
        if !self.symbols.is_empty() {
            f.write_str(" (")?;
            for (i, s) in self.symbols.iter().enumerate() {
                let sep = if i > 0 { ", " } else { "" };
                write!(f, "{sep}{} in [{}, {}]", s.name, s.min, s.max)?;
            }
            f.write_str(")")?;
        }
        f.write_str(" {\n")?;
        for (i, n) in self.nodes.iter().enumerate() {
            write!(f, "  %{i} = {}", n.op.name())?;
            match &n.op {
                Op::Input { name } | Op::Param { name } | Op::State { name } => {
                    write!(f, " \"{name}\"")?
                }
                Op::Constant(c) => {
                    let shown: Vec<String> = (0..c.data.len().min(8))
                        .map(|i| c.data.fmt_elem(i))
                        .collect();
                    let more = if c.data.len() > 8 { ", ..." } else { "" };
                    write!(f, " [{}{more}]", shown.join(", "))?
                }
                op => {
                    let args: Vec<String> = n.inputs.iter().map(|v| v.to_string()).collect();
                    write!(f, "({})", args.join(", "))?;
                    if let Op::Compute(c) = op {
                        f.write_str(&c.attrs())?;
                    }
                }
            }
            writeln!(f, " : {}", n.ty)?;
        }
        for o in &self.outputs {
            writeln!(f, "  output \"{}\" = {}", o.name, o.value)?;
        }
        f.write_str("}\n")
    }
}
