//! PostgreSQL's legacy `md5` password authentication.
//!
//! The stored secret is `"md5" + hex(md5(password || username))`; the username
//! acts as a (weak, predictable) salt so equal passwords of different roles do
//! not share a secret. On the wire the server sends a random 4-byte salt and
//! the client answers `"md5" + hex(md5(hex_part_of_secret || salt))`, so the
//! plaintext password never crosses the network. The flip side, and the reason
//! SCRAM exists, is that the stored secret itself is password-equivalent:
//! anyone holding it can answer any challenge. That property is also what lets
//! a pooler authenticate clients and servers from the same stored secret.

// The crate `md-5` is imported as `md5`, which this module's own name shadows
// in the parent; the leading `::` makes the path unambiguous.
use ::md5::{Digest, Md5};

use super::ct_eq;

/// Prefix PostgreSQL puts on md5 secrets and on md5 responses.
const PREFIX: &str = "md5";

/// Compute the secret PostgreSQL stores in `pg_authid.rolpassword` for an
/// md5-hashed password.
pub fn md5_secret(user: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    prefixed_hex(&h.finalize())
}

/// Compute the `PasswordMessage` payload a client sends in answer to an
/// `AuthenticationMD5Password` challenge carrying `salt`.
///
/// Only the secret is needed, not the plaintext password, which is what lets
/// pglittle log in to a backend with nothing but the stored secret. The
/// `"md5"` prefix is stripped if present; a bare 32-character hex digest is
/// accepted too so callers need not normalise.
pub fn md5_response(stored_secret: &str, salt: [u8; 4]) -> String {
    let hex = stored_secret.strip_prefix(PREFIX).unwrap_or(stored_secret);
    let mut h = Md5::new();
    h.update(hex.as_bytes());
    h.update(salt);
    prefixed_hex(&h.finalize())
}

/// Check a client's `PasswordMessage` payload against the stored secret.
///
/// Returns `false` (rather than an error) when the stored secret is not an md5
/// secret at all, because from the client's point of view that is still just
/// a failed login. A single trailing NUL is tolerated so callers may pass the
/// raw C-string payload of the message. The comparison is constant-time.
pub fn md5_verify(stored_secret: &str, salt: [u8; 4], response: &[u8]) -> bool {
    if !is_md5_secret(stored_secret) {
        return false;
    }
    let response = response.strip_suffix(b"\0").unwrap_or(response);
    let expected = md5_response(stored_secret, salt);
    ct_eq(expected.as_bytes(), response)
}

/// True for strings of the exact shape PostgreSQL recognises as an md5
/// secret: `"md5"` followed by 32 lowercase hex digits.
pub fn is_md5_secret(s: &str) -> bool {
    s.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `"md5"` followed by the lowercase hex encoding of `digest`.
fn prefixed_hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(PREFIX.len() + digest.len() * 2);
    out.push_str(PREFIX);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// md5("postgres" || "postgres"), a value widely published in PostgreSQL
    /// documentation and forums, so it is an independent check of the hash
    /// and hex encoding.
    const PG_PG: &str = "md53175bce1d3201d16594cebf9d7eb3f9d";

    #[test]
    fn known_secret() {
        assert_eq!(md5_secret("postgres", "postgres"), PG_PG);
    }

    #[test]
    fn secret_matches_postgres_protocol() {
        for (user, pw) in [
            ("alice", "s3cret"),
            ("", ""),
            ("bob", "pässwörd"),
            ("u", "a b,c"),
        ] {
            assert_eq!(
                md5_secret(user, pw),
                postgres_protocol::password::md5(pw.as_bytes(), user)
            );
        }
    }

    #[test]
    fn username_is_the_salt() {
        assert_ne!(md5_secret("a", "pw"), md5_secret("b", "pw"));
        // password||user concatenation: ("ab","c") and ("a","bc") coincide.
        // That is PostgreSQL's scheme, not a bug here.
        assert_eq!(md5_secret("c", "ab"), md5_secret("bc", "a"));
    }

    #[test]
    fn response_verify_round_trip() {
        let salt = [0x01, 0x02, 0x03, 0x04];
        let resp = md5_response(PG_PG, salt);
        assert!(resp.starts_with("md5"));
        assert_eq!(resp.len(), 35);
        assert!(md5_verify(PG_PG, salt, resp.as_bytes()));
        // Trailing NUL from the C-string payload is tolerated.
        let mut with_nul = resp.clone().into_bytes();
        with_nul.push(0);
        assert!(md5_verify(PG_PG, salt, &with_nul));
        // Prefix is optional on input to md5_response.
        assert_eq!(md5_response(&PG_PG[3..], salt), resp);
    }

    #[test]
    fn response_is_md5_of_hex_and_salt() {
        // Independent recomputation of the wire formula.
        let salt = *b"\xde\xad\xbe\xef";
        let mut input = PG_PG.as_bytes()[3..].to_vec();
        input.extend_from_slice(&salt);
        let expected = prefixed_hex(&Md5::digest(&input));
        assert_eq!(md5_response(PG_PG, salt), expected);
    }

    #[test]
    fn verify_rejects() {
        let salt = [9, 8, 7, 6];
        let resp = md5_response(PG_PG, salt);
        // Wrong salt.
        assert!(!md5_verify(PG_PG, [9, 8, 7, 5], resp.as_bytes()));
        // Wrong secret.
        let other = md5_secret("postgres", "postgre5");
        assert!(!md5_verify(&other, salt, resp.as_bytes()));
        // Truncated, extended, empty, garbage.
        assert!(!md5_verify(PG_PG, salt, &resp.as_bytes()[..34]));
        assert!(!md5_verify(PG_PG, salt, format!("{resp}0").as_bytes()));
        assert!(!md5_verify(PG_PG, salt, b""));
        assert!(!md5_verify(PG_PG, salt, b"\xff\xfe\x00"));
        // Uppercase hex is not what PostgreSQL clients send.
        let upper_hex = format!("md5{}", resp[3..].to_uppercase());
        assert_ne!(upper_hex, resp);
        assert!(!md5_verify(PG_PG, salt, upper_hex.as_bytes()));
        // Stored secret that is not md5 never verifies, even against itself.
        for bad in ["", "md5", "postgres", "SCRAM-SHA-256$4096:abc$def:ghi"] {
            assert!(!md5_verify(bad, salt, md5_response(bad, salt).as_bytes()));
        }
        let upper = PG_PG.to_uppercase().replacen("MD5", "md5", 1);
        assert!(!md5_verify(
            &upper,
            salt,
            md5_response(&upper, salt).as_bytes()
        ));
    }
}
