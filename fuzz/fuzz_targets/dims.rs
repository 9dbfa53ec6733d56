//! Dim expressions: parsing arbitrary text, arithmetic that may overflow, evaluation under
//! any binding. Errors are fine; a panic or an abort is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlx_fuzz::dims::run(data));
