//! The backend registry: one backend per device, the CPU backend registered from the start.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::cpu::CpuBackend;
use crate::error::fail;
use crate::{Backend, Device, ForkLock, Result};

/// A `ForkLock`: a child forked while another thread looks up a backend can still compile.
type Registry = ForkLock<HashMap<Device, Arc<dyn Backend>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut m: HashMap<Device, Arc<dyn Backend>> = HashMap::new();
        m.insert(Device::Cpu, Arc::new(CpuBackend));
        ForkLock::new(m)
    })
}

/// The backend registered for `device`.
pub fn backend_for(device: Device) -> Result<Arc<dyn Backend>> {
    let reg = registry().lock();
    match reg.get(&device) {
        Some(b) => Ok(b.clone()),
        None => fail!(Compile, "no backend registered for device `{device}`"),
    }
}

/// Registers (or replaces) the backend for its device; returns the one it replaced.
pub fn register_backend(backend: Arc<dyn Backend>) -> Option<Arc<dyn Backend>> {
    registry().lock().insert(backend.device(), backend)
}
