//! A TLS 1.3 session's record keys, both ways: taken from rustls once its
//! handshake is done ([`TlsKeys::extract`]), carried as bytes to a new
//! process at a rolling restart, and made into the per-direction AEAD
//! state (`Sealer`) the record layer (`records`) runs on.

use std::io;

use ring::aead::{LessSafeKey, Nonce, UnboundKey};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion};

use super::records::broken;

/// The AEAD suites of TLS 1.3 that rustls (ring) negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Suite {
    Aes128Gcm = 1,
    Aes256Gcm = 2,
    Chacha20Poly1305 = 3,
}

impl Suite {
    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &ring::aead::AES_128_GCM,
            Suite::Aes256Gcm => &ring::aead::AES_256_GCM,
            Suite::Chacha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
        }
    }

    fn from_code(code: u8) -> Option<Suite> {
        [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305]
            .into_iter()
            .find(|s| *s as u8 == code)
    }
}

/// One direction's keys: as data, to cross to the new process.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct DirectionKeys {
    pub(super) key: Vec<u8>,
    pub(super) iv: [u8; 12],
    pub(super) seq: u64,
}

/// A TLS 1.3 session's record keys, both ways. Secret: it lives only in
/// memory and on the Unix socket between the two processes.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsKeys {
    pub(super) suite: Suite,
    /// Server to client.
    pub(super) tx: DirectionKeys,
    /// Client to server.
    pub(super) rx: DirectionKeys,
}

impl std::fmt::Debug for TlsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TlsKeys({:?}, tx seq {}, rx seq {})",
            self.suite, self.tx.seq, self.rx.seq
        )
    }
}

fn direction(seq: u64, secrets: ConnectionTrafficSecrets) -> Option<(Suite, DirectionKeys)> {
    let (suite, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Suite::Chacha20Poly1305, key, iv)
        }
        _ => return None,
    };
    let iv = <[u8; 12]>::try_from(iv.as_ref()).ok()?;
    let key = key.as_ref().to_vec();
    Some((suite, DirectionKeys { key, iv, seq }))
}

impl TlsKeys {
    /// The keys of an established TLS 1.3 connection, either side (made
    /// with `enable_secret_extraction`), which is consumed. `None` for TLS
    /// 1.2, a connection with records still to send, or plaintext not yet
    /// read.
    pub fn extract(conn: impl Into<rustls::Connection>) -> Option<TlsKeys> {
        let mut conn = conn.into();
        let state = conn.process_new_packets().ok()?;
        let settled = state.plaintext_bytes_to_read() == 0 && !conn.wants_write();
        if !settled || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return None;
        }
        let secrets = conn.dangerous_extract_secrets().ok()?;
        let (suite, tx) = direction(secrets.tx.0, secrets.tx.1)?;
        let (rx_suite, rx) = direction(secrets.rx.0, secrets.rx.1)?;
        (suite == rx_suite).then_some(TlsKeys { suite, tx, rx })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.suite as u8];
        for d in [&self.tx, &self.rx] {
            out.push(d.key.len() as u8);
            out.extend_from_slice(&d.key);
            out.extend_from_slice(&d.iv);
            out.extend_from_slice(&d.seq.to_be_bytes());
        }
        out
    }

    pub fn decode(mut b: &[u8]) -> Option<TlsKeys> {
        let suite = Suite::from_code(*b.first()?)?;
        b = &b[1..];
        let mut dir = || {
            let n = usize::from(*b.first()?);
            let key = b.get(1..1 + n)?.to_vec();
            let iv = <[u8; 12]>::try_from(b.get(1 + n..13 + n)?).ok()?;
            let seq = u64::from_be_bytes(b.get(13 + n..21 + n)?.try_into().ok()?);
            b = &b[21 + n..];
            Some(DirectionKeys { key, iv, seq })
        };
        let (tx, rx) = (dir()?, dir()?);
        let keys = TlsKeys { suite, tx, rx };
        (b.is_empty() && keys.sealer(&keys.tx).is_some()).then_some(keys)
    }

    pub(super) fn sealer(&self, d: &DirectionKeys) -> Option<Sealer> {
        let key = UnboundKey::new(self.suite.algorithm(), &d.key).ok()?;
        Some(Sealer {
            key: LessSafeKey::new(key),
            iv: d.iv,
            seq: d.seq,
        })
    }
}

/// One direction's running state.
pub(super) struct Sealer {
    pub(super) key: LessSafeKey,
    pub(super) iv: [u8; 12],
    pub(super) seq: u64,
}

impl Sealer {
    /// The per-record nonce: the IV with the sequence number XORed into
    /// its last 8 bytes (§5.3), and the number moved on.
    pub(super) fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| broken("the record sequence number is exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}
