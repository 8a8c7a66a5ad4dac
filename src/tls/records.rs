//! pglittle's own TLS 1.3 record layer, for sessions past their handshake.
//!
//! rustls does the handshakes and the logins (certificates, ALPN, channel
//! binding). Once a TLS 1.3 connection is logged in, what it needs is
//! small: per direction, the AEAD key, the IV and the record sequence
//! number (RFC 8446 §5), taken from rustls as [`TlsKeys`]. [`RecordLayer`]
//! goes on with them over ring's AEADs: it seals what pglittle writes
//! (vectored writes become one record), opens what the peer sends in place
//! in one buffer, skips a server's session tickets, and takes a
//! close_notify as the end of the stream. It runs on fewer instructions per
//! message than rustls's buffered connection (see BENCHMARKS.md, session
//! 10), and the keys can move with the socket to a new process at a rolling
//! restart.
//!
//! What it does not do: TLS 1.2 (such a connection stays on rustls), and a
//! KeyUpdate from the peer (the traffic secrets to derive the next keys are
//! not extracted): the connection then fails with a clear error. libpq and
//! PostgreSQL (OpenSSL) do not send KeyUpdate by themselves.
//!
//! A connection leaves rustls only between records: [`Tracked`], under
//! rustls, follows the record boundaries in what rustls read from the
//! socket, so that no half-read record is left behind in rustls's buffers.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use ring::aead::Aad;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::keys::Sealer;
pub use super::keys::TlsKeys;
pub use super::tracked::Tracked;

const HEADER: usize = 5;
/// TLSInnerPlaintext's content at most (RFC 8446 §5.1).
const MAX_PLAIN: usize = 1 << 14;
/// A TLSCiphertext's length at most (§5.2).
const MAX_CIPHER: usize = MAX_PLAIN + 256;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const TAG: usize = 16;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

pub(super) fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {what}"))
}

/// Reads go into this much free room at least.
const READ_ROOM: usize = 4096;
/// An emptied inbox larger than this is given back (a large reply grew it).
const KEEP_INBOX: usize = 2 * (MAX_CIPHER + HEADER);

/// A TLS 1.3 session's record layer over `S`, from [`TlsKeys`]: the
/// session's transport once rustls has done the handshake, and what a
/// carried session goes on with in a new process.
pub struct RecordLayer<S> {
    io: S,
    keys: TlsKeys,
    tx: Sealer,
    rx: Sealer,
    /// Bytes read from the socket: `inbox[start..end]` is what is not
    /// consumed yet; records are opened in place.
    inbox: Vec<u8>,
    start: usize,
    end: usize,
    /// The opened record's plaintext not yet read: `inbox[plain.0..plain.1]`.
    plain: (usize, usize),
    /// Sealed, not yet written.
    out: BytesMut,
    closed: bool,
    sent_close: bool,
}

impl<S> RecordLayer<S> {
    pub fn new(io: S, keys: TlsKeys) -> Option<RecordLayer<S>> {
        Some(RecordLayer {
            tx: keys.sealer(&keys.tx)?,
            rx: keys.sealer(&keys.rx)?,
            keys,
            io,
            inbox: Vec::new(),
            start: 0,
            end: 0,
            plain: (0, 0),
            out: BytesMut::new(),
            closed: false,
            sent_close: false,
        })
    }

    /// Whether the session can move on: nothing buffered either way.
    pub fn settled(&self) -> bool {
        self.start == self.end
            && self.plain.0 == self.plain.1
            && self.out.is_empty()
            && !self.closed
    }

