//! TLS towards servers, with libpq's `sslmode` meanings: the connector
//! built from `config::ServerTls`, and the SSLRequest exchange that starts
//! a connection. `require` encrypts without checking the certificate (as
//! libpq does), `verify-ca` checks it chains to the CA file, `verify-full`
//! also that it names the host. `allow` behaves as `prefer` (TLS when the
//! server offers it).

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{certificates, private_key, rejected, TlsError};
use crate::config::TlsMode;
use crate::tls::ServerStream;

/// How pglittle opens server connections: the mode, and the connector
/// unless TLS is disabled. Cheap to clone.
#[derive(Clone, Default)]
pub struct ServerTls {
    mode: TlsMode,
    connector: Option<TlsConnector>,
}

impl ServerTls {
    /// libpq's `allow`: plain text first, TLS when the server wants it.
    pub fn plain_first(&self) -> bool {
        self.mode == TlsMode::Allow
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls({})", self.mode)
    }
}

/// Why a server connection could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error("the server does not offer TLS, and server_tls_mode = \"{0}\" requires it")]
    NotOffered(TlsMode),
    #[error("the server answered the SSLRequest with {0:#04x}")]
    Unexpected(u8),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("{0:?} is not a host name or address TLS can check")]
    BadName(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Builds the connector `t` describes (reading its files).
pub fn server_connector(t: &crate::config::ServerTls) -> Result<ServerTls, TlsError> {
    if !t.mode.offered() {
        return Ok(ServerTls::default());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if t.mode.verifies_peer() {
        let key = "pooler.server_tls_ca_file";
        let path = t
            .ca_file
            .as_deref()
            .ok_or_else(|| rejected(key, "not set"))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(key, path)? {
            roots.add(ca).map_err(|e| rejected(key, e))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| rejected(key, e))?;
        if t.mode == TlsMode::VerifyFull {
            webpki
        } else {
            Arc::new(AnyName(webpki))
        }
    } else {
        Arc::new(Unchecked(provider.clone()))
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| rejected("pooler.server_tls_mode", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let certs = certificates("pooler.server_tls_cert_file", cert)?;
            let key = private_key("pooler.server_tls_key_file", key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| rejected("pooler.server_tls_key_file", e))?
        }
        _ => builder.with_no_client_auth(),
    };
    // Once logged in, a TLS 1.3 connection goes on with its record keys
    // on pglittle's own record layer (`records`).
    let mut config = config;
    config.enable_secret_extraction = true;
    Ok(ServerTls {
        mode: t.mode,
        connector: Some(TlsConnector::from(Arc::new(config))),
    })
}

/// The SSLRequest exchange on a fresh connection to `host`, then the TLS
/// handshake when the server agrees.
pub async fn connect(
    tls: &ServerTls,
    mut tcp: TcpStream,
    host: &str,
) -> Result<ServerStream, ServerTlsError> {
    let Some(connector) = &tls.connector else {
        return Ok(ServerStream::Plain(tcp));
    };
    let request = [8u32.to_be_bytes(), 80_877_103u32.to_be_bytes()].concat();
    tcp.write_all(&request).await?;
    match tcp.read_u8().await? {
        b'S' => {}
        b'N' if !tls.mode.required() => return Ok(ServerStream::Plain(tcp)),
        b'N' => return Err(ServerTlsError::NotOffered(tls.mode)),
        other => return Err(ServerTlsError::Unexpected(other)),
    }
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| ServerTlsError::BadName(host.to_string()))?;
    let stream = connector
        .connect(name, super::records::Tracked::new(tcp))
        .await
        .map_err(ServerTlsError::Handshake)?;
    Ok(ServerStream::Tls(Box::new(stream)))
}

/// `require`: encrypted, the certificate not checked (libpq's meaning);
/// the handshake's signatures still are.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name in it is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let checked =
            self.0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match checked {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
