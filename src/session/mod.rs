//! One task per client: handshake, then a loop of requests, each relayed on
//! a server lent for the length of a transaction (or the whole session).

mod checkin;
mod idle;
mod lend;
mod panic;
mod routing;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use crate::shared::Shared;

use crate::config::PoolMode;
use crate::error::SessionError;
use crate::pool::{params::Params, Lease, Pool};
use crate::protocol::backend::{self, Severity};
use crate::protocol::frame::peek_header;
use crate::protocol::frontend::{peek_message, peek_stream_head, FrontendMessage};
use crate::relay::{self, Outcome, RelayLimits, TxRecord};
use crate::shared::cancel::CancelHandle;
use crate::shared::clients;
use crate::shutdown::Phase;
use lend::{Busy, Retry};

/// A logged-in client.
pub struct Session {
    shared: Arc<Shared>,
    client: TcpStream,
    pool: Arc<Pool>,
    mode: PoolMode,
    defaults: Arc<Params>,
    /// Where this client's session differs from `defaults`.
    overrides: Params,
    /// `overrides` as the session started: what RESET returns to.
    startup: Params,
    /// How servers are cleaned at check-in.
    policy: checkin::CheckinPolicy,
    /// Why this transaction-mode client keeps its server, if it does.
    pin: Option<checkin::PinReason>,
    cancel: CancelHandle,
    /// Named prepared statements, kept across servers in transaction mode.
    statements: crate::prepared::client::ClientStatements,
    lease: Option<Lease>,
    /// Client bytes not yet handled; empty (and unallocated) while idle.
    buf: BytesMut,
    limits: RelayLimits,
    client_idle_timeout: std::time::Duration,
    /// This client's entry in the registry (state changes at lease boundaries).
    entry: clients::ClientGuard,
    /// Read/write splitting: the read-your-writes floor, `pglittle.route`.
    route: crate::router::RouteState,
    /// The next request goes to the primary (a replica refused it).
    force_primary: bool,
    /// The request in `buf` already moved once off a primary server that
    /// died on arrival (`lend::retry_dead_on_arrival`): it moves no more.
    moved_off_dead: bool,
    /// The database has replicas or follows failovers: requests are planned.
    /// Decided at login, so a database without either pays nothing per
    /// transaction for routing (a reload that adds replicas applies to new
    /// clients).
    routed: bool,
}

/// A client the front door logged in to a pool: what its session starts from.
pub struct PoolClient {
    pub application_name: String,
    pub pool: Arc<Pool>,
    /// The server's parameters as the pool's first connection reported them.
    pub defaults: Arc<Params>,
    /// The client's startup parameters, where they differ from `defaults`.
    pub overrides: Params,
    pub cancel: CancelHandle,
    /// pglittle's own startup parameters (`pglittle.*`).
    pub route: crate::router::RouteState,
}

impl Session {
    /// The session of a client that just logged in; `buf` holds what it
    /// sent past its login.
    pub fn start(
        shared: &Arc<Shared>,
        client: TcpStream,
        buf: BytesMut,
        login: PoolClient,
        entry: clients::ClientGuard,
    ) -> Box<Session> {
        let config = shared.config();
        let mode = login.pool.settings().mode;
        let db = &login.pool.database;
        let routed = config
            .databases
            .get(db)
            .is_some_and(|d| !d.replicas.is_empty())
            || shared.topology.get(db).is_some();
        Box::new(Session {
            entry,
            shared: shared.clone(),
            client,
            mode,
            pool: login.pool,
            defaults: login.defaults,
            startup: login.overrides.clone(),
            overrides: login.overrides,
            policy: checkin::CheckinPolicy {
                server_reset: config.pooler.server_reset,
                pin_on_session_state: config.pooler.pin_on_session_state,
            },
            pin: None,
            cancel: login.cancel,
            statements: crate::prepared::client::ClientStatements::capped(
                config.pooler.max_client_statements,
            ),
            lease: None,
            buf,
            limits: RelayLimits {
                max_message: config.pooler.max_message_size,
                rewrite_statements: mode == PoolMode::Transaction,
                idle_transaction_timeout: config.pooler.idle_transaction_timeout,
                batch_timeout: config.pooler.client_batch_timeout,
            },
            client_idle_timeout: config.pooler.client_idle_timeout,
            route: login.route,
            force_primary: false,
            moved_off_dead: false,
            routed,
        })
    }

