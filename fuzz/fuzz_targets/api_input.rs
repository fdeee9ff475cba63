//! The cargo-fuzz target: every input parser on arbitrary bytes (see `../exercise.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../exercise.rs");

fuzz_target!(|data: &[u8]| exercise(data));
