//! A client's connection: plain TCP, or TLS over it. One type for the
//! handshake, the console, the session and the relay.

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub enum ClientStream {
    Plain(TcpStream),
    /// With the tls-server-end-point data of the certificate it was
    /// accepted with (for SCRAM channel binding).
    Tls(Box<TlsStream<TcpStream>>, std::sync::Arc<[u8]>),
}

impl ClientStream {
    /// The TCP socket when the connection is not encrypted (it can then be
    /// waited on for readiness and split without a lock).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(s) => Some(s),
            ClientStream::Tls(..) => None,
        }
    }
}

impl ClientStream {
    /// The client's certificate (DER), when it presented one over TLS.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(s, _) => s.get_ref().1.peer_certificates()?.first().map(|c| &c[..]),
        }
    }

    /// What SCRAM-SHA-256-PLUS binds to: `None` over plain TCP.
    pub fn channel_binding(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(_, end_point) => Some(end_point),
        }
    }
}

impl From<TcpStream> for ClientStream {
    fn from(s: TcpStream) -> ClientStream {
        ClientStream::Plain(s)
    }
}

super::io::plain_or_tls_io!(ClientStream, ClientStream::Tls(s, _) => s.as_mut());
