//! A server connection: plain TCP, or TLS over it (pglittle the TLS
//! client). Besides reading and writing, what the pool asks of an idle
//! connection: is it readable, and what has it said without waiting.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::records::{RecordLayer, TlsKeys, Tracked};

pub enum ServerStream {
    Plain(TcpStream),
    /// Under rustls: the handshake and the login.
    Tls(Box<TlsStream<Tracked<TcpStream>>>),
    /// TLS 1.3 once logged in, on pglittle's own record layer (`records`).
    Records(Box<RecordLayer<TcpStream>>),
}

impl ServerStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0.get_ref(),
            ServerStream::Records(r) => r.get_ref(),
        }
    }

    /// What SCRAM-SHA-256-PLUS binds to: the hash of the server's
    /// certificate (`tls-server-end-point`); `None` over plain TCP.
    pub fn channel_binding(&self) -> Option<Vec<u8>> {
        match self {
            ServerStream::Plain(_) | ServerStream::Records(_) => None,
            ServerStream::Tls(s) => {
                let cert = s.get_ref().1.peer_certificates()?.first()?;
                Some(super::end_point(cert))
            }
        }
    }

    /// Waits until the socket has bytes (for TLS, records: `try_read_buf`
    /// then says whether they held anything for pglittle).
    pub async fn readable(&self) -> io::Result<()> {
        self.tcp().readable().await
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }

    /// Reads what has arrived, without waiting: `WouldBlock` when there is
    /// nothing; 0 at the end of the stream. Over TLS, records that carry
    /// nothing for pglittle (a session ticket) are taken in and count as
    /// nothing.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if let ServerStream::Plain(s) = self {
            return s.try_read_buf(buf);
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut chunk = [0u8; 4096];
        let mut total = 0;
        loop {
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut *self).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Ok(total),
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(rb.filled());
                    total += rb.filled().len();
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending if total > 0 => return Ok(total),
                Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }
}

impl ServerStream {
    /// A logged-in TLS 1.3 connection moved from rustls onto pglittle's
    /// own record layer (fewer instructions per message); anything else as
    /// it is. `None` only if it was taken apart and could not be rebuilt.
    pub fn into_records(self) -> Option<ServerStream> {
        let ServerStream::Tls(mut s) = self else {
            return Some(self);
        };
        let (tracked, conn) = s.get_mut();
        if !tracked.settled(conn) {
            return Some(ServerStream::Tls(s));
        }
        let (tracked, conn) = s.into_inner();
        let keys = TlsKeys::extract(conn)?;
        let layer = RecordLayer::new(tracked.into_inner(), keys)?;
        Some(ServerStream::Records(Box::new(layer)))
    }
}

super::io::plain_or_tls_io!(ServerStream, ServerStream::Tls(s) => s.as_mut(), ServerStream::Records(r) => r.as_mut());
