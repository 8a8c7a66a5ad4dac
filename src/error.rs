//! Errors a client session can end in, each with the SQLSTATE the client sees.

use crate::pool::PoolError;
use crate::protocol::sqlstate;
use crate::protocol::{auth::AuthError, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The client's socket failed: there is nobody left to tell.
    #[error("client connection: {0}")]
    ClientIo(#[from] std::io::Error),
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error("password authentication failed for user \"{0}\"")]
    BadPassword(String),
    #[error("too many failed logins for this user from this address; try again in {0} s")]
    LoginThrottled(u64),
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    #[error("invalid startup parameter: {0}")]
    BadStartupParameter(String),
    #[error("sorry, too many clients already (max_client_conn = {0})")]
    TooManyClients(usize),
    #[error("client did not finish logging in within client_login_timeout")]
    LoginTimeout,
    #[error("terminating connection: client was idle longer than client_idle_timeout")]
    ClientIdle,
    #[error("terminating connection: idle in transaction longer than idle_transaction_timeout")]
    IdleInTransaction,
    #[error(
        "terminating connection: an extended-protocol batch was left open (no Sync) \
         longer than client_batch_timeout ({0:?}) while holding a server"
    )]
    BatchLeftOpen(std::time::Duration),
    #[error(transparent)]
    OverLimit(#[from] crate::prepared::client::LimitError),
    #[error("terminating connection: pglittle is shutting down")]
    ShuttingDown,
    /// Rolling restart: the client is idle and goes to the new process
    /// (its socket and session state); nothing is said to it.
    #[error("handed over to the new pglittle process")]
    HandedOver,
    #[error("server connection lost in the middle of a transaction")]
    ServerLost,
    #[error(
        "internal error in pglittle ({0}); this session was ended, other sessions are unaffected"
    )]
    Panic(String),
    #[error("permission denied: user \"{0}\" is not in admin_users or stats_users")]
    NotAdmin(String),
    #[error(
        "this pooler accepts only TLS connections (client_tls_mode = \"{0}\"); \
         connect with sslmode=require or stronger"
    )]
    TlsRequired(crate::config::TlsMode),
    /// auth_query could not run (the cause is in pglittle's log, not told
    /// to a client that has proved nothing yet).
    #[error("could not look up user \"{0}\": pglittle's auth_query failed (see its log)")]
    LookupFailed(String),
    #[error("certificate authentication failed for user \"{user}\": {why}")]
    CertRefused { user: String, why: String },
    /// The TLS handshake failed, or TLS was asked for where it cannot be
    /// had: nothing can be told in a language the client understands.
    #[error("TLS: {0}")]
    Tls(String),
}

impl SessionError {
    pub fn sqlstate(&self) -> &str {
        match self {
            SessionError::Protocol(e) => e.sqlstate(),
            SessionError::Auth(e) => e.sqlstate(),
            SessionError::Pool(e) => e.sqlstate(),
            SessionError::ClientIo(_) => sqlstate::CONNECTION_FAILURE,
            SessionError::UnknownDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            SessionError::BadPassword(_) => sqlstate::INVALID_PASSWORD,
            SessionError::LoginThrottled(_) => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            SessionError::NoUser => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            SessionError::BadStartupParameter(_) => sqlstate::INVALID_PARAMETER_VALUE,
            SessionError::TooManyClients(_) => sqlstate::TOO_MANY_CONNECTIONS,
            SessionError::LoginTimeout => sqlstate::CONNECTION_FAILURE,
            SessionError::ClientIdle => sqlstate::IDLE_SESSION_TIMEOUT,
            SessionError::IdleInTransaction => sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            SessionError::BatchLeftOpen(_) => sqlstate::PROTOCOL_VIOLATION,
            SessionError::OverLimit(_) => sqlstate::PROGRAM_LIMIT_EXCEEDED,
            SessionError::ShuttingDown | SessionError::HandedOver => sqlstate::ADMIN_SHUTDOWN,
            SessionError::ServerLost => sqlstate::CONNECTION_FAILURE,
            SessionError::Panic(_) => sqlstate::INTERNAL_ERROR,
            SessionError::NotAdmin(_) => sqlstate::INSUFFICIENT_PRIVILEGE,
            SessionError::TlsRequired(_) => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            SessionError::CertRefused { .. } => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            SessionError::LookupFailed(_) => sqlstate::CONNECTION_FAILURE,
            SessionError::Tls(_) => sqlstate::PROTOCOL_VIOLATION,
        }
    }

    /// False when the client itself is gone, so no ErrorResponse is sent.
    pub fn client_reachable(&self) -> bool {
        !matches!(
            self,
            SessionError::ClientIo(_) | SessionError::Tls(_) | SessionError::HandedOver
        )
    }

    /// A short reason for the disconnect log line.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SessionError::Pool(PoolError::WaitTimeout { .. }) => Some(
                "the pool is too small for the load, or transactions hold connections too long",
            ),
            SessionError::TooManyClients(_) => {
                Some("raise max_client_conn or reduce the number of clients")
            }
            _ => None,
        }
    }
}
