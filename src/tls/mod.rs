//! TLS: towards clients, the acceptor built from `config::ClientTls` and
//! the client stream that may be encrypted; towards servers, the connector
//! built from `config::ServerTls` and the server stream (`server_side`).
//! The PEM files are read at start and at every RELOAD. rustls with the
//! ring provider only.

mod server_side;
mod server_stream;
mod stream;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::ClientTls;

pub use server_side::{connect as connect_server, server_connector, ServerTls};
pub use server_stream::ServerStream;
pub use stream::ClientStream;

/// The ALPN protocol of PostgreSQL's direct TLS (PostgreSQL 17).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why the TLS files could not be used; each names its key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("{key}: {path} holds no {what}")]
    Empty {
        key: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("{key}: {reason}")]
    Rejected { key: &'static str, reason: String },
}

/// What a client is offered: `None` when `client_tls_mode` is disable.
pub fn client_acceptor(t: &ClientTls) -> Result<Option<TlsAcceptor>, TlsError> {
    if !t.mode.offered() {
        return Ok(None);
    }
    let cert_key = "pooler.client_tls_cert_file";
    let key_key = "pooler.client_tls_key_file";
    let certs = certificates(cert_key, required(cert_key, &t.cert_file)?)?;
    let key = private_key(key_key, required(key_key, &t.key_file)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| rejected(cert_key, e))?;
    let builder = if t.mode.verifies_peer() {
        let ca_key = "pooler.client_tls_ca_file";
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(ca_key, required(ca_key, &t.ca_file)?)? {
            roots.add(ca).map_err(|e| rejected(ca_key, e))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| rejected(ca_key, e))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| rejected(key_key, e))?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn required<'a>(
    key: &'static str,
    file: &'a Option<std::path::PathBuf>,
) -> Result<&'a Path, TlsError> {
    file.as_deref().ok_or(TlsError::Rejected {
        key,
        reason: "not set".into(),
    })
}

pub(crate) fn rejected(key: &'static str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Rejected {
        key,
        reason: e.to_string(),
    }
}

pub(crate) fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |reason: String| TlsError::File {
        key,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.display().to_string(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

pub(crate) fn private_key(
    key: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        key,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
