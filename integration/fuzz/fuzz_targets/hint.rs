//! The routing-hint parser (`/* pglittle: ... */` comments) on any text,
//! and on any text after a comment opener (where a panic once was).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pglittle::sql::hint(data);
    let mut commented = b"/*".to_vec();
    commented.extend_from_slice(data);
    let _ = pglittle::sql::hint(&commented);
});
