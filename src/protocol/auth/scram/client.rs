//! The client half of SCRAM, keyed by ClientKey rather than a password.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::crypto::{hmac, random_nonce, sha256, xor, Key};
use super::{
    ct_eq, expect_attr, malformed, parse_iterations, skip_extensions, valid_nonce, AuthError,
};

/// What a SCRAM client says about channel binding (RFC 5802's gs2 header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// `n`: not over TLS, nothing to bind to.
    None,
    /// `y`: pglittle could bind but the server did not offer -PLUS (a server
    /// that did offer it then knows a man in the middle removed it).
    NotOffered,
    /// `p=tls-server-end-point`: bound to the server certificate's hash.
    EndPoint(Vec<u8>),
}

impl Binding {
    fn gs2_header(&self) -> &'static str {
        match self {
            Binding::None => "n,,",
            Binding::NotOffered => "y,,",
            Binding::EndPoint(_) => "p=tls-server-end-point,,",
        }
    }

    /// The `c=` attribute: the gs2 header and the binding data, in base64.
    fn c_attr(&self) -> String {
        let mut raw = self.gs2_header().as_bytes().to_vec();
        if let Binding::EndPoint(data) = self {
            raw.extend_from_slice(data);
        }
        B64.encode(raw)
    }

    /// The SASL mechanism this binding goes with.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Binding::EndPoint(_) => "SCRAM-SHA-256-PLUS",
            _ => "SCRAM-SHA-256",
        }
    }
}

enum ClientState {
    Initial,
    SentFirst,
    SentFinal { server_signature: Key },
    Done,
}

/// SCRAM client driven by a recovered ClientKey instead of a password
/// ("SCRAM pass-through").
///
/// It lets pglittle log in to a PostgreSQL server whose `pg_authid` holds the
/// same secret the client proved it knows. Salt and iteration count from the
/// server are validated but otherwise unused: with ClientKey in hand there is
/// no PBKDF2 to run, which also means a hostile server cannot make us burn
/// CPU with a huge iteration count.
pub struct ScramKeyClient {
    client_key: Key,
    server_key: Key,
    nonce: String,
    binding: Binding,
    state: ClientState,
}

impl ScramKeyClient {
    /// `server_key` comes from the same [`ScramSecret`](super::ScramSecret) the ClientKey was
    /// verified against; it is needed to check the server's signature.
    pub fn new(client_key: [u8; 32], server_key: [u8; 32]) -> Self {
        Self {
            client_key,
            server_key,
            nonce: random_nonce(),
            binding: Binding::None,
            state: ClientState::Initial,
        }
    }

    /// Binds the exchange as `binding` says (default: `Binding::None`).
    pub fn with_binding(mut self, binding: Binding) -> Self {
        self.binding = binding;
        self
    }

    /// The client-first-message, `<gs2 header>n=,r=<nonce>`. The username is left
    /// empty, as libpq does, because the server takes it from the startup
    /// packet.
    pub fn client_first(&mut self) -> Vec<u8> {
        if matches!(self.state, ClientState::Initial) {
            self.state = ClientState::SentFirst;
        }
        format!("{}{}", self.binding.gs2_header(), self.client_first_bare()).into_bytes()
    }