    /// Serves the client's requests until it leaves; the error, if any, was
    /// told to the client when it could be.
    pub async fn run(mut self: Box<Self>) -> Result<(), SessionError> {
        let result = self.serve_requests().await;
        if let Err(e) = &result {
            if e.client_reachable() {
                let _ = Box::pin(self.send_error(Severity::Fatal, e)).await;
            }
        }
        if let Some(lease) = self.lease.take() {
            // Session mode, or a pinned client: give the server back only if
            // it can be made clean.
            Box::pin(self.finish_lease(lease, true)).await;
        }
        self.set_pin(None);
        result
    }

    async fn serve_requests(&mut self) -> Result<(), SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            if self.lease.is_none() {
                self.entry.entry.set_state(clients::ClientState::Idle);
            }
            let Some(first) = self.wait_for_message(&mut shutdown).await? else {
                return Ok(());
            };
            // Everything past the idle wait is boxed: see `serve`. A panic
            // in it ends this session only, with an ErrorResponse.
            match panic::CatchPanic::new(self.handle(first)).await {
                Ok(next) => {
                    if next? == Next::Close {
                        return Ok(());
                    }
                }
                Err(what) => {
                    tracing::error!(panic = %what, "a session panicked; ending only that session");
                    self.lease = None;
                    return Err(SessionError::Panic(what));
                }
            }
            if self.lease.is_none() && *shutdown.borrow() >= Phase::Draining {
                return Err(SessionError::ShuttingDown);
            }
        }
    }

    /// Serves one request (a transaction, in transaction mode).
    async fn handle(&mut self, first: Incoming) -> Result<Next, SessionError> {
        // A Sync with nothing before it, and no server held: nothing is in a
        // transaction, so pglittle answers it. (A held server answers itself.)
        if first == Incoming::Stray && self.lease.is_none() {
            self.skip_message().await?;
            return Ok(Next::Continue);
        }
        if first == Incoming::LoneSync && self.lease.is_none() {
            self.skip_message().await?;
            let mut out = BytesMut::new();
            backend::ready_for_query(&mut out, crate::protocol::TxStatus::Idle);
            self.client.write_all(&out).await?;
            return Ok(Next::Continue);
        }
        let mut plan = None;
        let held = self.lease.is_some();
        let mut lease = match self.lease.take() {
            Some(lease) => lease,
            None if first == Incoming::Simple && self.answer_locally().await? => {
                return Ok(Next::Continue);
            }
            None => match self.lend_planned(&mut plan).await {
                Ok(lease) => lease,
                Err(SessionError::Pool(e)) => {
                    let closed = matches!(e, crate::pool::PoolError::Closed(_));
                    self.refuse_request(first, &SessionError::Pool(e)).await?;
                    if closed {
                        return Err(SessionError::ShuttingDown);
                    }
                    return Ok(Next::Continue);
                }
                Err(e) => return Err(e),
            },
        };
        let mut record = TxRecord::new();
        record.lex_unsafe = self.lex_unsafe();
        let pool = lease.pool().clone();
        if let Some(p) = &plan {
            record.one_batch = p.one_batch;
            record.retry_armed = p.replica.is_some() && p.refusable && p.retry;
            record.may_retry = p.replica.is_some() && p.retry;
        }
        if !held && !record.may_retry && first == Incoming::Simple {
            // A server lent just now may have been told to shut down.
            record.dead_on_arrival = !std::mem::take(&mut self.moved_off_dead);
            record.may_retry = record.dead_on_arrival;
        }
        let _busy = plan.as_ref().and_then(|p| p.replica.clone()).map(Busy::new);
        let meter = relay::meter::Meter::new(&pool.metrics);
        let outcome = Box::pin(relay::transaction(
            &mut self.client,
            &mut self.buf,
            lease.conn(),
            &mut self.overrides,
            &mut self.statements,
            &self.defaults,
            &mut record,
            &self.limits,
            &meter,
        ))
        .await;
        self.count_statements(&mut lease, &record);
        if let Some(p) = plan.take() {
            if p.replica.is_some() {
                if let Some(next) = self.retry_on_primary(p, &outcome, &mut record) {
                    return match next {
                        Retry::AfterIdle => {
                            self.lease = self.after_transaction(lease, &mut record).await;
                            Ok(Next::Continue)
                        }
                        Retry::Discard => {
                            self.give_back(lease, false);
                            Ok(Next::Continue)
                        }
                    };
                }
            } else if !p.read && matches!(outcome, Outcome::Idle | Outcome::IdleThenGone) {
                self.learn_floor(&mut lease).await;
            }
        }
        match outcome {
            Outcome::Idle if self.mode == PoolMode::Session => {
                self.lease = Some(lease);
                Ok(Next::Continue)
            }
            Outcome::Idle => {
                self.lease = self.after_transaction(lease, &mut record).await;
                Ok(Next::Continue)
            }
            Outcome::IdleThenGone if self.mode == PoolMode::Session => {
                self.finish_lease(lease, true).await;
                Ok(Next::Close)
            }
            Outcome::IdleThenGone => {
                if let Some(kept) = self.after_transaction(lease, &mut record).await {
                    self.finish_lease(kept, true).await;
                }
                Ok(Next::Close)
            }
            Outcome::ClientGone => {
                self.abandon(lease, &record).await;
                Ok(Next::Close)
            }
            Outcome::ClientProtocol(e) => {
                self.abandon(lease, &record).await;
                Err(e.into())
            }
            Outcome::IdleInTransaction => {
                self.abandon(lease, &record).await;
                Err(SessionError::IdleInTransaction)
            }
            Outcome::ClientOverLimit(e) => {
                self.abandon(lease, &record).await;
                Err(e.into())
            }
            Outcome::BatchLeftOpen => {
                // Not quiet: the server is closed, which rolls back
                // whatever the open batch began.
                self.abandon(lease, &record).await;
                Err(SessionError::BatchLeftOpen(self.limits.batch_timeout))
            }
            Outcome::ServerGone { told } => {
                self.give_back(lease, false);
                if self.retry_dead_on_arrival(&mut record, told) {
                    return Ok(Next::Continue);
                }
                if told {
                    return Ok(Next::Close);
                }
                Err(SessionError::ServerLost)
            }
        }
    }

    /// Moves the relay's prepared-statement counts into the pool's counters.
    fn count_statements(&self, lease: &mut Lease, record: &TxRecord) {
        let pool = lease.pool().clone();
        let c = &pool.counters;
        // Shared counters: touch them only when there is something to add.
        let (hits, misses, evictions) = lease.conn().statements.take_counts();
        let retries = record.retries;
        for (counter, n) in [
            (&c.stmt_hits, hits),
            (&c.stmt_misses, misses),
            (&c.stmt_evictions, evictions),
            (&c.plan_retries, retries),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    /// Waits until a complete message is buffered; `None` on Terminate or EOF.
    async fn wait_for_message(
        &mut self,
        shutdown: &mut tokio::sync::watch::Receiver<Phase>,
    ) -> Result<Option<Incoming>, SessionError> {
        loop {
            if let Some(first) = classify_first(&self.buf, self.limits.max_message)? {
                if first == Incoming::Terminate {
                    return Ok(None);
                }
                return Ok(Some(first));
            }
            if self.buf.is_empty() && self.lease.is_none() {
                // Idle clients hold no buffer: memory per idle client stays small.
                self.buf = BytesMut::new();
            }
            if *shutdown.borrow_and_update() >= Phase::Draining {
                return Err(SessionError::ShuttingDown);
            }
            // The timer is boxed and made only when the timeout is on: this
            // wait is what every idle client holds, so every byte counts.
            let idle = self.client_idle_timeout;
            let mut timer = (!idle.is_zero() && self.lease.is_none())
                .then(|| Box::pin(tokio::time::sleep(idle)));
            let expired = async {
                match timer.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            if self.lease.is_some() {
                // A held server (session mode, a pinned client) may speak
                // first. Boxed: most idle clients hold no server, and this
                // wait is what each of them keeps.
                match Box::pin(self.wait_with_server(shutdown)).await? {
                    Woke::Client => {}
                    Woke::Other => continue,
                    Woke::ServerGone => return Ok(None),
                }
            } else {
                tokio::select! {
                    r = self.client.readable() => r?,
                    _ = shutdown.changed() => continue,
                    _ = expired => return Err(SessionError::ClientIdle),
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            match self.client.try_read_buf(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for the client, or for the server it holds to say something
    /// by itself (passed on at once).
    async fn wait_with_server(
        &mut self,
        shutdown: &mut tokio::sync::watch::Receiver<Phase>,
    ) -> Result<Woke, SessionError> {
        let client = &self.client;
        let held = self.lease.as_mut().map(|l| l.conn());
        let server_said = async {
            match held {
                Some(conn) => conn.stream.readable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = client.readable() => {
                r?;
                Ok(Woke::Client)
            }
            r = server_said => {
                r.map_err(|_| SessionError::ServerLost)?;
                if self.relay_server_chatter().await? {
                    Ok(Woke::Other)
                } else {
                    Ok(Woke::ServerGone)
                }
            }
            _ = shutdown.changed() => Ok(Woke::Other),
        }
    }

    /// Borrows a server and makes its session parameters match this client's.
    async fn lend(&mut self, pool: &Arc<Pool>) -> Result<Lease, SessionError> {
        let wait = pool.settings().query_wait_timeout;
        self.entry.entry.set_state(clients::ClientState::Waiting);
        let mut lease = pool.acquire(wait).await?;
        // A reset written at check-in: its reply is read first (usually
        // already here). One that failed leaves a server not known clean.
        let mut tries = 0;
        while let Err(e) = lease
            .conn()
            .finish_reset(pool.target().connect_timeout)
            .await
        {
            tracing::warn!(error = %e, "a server failed its check-in reset; closing it");
            lease.discard();
            tries += 1;
            if tries > 3 {
                return Err(e.into());
            }
            lease = pool.acquire(wait).await?;
        }
        self.entry.entry.set_state(clients::ClientState::Active);
        let conn = lease.conn();
        // Skip the comparison when this server was last synced for a client
        // with the same overrides and nothing changed since (the common case).
        match self.sync_params(conn, pool.target().connect_timeout).await {
            Ok(None) => {}
            Ok(Some((code, message))) => {
                lease.release();
                return Err(SessionError::Pool(crate::pool::PoolError::ServerRejected {
                    addr: pool.target().addr(),
                    code,
                    message,
                }));
            }
            Err(e) => {
                lease.discard();
                return Err(e.into());
            }
        }
        let conn = lease.conn();
        self.cancel.set_server_in(pool, conn.pid, conn.secret);
        Ok(lease)
    }

    /// Makes the server's session parameters match this client's: one
    /// round trip, only when they differ (skipped when the server was last
    /// synced for the same overrides and nothing moved since, the common
    /// case). `Ok(Some)` is the server's refusal (SQLSTATE, message).
    pub(super) async fn sync_params(
        &self,
        conn: &mut crate::pool::ServerConn,
        timeout: std::time::Duration,
    ) -> Result<Option<(String, String)>, crate::pool::PoolError> {
        let unchanged = !conn.params.changed() && conn.synced_for.as_ref() == Some(&self.overrides);
        let sync = if unchanged {
            None
        } else {
            self.overrides
                .sync_sql(&self.defaults, &conn.params, &self.startup)
        };
        if let Some(sql) = sync {
            let outcome = conn.simple_query(&sql, timeout).await?;
            if outcome.error.is_some() {
                return Ok(outcome.error);
            }
            conn.params.synced(&self.overrides, &self.defaults);
        }
        conn.params.mark_synced();
        if !unchanged {
            conn.synced_for = Some(self.overrides.clone());
        }
        Ok(None)
    }

    /// Transaction over and the server idle: the settings the client
    /// changed follow it, and the server is cleaned or kept (`checkin`).
    /// Returns the lease when the client keeps it.
    async fn after_transaction(&mut self, lease: Lease, record: &mut TxRecord) -> Option<Lease> {
        self.check_in(lease, record.effects(), record.take_settings())
            .await
    }

    /// The client left (or broke the protocol) while holding a server: roll
    /// back and reuse it if nothing is in record, otherwise close it.
    async fn abandon(&mut self, lease: Lease, record: &TxRecord) {
        if !record.quiet() {
            return self.give_back(lease, false);
        }
        let idle = record.status() == crate::protocol::TxStatus::Idle;
        self.finish_lease(lease, idle).await;
    }

    /// The client's session makes the SQL lexer unreliable: backslashes
    /// escape quotes (standard_conforming_strings off), or the encoding
    /// lets a multibyte character end in a quote-like byte.
    fn lex_unsafe(&self) -> bool {
        const UNSAFE_ENCODINGS: &[&str] = &[
            "sjis",
            "shift_jis_2004",
            "big5",
            "gbk",
            "gb18030",
            "uhc",
            "johab",
        ];
        // Runs once per transaction: compares without allocating.
        let get = |k: &str| self.overrides.get(k).or_else(|| self.defaults.get(k));
        get("standard_conforming_strings").is_some_and(|v| v.eq_ignore_ascii_case("off"))
            || get("client_encoding")
                .is_some_and(|e| UNSAFE_ENCODINGS.iter().any(|u| e.eq_ignore_ascii_case(u)))
    }

    /// Answers a request that could not get a server: an error, then (for an
    /// extended-protocol batch) skip to its Sync, then ReadyForQuery.
    async fn refuse_request(
        &mut self,
        first: Incoming,
        err: &SessionError,
    ) -> Result<(), SessionError> {
        self.send_error(Severity::Error, err).await?;
        if first == Incoming::Extended {
            self.skip_to_sync().await?;
        } else {
            self.skip_message().await?;
        }
        let mut out = BytesMut::new();
        backend::ready_for_query(&mut out, crate::protocol::TxStatus::Idle);
        self.client.write_all(&out).await?;
        Ok(())
    }

    async fn skip_to_sync(&mut self) -> Result<(), SessionError> {
        while self.skip_message().await? != b'S' {}
        Ok(())
    }

    /// Drops the client's next message, reading (and dropping) as much of
    /// it as has not arrived: a large one is never held whole. Its tag.
    async fn skip_message(&mut self) -> Result<u8, SessionError> {
        let (tag, mut left) = loop {
            if let Some(h) = peek_header(&self.buf, self.limits.max_message)? {
                break h;
            }
            self.read_more().await?;
        };
        loop {
            let k = left.min(self.buf.len());
            self.buf.advance(k);
            left -= k;
            if left == 0 {
                return Ok(tag);
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<(), SessionError> {
        self.buf.reserve(8 * 1024);
        if tokio::io::AsyncReadExt::read_buf(&mut self.client, &mut self.buf).await? == 0 {
            return Err(SessionError::ClientIo(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        Ok(())
    }

    async fn send_error(&mut self, severity: Severity, err: &SessionError) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        backend::error_response(
            &mut out,
            severity,
            err.sqlstate(),
            &err.to_string(),
            err.hint(),
        );
        self.client.write_all(&out).await
    }
}

/// What ended a wait with a server held.
enum Woke {
    Client,
    /// The server spoke (and was passed on), or shutdown moved: look again.
    Other,
    /// The server ended the session after telling the client why.
    ServerGone,
}

/// Whether the session goes on after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

/// The kind of the first buffered message, as far as lending a server goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Incoming {
    Simple,
    Extended,
    LoneSync,
    /// CopyData, CopyDone, CopyFail or Flush with no server held.
    Stray,
    Terminate,
}

fn classify_first(buf: &[u8], max: usize) -> Result<Option<Incoming>, SessionError> {
    let kind = |msg: &FrontendMessage<'_>| match msg {
        FrontendMessage::Terminate => Incoming::Terminate,
        FrontendMessage::Sync => Incoming::LoneSync,
        // Ignored by PostgreSQL outside COPY (or, alone, with nothing to
        // flush): no reason to lend a server.
        FrontendMessage::CopyData
        | FrontendMessage::CopyDone
        | FrontendMessage::CopyFail
        | FrontendMessage::Flush => Incoming::Stray,
        m if m.is_extended() => Incoming::Extended,
        _ => Incoming::Simple,
    };
    if let Some((msg, _)) = peek_message(buf, max)? {
        return Ok(Some(kind(&msg)));
    }
    // A large message is lent a server on its head alone (it streams).
    Ok(peek_stream_head(buf, max)?.map(|h| kind(&h.msg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle client's cost is dominated by its task; keep the future small.
    #[tokio::test]
    async fn the_session_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let config = crate::config::Config::from_toml_str(
            "[databases.app]\nhost = \"127.0.0.1\"\n[users.app]\npassword = \"x\"\n",
        )
        .unwrap();
        let shutdown = crate::shutdown::Shutdown::new();
        let shared = Arc::new(Shared::new(Arc::new(config), &shutdown));
        drop(stream);
        let pool = shared.pool_for(&shared.config(), "app", "app").unwrap();
        let session = Session {
            entry: shared.client_list.register(addr, None),
            shared: shared.clone(),
            client: TcpStream::connect(addr).await.unwrap(),
            pool: pool.clone(),
            mode: PoolMode::Transaction,
            defaults: Arc::new(Params::new()),
            overrides: Params::new(),
            startup: Params::new(),
            policy: checkin::CheckinPolicy {
                server_reset: crate::config::ServerReset::Detect,
                pin_on_session_state: false,
            },
            pin: None,
            cancel: shared.cancels.register(pool),
            statements: crate::prepared::client::ClientStatements::new(),
            lease: None,
            buf: BytesMut::new(),
            limits: RelayLimits {
                max_message: 1024,
                rewrite_statements: true,
                idle_transaction_timeout: std::time::Duration::ZERO,
                batch_timeout: std::time::Duration::ZERO,
            },
            client_idle_timeout: std::time::Duration::ZERO,
            route: Default::default(),
            force_primary: false,
            moved_off_dead: false,
            routed: false,
        };
        let run = std::mem::size_of_val(&Box::new(session).run());
        // Measured at 512 bytes when this test was written, and with the
        // panic boundary and the held-server wait.
        assert!(run <= 768, "run future is {run} bytes");
    }
}