    /// The socket and the keys as they stand now, for the next process.
    pub fn into_parts(mut self) -> (S, TlsKeys) {
        self.keys.tx.seq = self.tx.seq;
        self.keys.rx.seq = self.rx.seq;
        (self.io, self.keys)
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Opens the first whole record in the inbox, if there is one; its
    /// plaintext (if any) becomes `plain`.
    fn open_record(&mut self) -> io::Result<bool> {
        let Some(header) = self.inbox[..self.end].get(self.start..self.start + HEADER) else {
            return Ok(false);
        };
        let header: [u8; HEADER] = header.try_into().map_err(|_| broken("header"))?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_CIPHER {
            return Err(broken("a record is longer than TLS allows"));
        }
        let body_at = self.start + HEADER;
        if self.end < body_at + len {
            return Ok(false);
        }
        self.start = body_at + len;
        // Past the handshake every record is protected (RFC 8446 §5: a
        // change_cipher_spec is dropped only before the peer's Finished).
        if header[0] != APPLICATION_DATA {
            return Err(broken("a record of an unexpected type"));
        }
        let nonce = self.rx.next_nonce()?;
        let body = &mut self.inbox[body_at..body_at + len];
        let inner = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(header), body)
            .map_err(|_| broken("a record failed to decrypt"))?;
        let end = inner
            .iter()
            .rposition(|b| *b != 0)
            .ok_or_else(|| broken("an empty record"))?;
        let (content, kind) = (&inner[..end], inner[end]);
        match kind {
            APPLICATION_DATA if end > MAX_PLAIN => {
                return Err(broken("a record is longer than TLS allows"))
            }
            APPLICATION_DATA => self.plain = (body_at, body_at + end),
            ALERT if content.get(1) == Some(&CLOSE_NOTIFY) => self.closed = true,
            ALERT if content.get(1) == Some(&USER_CANCELED) => {}
            ALERT => return Err(broken("the peer sent an alert")),
            // A server's session ticket: pglittle does not resume sessions.
            HANDSHAKE if content.first() == Some(&4) => {}
            HANDSHAKE if content.first() == Some(&24) => {
                return Err(broken(
                    "the peer asked for a key update, which pglittle's record layer cannot follow",
                ))
            }
            _ => return Err(broken("an unexpected message")),
        }
        Ok(true)
    }

    /// Room to read into at the end of the inbox: consumed bytes are
    /// dropped (moved down, or the buffer given back when empty and large).
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.inbox.len() > KEEP_INBOX {
                self.inbox = Vec::new();
            }
        } else if self.start > 0 && self.inbox.len() - self.end < READ_ROOM {
            self.inbox.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        if self.inbox.len() - self.end < READ_ROOM {
            let grown = (self.end + READ_ROOM).max(self.inbox.len() * 2);
            self.inbox
                .resize(grown.min(self.end + MAX_CIPHER + HEADER), 0);
        }
    }

    /// Seals `parts` (at most [`MAX_PLAIN`] bytes in all) as one record.
    fn seal(&mut self, parts: &[&[u8]], kind: u8) -> io::Result<()> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let len = size + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let nonce = self.tx.next_nonce()?;
        self.out.reserve(HEADER + len);
        self.out.put_slice(&header);
        let start = self.out.len();
        for p in parts {
            self.out.put_slice(p);
        }
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

impl<S: AsyncRead + AsyncWrite + Unpin> RecordLayer<S> {
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

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RecordLayer<S> {
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
            let (from, to) = this.plain;
            if from < to {
                let n = (to - from).min(buf.remaining());
                buf.put_slice(&this.inbox[from..from + n]);
                this.plain.0 += n;
                return Poll::Ready(Ok(()));
            }
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            if this.open_record()? {
                continue;
            }
            this.make_room();
            let mut read = ReadBuf::new(&mut this.inbox[this.end..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                if this.start < this.end {
                    return Poll::Ready(Err(broken("the connection ended inside a record")));
                }
                this.closed = true;
                return Poll::Ready(Ok(()));
            }
            this.end += n;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RecordLayer<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    /// Up to one record's worth of `bufs`, sealed as one record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        let mut parts: [&[u8]; 8] = [&[]; 8];
        let (mut taken, mut room) = (0, MAX_PLAIN);
        for (slot, b) in parts.iter_mut().zip(bufs.iter().filter(|b| !b.is_empty())) {
            let n = b.len().min(room);
            *slot = &b[..n];
            (taken, room) = (taken + n, room - n);
            if room == 0 {
                break;
            }
        }
        if taken == 0 {
            return Poll::Ready(Ok(0));
        }
        this.seal(&parts, APPLICATION_DATA)?;
        if let Poll::Ready(Err(e)) = this.poll_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
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
            this.seal(&[&[1, 0]], ALERT)?;
        }
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
