//! The admin console, compatible with PgBouncer's: connect to the virtual
//! database `pgbouncer` (or `pglittle`) and speak simple-Query SQL-ish
//! commands (`SHOW POOLS`, `PAUSE`, `SET pool_size = 40`, ...).
//!
//! The handshake authenticates the user as for any database and then hands
//! the socket here. `admin_users` may run everything; `stats_users` only
//! SHOW; anyone else is refused at login with 42501. Column names and types
//! follow PgBouncer 1.18 wherever the concept is the same, so existing
//! exporters and dashboards read pglittle too.

mod command;
mod connections;
mod control;
pub mod export;
mod fleet;
mod show;
mod sizing;
mod table;

use std::sync::Arc;

use crate::tls::ClientStream;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::error::SessionError;
use crate::protocol::backend::{self, Severity};
use crate::protocol::decode_frame;
use crate::protocol::frontend::FrontendMessage;
use crate::protocol::sqlstate;
use crate::shared::clients::{ClientGuard, ClientLogin};
use crate::shared::Shared;
use crate::shutdown::{reached, Phase};
pub use command::{parse, Command};

/// Names of the virtual console database.
pub const CONSOLE_DATABASES: [&str; 2] = ["pgbouncer", "pglittle"];
const MAX_COMMAND: usize = 64 * 1024;

pub fn is_console(db: &str) -> bool {
    CONSOLE_DATABASES.contains(&db)
}

/// A console error: SQLSTATE and message.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Parse(#[from] command::ParseError),
    #[error("permission denied: {0} needs a user in admin_users")]
    NotAdmin(&'static str),
    #[error("no such database: {0}")]
    NoDatabase(String),
    #[error("{0}")]
    BadSetting(String),
    #[error("RELOAD failed: {0}")]
    Reload(String),
    #[error("the admin console supports only the simple query protocol")]
    Extended,
}

impl AdminError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AdminError::Parse(_) => sqlstate::SYNTAX_ERROR,
            AdminError::NotAdmin(_) => sqlstate::INSUFFICIENT_PRIVILEGE,
            AdminError::NoDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            AdminError::BadSetting(_) => sqlstate::INVALID_PARAMETER_VALUE,
            AdminError::Reload(_) => sqlstate::CONFIG_FILE_ERROR,
            AdminError::Extended => sqlstate::FEATURE_NOT_SUPPORTED,
        }
    }
}

/// Decides whether `user` may use the console, after authentication.
pub fn admit(
    config: &Config,
    db: &str,
    user: &str,
    application_name: &str,
) -> Result<ClientLogin, SessionError> {
    let p = &config.pooler;
    let admin = p.admin_users.iter().any(|u| u == user);
    if !admin && !p.stats_users.iter().any(|u| u == user) {
        return Err(SessionError::NotAdmin(user.to_string()));
    }
    Ok(ClientLogin {
        database: db.to_string(),
        user: user.to_string(),
        application_name: application_name.to_string(),
        admin,
    })
}

/// AuthenticationOk and the parameters psql wants, then ReadyForQuery.
pub fn greet(out: &mut BytesMut) {
    backend::auth_ok(out);
    for (k, v) in [
        ("server_version", "15.0 (pglittle)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        backend::parameter_status(out, k, v);
    }
    backend::backend_key_data(out, 0, 0);
    backend::ready_for_query(out, crate::protocol::TxStatus::Idle);
}

/// The console session: one command per Query message until the client
/// leaves or pglittle drains.
pub async fn serve(
    shared: Arc<Shared>,
    mut stream: ClientStream,
    mut buf: BytesMut,
    login: ClientLogin,
    client: ClientGuard,
) {
    let peer = client.entry.addr;
    tracing::info!(client = %peer, db = %login.database, user = %login.user, admin = login.admin, "console client connected");
    let reason = match session(&shared, &mut stream, &mut buf, &login).await {
        Ok(r) => r,
        Err(e) => e.to_string(),
    };
    tracing::info!(client = %peer, db = %login.database, user = %login.user, reason = %reason, "console client disconnected");
}

async fn session(
    shared: &Arc<Shared>,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    login: &ClientLogin,
) -> Result<String, SessionError> {
    let mut shutdown = shared.shutdown.clone();
    let mut skipping = false;
    loop {
        while let Some(frame) = decode_frame(buf, MAX_COMMAND)? {
            let mut out = BytesMut::new();
            match FrontendMessage::parse(&frame)? {
                FrontendMessage::Terminate => return Ok("client closed the connection".into()),
                FrontendMessage::Query { sql } => {
                    let sql = String::from_utf8_lossy(sql).into_owned();
                    let done = run(shared, login, &sql, &mut out).await;
                    backend::ready_for_query(&mut out, crate::protocol::TxStatus::Idle);
                    stream.write_all(&out).await?;
                    if done {
                        return Ok("SHUTDOWN".into());
                    }
                }
                FrontendMessage::Sync => {
                    if skipping {
                        error(&mut out, &AdminError::Extended);
                    }
                    skipping = false;
                    backend::ready_for_query(&mut out, crate::protocol::TxStatus::Idle);
                    stream.write_all(&out).await?;
                }
                FrontendMessage::Flush => {}
                _ => skipping = true,
            }
        }
        buf.reserve(4096);
        tokio::select! {
            r = stream.read_buf(buf) => {
                if r? == 0 {
                    return Ok("client closed the connection".into());
                }
            }
            _ = reached(&mut shutdown, Phase::Draining) => {
                let mut out = BytesMut::new();
                backend::error_response(&mut out, Severity::Fatal, sqlstate::ADMIN_SHUTDOWN,
                    &SessionError::ShuttingDown.to_string(), None);
                let _ = stream.write_all(&out).await;
                return Ok("pglittle is shutting down".into());
            }
        }
    }
}

fn error(out: &mut BytesMut, e: &AdminError) {
    backend::error_response(out, Severity::Error, e.sqlstate(), &e.to_string(), None);
}

/// Runs one command, writing its answer (without ReadyForQuery) to `out`.
/// Returns true when the console should close (SHUTDOWN).
async fn run(shared: &Arc<Shared>, login: &ClientLogin, sql: &str, out: &mut BytesMut) -> bool {
    let cmd = match parse(sql) {
        Ok(c) => c,
        Err(e) => {
            error(out, &e.into());
            return false;
        }
    };
    if !login.admin && !cmd.read_only() {
        error(out, &AdminError::NotAdmin("this command"));
        return false;
    }
    tracing::info!(user = %login.user, command = ?cmd, "console command");
    let shutdown = cmd == Command::Shutdown;
    let result = match cmd {
        Command::Empty => {
            backend::empty_query_response(out);
            Ok(())
        }
        Command::Show(what) => show::show(shared, &what).map(|t| t.encode(out)),
        other => control::run(shared, other)
            .await
            .map(|tag| backend::command_complete(out, &tag)),
    };
    if let Err(e) = result {
        error(out, &e);
        return false;
    }
    shutdown
}
