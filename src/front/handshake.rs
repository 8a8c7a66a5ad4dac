//! Connection start-up: SSL refusal, cancel forwarding, StartupMessage,
//! client authentication, and the greeting (ParameterStatus, BackendKeyData,
//! ReadyForQuery).

use std::sync::Arc;

use crate::tls::ClientStream;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Admission;
use crate::router::RouteState;
use crate::session::PoolClient;
use crate::shared::cancel::CancelHandle;
use crate::shared::clients::ClientLogin;
use crate::shared::Shared;

/// How long a connection over `max_client_conn` has to send its startup
/// packet (a cancel request, or a console login within the reserve).
const OVER_CAP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
use crate::config::{AuthMethod, Config, UserConfig};
use crate::error::SessionError;
use crate::pool::params::{canonical_name, is_session_setting, Params};
use crate::pool::{Pool, ServerAuth};
use crate::protocol::auth::{md5, scram};
use crate::protocol::backend::{self, Severity};
use crate::protocol::frontend;
use crate::protocol::startup::{decode_startup, parse_options, StartupPacket};
use crate::protocol::{decode_frame, Frame};
use crate::shutdown::Phase;

/// Authentication messages are small; anything bigger is an attack or a bug.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// A client that logged in: to a pool, or to the console.
pub(super) enum Login {
    Pool(PoolClient),
    Console(ClientLogin),
}

/// The handshake, within `client_login_timeout`; `None` when the
/// connection was a cancel request. A failure is told to the client when
/// it can be, after a delay that grows with each failed login from its
/// address.
pub(super) async fn run(
    shared: &Arc<Shared>,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    peer: std::net::SocketAddr,
    admission: Admission,
) -> Result<Option<Login>, SessionError> {
    let config = shared.config();
    let timeout = login_timeout(&config, admission);
    let login = login(shared, &config, stream, buf, peer.ip(), admission);
    let result = match tokio::time::timeout(timeout, login).await {
        Ok(r) => r,
        Err(_) => Err(SessionError::LoginTimeout),
    };
    let Err(e) = result else {
        return result;
    };
    if let SessionError::BadPassword(user) = &e {
        // Each failure from this address is told a little later.
        let now = std::time::Instant::now();
        let delay = shared.failed_logins.failed(peer.ip(), user, now);
        tokio::time::sleep(delay).await;
    }
    if e.client_reachable() {
        let mut out = BytesMut::new();
        backend::error_response(
            &mut out,
            Severity::Fatal,
            e.sqlstate(),
            &e.to_string(),
            e.hint(),
        );
        let _ = stream.write_all(&out).await;
    }
    Err(e)
}

/// How long a client has to log in. Over the cap, a connection gets only
/// long enough to say it is a cancel request or a console login: it is
/// refused at once otherwise.
pub(super) fn login_timeout(config: &Config, admission: Admission) -> std::time::Duration {
    match admission {
        Admission::Within => config.pooler.client_login_timeout,
        _ => config.pooler.client_login_timeout.min(OVER_CAP_WAIT),
    }
}

