//! Concrete values for symbolic dims.

use std::collections::BTreeMap;
use std::fmt;

/// Symbol name → value, kept sorted by name so its text form and keys are canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DimBinding {
    values: BTreeMap<String, i64>,
}

impl DimBinding {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder style: `DimBinding::new().with("batch", 8).with("seq", 128)`.
    pub fn with(mut self, name: &str, value: i64) -> Self {
        self.set(name, value);
        self
    }

    pub fn set(&mut self, name: &str, value: i64) {
        self.values.insert(name.to_string(), value);
    }

    pub fn get(&self, name: &str) -> Option<i64> {
        self.values.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.values.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl<S: AsRef<str>> FromIterator<(S, i64)> for DimBinding {
    fn from_iter<I: IntoIterator<Item = (S, i64)>>(iter: I) -> Self {
        let mut b = DimBinding::new();
        for (k, v) in iter {
            b.set(k.as_ref(), v);
        }
        b
    }
}

impl fmt::Display for DimBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("}")
    }
}