    /// Consume the server-first-message and produce the client-final-message.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(
            std::mem::replace(&mut self.state, ClientState::Done),
            ClientState::SentFirst
        ) {
            return Err(malformed("unexpected server-first-message"));
        }
        let mut attrs = data.split(|&b| b == b',');
        let first = attrs.next().unwrap_or_default();
        if first.starts_with(b"m=") {
            return Err(malformed("mandatory extensions (m=) are not supported"));
        }
        let nonce = expect_attr(Some(first), b'r')?;
        // RFC 5802: the server must extend our nonce, not replace it.
        if !valid_nonce(nonce)
            || nonce.len() <= self.nonce.len()
            || !nonce.starts_with(self.nonce.as_bytes())
        {
            return Err(malformed("server nonce does not extend the client nonce"));
        }
        let salt = B64
            .decode(expect_attr(attrs.next(), b's')?)
            .map_err(|_| malformed("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(malformed("salt is empty"));
        }
        parse_iterations(expect_attr(attrs.next(), b'i')?)
            .ok_or_else(|| malformed("iteration count is not a positive 32-bit integer"))?;
        skip_extensions(attrs)?;

        let mut without_proof = format!("c={},r=", self.binding.c_attr()).into_bytes();
        without_proof.extend_from_slice(nonce);
        let bare = self.client_first_bare();
        let auth_message = [bare.as_bytes(), b",", data, b",", &without_proof];
        let client_signature = hmac(&sha256(&self.client_key), &auth_message);
        let proof = xor(&self.client_key, &client_signature);
        self.state = ClientState::SentFinal {
            server_signature: hmac(&self.server_key, &auth_message),
        };
        without_proof.extend_from_slice(format!(",p={}", B64.encode(proof)).as_bytes());
        Ok(without_proof)
    }

    /// Verify the server-final-message; `Ok` means the server proved it knows
    /// the secret, so the connection really is to the intended PostgreSQL.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        let ClientState::SentFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(malformed("unexpected server-final-message"));
        };
        let first = data.split(|&b| b == b',').next().unwrap_or_default();
        if let Some(err) = first.strip_prefix(b"e=") {
            let err = String::from_utf8_lossy(err);
            return Err(malformed(&format!("server reported error: {err}")));
        }
        let verifier = B64
            .decode(expect_attr(Some(first), b'v')?)
            .map_err(|_| malformed("server signature is not valid base64"))?;
        if ct_eq(&verifier, &server_signature) {
            Ok(())
        } else {
            Err(AuthError::ServerSignature)
        }
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_malformed<T: std::fmt::Debug>(r: &Result<T, AuthError>) -> bool {
        matches!(r, Err(AuthError::Malformed(_)))
    }

    #[test]
    fn key_client_rejects_bad_server_messages() {
        let fresh = || {
            let mut c = ScramKeyClient::new([7; 32], [8; 32]);
            let first = String::from_utf8(c.client_first()).expect("utf8");
            let nonce = first.strip_prefix("n,,n=,r=").expect("prefix").to_owned();
            (c, nonce)
        };
        let salt = "c2FsdA==";
        let bad_firsts = |n: &str| -> Vec<String> {
            vec![
                String::new(),
                format!("r={n}"), // server did not extend the nonce
                format!("r=other{n}x,s={salt},i=4096"), // nonce replaced
                format!("r={n}x,s=,i=4096"), // empty salt
                format!("r={n}x,s=***,i=4096"), // bad base64
                format!("r={n}x,s={salt},i=0"),
                format!("r={n}x,s={salt},i=-1"),
                format!("r={n}x,s={salt},i=4096,junk"),
                format!("r={n}x,i=4096,s={salt}"),
                format!("m=x,r={n}x,s={salt},i=4096"),
                format!("r={n} x,s={salt},i=4096"),
            ]
        };
        for template in bad_firsts("NONCE") {
            let (mut c, n) = fresh();
            let case = template.replace("NONCE", &n);
            let r = c.server_first(case.as_bytes());
            assert!(is_malformed(&r), "{case:?} gave {r:?}");
        }
        let (mut c, n) = fresh();
        let ok = format!("r={n}x,s={salt},i=4096,x=ext");
        assert!(c.server_first(ok.as_bytes()).is_ok());
        assert!(
            is_malformed(&c.server_first(ok.as_bytes())),
            "second server-first"
        );
        for bad_final in [&b"e=invalid-proof"[..], b"v=***", b"x=1", b""] {
            let (mut c, n) = fresh();
            c.server_first(format!("r={n}x,s={salt},i=4096").as_bytes())
                .expect("first");
            assert!(is_malformed(&c.server_final(bad_final)), "{bad_final:?}");
        }
        let (mut c, n) = fresh();
        c.server_first(format!("r={n}x,s={salt},i=4096").as_bytes())
            .expect("first");
        let wrong = format!("v={}", B64.encode([0u8; 32]));
        assert!(matches!(
            c.server_final(wrong.as_bytes()),
            Err(AuthError::ServerSignature)
        ));
        // Out-of-order calls.
        let mut c = ScramKeyClient::new([7; 32], [8; 32]);
        assert!(is_malformed(&c.server_first(b"r=x,s=c2FsdA==,i=1")));
        assert!(is_malformed(&c.server_final(b"v=AAAA")));
    }
}
