//! The startup packet decoder (StartupMessage, SSLRequest, CancelRequest)
//! and the `options` parameter parser, on any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(packet)) = pglittle::protocol::startup::decode_startup(&mut buf) {
        if let pglittle::protocol::startup::StartupPacket::Startup { params, .. } = packet {
            for (k, v) in &params {
                if k == "options" {
                    let _ = pglittle::protocol::startup::parse_options(v);
                }
            }
        }
    }
});
