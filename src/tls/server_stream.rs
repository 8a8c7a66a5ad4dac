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

pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ServerStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0,
        }
    }

    /// What SCRAM-SHA-256-PLUS binds to: the hash of the server's
    /// certificate (`tls-server-end-point`); `None` over plain TCP.
    pub fn channel_binding(&self) -> Option<Vec<u8>> {
        match self {
            ServerStream::Plain(_) => None,
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
        let tls = match self {
            ServerStream::Plain(s) => return s.try_read_buf(buf),
            ServerStream::Tls(s) => s,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut chunk = [0u8; 4096];
        let mut total = 0;
        loop {
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(tls.as_mut()).poll_read(&mut cx, &mut rb) {
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

super::io::plain_or_tls_io!(ServerStream, ServerStream::Tls(s) => s.as_mut());
