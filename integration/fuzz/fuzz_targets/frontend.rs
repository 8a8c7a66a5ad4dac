//! The frontend message decoder: whole messages, and the head of one
//! streamed in pieces, at a small and a large size limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pglittle::protocol::frontend::{peek_message, peek_stream_head};

fuzz_target!(|data: &[u8]| {
    for limit in [64usize, 1 << 20] {
        let mut at = 0;
        while at < data.len() {
            match peek_message(&data[at..], limit) {
                Ok(Some((msg, len))) => {
                    assert!(len > 0 && at + len <= data.len());
                    let _ = msg.ends_batch();
                    at += len;
                }
                Ok(None) => {
                    if let Ok(Some(head)) = peek_stream_head(&data[at..], limit) {
                        assert!(head.head_len <= head.total);
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }
});
