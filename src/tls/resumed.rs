//! A client's TLS 1.3 session carried across a rolling restart.
//!
//! rustls cannot rebuild a connection in another process, but what a TLS
//! 1.3 session needs once its handshake is over is small: per direction,
//! the AEAD key, the IV and the record sequence number (RFC 8446 §5). The
//! old process extracts them from rustls ([`TlsKeys::extract`]) with the
//! socket; the new one goes on with [`ResumedTls`], a record layer of its
//! own over ring's AEADs: it seals application data, opens the client's
//! records, and takes a close_notify as the end of the stream.
//!
//! What it does not do: TLS 1.2 (such a client stays with the old process
//! until it leaves), and a KeyUpdate from the client (the traffic secrets
//! to derive the next keys are not extracted): the connection then fails
//! with a clear error. libpq (OpenSSL) does not send KeyUpdate by itself.
//!
//! A session moves only between records: [`Tracked`], under rustls in the
//! old process, follows the record boundaries in what rustls read from the
//! socket, so that no half-read record is left behind in rustls's buffers.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{ConnectionTrafficSecrets, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HEADER: usize = 5;
/// TLSInnerPlaintext's content at most (RFC 8446 §5.1).
const MAX_PLAIN: usize = 1 << 14;
/// A TLSCiphertext's length at most (§5.2).
const MAX_CIPHER: usize = MAX_PLAIN + 256;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const CHANGE_CIPHER_SPEC: u8 = 20;
const TAG: usize = 16;

/// The AEAD suites of TLS 1.3 that rustls (ring) negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
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
struct DirectionKeys {
    key: Vec<u8>,
    iv: [u8; 12],
    seq: u64,
}

/// A TLS 1.3 session's record keys, both ways. Secret: it lives only in
/// memory and on the Unix socket between the two processes.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsKeys {
    suite: Suite,
    /// Server to client.
    tx: DirectionKeys,
    /// Client to server.
    rx: DirectionKeys,
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
    /// The keys of an established TLS 1.3 server connection (made with
    /// `enable_secret_extraction`), which is consumed. `None` for TLS 1.2,
    /// a connection with records still to send, or plaintext not yet read.
    pub fn extract(mut conn: rustls::ServerConnection) -> Option<TlsKeys> {
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

    fn sealer(&self, d: &DirectionKeys) -> Option<Sealer> {
        let key = UnboundKey::new(self.suite.algorithm(), &d.key).ok()?;
        Some(Sealer {
            key: LessSafeKey::new(key),
            iv: d.iv,
            seq: d.seq,
        })
    }
}

/// One direction's running state.
struct Sealer {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Sealer {
    /// The per-record nonce: the IV with the sequence number XORed into
    /// its last 8 bytes (§5.3), and the number moved on.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
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

fn broken(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TLS after a restart: {what}"),
    )
}

/// A TLS 1.3 session's record layer, resumed from [`TlsKeys`] over `S`.
pub struct ResumedTls<S> {
    io: S,
    keys: TlsKeys,
    tx: Sealer,
    rx: Sealer,
    /// Records read, not yet opened.
    cipher: BytesMut,
    /// Opened, not yet read by the session.
    plain: BytesMut,
    /// Sealed, not yet written.
    out: BytesMut,
    scratch: Vec<u8>,
    closed: bool,
    sent_close: bool,
}

impl<S> ResumedTls<S> {
    pub fn new(io: S, keys: TlsKeys) -> Option<ResumedTls<S>> {
        Some(ResumedTls {
            tx: keys.sealer(&keys.tx)?,
            rx: keys.sealer(&keys.rx)?,
            keys,
            io,
            cipher: BytesMut::new(),
            plain: BytesMut::new(),
            out: BytesMut::new(),
            scratch: vec![0; MAX_CIPHER + HEADER],
            closed: false,
            sent_close: false,
        })
    }

    /// Whether the session can move on again: nothing buffered either way.
    pub fn settled(&self) -> bool {
        self.cipher.is_empty() && self.plain.is_empty() && self.out.is_empty() && !self.closed
    }

