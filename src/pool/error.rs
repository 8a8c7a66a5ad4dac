//! Why a server connection could not be had or kept.

use std::time::Duration;

use crate::protocol::sqlstate;
use crate::protocol::{auth::AuthError, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(
        "no server connection became free within query_wait_timeout ({waited:?}): \
         pool {pool} is saturated ({size} busy, {queued} waiting)"
    )]
    WaitTimeout {
        pool: String,
        waited: Duration,
        size: usize,
        queued: usize,
    },
    #[error("could not connect to server {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS to server {addr}: {reason}")]
    Tls { addr: String, reason: String },
    #[error("could not connect to server {addr} within server_connect_timeout ({timeout:?})")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("server {addr} refused the login: {message}")]
    ServerRejected {
        addr: String,
        code: String,
        message: String,
    },
    #[error("server {addr} asked for {method} authentication, which pglittle cannot perform for this user")]
    UnsupportedAuth { addr: String, method: String },
    #[error(
        "server {addr} asked for a cleartext password; refused because \
         server_allow_cleartext is off"
    )]
    CleartextRefused { addr: String },
    #[error("server {addr} broke the login protocol: {what}")]
    LoginBroken { addr: String, what: &'static str },
    #[error("server authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("server sent an invalid message: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("server connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("server did not answer within {0:?}")]
    Unresponsive(Duration),
    #[error("resetting a server connection failed ({code}): {message}")]
    ResetFailed { code: String, message: String },
    #[error("auth_query failed ({code}): {message}")]
    LookupFailed { code: String, message: String },
    #[error("pool {0} is closed")]
    Closed(String),
    #[error("pool {pool} is saturated: {reason}; refusing now instead of timing out")]
    Shed { pool: String, reason: String },
}

impl PoolError {
    /// The server is down for a moment (restarting, or not yet accepting):
    /// refused or reset at connect, gone during login, or "the database
    /// system is starting up / shutting down" (57P03, 57P01).
    pub fn server_restarting(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            PoolError::Connect { source, .. } => {
                matches!(source.kind(), K::ConnectionRefused | K::ConnectionReset)
            }
            PoolError::Io(e) => matches!(
                e.kind(),
                K::UnexpectedEof | K::ConnectionReset | K::BrokenPipe
            ),
            PoolError::ServerRejected { code, .. } => {
                code == sqlstate::CANNOT_CONNECT_NOW || code == sqlstate::ADMIN_SHUTDOWN
            }
            _ => false,
        }
    }

    /// The server could not be reached or did not answer (as opposed to
    /// refusing the login): another connection to it may still work.
    pub fn server_unreachable(&self) -> bool {
        matches!(
            self,
            PoolError::Connect { .. }
                | PoolError::ConnectTimeout { .. }
                | PoolError::Io(_)
                | PoolError::Unresponsive(_)
        ) || self.server_restarting()
    }

    /// The SQLSTATE a client sees for this failure.
    pub fn sqlstate(&self) -> &str {
        match self {
            PoolError::WaitTimeout { .. } | PoolError::Shed { .. } => {
                sqlstate::TOO_MANY_CONNECTIONS
            }
            PoolError::ServerRejected { code, .. } => code,
            PoolError::UnsupportedAuth { .. }
            | PoolError::CleartextRefused { .. }
            | PoolError::Auth(_) => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            PoolError::Protocol(_) => sqlstate::PROTOCOL_VIOLATION,
            PoolError::Closed(_) => sqlstate::ADMIN_SHUTDOWN,
            _ => sqlstate::CONNECTION_FAILURE,
        }
    }
}
