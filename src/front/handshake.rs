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
use super::auth::{authenticate, find_user, refuse_unknown_user};
use crate::config::Config;
use crate::error::SessionError;
use crate::pool::params::{canonical_name, is_session_setting, Params};
use crate::protocol::backend::{self, Severity};
use crate::protocol::startup::{decode_startup, parse_options, StartupPacket};
use crate::protocol::{decode_frame, Frame};
use crate::shared::secrets::configured_auth;
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

pub(super) async fn read_frame(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Frame, SessionError> {
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
    flush(stream, &mut out).await?;
    let db = (!who.console).then_some(who.db.as_str());
    let Some(known) = find_user(shared, config, db, user).await? else {
        return Err(refuse_unknown_user(shared, stream, buf, user).await);
    };
    if who.console {
        authenticate(shared, stream, buf, user, &known.cfg).await?;
        let login = crate::admin::admit(config, &who.db, user, &who.application_name)?;
        crate::admin::greet(&mut out);
        stream.write_all(&out).await?;
        return Ok(Some(Login::Console(login)));
    }
    let (startup_settings, route) = startup_settings(&params)?;
    let proved = match authenticate(shared, stream, buf, user, &known.cfg).await {
        Err(e @ SessionError::BadPassword(_)) if known.looked_up => {
            // The password may have changed: ask the database next time.
            shared.secrets.forget(&who.db, user);
            return Err(e);
        }
        r => r?,
    };
    // What servers get for a user the config gives no credential: the key
    // the client proved, or the md5 secret auth_query found.
    let found = || configured_auth(&known.cfg).filter(|_| known.looked_up);
    if let Some(auth) = proved.or_else(found) {
        shared.learn_server_auth(user, auth);
    }
    let pool = shared
        .pool_for(config, &who.db, user)
        .ok_or_else(|| SessionError::UnknownDatabase(who.db.clone()))?;
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
