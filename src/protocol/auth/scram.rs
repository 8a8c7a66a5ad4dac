//! SCRAM-SHA-256 (RFC 5802 with the parameters of RFC 7677), as PostgreSQL
//! uses it.
//!
//! pglittle plays both roles. As a *server* it verifies clients against a
//! stored secret ([`ScramServer`]). As a *client* it logs in to PostgreSQL
//! ([`ScramKeyClient`]) without knowing the password: a successful client
//! proof reveals the ClientKey, and ClientKey plus ServerKey is all a SCRAM
//! client really needs. That "pass-through" is why [`ScramServer`] hands the
//! recovered key back to the caller.
//!
//! PostgreSQL specifics that differ from a generic SCRAM library:
//! * the username inside the SCRAM messages is ignored (it is usually empty);
//!   the startup packet's user is the one that counts;
//! * channel binding (`tls-server-end-point`, RFC 5929) is offered only over
//!   TLS, as SCRAM-SHA-256-PLUS ([`ScramServer::offer_binding`]); a client
//!   that could bind but believes the server cannot (`y`) is refused then,
//!   since the server can (a downgrade);
//! * the secret format is the `pg_authid.rolpassword` text form.

mod client;
mod crypto;
mod saslprep;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use self::crypto::{hi, hmac, random_nonce, sha256, xor, Key};
use super::{ct_eq, AuthError};

pub use self::client::{Binding, ScramKeyClient};

/// The channel-binding variant, offered over TLS.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The channel-binding type pglittle supports (RFC 5929).
const TLS_SERVER_END_POINT: &[u8] = b"p=tls-server-end-point";

/// SASL mechanism name to advertise in `AuthenticationSASL`.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// PostgreSQL's default `scram_iterations`.
const DEFAULT_ITERATIONS: u32 = 4096;
/// PostgreSQL's salt length for new secrets.
const DEFAULT_SALT_LEN: usize = 16;

