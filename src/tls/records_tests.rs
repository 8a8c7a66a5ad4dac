//! The carried record layer against rustls itself, over an in-memory pipe:
//! a rustls client talks to a rustls server, the server's keys are
//! extracted mid-session, and the same client goes on talking to
//! [`RecordLayer`] (twice, as after two restarts) without noticing.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{client, TlsAcceptor, TlsConnector};

use super::*;
use crate::tls::keys::{DirectionKeys, Suite};

fn configs(versions: &[&'static rustls::SupportedProtocolVersion]) -> (TlsAcceptor, TlsConnector) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    server.enable_secret_extraction = true;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.enable_secret_extraction = true;
    (
        TlsAcceptor::from(Arc::new(server)),
        TlsConnector::from(Arc::new(client)),
    )
}

type Server = tokio_rustls::server::TlsStream<Tracked<DuplexStream>>;

/// A handshake and one exchange each way.
async fn session(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (client::TlsStream<DuplexStream>, Server) {
    let (acceptor, connector) = configs(versions);
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let (client, server) =
        tokio::join!(connector.connect(name, a), acceptor.accept(Tracked::new(b)));
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    client.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");
    server.write_all(b"world").await.unwrap();
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"world");
    (client, server)
}

fn carry(server: Server) -> RecordLayer<DuplexStream> {
    let (tracked, conn) = server.into_inner();
    assert!(tracked.at_boundary());
    let keys = TlsKeys::extract(conn).expect("TLS 1.3 keys");
    let keys = TlsKeys::decode(&keys.encode()).expect("the keys survive their encoding");
    RecordLayer::new(tracked.into_inner(), keys).unwrap()
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut client::TlsStream<DuplexStream>,
    server: &mut S,
    round: u8,
) {
    let big: Vec<u8> = (0..40_000u32)
        .map(|i| (i as u8).wrapping_add(round))
        .collect();
    client.write_all(&big).await.unwrap();
    let mut got = vec![0u8; big.len()];
    server.read_exact(&mut got).await.unwrap();
    assert!(got == big, "round {round}: the client's bytes");
    server.write_all(&big).await.unwrap();
    server.flush().await.unwrap();
    client.read_exact(&mut got).await.unwrap();
    assert!(got == big, "round {round}: the server's bytes");
}

#[tokio::test]
async fn a_tls13_session_goes_on_after_its_keys_move_twice() {
    let (mut client, server) = session(&[&rustls::version::TLS13]).await;
    let mut resumed = carry(server);
    exchange(&mut client, &mut resumed, 1).await;
    // A second restart: the keys as they stand now, on the same socket.
    assert!(resumed.settled());
    let (io, keys) = resumed.into_parts();
    let mut again = RecordLayer::new(io, TlsKeys::decode(&keys.encode()).unwrap()).unwrap();
    exchange(&mut client, &mut again, 2).await;
    // The client's close_notify ends the stream; ours ends the client's.
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    again.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    again.shutdown().await.unwrap();
    assert_eq!(client.read(&mut [0u8; 8]).await.unwrap(), 0);
}

#[tokio::test]
async fn tls12_and_unread_plaintext_do_not_move() {
    let (_client, server) = session(&[&rustls::version::TLS12]).await;
    assert!(TlsKeys::extract(server.into_inner().1).is_none());

    let (mut client, server) = session(&[&rustls::version::TLS13]).await;
    client.write_all(b"unread").await.unwrap();
    client.flush().await.unwrap();
    // Let rustls take the record in without the session reading it all.
    let mut server = server;
    let mut one = [0u8; 1];
    server.read_exact(&mut one).await.unwrap();
    assert!(TlsKeys::extract(server.into_inner().1).is_none());
}

#[test]
fn half_a_record_is_not_a_boundary() {
    let mut t = Tracked::new(());
    t.follow(&[23, 3, 3]);
    assert!(!t.at_boundary());
    t.follow(&[0, 4, 1, 2]);
    assert!(!t.at_boundary());
    t.follow(&[3, 4, 23, 3, 3, 0, 1]);
    assert!(!t.at_boundary());
    t.follow(&[9]);
    assert!(t.at_boundary());
}

#[test]
fn damaged_keys_are_refused() {
    let keys = TlsKeys {
        suite: Suite::Aes128Gcm,
        tx: DirectionKeys {
            key: vec![7; 16],
            iv: [1; 12],
            seq: 3,
        },
        rx: DirectionKeys {
            key: vec![8; 16],
            iv: [2; 12],
            seq: 4,
        },
    };
    let bytes = keys.encode();
    assert_eq!(TlsKeys::decode(&bytes), Some(keys));
    for cut in 0..bytes.len() {
        assert_eq!(TlsKeys::decode(&bytes[..cut]), None, "cut at {cut}");
    }
    let mut wrong_len = bytes.clone();
    wrong_len[1] = 15;
    assert_eq!(TlsKeys::decode(&wrong_len), None);
}

/// Towards servers: pglittle is the TLS client; its side moves onto the
/// record layer, and a rustls server sees no difference, message by
/// message, with writes of several parts sealed as one record.
#[tokio::test]
async fn the_client_side_moves_too_and_small_messages_flow_both_ways() {
    let (acceptor, connector) = configs(&[&rustls::version::TLS13]);
    let (a, b) = tokio::io::duplex(64 * 1024);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let (ours, peer) = tokio::join!(connector.connect(name, Tracked::new(a)), acceptor.accept(b));
    let (ours, mut peer) = (ours.unwrap(), peer.unwrap());
    let (tracked, conn) = ours.into_inner();
    let keys = TlsKeys::extract(conn).expect("TLS 1.3 client keys");
    let mut ours = RecordLayer::new(tracked.into_inner(), keys).unwrap();
    for i in 0..200u32 {
        let parts = [i.to_be_bytes(), (i * 7).to_be_bytes()];
        let slices = [io::IoSlice::new(&parts[0]), io::IoSlice::new(&parts[1])];
        let n = ours.write_vectored(&slices).await.unwrap();
        assert_eq!(n, 8, "both parts in one record");
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got[..4], i.to_be_bytes());
        assert_eq!(got[4..], (i * 7).to_be_bytes());
        peer.write_all(&i.to_le_bytes()).await.unwrap();
        peer.flush().await.unwrap();
        let mut back = [0u8; 4];
        ours.read_exact(&mut back).await.unwrap();
        assert_eq!(back, i.to_le_bytes());
    }
    assert!(ours.settled());
}
