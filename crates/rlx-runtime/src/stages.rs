//! Which pass pipeline a device and options get.

use rlx_opt::Pipeline;

use crate::{CompileOptions, Device};

pub fn pipeline_for(device: Device, options: &CompileOptions) -> Pipeline {
    let mut p = match (device, options.optimize) {
        (Device::Cpu, true) => Pipeline::standard(),
        (Device::Cpu, false) => Pipeline::empty(),
    };
    p.verify_each = options.verify;
    p
}
