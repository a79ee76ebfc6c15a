//! Fuzz target for the envelope parser, `reservation_worker::event::parse`. The input layout
//! and the invariants checked beyond "does not panic" live beside the parser, in
//! `reservation_worker::event::invariants` (compiled for `--cfg fuzzing` and for its unit
//! test, which runs the seeds and the corpus through them in `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| reservation_worker::event::invariants::check(data));
