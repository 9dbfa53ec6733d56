//! The graph builder and shape inference fed arbitrary op sequences, then template compile,
//! specialize, CPU compile and a run. Errors are fine; a panic, an abort or (under the
//! sanitizer) a bad memory access is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlx_fuzz::graph::run(data));
