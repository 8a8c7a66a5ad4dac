//! A client's connection: plain TCP, or TLS over it (rustls, or after a
//! rolling restart the carried record layer). One type for the handshake,
//! the console, the session and the relay.

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::records::{RecordLayer, TlsKeys, Tracked};

pub enum ClientStream {
    Plain(TcpStream),
    /// With the tls-server-end-point data of the certificate it was
    /// accepted with (for SCRAM channel binding).
    Tls(Box<TlsStream<Tracked<TcpStream>>>, std::sync::Arc<[u8]>),
    /// A logged-in TLS 1.3 session on pglittle's own record layer: taken
    /// over from rustls once the login is done (see [`ClientStream::into_records`]),
    /// or carried over from the old process at a rolling restart.
    Records(Box<RecordLayer<TcpStream>>),
}

impl ClientStream {
    /// The TCP socket when the connection is not encrypted (it can then be
    /// waited on for readiness and split without a lock).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(s) => Some(s),
            ClientStream::Tls(..) | ClientStream::Records(_) => None,
        }
    }

    /// The client's certificate (DER), when it presented one over TLS.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Tls(s, _) => s.get_ref().1.peer_certificates()?.first().map(|c| &c[..]),
            ClientStream::Plain(_) | ClientStream::Records(_) => None,
        }
    }

    /// What SCRAM-SHA-256-PLUS binds to: `None` over plain TCP.
    pub fn channel_binding(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Tls(_, end_point) => Some(end_point),
            ClientStream::Plain(_) | ClientStream::Records(_) => None,
        }
    }

    /// Whether the connection can move to another process now: plain TCP,
    /// or TLS 1.3 with nothing half read, unread or unsent.
    pub fn movable(&mut self) -> bool {
        match self {
            ClientStream::Plain(_) => true,
            ClientStream::Tls(s, _) => {
                let (tracked, conn) = s.get_mut();
                tracked.settled(conn)
            }
            ClientStream::Records(r) => r.settled(),
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
            ClientStream::Records(r) => {
                let (tcp, keys) = r.into_parts();
                (tcp, keys.encode())
            }
        };
        Some((tcp.into_std().ok()?, keys))
    }

    /// A TLS 1.3 session moved from rustls onto pglittle's own record layer
    /// (`records`), which costs fewer instructions per message and can
    /// move to another process; anything else as it is. Called once the
    /// login is done (rustls has checked the certificates and the ALPN).
    /// `None` only if the session was taken apart and could not be rebuilt.
    pub fn into_records(mut self) -> Option<ClientStream> {
        if !matches!(self, ClientStream::Tls(..)) || !self.movable() {
            return Some(self);
        }
        let ClientStream::Tls(s, _) = self else {
            return Some(self);
        };
        let (tracked, conn) = s.into_inner();
        let keys = TlsKeys::extract(conn)?;
        let layer = RecordLayer::new(tracked.into_inner(), keys)?;
        Some(ClientStream::Records(Box::new(layer)))
    }

    /// A carried connection in the new process: `keys` as
    /// [`ClientStream::carry_out`] gave them. `None` if they do not decode.
    pub fn resume(tcp: TcpStream, keys: &[u8]) -> Option<ClientStream> {
        if keys.is_empty() {
            return Some(ClientStream::Plain(tcp));
        }
        let keys = TlsKeys::decode(keys)?;
        Some(ClientStream::Records(Box::new(RecordLayer::new(
            tcp, keys,
        )?)))
    }
}

impl From<TcpStream> for ClientStream {
    fn from(s: TcpStream) -> ClientStream {
        ClientStream::Plain(s)
    }
}

super::io::plain_or_tls_io!(ClientStream, ClientStream::Tls(s, _) => s.as_mut(), ClientStream::Records(r) => r.as_mut());
