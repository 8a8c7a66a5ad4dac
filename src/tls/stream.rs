//! A client's connection: plain TCP, or TLS over it (rustls, or after a
//! rolling restart the carried record layer). One type for the handshake,
//! the console, the session and the relay.

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::resumed::{ResumedTls, TlsKeys, Tracked};

pub enum ClientStream {
    Plain(TcpStream),
    /// With the tls-server-end-point data of the certificate it was
    /// accepted with (for SCRAM channel binding).
    Tls(Box<TlsStream<Tracked<TcpStream>>>, std::sync::Arc<[u8]>),
    /// A TLS 1.3 session carried over from the old process (logged in).
    Resumed(Box<ResumedTls<TcpStream>>),
}

impl ClientStream {
    /// The TCP socket when the connection is not encrypted (it can then be
    /// waited on for readiness and split without a lock).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(s) => Some(s),
            ClientStream::Tls(..) | ClientStream::Resumed(_) => None,
        }
    }

    /// The client's certificate (DER), when it presented one over TLS.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Tls(s, _) => s.get_ref().1.peer_certificates()?.first().map(|c| &c[..]),
            ClientStream::Plain(_) | ClientStream::Resumed(_) => None,
        }
    }

    /// What SCRAM-SHA-256-PLUS binds to: `None` over plain TCP.
    pub fn channel_binding(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Tls(_, end_point) => Some(end_point),
            ClientStream::Plain(_) | ClientStream::Resumed(_) => None,
        }
    }

    /// Whether the connection can move to another process now: plain TCP,
    /// or TLS 1.3 with nothing half read, unread or unsent.
    pub fn movable(&mut self) -> bool {
        match self {
            ClientStream::Plain(_) => true,
            ClientStream::Tls(s, _) => {
                let (tracked, conn) = s.get_mut();
                tracked.at_boundary()
                    && conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
                    && !conn.wants_write()
                    && conn
                        .process_new_packets()
                        .is_ok_and(|st| st.plaintext_bytes_to_read() == 0)
            }
            ClientStream::Resumed(r) => r.settled(),
        }
    }

    /// The socket and, over TLS, the session's record keys (encoded; empty
    /// for plain TCP), for the new process. `None` if it cannot move.
    pub fn carry_out(self) -> Option<(std::net::TcpStream, Vec<u8>)> {
        let (tcp, keys) = match self {
            ClientStream::Plain(tcp) => (tcp, Vec::new()),
            ClientStream::Tls(s, _) => {
                let (tracked, conn) = s.into_inner();
                let keys = TlsKeys::extract(conn)?;
                (tracked.into_inner(), keys.encode())
            }
            ClientStream::Resumed(r) => {
                let (tcp, keys) = r.into_parts();
                (tcp, keys.encode())
            }
        };
        Some((tcp.into_std().ok()?, keys))
    }

    /// A carried connection in the new process: `keys` as
    /// [`ClientStream::carry_out`] gave them. `None` if they do not decode.
    pub fn resume(tcp: TcpStream, keys: &[u8]) -> Option<ClientStream> {
        if keys.is_empty() {
            return Some(ClientStream::Plain(tcp));
        }
        let keys = TlsKeys::decode(keys)?;
        Some(ClientStream::Resumed(Box::new(ResumedTls::new(tcp, keys)?)))
    }
}

impl From<TcpStream> for ClientStream {
    fn from(s: TcpStream) -> ClientStream {
        ClientStream::Plain(s)
    }
}

super::io::plain_or_tls_io!(ClientStream, ClientStream::Tls(s, _) => s.as_mut(), ClientStream::Resumed(r) => r.as_mut());