    /// The socket and the keys as they stand now, for the next process.
    pub fn into_parts(mut self) -> (S, TlsKeys) {
        self.keys.tx.seq = self.tx.seq;
        self.keys.rx.seq = self.rx.seq;
        (self.io, self.keys)
    }

    /// Opens the first whole record in `cipher`, if there is one.
    fn open_record(&mut self) -> io::Result<bool> {
        let Some(header) = self.cipher.get(..HEADER) else {
            return Ok(false);
        };
        let (kind, len) = (
            header[0],
            usize::from(u16::from_be_bytes([header[3], header[4]])),
        );
        if len > MAX_CIPHER {
            return Err(broken("a record is longer than TLS allows"));
        }
        if self.cipher.len() < HEADER + len {
            return Ok(false);
        }
        let mut record = self.cipher.split_to(HEADER + len);
        if kind == CHANGE_CIPHER_SPEC {
            return Ok(true);
        }
        if kind != APPLICATION_DATA {
            return Err(broken("a record of an unexpected type"));
        }
        let aad: [u8; HEADER] = record[..HEADER].try_into().map_err(|_| broken("header"))?;
        let nonce = self.rx.next_nonce()?;
        let body = &mut record[HEADER..];
        let inner = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(aad), body)
            .map_err(|_| broken("a record failed to decrypt"))?;
        let end = inner
            .iter()
            .rposition(|b| *b != 0)
            .ok_or_else(|| broken("an empty record"))?;
        let (content, kind) = (&inner[..end], inner[end]);
        match kind {
            APPLICATION_DATA => self.plain.extend_from_slice(content),
            ALERT if content.get(1) == Some(&0) => self.closed = true,
            ALERT => return Err(broken("the client sent an alert")),
            HANDSHAKE if content.first() == Some(&24) => {
                return Err(broken("the client asked for a key update, which a session carried over a restart cannot follow"))
            }
            _ => return Err(broken("an unexpected message")),
        }
        Ok(true)
    }

    /// Seals `data` (at most one record's worth) into `out`.
    fn seal(&mut self, data: &[u8], kind: u8) -> io::Result<()> {
        let len = data.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let nonce = self.tx.next_nonce()?;
        self.out.reserve(HEADER + len);
        self.out.put_slice(&header);
        let start = self.out.len();
        self.out.put_slice(data);
        self.out.put_u8(kind);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.out[start..])
            .map_err(|_| broken("a record failed to encrypt"))?;
        self.out.put_slice(tag.as_ref());
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ResumedTls<S> {
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ResumedTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // As the other streams: records a write left behind go out first.
        if let Poll::Ready(Err(e)) = this.poll_out(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if this.open_record()? {
                continue;
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                if !this.cipher.is_empty() {
                    return Poll::Ready(Err(broken("the connection ended inside a record")));
                }
                this.closed = true;
                return Poll::Ready(Ok(()));
            }
            this.cipher.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ResumedTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        let n = data.len().min(MAX_PLAIN);
        this.seal(&data[..n], APPLICATION_DATA)?;
        if let Poll::Ready(Err(e)) = this.poll_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.sent_close {
            this.sent_close = true;
            this.seal(&[1, 0], ALERT)?;
        }
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The socket under rustls in the old process, following TLS record
/// boundaries in what is read from it (5-byte headers, then the body).
pub struct Tracked<S> {
    io: S,
    header: [u8; HEADER],
    have: usize,
    body_left: usize,
}

impl<S> Tracked<S> {
    pub fn new(io: S) -> Tracked<S> {
        Tracked {
            io,
            header: [0; HEADER],
            have: 0,
            body_left: 0,
        }
    }

    /// Nothing of a record has been read without the rest of it.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.body_left == 0
    }

    pub fn into_inner(self) -> S {
        self.io
    }

    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEADER {
                self.have = 0;
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.follow(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "resumed_tests.rs"]
mod tests;
