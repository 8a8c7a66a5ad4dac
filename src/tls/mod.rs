//! TLS: towards clients, the acceptor built from `config::ClientTls` and
//! the client stream that may be encrypted; towards servers, the connector
//! built from `config::ServerTls` and the server stream (`server_side`).
//! The PEM files are read at start and at every RELOAD. rustls with the
//! ring provider only.

mod io;
mod keys;
pub mod records;
mod server_side;
mod server_stream;
mod stream;
mod tracked;

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

/// What clients are offered: the acceptor, and the tls-server-end-point
/// data of its certificate (RFC 5929) for SCRAM channel binding.
#[derive(Clone)]
pub struct ClientTlsSetup {
    pub acceptor: TlsAcceptor,
    pub end_point: Arc<[u8]>,
}

/// What a client is offered: `None` when `client_tls_mode` is disable.
pub fn client_acceptor(t: &ClientTls) -> Result<Option<ClientTlsSetup>, TlsError> {
    if !t.mode.offered() {
        return Ok(None);
    }
    let cert_key = "pooler.client_tls_cert_file";
    let key_key = "pooler.client_tls_key_file";
    let certs = certificates(cert_key, required(cert_key, &t.cert_file)?)?;
    let end_point = end_point(&certs[0]).into();
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
    // A rolling restart carries an idle TLS 1.3 client's record keys to the
    // new process (`records`); they stay in memory either way.
    config.enable_secret_extraction = true;
    Ok(Some(ClientTlsSetup {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    }))
}

/// RFC 5929's tls-server-end-point: the hash of the certificate, with the
/// hash function of its signature algorithm (SHA-256 for MD5, SHA-1 and
/// anything else; SHA-384 and SHA-512 when it is signed with those), as
/// PostgreSQL and libpq compute it.
pub fn end_point(cert_der: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    const SHA384: [&[u8]; 2] = [
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C],
        &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03],
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D],
        &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04],
    ];
    match signature_oid(cert_der) {
        Some(oid) if SHA384.contains(&oid) => sha2::Sha384::digest(cert_der).to_vec(),
        Some(oid) if SHA512.contains(&oid) => sha2::Sha512::digest(cert_der).to_vec(),
        _ => sha2::Sha256::digest(cert_der).to_vec(),
    }
}

/// The OID of a certificate's outer signatureAlgorithm:
/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }.
fn signature_oid(der: &[u8]) -> Option<&[u8]> {
    let (_, cert) = der_item(der, 0x30)?;
    let (tbs_len, _) = der_item(cert, 0x30)?;
    let (_, alg) = der_item(cert.get(tbs_len..)?, 0x30)?;
    der_item(alg, 0x06).map(|(_, oid)| oid)
}

/// The subject's common name (CN) of a certificate, as text.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = der_item(der, 0x30)?;
    let (_, mut tbs) = der_item(cert, 0x30)?;
    // version [0] (optional), serialNumber, signature, issuer, validity, subject
    if tbs.first() == Some(&0xA0) {
        tbs = tbs.get(der_any(tbs)?..)?;
    }
    for _ in 0..4 {
        tbs = tbs.get(der_any(tbs)?..)?;
    }
    let (_, mut subject) = der_item(tbs, 0x30)?;
    while !subject.is_empty() {
        let (rdn_len, rdn) = der_item(subject, 0x31)?;
        let (_, attr) = der_item(rdn, 0x30)?;
        let (oid_len, oid) = der_item(attr, 0x06)?;
        if oid == [0x55, 0x04, 0x03] {
            let value = attr.get(oid_len..)?;
            let len = der_any(value)?;
            let header = len - der_content_len(value)?;
            return String::from_utf8(value.get(header..len)?.to_vec()).ok();
        }
        subject = subject.get(rdn_len..)?;
    }
    None
}

/// The whole length of the DER item at the start of `b`, whatever its tag.
fn der_any(b: &[u8]) -> Option<usize> {
    der_item(b, *b.first()?).map(|(len, _)| len)
}

fn der_content_len(b: &[u8]) -> Option<usize> {
    der_item(b, *b.first()?).map(|(_, c)| c.len())
}

/// One DER item of `tag` at the start of `b`: its whole length and its content.
fn der_item(b: &[u8], tag: u8) -> Option<(usize, &[u8])> {
    if *b.first()? != tag {
        return None;
    }
    let first = *b.get(1)? as usize;
    let (header, len) = if first < 0x80 {
        (2, first)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let len = b
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |a, &x| a << 8 | x as usize);
        (2 + n, len)
    };
    let content = b.get(header..header.checked_add(len)?)?;
    Some((header + len, content))
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        // A certificate signed with ECDSA P-256/SHA-256 (rcgen's default).
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        let oid = super::signature_oid(&der).expect("an OID");
        assert_eq!(oid, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]);
        use sha2::Digest;
        assert_eq!(super::end_point(&der), sha2::Sha256::digest(&der).to_vec());
        assert_eq!(
            super::common_name(&der).as_deref(),
            Some("rcgen self signed cert")
        );
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "o");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app_user");
        let named = params.self_signed(&key).unwrap();
        assert_eq!(super::common_name(named.der()).as_deref(), Some("app_user"));
        assert_eq!(super::common_name(b"\x30\x03\x30\x01"), None);
        // Not a certificate: SHA-256 of whatever it is, no panic.
        assert_eq!(
            super::end_point(b"\x30\x81"),
            sha2::Sha256::digest(b"\x30\x81").to_vec()
        );
    }
}
