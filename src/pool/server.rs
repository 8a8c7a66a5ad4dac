//! One authenticated connection to a PostgreSQL server.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tls::ServerStream;

use super::{error::PoolError, params::Params};
use crate::prepared::server::ServerStatements;
use crate::protocol::scan::Segment;
use crate::protocol::sqlstate;

/// How pglittle proves itself to the server.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerAuth {
    /// A plaintext password: works for SCRAM, md5, cleartext and trust.
    Password(String),
    /// SCRAM pass-through: the ClientKey recovered from a client's proof and
    /// the ServerKey from the configured secret. SCRAM only.
    ClientKey {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
    /// md5 pass-through: the `md5...` secret as stored in pg_authid (an
    /// md5 challenge is answered from it). md5 only.
    Md5Secret(String),
    /// No credential: only a `trust` server will let us in.
    None,
}

/// Where and as whom a pool's servers connect.
#[derive(Clone)]
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub connect_timeout: Duration,
    /// Capacity of each connection's prepared-statement cache.
    pub max_prepared_statements: usize,
    /// Answer a request for a cleartext password (`server_allow_cleartext`).
    pub allow_cleartext: bool,
    /// TLS to the server (`server_tls_mode`).
    pub tls: crate::tls::ServerTls,
}

impl ServerTarget {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A server connection and what pglittle knows of its session.
pub struct ServerConn {
    pub stream: ServerStream,
    /// The server's session parameters as last reported or set.
    pub params: Params,
    /// BackendKeyData, for forwarding CancelRequests.
    pub pid: i32,
    pub secret: i32,
    pub id: u64,
    pub created: Instant,
    pub last_used: Instant,
    /// When the pool last handed it out (to a waiter, possibly not yet
    /// running): the start of its hold time.
    pub lent_at: Instant,
    /// Read buffer, kept with the connection so a transaction allocates nothing.
    pub buf: BytesMut,
    /// Prepared statements this server holds (transaction mode).
    pub statements: ServerStatements,
    /// The relay's working buffers, kept here for the same reason as `buf`.
    pub relay: RelayBuffers,
    /// The client overrides `params` were last checked against (see
    /// `Params::changed`): compared by value, so no client can make
    /// another's settings look already applied.
    pub synced_for: Option<Params>,
    /// A reset was written at check-in and its reply not yet read: the
    /// next borrower reads it first (`finish_reset`), usually already
    /// arrived, so nobody waits a round trip for it.
    pub pending_reset: bool,
}

/// Buffers the relay fills and empties in every transaction, kept with the
/// server connection so that a transaction allocates none of them (there
/// are few servers, so this costs nothing per client). Each is empty
/// between transactions; only its capacity is kept.
#[derive(Debug, Default)]
pub struct RelayBuffers {
    /// Client bytes on their way to the server.
    pub to_server: BytesMut,
    /// What one scan of the server's bytes forwards.
    pub segs: Vec<Segment>,
    /// Replies held back while the request may still move to the primary.
    pub held: BytesMut,
    /// A scan's bytes gathered from more than one range.
    pub gather: BytesMut,
    /// Room for the client bytes kept while the request may still move.
    pub replay: BytesMut,
}

impl RelayBuffers {
    /// Gives back what one large transaction grew.
    pub fn shrink(&mut self) {
        for b in [
            &mut self.to_server,
            &mut self.held,
            &mut self.gather,
            &mut self.replay,
        ] {
            if b.capacity() > BUF_SIZE {
                *b = BytesMut::new();
            }
        }
        if self.segs.capacity() > 1024 {
            self.segs = Vec::new();
        }
    }
}

/// What one of pglittle's own simple queries returned.
#[derive(Debug, Default)]
pub struct QueryOutcome {
    pub rows: Vec<Vec<Option<String>>>,
    /// SQLSTATE and message of the first error, if any.
    pub error: Option<(String, String)>,
}

const BUF_SIZE: usize = 16 * 1024;

impl ServerConn {
    /// A connection over `stream`, not yet logged in.
    pub(super) fn over(stream: ServerStream, id: u64, max_prepared: usize) -> ServerConn {
        let now = Instant::now();
        ServerConn {
            stream,
            params: Params::new(),
            pid: 0,
            secret: 0,
            id,
            created: now,
            last_used: now,
            lent_at: now,
            buf: BytesMut::with_capacity(BUF_SIZE),
            statements: ServerStatements::new(max_prepared),
            relay: RelayBuffers::default(),
            synced_for: None,
            pending_reset: false,
        }
    }

