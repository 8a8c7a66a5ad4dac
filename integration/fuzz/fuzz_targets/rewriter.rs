//! The prepared-statement books driven by message sequences: the input is
//! a script of client messages and server replies, interleaved
//! (`pglittle::prepared::script::run_script`). What the books send must be
//! whole frames, and no sequence may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pglittle::prepared::script::run_script(data));
