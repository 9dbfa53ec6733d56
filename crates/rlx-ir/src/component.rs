//! Model variants and components: names plus a dim binding, with a key that is stable
//! across processes.

use crate::DimBinding;
use crate::key::stable_key;

/// One concrete size of a model, such as `b8_s128`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ModelVariant {
    pub name: String,
    pub binding: DimBinding,
}

impl ModelVariant {
    pub fn new(name: &str, binding: DimBinding) -> Self {
        ModelVariant {
            name: name.to_string(),
            binding,
        }
    }
}

/// A part of a model (an encoder, a head) at one variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ModelComponent {
    pub model: String,
    pub component: String,
    pub variant: ModelVariant,
}

/// Version of the canonical form hashed by [`ModelComponent::cache_key`].
const KEY_FORMAT: &str = "rlx-component-key/1";

impl ModelComponent {
    pub fn new(model: &str, component: &str, variant: ModelVariant) -> Self {
        ModelComponent {
            model: model.to_string(),
            component: component.to_string(),
            variant,
        }
    }

    pub fn dim_binding(&self) -> DimBinding {
        self.variant.binding.clone()
    }

    /// A key from the model, component and binding (sorted by symbol), the same in every process.
    /// The variant's display name is left out: two names for one binding are one artifact.
    pub fn cache_key(&self) -> u64 {
        let binding = self.variant.binding.to_string();
        stable_key(&[KEY_FORMAT, &self.model, &self.component, &binding])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_insertion_order_and_variant_name() {
        let a = DimBinding::new().with("batch", 4).with("seq", 128);
        let b = DimBinding::new().with("seq", 128).with("batch", 4);
        let ca = ModelComponent::new("bert", "encoder", ModelVariant::new("x", a));
        let cb = ModelComponent::new("bert", "encoder", ModelVariant::new("y", b.clone()));
        assert_eq!(ca.cache_key(), cb.cache_key());
        let cc = ModelComponent::new("bert", "encoder", ModelVariant::new("y", b.with("seq", 64)));
        assert_ne!(ca.cache_key(), cc.cache_key());
    }
}
