//! The socket under rustls, following TLS record boundaries in what rustls
//! reads from it, so that a session is moved off rustls (onto the record
//! layer, or to a new process) only when no record is half read.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HEADER: usize = 5;

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

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Nothing of a record has been read without the rest of it.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.body_left == 0
    }

    pub fn into_inner(self) -> S {
        self.io
    }

    /// Whether the session over this socket may leave rustls now (for the
    /// record layer, or a new process): TLS 1.3, between records, and
    /// nothing rustls still holds to write or that the peer sent to read.
    pub fn settled<D>(&self, conn: &mut rustls::ConnectionCommon<D>) -> bool {
        self.at_boundary()
            && conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
            && !conn.wants_write()
            && conn
                .process_new_packets()
                .is_ok_and(|st| st.plaintext_bytes_to_read() == 0)
    }

    pub(super) fn follow(&mut self, mut bytes: &[u8]) {
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
