//! pglittle logging in to a server with SCRAM: any server-first and
//! server-final messages (the input, split at its first NUL).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pglittle::protocol::auth::scram::ScramKeyClient;

fuzz_target!(|data: &[u8]| {
    let (first, last) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut c = ScramKeyClient::new([7; 32], [9; 32]);
    let _ = c.client_first();
    if c.server_first(first).is_ok() {
        let _ = c.server_final(last);
    }
});