    /// Opens a TCP connection, logs in, and waits for the first ReadyForQuery.
    /// Under `server_tls_mode = "allow"` (libpq's meaning), plain text is
    /// tried first, and TLS only when the server refuses that login (28000).
    pub async fn connect(
        target: &ServerTarget,
        auth: &ServerAuth,
        id: u64,
    ) -> Result<ServerConn, PoolError> {
        if !target.tls.plain_first() {
            return Self::connect_with(target, auth, id, &target.tls).await;
        }
        let plain = crate::tls::ServerTls::default();
        match Self::connect_with(target, auth, id, &plain).await {
            Err(PoolError::ServerRejected { code, .. })
                if code == sqlstate::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                Self::connect_with(target, auth, id, &target.tls).await
            }
            r => r,
        }
    }

    async fn connect_with(
        target: &ServerTarget,
        auth: &ServerAuth,
        id: u64,
        tls: &crate::tls::ServerTls,
    ) -> Result<ServerConn, PoolError> {
        let addr = target.addr();
        let work = async {
            let stream = TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(|source| PoolError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            stream.set_nodelay(true)?;
            let stream = crate::tls::connect_server(tls, stream, &target.host)
                .await
                .map_err(|e| PoolError::Tls {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            let mut conn = ServerConn::over(stream, id, target.max_prepared_statements);
            conn.login(target, auth).await?;
            conn.into_records().ok_or_else(|| PoolError::Tls {
                addr: addr.clone(),
                reason: "the session could not be moved onto the record layer".into(),
            })
        };
        match tokio::time::timeout(target.connect_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(PoolError::ConnectTimeout {
                addr,
                timeout: target.connect_timeout,
            }),
        }
    }

    /// The logged-in connection with its TLS 1.3 stream moved onto
    /// pglittle's own record layer (`tls::records`).
    fn into_records(self) -> Option<ServerConn> {
        let stream = self.stream.into_records()?;
        Some(ServerConn { stream, ..self })
    }

    /// Reads one whole message for pglittle's own use (login and its own
    /// queries; never on the relay path).
    pub(super) async fn read_message(&mut self) -> Result<Message, PoolError> {
        loop {
            if let Some(m) = Message::parse(&mut self.buf)? {
                return Ok(m);
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(BUF_SIZE);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(PoolError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Runs one of pglittle's own simple queries (parameter sync, rollback,
    /// reset) and reads up to ReadyForQuery. ParameterStatus updates `params`.
    pub async fn simple_query(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> Result<QueryOutcome, PoolError> {
        self.simple_queries(&[sql], timeout).await
    }

    /// Runs several of pglittle's own queries as separate Query messages,
    /// pipelined (one round trip), so a statement that may not run in a
    /// transaction block (DISCARD ALL) can follow a ROLLBACK. The rows of
    /// all of them are returned in order; the first error is kept.
    pub async fn simple_queries(
        &mut self,
        sqls: &[&str],
        timeout: Duration,
    ) -> Result<QueryOutcome, PoolError> {
        let work = async {
            self.finish_reset_inner().await?;
            let mut out = Vec::new();
            for sql in sqls {
                out.extend_from_slice(&crate::protocol::frontend::query(sql));
            }
            self.stream.write_all(&out).await?;
            // A simple query destroys the unnamed statement.
            self.statements.unnamed = None;
            let mut outcome = QueryOutcome::default();
            for _ in sqls {
                self.read_cycle(&mut outcome).await?;
            }
            Ok(outcome)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| PoolError::Unresponsive(timeout))?
    }

    /// Writes `sql` without waiting for its reply (see `pending_reset`).
    pub async fn start_reset(&mut self, sql: &str) -> Result<(), PoolError> {
        self.finish_reset_inner().await?;
        self.stream
            .write_all(&crate::protocol::frontend::query(sql))
            .await?;
        self.statements.unnamed = None;
        self.pending_reset = true;
        Ok(())
    }

    /// Reads the reply of a reset written at check-in; an error in it
    /// means the server is not known to be clean.
    pub async fn finish_reset(&mut self, timeout: Duration) -> Result<(), PoolError> {
        if !self.pending_reset {
            // Every lend comes here: no timer for the common case.
            return Ok(());
        }
        tokio::time::timeout(timeout, self.finish_reset_inner())
            .await
            .map_err(|_| PoolError::Unresponsive(timeout))?
    }

    async fn finish_reset_inner(&mut self) -> Result<(), PoolError> {
        if !self.pending_reset {
            return Ok(());
        }
        let mut outcome = QueryOutcome::default();
        self.read_cycle(&mut outcome).await?;
        self.pending_reset = false;
        match outcome.error {
            None => Ok(()),
            Some((code, message)) => Err(PoolError::ResetFailed { code, message }),
        }
    }

    /// Reads one query's reply up to ReadyForQuery into `outcome`.
    pub(super) async fn read_cycle(&mut self, outcome: &mut QueryOutcome) -> Result<(), PoolError> {
        loop {
            match self.read_message().await? {
                Message::DataRow(row) => {
                    let buf = row.buffer();
                    let mut cols = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(r) = ranges.next()? {
                        cols.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    outcome.rows.push(cols);
                }
                Message::ParameterStatus(p) => self.params.set(p.name()?, p.value()?),
                Message::ErrorResponse(e) if outcome.error.is_none() => {
                    outcome.error = Some(error_code_message(e.fields())?);
                }
                Message::ReadyForQuery(_) => return Ok(()),
                _ => {}
            }
        }
    }

    /// Cheap liveness check before lending an idle connection: an idle
    /// server must have nothing to say. Readable data (say, a FATAL from
    /// `pg_terminate_backend`) or EOF means it is gone.
    pub fn is_broken(&mut self) -> bool {
        if self.pending_reset {
            // The reset's reply is due; reading it at lend checks liveness.
            return false;
        }
        let said = match &mut self.stream {
            ServerStream::Plain(s) => s.try_read(&mut [0u8; 1]),
            // Decrypted: a TLS record with nothing for pglittle in it (a
            // session ticket) is not the server speaking.
            tls => tls.try_read_buf(&mut BytesMut::new()),
        };
        !matches!(said, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Gives back a read buffer that one large reply grew (kept idle, it
    /// would hold that memory for the connection's whole life).
    pub fn shrink_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 4 * BUF_SIZE {
            self.buf = BytesMut::with_capacity(BUF_SIZE);
        }
        self.relay.shrink();
    }

    /// A cheap `is_broken` for a connection used moments ago: only when
    /// the reactor has seen it become readable (a FATAL and a hang-up
    /// arrive as bytes while it sits idle) is the socket itself asked.
    pub fn looks_closed(&mut self) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            std::task::Poll::Pending => false,
            std::task::Poll::Ready(Ok(())) => self.is_broken(),
            std::task::Poll::Ready(Err(_)) => true,
        }
    }

    /// Says goodbye politely; errors are irrelevant at this point.
    pub async fn terminate(mut self) {
        let _ = self
            .stream
            .write_all(crate::protocol::frontend::terminate())
            .await;
    }
}

pub(super) fn error_code_message(
    mut fields: postgres_protocol::message::backend::ErrorFields<'_>,
) -> Result<(String, String), std::io::Error> {
    let mut code = String::from(sqlstate::INTERNAL_ERROR);
    let mut message = String::new();
    while let Some(f) = fields.next()? {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    Ok((code, message))
}