/// A SCRAM-SHA-256 verifier: what the server stores instead of a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 rounds the client must spend to turn its password into keys.
    pub iterations: u32,
    /// Per-secret salt, so equal passwords do not yield equal secrets.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`: enough to check a client proof, not to forge one.
    pub stored_key: [u8; 32],
    /// Lets the server prove to the client that it, too, knows the secret.
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Parse the `pg_authid` form:
    /// `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    ///
    /// Error messages name the faulty part but never echo key material, since
    /// they end up in logs.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let bad = |m: &str| AuthError::BadSecret(m.to_owned());
        let rest = s
            .strip_prefix(SCRAM_SHA_256)
            .and_then(|r| r.strip_prefix('$'))
            .ok_or_else(|| bad("must start with \"SCRAM-SHA-256$\""))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or_else(|| bad("expected <iterations>:<salt>$<StoredKey>:<ServerKey>"))?;
        let (iter_s, salt_s) = params
            .split_once(':')
            .ok_or_else(|| bad("expected <iterations>:<salt> before the second '$'"))?;
        let (stored_s, server_s) = keys
            .split_once(':')
            .ok_or_else(|| bad("expected <StoredKey>:<ServerKey> after the second '$'"))?;
        let iterations = parse_iterations(iter_s.as_bytes())
            .ok_or_else(|| bad("iteration count is not a positive 32-bit integer"))?;
        let salt = B64
            .decode(salt_s)
            .map_err(|_| bad("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(bad("salt is empty"));
        }
        let key = |b64: &str, what: &str| {
            decode_key(b64.as_bytes())
                .ok_or_else(|| AuthError::BadSecret(format!("{what} is not 32 bytes of base64")))
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key(stored_s, "StoredKey")?,
            server_key: key(server_s, "ServerKey")?,
        })
    }

    /// Derive a secret from a plaintext password, as `CREATE ROLE ... PASSWORD`
    /// would with `password_encryption = scram-sha-256`.
    ///
    /// The password goes through (an approximation of) SASLprep first, like
    /// libpq and the server do; see `scram/saslprep.rs` for the exact coverage. An
    /// iteration count of 0 is meaningless for PBKDF2 and is raised to 1. The
    /// salt should be non-empty, or [`ScramSecret::parse`] will refuse the
    /// result's [`to_pg_string`](ScramSecret::to_pg_string).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let salted = hi(&saslprep::prepare(password), salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// A secret for a user that does not exist, so that a login attempt
    /// looks the same (a SCRAM exchange with a salt that is stable per
    /// name) and fails at the proof, as PostgreSQL does: user names cannot
    /// be enumerated. Derived from `nonce` (random per instance) and the
    /// name; no password matches it.
    pub fn mock(nonce: &[u8], user: &str) -> Self {
        let salt = hmac(nonce, &[b"salt", user.as_bytes()]);
        Self {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..DEFAULT_SALT_LEN].to_vec(),
            stored_key: hmac(nonce, &[b"stored", user.as_bytes()]),
            server_key: hmac(nonce, &[b"server", user.as_bytes()]),
        }
    }

    /// [`from_password`](Self::from_password) with PostgreSQL's defaults: a
    /// fresh random 16-byte salt and 4096 iterations.
    pub fn generate(password: &str) -> Self {
        let salt = rand::random::<[u8; DEFAULT_SALT_LEN]>();
        Self::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// The `pg_authid` text form; inverse of [`parse`](Self::parse).
    pub fn to_pg_string(&self) -> String {
        format!(
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

enum ServerState {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// What the client must echo in `c=`: its gs2 header, and the
        /// binding data when it bound.
        expected_cbind: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
    },
    /// Succeeded or failed; either way the exchange cannot be resumed, so a
    /// client cannot retry proofs against the same nonce.
    Done,
}

/// Server side of one SCRAM exchange (pglittle verifying a client).
pub struct ScramServer {
    secret: ScramSecret,
    server_nonce: String,
    state: ServerState,
    /// The tls-server-end-point data of the connection, when SCRAM-SHA-256-PLUS
    /// is offered (over TLS).
    binding: Option<Vec<u8>>,
    /// The client chose SCRAM-SHA-256-PLUS.
    plus: bool,
}

impl ScramServer {
    /// Start an exchange with a fresh random server nonce.
    pub fn new(secret: ScramSecret) -> Self {
        Self::with_nonce(secret, &random_nonce())
    }

    /// Start an exchange with a fixed server nonce, for deterministic tests.
    /// The nonce must be printable ASCII without `,` or clients will reject
    /// the server-first-message.
    pub fn with_nonce(secret: ScramSecret, nonce: &str) -> Self {
        Self {
            secret,
            server_nonce: nonce.to_owned(),
            state: ServerState::AwaitingClientFirst,
            binding: None,
            plus: false,
        }
    }

    /// Offers channel binding with this connection's tls-server-end-point
    /// data (the hash of pglittle's certificate): advertise
    /// [`SCRAM_SHA_256_PLUS`] too.
    pub fn offer_binding(mut self, end_point: Vec<u8>) -> Self {
        self.binding = Some(end_point);
        self
    }

    /// The mechanisms to advertise, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.binding.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Records the mechanism the client chose (from SASLInitialResponse).
    pub fn choose(&mut self, mechanism: &[u8]) -> Result<(), AuthError> {
        match mechanism {
            m if m == SCRAM_SHA_256.as_bytes() => Ok(()),
            m if m == SCRAM_SHA_256_PLUS.as_bytes() && self.binding.is_some() => {
                self.plus = true;
                Ok(())
            }
            _ => Err(malformed("client chose a mechanism that was not offered")),
        }
    }

    /// Consume the client-first-message (the `SASLInitialResponse` data) and
    /// produce the server-first-message (`r=...,s=...,i=...`).
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, ServerState::AwaitingClientFirst) {
            return Err(malformed("unexpected client-first-message"));
        }
        // Any error below ends the exchange.
        self.state = ServerState::Done;

        let mut header = data.splitn(3, |&b| b == b',');
        let bound = self.gs2_flag(header.next())?;
        match header.next() {
            Some(b"") => {}
            Some(a) if a.starts_with(b"a=") => {
                return Err(malformed("authorization identity (a=) is not supported"))
            }
            _ => return Err(malformed("invalid gs2 header")),
        }
        let bare = header
            .next()
            .ok_or_else(|| malformed("missing client-first-message-bare"))?;
        let gs2_header = &data[..data.len() - bare.len()];

        let mut attrs = bare.split(|&b| b == b',');
        let first = attrs.next().unwrap_or_default();
        if first.starts_with(b"m=") {
            return Err(malformed("mandatory extensions (m=) are not supported"));
        }
        // The SCRAM username is deliberately ignored; see the module docs.
        expect_attr(Some(first), b'n')?;
        let client_nonce = expect_attr(attrs.next(), b'r')?;
        if !valid_nonce(client_nonce) {
            return Err(malformed("client nonce is empty or not printable ASCII"));
        }
        skip_extensions(attrs)?;

        let nonce = [client_nonce, self.server_nonce.as_bytes()].concat();
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        let salt = B64.encode(&self.secret.salt);
        server_first
            .extend_from_slice(format!(",s={salt},i={}", self.secret.iterations).as_bytes());

        let mut expected_cbind = gs2_header.to_vec();
        if bound {
            expected_cbind.extend_from_slice(self.binding.as_deref().unwrap_or_default());
        }
        self.state = ServerState::AwaitingClientFinal {
            expected_cbind,
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Checks the gs2 channel-binding flag against what was offered and
    /// chosen; true when the client binds.
    fn gs2_flag(&self, flag: Option<&[u8]>) -> Result<bool, AuthError> {
        match flag {
            Some(b"n") if !self.plus => Ok(false),
            // "y": the client could bind but believes we cannot. Right when
            // we did not offer it; a downgrade when we did.
            Some(b"y") if self.binding.is_none() => Ok(false),
            Some(b"y") => Err(AuthError::ChannelBinding),
            Some(TLS_SERVER_END_POINT) if self.plus => Ok(true),
            Some(f) if f.starts_with(b"p=") => Err(AuthError::ChannelBinding),
            Some(b"n") => Err(AuthError::ChannelBinding),
            _ => Err(malformed("invalid gs2 channel-binding flag")),
        }
    }

    /// Consume the client-final-message (`c=...,r=...,p=...`), verify it, and
    /// produce the server-final-message (`v=...`) together with the ClientKey
    /// recovered from the proof, for use with [`ScramKeyClient`].
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, [u8; 32]), AuthError> {
        let ServerState::AwaitingClientFinal {
            expected_cbind,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(malformed("unexpected client-final-message"));
        };

        // The proof must be the last attribute, and everything before it is
        // signed.
        let comma = data
            .iter()
            .rposition(|&b| b == b',')
            .ok_or_else(|| malformed("client-final-message has too few attributes"))?;
        let (without_proof, proof_attr) = (&data[..comma], &data[comma + 1..]);
        let proof = decode_key(expect_attr(Some(proof_attr), b'p')?)
            .ok_or_else(|| malformed("proof is not 32 bytes of base64"))?;

        let mut attrs = without_proof.split(|&b| b == b',');
        let cbind = expect_attr(attrs.next(), b'c')?;
        // The client echoes its gs2 header (altered in transit otherwise)
        // and, when it binds, the end point of the TLS connection it sees:
        // another certificate there means a man in the middle.
        if B64.decode(cbind).ok().as_deref() != Some(expected_cbind.as_slice()) {
            return Err(if expected_cbind.starts_with(TLS_SERVER_END_POINT) {
                AuthError::ChannelBinding
            } else {
                malformed("channel-binding data does not match the gs2 header")
            });
        }
        if !ct_eq(expect_attr(attrs.next(), b'r')?, &nonce) {
            return Err(malformed("nonce does not match"));
        }
        skip_extensions(attrs)?;

        let auth_message = [
            &client_first_bare[..],
            b",",
            &server_first,
            b",",
            without_proof,
        ];
        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let client_key = xor(&proof, &client_signature);
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(AuthError::BadProof);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        Ok((
            format!("v={}", B64.encode(server_signature)).into_bytes(),
            client_key,
        ))
    }
}

fn malformed(msg: &str) -> AuthError {
    AuthError::Malformed(msg.to_owned())
}

/// Return the value of `attr` if it is `<name>=<value>`.
fn expect_attr(attr: Option<&[u8]>, name: u8) -> Result<&[u8], AuthError> {
    match attr {
        Some([n, b'=', value @ ..]) if *n == name => Ok(value),
        _ => Err(AuthError::Malformed(format!(
            "expected attribute '{}='",
            char::from(name)
        ))),
    }
}

/// Optional trailing extension attributes are allowed by RFC 5802 and
/// ignored, but they still have to look like attributes.
fn skip_extensions<'a>(attrs: impl Iterator<Item = &'a [u8]>) -> Result<(), AuthError> {
    for attr in attrs {
        if !matches!(attr, [n, b'=', ..] if n.is_ascii_alphabetic()) {
            return Err(malformed("invalid attribute"));
        }
    }
    Ok(())
}

