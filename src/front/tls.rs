//! Before the startup packet: TLS, when the client asks for it (an
//! SSLRequest, or PostgreSQL 17's direct TLS) and `client_tls_mode` offers
//! it; 'N' to a GSSENCRequest; and a plain-text login refused where TLS is
//! required (a plain-text cancel request is still let through: libpq
//! sends cancels without TLS).

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::TlsMode;
use crate::error::SessionError;
use crate::protocol::backend;
use crate::protocol::startup::{peek_opening, Opening, TLS_HANDSHAKE_RECORD};
use crate::tls::{ClientStream, ClientTlsSetup, ALPN_POSTGRESQL};

/// What the client is offered: the mode and, unless disabled, the acceptor.
pub(super) struct Offer {
    pub mode: TlsMode,
    pub acceptor: Option<ClientTlsSetup>,
}

/// Settles whether the connection is encrypted, by `deadline`; what is
/// left in `buf` is the (plain-text) start of the startup packet. On an
/// error, the socket is handed back while the client can still be told in
/// plain text.
pub(super) async fn negotiate(
    offer: Offer,
    mut tcp: TcpStream,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> Result<ClientStream, (Option<TcpStream>, SessionError)> {
    let step = match tokio::time::timeout_at(deadline, decide(&offer, &mut tcp, buf)).await {
        Ok(Ok(step)) => step,
        Ok(Err(e)) => return Err((Some(tcp), e)),
        Err(_) => return Err((Some(tcp), SessionError::LoginTimeout)),
    };
    let acceptor = match (step, offer.acceptor) {
        (Step::Plain, _) => return Ok(ClientStream::Plain(tcp)),
        (_, None) => {
            let e = "direct TLS connection, but client_tls_mode = \"disable\"";
            return Err((None, SessionError::Tls(e.into())));
        }
        (_, Some(acceptor)) => acceptor,
    };
    let handshake = async {
        let stream = accept(&acceptor, tcp).await?;
        if step == Step::Direct {
            check_alpn(&stream)?;
        }
        Ok(stream)
    };
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(r) => r.map_err(|e| (None, e)),
        Err(_) => Err((None, SessionError::LoginTimeout)),
    }
}

/// What the opening bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Plain,
    /// An SSLRequest answered 'S': the TLS handshake comes next.
    Tls,
    /// A TLS handshake with no SSLRequest (PostgreSQL 17's direct TLS).
    Direct,
}

async fn decide(
    offer: &Offer,
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<Step, SessionError> {
    loop {
        if buf.is_empty() && opens_with_tls(tcp).await? {
            return Ok(Step::Direct);
        }
        let opening = loop {
            if let Some(o) = peek_opening(buf) {
                break o;
            }
            buf.reserve(64);
            if tcp.read_buf(buf).await? == 0 {
                return Err(eof());
            }
        };
        match opening {
            Opening::SslRequest => {
                buf.advance(8);
                if offer.acceptor.is_none() {
                    tcp.write_all(&[backend::SSL_NOT_SUPPORTED]).await?;
                    continue;
                }
                if !buf.is_empty() {
                    // Bytes sent before the handshake would pose as part
                    // of the encrypted session (CVE-2021-23214).
                    let e = "data sent after SSLRequest, before the TLS handshake";
                    return Err(SessionError::Tls(e.into()));
                }
                tcp.write_all(b"S").await?;
                return Ok(Step::Tls);
            }
            Opening::GssEncRequest => {
                buf.advance(8);
                tcp.write_all(&[backend::SSL_NOT_SUPPORTED]).await?;
            }
            Opening::Other if offer.mode.required() => {
                return Err(SessionError::TlsRequired(offer.mode));
            }
            Opening::Cancel | Opening::Other => return Ok(Step::Plain),
        }
    }
}

fn eof() -> SessionError {
    SessionError::ClientIo(std::io::ErrorKind::UnexpectedEof.into())
}

/// Whether the first byte waiting is a TLS handshake record (looked at,
/// not read).
async fn opens_with_tls(tcp: &TcpStream) -> Result<bool, SessionError> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await? {
        0 => Err(eof()),
        _ => Ok(first[0] == TLS_HANDSHAKE_RECORD),
    }
}

async fn accept(setup: &ClientTlsSetup, tcp: TcpStream) -> Result<ClientStream, SessionError> {
    let tls = setup
        .acceptor
        .accept(crate::tls::records::Tracked::new(tcp))
        .await
        .map_err(|e| SessionError::Tls(format!("handshake failed: {e}")))?;
    Ok(ClientStream::Tls(Box::new(tls), setup.end_point.clone()))
}

/// PostgreSQL requires direct TLS to agree on the ALPN protocol
/// "postgresql" (a client of another protocol must not be served).
fn check_alpn(stream: &ClientStream) -> Result<(), SessionError> {
    let agreed = match stream {
        ClientStream::Tls(s, _) => s.get_ref().1.alpn_protocol() == Some(ALPN_POSTGRESQL),
        ClientStream::Plain(_) | ClientStream::Records(_) => false,
    };
    if agreed {
        Ok(())
    } else {
        Err(SessionError::Tls(
            "direct TLS connection without the ALPN protocol \"postgresql\"".into(),
        ))
    }
}
