//! Specialized LIR edited at random, then handed to the CPU backend: the verifier must refuse
//! what the kernels cannot run safely, and what it accepts must run without a bad access.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlx_fuzz::lir::run(data));