/// RFC 5802 `printable`: ASCII 0x21..=0x7E except ','.
fn valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Digits only (no sign, no whitespace), value 1..=u32::MAX.
fn parse_iterations(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok().filter(|&n| n > 0)
}

/// Base64 that decodes to exactly one SHA-256-sized key.
fn decode_key(b64: &[u8]) -> Option<Key> {
    Key::try_from(B64.decode(b64).ok()?.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mock_secret_is_stable_per_name_and_differs_between_names() {
        let a = ScramSecret::mock(b"nonce", "alice");
        assert_eq!(a, ScramSecret::mock(b"nonce", "alice"));
        assert_ne!(a.salt, ScramSecret::mock(b"nonce", "bob").salt);
        assert_ne!(a.salt, ScramSecret::mock(b"other", "alice").salt);
        assert_eq!(a.salt.len(), DEFAULT_SALT_LEN);
    }
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn secret(password: &str) -> ScramSecret {
        ScramSecret::from_password(password, b"0123456789abcdef", 4096)
    }

    /// Run postgres-protocol's SCRAM client (an independent implementation)
    /// against our server. Returns the recovered ClientKey on success.
    fn pp_exchange(
        password: &str,
        secret: &ScramSecret,
        cb: ChannelBinding,
    ) -> Result<Key, AuthError> {
        let mut client = ScramSha256::new(password.as_bytes(), cb);
        let mut server = ScramServer::new(secret.clone());
        let server_first = server.client_first(client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first");
        let (server_final, key) = server.client_final(client.message())?;
        client
            .finish(&server_final)
            .expect("client accepts our signature");
        Ok(key)
    }

    /// Run a full exchange up to the client-final message, let `tamper`
    /// modify it, and return the server's verdict.
    fn tampered_final(
        pw_secret: &ScramSecret,
        tamper: impl Fn(String) -> String,
    ) -> Result<(), AuthError> {
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let mut server = ScramServer::new(pw_secret.clone());
        client
            .update(&server.client_first(client.message())?)
            .expect("update");
        let msg = String::from_utf8(client.message().to_vec()).expect("utf8");
        server.client_final(tamper(msg).as_bytes()).map(|_| ())
    }

    fn is_malformed<T: std::fmt::Debug>(r: &Result<T, AuthError>) -> bool {
        matches!(r, Err(AuthError::Malformed(_)))
    }

    #[test]
    fn secret_round_trip() {
        let s = secret("hunter2");
        assert_eq!(ScramSecret::parse(&s.to_pg_string()).expect("parse"), s);
        // A secret produced by a different implementation survives a text
        // round trip byte for byte.
        let theirs = postgres_protocol::password::scram_sha_256(b"hunter2");
        let parsed = ScramSecret::parse(&theirs).expect("parse");
        assert_eq!(parsed.to_pg_string(), theirs);
        assert_eq!(parsed.iterations, 4096);
        assert_eq!(parsed.salt.len(), 16);
    }

    #[test]
    fn parse_rejects_malformed_secrets() {
        let good = secret("x").to_pg_string();
        let (head, keys) = good.rsplit_once('$').expect("shape");
        let (stored, server) = keys.split_once(':').expect("shape");
        let short_key = B64.encode([0u8; 31]);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "must start with"),
            (
                "md53175bce1d3201d16594cebf9d7eb3f9d".into(),
                "must start with",
            ),
            ("SCRAM-SHA-1$4096:c2FsdA==$a:b".into(), "must start with"),
            ("SCRAM-SHA-256".into(), "must start with"),
            ("SCRAM-SHA-256$".into(), "expected <iterations>"),
            (
                format!("SCRAM-SHA-256$4096$c2FsdA==${stored}:{server}"),
                "<iterations>:<salt>",
            ),
            (
                format!("{head}${stored}{server}"),
                "<StoredKey>:<ServerKey>",
            ),
            (good.replacen("$4096:", "$0:", 1), "iteration"),
            (good.replacen("$4096:", "$-1:", 1), "iteration"),
            (good.replacen("$4096:", "$ 4096:", 1), "iteration"),
            (good.replacen("$4096:", "$99999999999:", 1), "iteration"),
            (good.replacen("$4096:", "$:", 1), "iteration"),
            (
                format!("SCRAM-SHA-256$4096:not*b64${stored}:{server}"),
                "salt",
            ),
            (
                format!("SCRAM-SHA-256$4096:${stored}:{server}"),
                "salt is empty",
            ),
            (format!("{head}${short_key}:{server}"), "StoredKey"),
            (format!("{head}${stored}:{short_key}"), "ServerKey"),
            (format!("{head}${stored}:{server}$"), "ServerKey"),
            (format!("{head}${stored}:"), "ServerKey"),
        ];
        for (input, needle) in cases {
            match ScramSecret::parse(&input) {
                Err(AuthError::BadSecret(msg)) => {
                    assert!(msg.contains(needle), "{input:?}: {msg:?} lacks {needle:?}")
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn from_password_matches_postgres_protocol() {
        let long = "x".repeat(100); // longer than an HMAC block: key gets hashed
        let passwords = [
            "",
            "password",
            "a b,c=d",
            "\x01ctl",
            long.as_str(),
            "pässwörd",
            "пароль",
            "密码",
            "a\u{A0}b",
            "a\u{3000}b",
            "\u{AD}pw\u{200B}x\u{FEFF}",
            "\u{FF50}\u{FF57}\u{FF01}",
            "x\u{B2}\u{B3}\u{B9}\u{AA}\u{BA}",
            "\u{B5}\u{BC}\u{BD}\u{BE}",
            "\u{A8}\u{AF}\u{B4}\u{B8}",
            "😀",
            "\u{A0}😀",
            "\u{A0}\u{E000}",
            "\u{A0}\u{85}",
            "\u{A0}\u{2028}",
        ];
        for pw in passwords {
            let theirs =
                ScramSecret::parse(&postgres_protocol::password::scram_sha_256(pw.as_bytes()))
                    .expect("parse");
            let ours = ScramSecret::from_password(pw, &theirs.salt, theirs.iterations);
            assert_eq!(ours, theirs, "password {pw:?}");
        }
    }

    #[test]
    fn known_saslprep_gap_is_documented() {
        // Decomposed sequences need full NFKC, which saslprep.rs does not
        // have. If this starts failing, the gap was closed: update the docs.
        let pw = "e\u{301}";
        let theirs = ScramSecret::parse(&postgres_protocol::password::scram_sha_256(pw.as_bytes()))
            .expect("parse");
        assert_ne!(ScramSecret::from_password(pw, &theirs.salt, 4096), theirs);
    }

    #[test]
    fn generate_uses_defaults() {
        let a = ScramSecret::generate("pw");
        let b = ScramSecret::generate("pw");
        assert_eq!((a.iterations, a.salt.len()), (4096, 16));
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        assert!(pp_exchange("pw", &a, ChannelBinding::unsupported()).is_ok());
        assert_eq!(ScramSecret::from_password("pw", b"s", 0).iterations, 1);
    }

    #[test]
    fn rfc7677_test_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("b64");
        let secret = ScramSecret::from_password("pencil", &salt, 4096);
        let mut server = ScramServer::with_nonce(secret, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let first = server
            .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .expect("first");
        assert_eq!(
            first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (last, _) = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .expect("final");
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn exchange_with_postgres_protocol_client() {
        let s = secret("correct horse");
        let key = pp_exchange("correct horse", &s, ChannelBinding::unsupported()).expect("ok");
        assert_eq!(sha256(&key), s.stored_key);
        // gs2 flag "y" (client could bind, thinks we cannot) is accepted.
        assert!(pp_exchange("correct horse", &s, ChannelBinding::unrequested()).is_ok());
        // SASLprep is applied on both sides.
        assert!(pp_exchange("a\u{A0}b", &secret("a b"), ChannelBinding::unsupported()).is_ok());
    }

    #[test]
    fn wrong_password_is_bad_proof() {
        let r = pp_exchange("wrong", &secret("right"), ChannelBinding::unsupported());
        assert!(matches!(r, Err(AuthError::BadProof)), "{r:?}");
        let r = pp_exchange("right", &secret("Right"), ChannelBinding::unsupported());
        assert!(matches!(r, Err(AuthError::BadProof)), "{r:?}");
    }

    #[test]
    fn channel_binding_is_refused_when_not_offered() {
        let cb = ChannelBinding::tls_server_end_point(vec![1, 2, 3]);
        let r = pp_exchange("pw", &secret("pw"), cb);
        assert!(matches!(r, Err(AuthError::ChannelBinding)), "{r:?}");
        let mut server = ScramServer::new(secret("pw"));
        let r = server.client_first(b"p=tls-unique,,n=,r=abc");
        assert!(matches!(r, Err(AuthError::ChannelBinding)), "{r:?}");
        assert_eq!(AuthError::ChannelBinding.sqlstate(), "28000");
        let mut server = ScramServer::new(secret("pw"));
        assert!(
            server.choose(SCRAM_SHA_256_PLUS.as_bytes()).is_err(),
            "PLUS not offered"
        );
    }

    /// postgres-protocol's client binding to `client_sees` against a server
    /// offering `server_has`.
    fn bound_exchange(client_sees: Vec<u8>, server_has: Vec<u8>) -> Result<Key, AuthError> {
        let mut client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(client_sees));
        let mut server = ScramServer::new(secret("pw")).offer_binding(server_has);
        assert_eq!(server.mechanisms(), &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
        server.choose(SCRAM_SHA_256_PLUS.as_bytes())?;
        let server_first = server.client_first(client.message())?;
        client.update(&server_first).expect("server-first");
        let (server_final, key) = server.client_final(client.message())?;
        client.finish(&server_final).expect("our signature");
        Ok(key)
    }

    #[test]
    fn channel_binding_over_tls_binds_to_the_certificate() {
        let end_point = vec![7u8; 32];
        assert!(bound_exchange(end_point.clone(), end_point.clone()).is_ok());
        // The client saw another certificate (a man in the middle).
        let r = bound_exchange(vec![8u8; 32], end_point.clone());
        assert!(matches!(r, Err(AuthError::ChannelBinding)), "{r:?}");
        // Offered but declined with "y": a downgrade, refused.
        let mut server = ScramServer::new(secret("pw")).offer_binding(end_point.clone());
        server.choose(SCRAM_SHA_256.as_bytes()).unwrap();
        let r = server.client_first(b"y,,n=,r=abc");
        assert!(matches!(r, Err(AuthError::ChannelBinding)), "{r:?}");
        // Offered, and not used ("n", plain SCRAM-SHA-256): fine.
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let mut server = ScramServer::new(secret("pw")).offer_binding(end_point);
        server.choose(SCRAM_SHA_256.as_bytes()).unwrap();
        let first = server.client_first(client.message()).unwrap();
        client.update(&first).unwrap();
        assert!(server.client_final(client.message()).is_ok());
    }

    #[test]
    fn tampered_client_final_is_rejected() {
        let sec = secret("pw");
        assert!(tampered_final(&sec, |m| m).is_ok());
        // Nonce altered (last character of the r= value changed).
        let r = tampered_final(&sec, |m| {
            let i = m.find(",p=").expect("p=");
            let mut b = m.into_bytes();
            b[i - 1] = if b[i - 1] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).expect("utf8")
        });
        assert!(is_malformed(&r), "{r:?}");
        // Nonce truncated, nonce extended.
        let r = tampered_final(&sec, |m| m.replacen(",p=", "x,p=", 1));
        assert!(is_malformed(&r), "{r:?}");
        // Channel-binding echo changed from "n,," to "y,,".
        let r = tampered_final(&sec, |m| m.replacen("c=biws", "c=eSws", 1));
        assert!(is_malformed(&r), "{r:?}");
        // Proof bit-flipped: well-formed but wrong.
        let r = tampered_final(&sec, |m| {
            let (head, proof) = m.split_once(",p=").expect("p=");
            let mut p = B64.decode(proof).expect("b64");
            p[0] ^= 1;
            format!("{head},p={}", B64.encode(p))
        });
        assert!(matches!(r, Err(AuthError::BadProof)), "{r:?}");
        // Extension attribute inserted: changes the signed message.
        let r = tampered_final(&sec, |m| m.replacen(",p=", ",x=1,p=", 1));
        assert!(matches!(r, Err(AuthError::BadProof)), "{r:?}");
        // Proof moved before r=.
        let r = tampered_final(&sec, |m| {
            let (head, proof) = m.split_once(",p=").expect("p=");
            let (c, r) = head.split_once(',').expect("c,r");
            format!("{c},p={proof},{r}")
        });
        assert!(is_malformed(&r), "{r:?}");
    }

    #[test]
    fn garbage_client_first_is_malformed() {
        let sec = secret("pw");
        let cases: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"n,,n=",
            b"n,,n=,",
            b"n,,n=,r=",
            b"n,,r=abc",
            b"n,,n=,x=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,junk,n=,r=abc",
            b"x,,n=,r=abc",
            b"N,,n=,r=abc",
            b"n,,n=,r=abc,",
            b"n,,n=,r=abc,garbage",
            b"n,,n=,r=a b",
            b"n,,n=,r=\xff\xfe",
            b"\xff\xff\xff\xff",
            b"\0\0\0",
            b",,,,,,",
            b"=,=,=",
        ];
        for &case in cases {
            let r = ScramServer::new(sec.clone()).client_first(case);
            assert!(
                is_malformed(&r),
                "{:?} gave {r:?}",
                String::from_utf8_lossy(case)
            );
        }
        // Accepted oddities: non-empty or non-UTF-8 username, extensions.
        for ok in [
            &b"n,,n=bob,r=abc"[..],
            b"y,,n=\xff,r=abc",
            b"n,,n=,r=abc,x=1,y=",
        ] {
            assert!(ScramServer::new(sec.clone()).client_first(ok).is_ok());
        }
    }

    #[test]
    fn garbage_client_final_is_rejected() {
        let sec = secret("pw");
        let cases: &[&[u8]] = &[
            b"",
            b",",
            b"c=biws",
            b"c=biws,r=cnonceSNONCE",
            b"c=biws,r=cnonceSNONCE,p=",
            b"c=biws,r=cnonceSNONCE,p=!!!",
            b"c=biws,r=cnonceSNONCE,p=AAAA",
            b"c=biws,r=cnonceSNONCE,q=AAAA",
            b"c=***,r=cnonceSNONCE,p=AAAA",
            b"r=cnonceSNONCE,c=biws,p=AAAA",
            b"c=biws,r=cnonceSNONCE,junk,p=AAAA",
            b"\xff\xfe\xfd",
        ];
        for &case in cases {
            let mut server = ScramServer::with_nonce(sec.clone(), "SNONCE");
            server.client_first(b"n,,n=,r=cnonce").expect("first");
            let r = server.client_final(case);
            assert!(
                is_malformed(&r),
                "{:?} gave {r:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn truncations_and_random_bytes_never_panic() {
        let sec = secret("pw");
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let first = client.message().to_vec();
        let mut server = ScramServer::with_nonce(sec.clone(), "SNONCE");
        client
            .update(&server.client_first(&first).expect("first"))
            .expect("update");
        let fin = client.message().to_vec();
        for n in 0..first.len() {
            let _ = ScramServer::new(sec.clone()).client_first(&first[..n]);
        }
        for n in 0..fin.len() {
            let mut s = ScramServer::with_nonce(sec.clone(), "SNONCE");
            s.client_first(&first).expect("first");
            assert!(s.client_final(&fin[..n]).is_err(), "prefix {n} accepted");
        }
        for _ in 0..500 {
            let len = rand::random::<u8>() as usize % 64;
            let junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            let mut s = ScramServer::with_nonce(sec.clone(), "SNONCE");
            let _ = s.client_first(&junk);
            let mut s = ScramServer::with_nonce(sec.clone(), "SNONCE");
            s.client_first(&first).expect("first");
            assert!(s.client_final(&junk).is_err());
            let mut c = ScramKeyClient::new([1; 32], [2; 32]);
            c.client_first();
            let _ = c.server_first(&junk);
            let _ = c.server_final(&junk);
        }
    }

    #[test]
    fn server_state_machine_is_one_shot() {
        let sec = secret("pw");
        let mut s = ScramServer::new(sec.clone());
        assert!(is_malformed(&s.client_final(b"c=biws,r=x,p=AAAA")));
        let mut s = ScramServer::new(sec.clone());
        s.client_first(b"n,,n=,r=abc").expect("first");
        assert!(is_malformed(&s.client_first(b"n,,n=,r=abc")));
        // After a failure the exchange cannot be retried.
        let mut s = ScramServer::new(sec.clone());
        assert!(s.client_first(b"garbage").is_err());
        assert!(is_malformed(&s.client_first(b"n,,n=,r=abc")));
        // Nonces are random per server.
        let a = ScramServer::new(sec.clone())
            .client_first(b"n,,n=,r=abc")
            .expect("a");
        let b = ScramServer::new(sec.clone())
            .client_first(b"n,,n=,r=abc")
            .expect("b");
        assert_ne!(a, b);
    }

    /// Drive a ScramKeyClient against a ScramServer holding `server_secret`.
    fn key_exchange(
        key: Key,
        client_server_key: Key,
        server_secret: &ScramSecret,
    ) -> Result<Key, AuthError> {
        let mut client = ScramKeyClient::new(key, client_server_key);
        let mut server = ScramServer::new(server_secret.clone());
        let first = client.client_first();
        assert!(first.starts_with(b"n,,n=,r="));
        let client_final = client.server_first(&server.client_first(&first)?)?;
        let (server_final, recovered) = server.client_final(&client_final)?;
        client.server_final(&server_final)?;
        Ok(recovered)
    }

    #[test]
    fn pass_through_with_recovered_client_key() {
        let s = secret("s3cret");
        let key = pp_exchange("s3cret", &s, ChannelBinding::unsupported()).expect("login");
        // Same secret (e.g. the backend's pg_authid): works, and the backend
        // recovers the same key.
        assert_eq!(
            key_exchange(key, s.server_key, &s).expect("pass-through"),
            key
        );
        // Same secret text as PostgreSQL would store it.
        let reparsed = ScramSecret::parse(&s.to_pg_string()).expect("parse");
        assert!(key_exchange(key, s.server_key, &reparsed).is_ok());
        // Different password, or same password with another salt: refused.
        let other = secret("other");
        assert!(matches!(
            key_exchange(key, s.server_key, &other),
            Err(AuthError::BadProof)
        ));
        let resalted = ScramSecret::from_password("s3cret", b"another salt", 4096);
        assert!(matches!(
            key_exchange(key, s.server_key, &resalted),
            Err(AuthError::BadProof)
        ));
        // A server that knows StoredKey but not ServerKey cannot impersonate.
        let mut impostor = s.clone();
        impostor.server_key[0] ^= 1;
        assert!(matches!(
            key_exchange(key, s.server_key, &impostor),
            Err(AuthError::ServerSignature)
        ));
    }

    /// The key client bound as `binding`, against a server that offers
    /// -PLUS bound to `server_end_point` (or does not offer it).
    fn key_client_bound(
        binding: Binding,
        server_end_point: Option<&[u8]>,
    ) -> Result<(), AuthError> {
        let s = secret("pw");
        let key = pp_exchange("pw", &s, ChannelBinding::unsupported()).expect("login");
        let mut client = ScramKeyClient::new(key, s.server_key).with_binding(binding.clone());
        let mut server = ScramServer::new(s.clone());
        if let Some(ep) = server_end_point {
            server = server.offer_binding(ep.to_vec());
        }
        server.choose(binding.mechanism().as_bytes())?;
        let first = client.client_first();
        let client_final = client.server_first(&server.client_first(&first)?)?;
        let (server_final, _) = server.client_final(&client_final)?;
        client.server_final(&server_final)
    }

    #[test]
    fn the_key_client_binds_to_the_server_certificate() {
        let ep = b"certificate hash".to_vec();
        key_client_bound(Binding::EndPoint(ep.clone()), Some(&ep)).expect("bound login");
        // Another certificate (a man in the middle): refused.
        assert!(matches!(
            key_client_bound(Binding::EndPoint(b"another".to_vec()), Some(&ep)),
            Err(AuthError::ChannelBinding)
        ));
        // "I could bind, you did not offer": fine where nothing was offered,
        // a downgrade where it was.
        key_client_bound(Binding::NotOffered, None).expect("y without an offer");
        assert!(key_client_bound(Binding::NotOffered, Some(&ep)).is_err());
        assert_eq!(Binding::None.mechanism(), "SCRAM-SHA-256");
    }
}
