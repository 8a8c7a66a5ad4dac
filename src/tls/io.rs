//! AsyncRead and AsyncWrite for the two plain-or-TLS stream enums
//! (`ClientStream`, `ServerStream`), written once. Over TLS, a read first
//! pushes out records a write left in rustls (the socket was full): every
//! wait of pglittle's ends in a read, so nothing written stays behind while
//! it waits; a write pushes its records out at once when the socket takes
//! them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(super) fn read_after_flush<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if let Poll::Ready(Err(e)) = Pin::new(&mut *s).poll_flush(cx) {
        return Poll::Ready(Err(e));
    }
    Pin::new(s).poll_read(cx, buf)
}

pub(super) fn write_then_flush<S: AsyncWrite + Unpin>(
    s: &mut S,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    let n = std::task::ready!(Pin::new(&mut *s).poll_write(cx, buf))?;
    if let Poll::Ready(Err(e)) = Pin::new(s).poll_flush(cx) {
        return Poll::Ready(Err(e));
    }
    Poll::Ready(Ok(n))
}

/// Implements AsyncRead and AsyncWrite for `$ty`, whose `Plain(TcpStream)`
/// variant is used as it is and whose TLS variants, each matched by a
/// `$tls`, give their TLS stream as `$inner`.
macro_rules! plain_or_tls_io {
    ($ty:ident, $($tls:pat => $inner:expr),+) => {
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(p) => std::pin::Pin::new(p).poll_read(cx, buf),
                    $($tls => super::io::read_after_flush($inner, cx, buf),)+
                }
            }
        }

        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(p) => std::pin::Pin::new(p).poll_write(cx, buf),
                    $($tls => super::io::write_then_flush($inner, cx, buf),)+
                }
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(p) => std::pin::Pin::new(p).poll_flush(cx),
                    $($tls => std::pin::Pin::new($inner).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(p) => std::pin::Pin::new(p).poll_shutdown(cx),
                    $($tls => std::pin::Pin::new($inner).poll_shutdown(cx),)+
                }
            }
        }
    };
}

pub(super) use plain_or_tls_io;
