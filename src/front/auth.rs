//! Client authentication: who the user is (listed, or looked up with
//! `auth_query`), the exchange its method asks for, and the credential the
//! login gives for the server (SCRAM and md5 pass-through).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::handshake::read_frame;
use crate::config::{AuthMethod, Config, UserConfig};
use crate::error::SessionError;
use crate::pool::ServerAuth;
use crate::protocol::auth::{md5, scram};
use crate::protocol::backend;
use crate::protocol::frontend;
use crate::shared::secrets::configured_auth;
use crate::shared::Shared;
use crate::tls::ClientStream;

/// Where a user's entry came from.
pub(super) struct Known<'a> {
    pub cfg: Cow<'a, UserConfig>,
    /// Fetched by auth_query (forgotten when the login fails).
    pub looked_up: bool,
}

/// The user's entry: listed in the config, or (for a pool, with
/// `auth_user` set) fetched by auth_query. `None`: no such user.
pub(super) async fn find_user<'a>(
    shared: &Arc<Shared>,
    config: &'a Config,
    db: Option<&str>,
    user: &str,
) -> Result<Option<Known<'a>>, SessionError> {
    if let Some(cfg) = config.users.get(user) {
        return Ok(Some(Known {
            cfg: Cow::Borrowed(cfg),
            looked_up: false,
        }));
    }
    let Some(db) = db.filter(|_| config.pooler.auth_lookup.enabled()) else {
        return Ok(None);
    };
    let Some(target) = shared.lookup_target(config, db) else {
        return Ok(None);
    };
    match shared.secrets.lookup(config, target, db, user).await {
        Ok(secret) => Ok(secret.map(|s| Known {
            cfg: Cow::Owned(s.into_user()),
            looked_up: true,
        })),
        Err(e) => {
            tracing::warn!(user, database = db, error = %e, "auth_query failed");
            Err(SessionError::LookupFailed(user.to_string()))
        }
    }
}

/// Runs the exchange `cfg.auth` asks for. On success, a SCRAM exchange of
/// a user with no configured server credential gives the key the client
/// proved (SCRAM pass-through); every other login gives nothing.
pub(super) async fn authenticate(
    shared: &Arc<Shared>,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user: &str,
    cfg: &UserConfig,
) -> Result<Option<ServerAuth>, SessionError> {
    let bad = || SessionError::BadPassword(user.to_string());
    let mut out = BytesMut::new();
    match cfg.auth {
        AuthMethod::Trust => Ok(None),
        AuthMethod::Cert => cert_login(stream, user).map(|_| None),
        AuthMethod::Md5 => {
            let stored = match (&cfg.md5_secret, &cfg.password) {
                (Some(s), _) => s.clone(),
                (None, Some(p)) => md5::md5_secret(user, p),
                (None, None) => return Err(bad()),
            };
            let salt: [u8; 4] = rand::random();
            backend::auth_md5(&mut out, salt);
            stream.write_all(&out).await?;
            let frame = read_frame(stream, buf).await?;
            let response = frontend::parse_password(&frame)?;
            match md5::md5_verify(&stored, salt, response) {
                true => Ok(None),
                false => Err(bad()),
            }
        }
        AuthMethod::ScramSha256 => {
            let secret = match (&cfg.scram_secret, &cfg.password) {
                (Some(s), _) => scram::ScramSecret::parse(s)?,
                (None, Some(p)) => shared.scram_secret(user, p),
                (None, None) => return Err(bad()),
            };
            let server_key = secret.server_key;
            let client_key = scram_exchange(stream, buf, secret, user).await?;
            let pass_through = ServerAuth::ClientKey {
                client_key,
                server_key,
            };
            Ok(configured_auth(cfg).is_none().then_some(pass_through))
        }
    }
}

/// `auth = "cert"`: the client's certificate (verified against the CA by
/// the TLS handshake) must name the user in its common name.
fn cert_login(stream: &ClientStream, user: &str) -> Result<(), SessionError> {
    let refused = |why: String| SessionError::CertRefused {
        user: user.to_string(),
        why,
    };
    let cert = stream
        .peer_certificate()
        .ok_or_else(|| refused("no client certificate (connect with TLS and sslcert)".into()))?;
    match crate::tls::common_name(cert) {
        Some(cn) if cn == user => Ok(()),
        Some(cn) => Err(refused(format!("the certificate is for {cn:?}"))),
        None => Err(refused("the certificate has no common name".into())),
    }
}

/// One SCRAM-SHA-256 exchange against `secret`; returns the ClientKey the
/// client proved, or BadPassword.
async fn scram_exchange(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    secret: scram::ScramSecret,
    user: &str,
) -> Result<[u8; 32], SessionError> {
    let mut out = BytesMut::new();
    let mut exchange = scram::ScramServer::new(secret);
    if let Some(end_point) = stream.channel_binding() {
        // Over TLS: SCRAM-SHA-256-PLUS, bound to this connection's certificate.
        exchange = exchange.offer_binding(end_point.to_vec());
    }
    backend::auth_sasl(&mut out, exchange.mechanisms());
    stream.write_all(&out).await?;
    let frame = read_frame(stream, buf).await?;
    let (mechanism, first) = frontend::parse_sasl_initial(&frame)?;
    exchange.choose(mechanism)?;
    let server_first = exchange.client_first(first)?;
    out.clear();
    backend::auth_sasl_continue(&mut out, &server_first);
    stream.write_all(&out).await?;
    let frame = read_frame(stream, buf).await?;
    let final_msg = frontend::parse_sasl_response(&frame)?;
    let (server_final, client_key) = match exchange.client_final(final_msg) {
        Ok(r) => r,
        Err(crate::protocol::auth::AuthError::BadProof) => {
            return Err(SessionError::BadPassword(user.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    out.clear();
    backend::auth_sasl_final(&mut out, &server_final);
    stream.write_all(&out).await?;
    Ok(client_key)
}

/// A user that does not exist goes through a SCRAM exchange that fails at
/// the proof, exactly as a wrong password does.
pub(super) async fn refuse_unknown_user(
    shared: &Arc<Shared>,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user: &str,
) -> SessionError {
    match scram_exchange(stream, buf, shared.mock_secret(user), user).await {
        Ok(_) => SessionError::BadPassword(user.to_string()),
        Err(e) => e,
    }
}