async fn read_more(stream: &mut ClientStream, buf: &mut BytesMut) -> Result<(), SessionError> {
    buf.reserve(1024);
    if stream.read_buf(buf).await? == 0 {
        return Err(SessionError::ClientIo(
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(())
}

async fn read_frame(stream: &mut ClientStream, buf: &mut BytesMut) -> Result<Frame, SessionError> {
    loop {
        if let Some(f) = decode_frame(buf, MAX_AUTH_MESSAGE)? {
            return Ok(f);
        }
        read_more(stream, buf).await?;
    }
}

async fn login(
    shared: &Arc<Shared>,
    config: &Config,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    ip: std::net::IpAddr,
    admission: Admission,
) -> Result<Option<Login>, SessionError> {
    let Some((minor, params)) = read_startup(shared, stream, buf).await? else {
        return Ok(None);
    };
    let mut out = BytesMut::new();
    let unrecognized: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if minor > 0 || !unrecognized.is_empty() {
        backend::negotiate_protocol_version(&mut out, &unrecognized);
    }
    let who = admit(shared, config, &params, ip, admission)?;
    let user = who.user.as_str();
    let Some(user_cfg) = config.users.get(user) else {
        return Err(refuse_unknown_user(shared, stream, buf, &mut out, user).await);
    };
    if who.console {
        flush(stream, &mut out).await?;
        authenticate(shared, stream, buf, user, user_cfg, None).await?;
        let login = crate::admin::admit(config, &who.db, user, &who.application_name)?;
        crate::admin::greet(&mut out);
        stream.write_all(&out).await?;
        return Ok(Some(Login::Console(login)));
    }
    let (startup_settings, route) = startup_settings(&params)?;
    let pool = shared
        .pool_for(config, &who.db, user)
        .ok_or_else(|| SessionError::UnknownDatabase(who.db.clone()))?;
    flush(stream, &mut out).await?;
    authenticate(shared, stream, buf, user, user_cfg, Some(&pool)).await?;
    let defaults = pool.defaults().await?;
    let mut overrides = Params::new();
    for (k, v) in startup_settings {
        overrides.set_override(&defaults, &canonical_name(&k), &v);
    }
    let cancel = shared.cancels.register(pool.clone());
    greet(&mut out, &defaults, &overrides, &cancel);
    stream.write_all(&out).await?;
    Ok(Some(Login::Pool(PoolClient {
        application_name: who.application_name,
        pool,
        defaults,
        overrides,
        cancel,
        route,
    })))
}

/// The startup packet's protocol minor version and parameters, after any
/// SSLRequest or GSSENCRequest (refused); `None` for a cancel request,
/// which is forwarded here.
async fn read_startup(
    shared: &Arc<Shared>,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Option<(u16, Vec<(String, String)>)>, SessionError> {
    loop {
        match decode_startup(buf)? {
            None => read_more(stream, buf).await?,
            Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                stream.write_all(&[backend::SSL_NOT_SUPPORTED]).await?;
            }
            Some(StartupPacket::Cancel { pid, secret }) => {
                shared.cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            Some(StartupPacket::Startup { minor, params }) => return Ok(Some((minor, params))),
        }
    }
}

/// Who a startup packet says the client is.
struct Who {
    user: String,
    db: String,
    application_name: String,
    /// The virtual console database (`pgbouncer`), not a pool.
    console: bool,
}

/// Whether this client may log in at all: not while draining, not without
/// a user, not from an address refused for failed logins, and over
/// `max_client_conn` only to the console's reserve.
fn admit(
    shared: &Shared,
    config: &Config,
    params: &[(String, String)],
    ip: std::net::IpAddr,
    admission: Admission,
) -> Result<Who, SessionError> {
    if *shared.shutdown.borrow() >= Phase::Draining {
        return Err(SessionError::ShuttingDown);
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let user = get("user")
        .filter(|u| !u.is_empty())
        .ok_or(SessionError::NoUser)?;
    let db = get("database").filter(|d| !d.is_empty()).unwrap_or(user);
    let now = std::time::Instant::now();
    if let Some(left) = shared.failed_logins.refused(ip, user, now) {
        return Err(SessionError::LoginThrottled(left.as_secs().max(1)));
    }
    let console = crate::admin::is_console(db) && !config.databases.contains_key(db);
    let admitted = match admission {
        Admission::Within => true,
        Admission::ConsoleOnly => console,
        Admission::Over => false,
    };
    if !admitted {
        shared
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(SessionError::TooManyClients(config.pooler.max_client_conn));
    }
    if !console && !config.databases.contains_key(db) {
        return Err(SessionError::UnknownDatabase(db.to_string()));
    }
    Ok(Who {
        user: user.to_string(),
        db: db.to_string(),
        application_name: get("application_name").unwrap_or("").to_string(),
        console,
    })
}

/// The startup parameters that follow the client as session settings
/// (`options=-c ...` unpacked), and pglittle's own (`pglittle.*`) applied
/// to a fresh routing state; never sent to a server.
fn startup_settings(
    params: &[(String, String)],
) -> Result<(Vec<(String, String)>, RouteState), SessionError> {
    let mut settings = Vec::new();
    for (k, v) in params {
        if k == "options" {
            settings.extend(parse_options(v).map_err(SessionError::BadStartupParameter)?);
        } else if is_session_setting(k) || k.starts_with("pglittle.") {
            settings.push((k.clone(), v.clone()));
        }
    }
    let mut route = RouteState::default();
    let mut bad = None;
    settings.retain(|(k, v)| {
        let Some(name) = k
            .to_ascii_lowercase()
            .strip_prefix("pglittle.")
            .map(str::to_owned)
        else {
            return true;
        };
        let sql = format!("SET pglittle.{name} = '{}'", v.replace('\'', "''"));
        match crate::sql::local::parse(sql.as_bytes()) {
            Some(Ok(cmd)) => route.answer(Ok(cmd), &mut BytesMut::new()),
            Some(Err(e)) => bad = Some(e),
            None => {}
        }
        false
    });
    match bad {
        Some(e) => Err(SessionError::BadStartupParameter(e)),
        None => Ok((settings, route)),
    }
}

/// AuthenticationOk, the server's parameters (with the client's own where
/// it set them), pglittle's cancel key, and ReadyForQuery.
fn greet(out: &mut BytesMut, defaults: &Params, overrides: &Params, cancel: &CancelHandle) {
    backend::auth_ok(out);
    for (k, v) in defaults.iter() {
        backend::parameter_status(out, k, overrides.get(k).unwrap_or(v));
    }
    backend::backend_key_data(out, cancel.pid, cancel.secret);
    backend::ready_for_query(out, crate::protocol::TxStatus::Idle);
}

async fn flush(stream: &mut ClientStream, out: &mut BytesMut) -> Result<(), SessionError> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

async fn authenticate(
    shared: &Arc<Shared>,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user: &str,
    cfg: &UserConfig,
    pool: Option<&Arc<Pool>>,
) -> Result<(), SessionError> {
    let bad = || SessionError::BadPassword(user.to_string());
    let mut out = BytesMut::new();
    match cfg.auth {
        AuthMethod::Trust => Ok(()),
        AuthMethod::Cert => cert_login(stream, user),
        AuthMethod::Md5 => {
            let password = cfg.password.as_deref().ok_or_else(bad)?;
            let salt: [u8; 4] = rand::random();
            backend::auth_md5(&mut out, salt);
            stream.write_all(&out).await?;
            let frame = read_frame(stream, buf).await?;
            let response = frontend::parse_password(&frame)?;
            let stored = md5::md5_secret(user, password);
            if md5::md5_verify(&stored, salt, response) {
                Ok(())
            } else {
                Err(bad())
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
            if let Some(pool) = pool.filter(|p| !p.has_password_auth()) {
                // SCRAM pass-through: log in to the server with the key this client proved.
                pool.set_auth(ServerAuth::ClientKey {
                    client_key,
                    server_key,
                });
            }
            Ok(())
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
async fn refuse_unknown_user(
    shared: &Arc<Shared>,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user: &str,
) -> SessionError {
    if !out.is_empty() {
        if let Err(e) = stream.write_all(out).await {
            return e.into();
        }
        out.clear();
    }
    match scram_exchange(stream, buf, shared.mock_secret(user), user).await {
        Ok(_) => SessionError::BadPassword(user.to_string()),
        Err(e) => e,
    }
}
