//! The handful of cryptographic building blocks SCRAM-SHA-256 is made of.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Random bytes per nonce; 18 is a multiple of 3, so base64 has no padding.
const NONCE_BYTES: usize = 18;
/// SHA-256 output size, and so the size of every SCRAM key and proof.
const KEY_LEN: usize = 32;

pub(super) type Key = [u8; KEY_LEN];

pub(super) fn random_nonce() -> String {
    B64.encode(rand::random::<[u8; NONCE_BYTES]>())
}

/// A keyed HMAC-SHA-256 instance.
///
/// The RFC 2104 key preparation (hash if longer than a block, zero-pad) is
/// done here so the infallible `KeyInit::new` can be used instead of
/// `new_from_slice`, whose `Result` can never be `Err` for HMAC but would
/// otherwise need an `unwrap`.
fn keyed_hmac(key: &[u8]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..KEY_LEN].copy_from_slice(Sha256::digest(key).as_slice());
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <Hmac<Sha256> as KeyInit>::new(&block.into())
}

pub(super) fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    let mut mac = keyed_hmac(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub(super) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA-256 with a single output block ("Hi" in RFC 5802).
pub(super) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    // Keying HMAC costs two compressions; do it once and clone the state.
    let keyed = keyed_hmac(password);
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: Key = mac.finalize().into_bytes().into();
    let mut result = u;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        result = xor(&result, &u);
    }
    result
}

pub(super) fn xor(a: &Key, b: &Key) -> Key {
    std::array::from_fn(|i| a[i] ^ b[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_known_answer() {
        // RFC 7914 section 11, PBKDF2-HMAC-SHA256("passwd", "salt", 1), first block.
        let expected = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc";
        let got: String = hi(b"passwd", b"salt", 1)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, expected);
    }
}
