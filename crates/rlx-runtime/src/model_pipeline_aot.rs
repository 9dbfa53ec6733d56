//! The disk half of `ModelCompilePipeline`: keys, loads and stores of templates and variants
//! in an [`AotCache`]. Any failure here is a miss (the cache counts it); compiling goes on.

use std::sync::Arc;

use rlx_ir::key::{hex, structural_digest};
use rlx_ir::{DimBinding, HirModule};
use rlx_opt::CompileResult;

use crate::aot::{AotCache, decode_result, encode_result};
use crate::cpu::Isa;
use crate::{CompileOptions, CompiledGraph, ModelCompilePipeline, Result, stages};

/// Bumped when what an entry means changes (not only its layout, see `aot::format::FORMAT`).
// 2: convolutions carry a fused epilogue (residual, activation).
// 4: a pointwise convolution's output may take over its residual's memory (an arena in-place
// pair an older build would run as two distinct buffers).
const KEY_SCHEME: &str = "rlx-aot/4";

impl ModelCompilePipeline {
    /// **Step 2 from disk**: [`Self::get_or_compile`] with `aot` as the disk cache for this
    /// call: the variant (and, on first use, the template) is read from `aot` when an intact
    /// entry exists, and written there when it was compiled.
    pub fn get_or_specialize_aot<F>(
        &mut self,
        binding: &DimBinding,
        build_hir: F,
        options: &CompileOptions,
        aot: &Arc<AotCache>,
    ) -> Result<Arc<CompiledGraph>>
    where
        F: FnOnce() -> HirModule,
    {
        let before = self.aot.replace(aot.clone());
        let result = self.get_or_compile(binding, build_hir, options);
        self.aot = before;
        result
    }

    /// What every key shares: the scheme, rlx's version, the device, the options that change
    /// code (the resolved ISA among them) and the CPU features the code was chosen for.
    fn key_base(&self, kind: &str, options: &CompileOptions) -> String {
        let cpu: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
        format!(
            "{KEY_SCHEME} kind={kind} rlx={} device={} options=[{}] cpu=[{}]",
            env!("CARGO_PKG_VERSION"),
            self.device().name(),
            options.key_text(),
            cpu.join(",")
        )
    }

    /// The template's key: the whole input graph (constants included) and the pass list.
    fn template_key(&self, hir: &HirModule, options: &CompileOptions) -> Option<String> {
        let structure = hex(&structural_digest(hir)?);
        let passes = stages::pipeline_for(self.device(), options)
            .pass_names()
            .join(",");
        Some(format!(
            "{} passes=[{passes}] hir={structure}",
            self.key_base("template", options)
        ))
    }

    fn variant_key(&self, binding: &DimBinding, options: &CompileOptions) -> Option<String> {
        let t = self.template_result()?;
        Some(format!(
            "{} template={:016x} binding={binding}",
            self.key_base("variant", options),
            t.fingerprint
        ))
    }

    pub(crate) fn load_template(
        &self,
        hir: &HirModule,
        options: &CompileOptions,
    ) -> Option<CompileResult> {
        let aot = self.aot.as_ref()?;
        let key = self.template_key(hir, options)?;
        let payload = aot.load(&key)?;
        let t = decode_result(&payload, None);
        if t.is_none() {
            aot.discard_key(&key);
        }
        t
    }

    pub(crate) fn store_template(
        &self,
        hir: &HirModule,
        options: &CompileOptions,
        t: &CompileResult,
    ) {
        self.store(self.template_key(hir, options), t, true);
    }

    /// Writes `result` under `key` (a template with its HIR, a variant without).
    fn store(&self, key: Option<String>, result: &CompileResult, with_hir: bool) {
        let (Some(aot), Some(key)) = (self.aot.as_ref(), key) else {
            return;
        };
        if let Some(payload) = encode_result(result, with_hir) {
            aot.store(&key, &payload);
        }
    }

    pub(crate) fn load_variant(
        &self,
        binding: &DimBinding,
        options: &CompileOptions,
    ) -> Option<CompileResult> {
        let aot = self.aot.as_ref()?;
        let template = self.template_result()?;
        let key = self.variant_key(binding, options)?;
        let payload = aot.load(&key)?;
        let v = decode_result(&payload, Some(&template.hir)).filter(|v| {
            v.fingerprint == template.fingerprint
                && v.lir.binding.as_ref() == Some(binding)
                && same_interface(&v.lir, &template.lir)
        });
        if v.is_none() {
            aot.discard_key(&key);
        }
        v
    }

    pub(crate) fn store_variant(
        &self,
        binding: &DimBinding,
        options: &CompileOptions,
        v: &CompileResult,
    ) {
        self.store(self.variant_key(binding, options), v, false);
    }

    /// A loaded variant that does not compile is discarded; the caller specializes it anew.
    pub(crate) fn discard_variant(&self, binding: &DimBinding, options: &CompileOptions) {
        if let (Some(aot), Some(key)) = (self.aot.as_ref(), self.variant_key(binding, options)) {
            aot.discard_key(&key);
        }
    }
}

/// The variant reads and writes what its template declares: the same input, param and output
/// names and dtypes, in order (a crafted entry could rename them and still verify).
fn same_interface(variant: &rlx_ir::LirModule, template: &rlx_ir::LirModule) -> bool {
    let io = |m: &rlx_ir::LirModule| {
        [&m.inputs, &m.params, &m.outputs].map(|slots| {
            slots
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        m.buffers.get(s.buffer.index()).map(|b| b.ty.dtype),
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    io(variant) == io(template)
}
