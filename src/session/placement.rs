//! Where a request runs, and where it moves: pglittle's own commands
//! (answered here), a lease acquired from the host the plan picked
//! (falling back to the primary), the move to the primary of what a
//! replica refused or dropped, the move to another server of what a
//! server dying as it was lent never ran, and the read-your-writes floor
//! learnt after a write.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::routing::Plan;
use super::Session;
use crate::config::{Config, PoolMode, ReadYourWrites, Switch};
use crate::error::SessionError;
use crate::pool::Lease;
use crate::prepared::client::ClientStatements;
use crate::protocol::backend;
use crate::protocol::frontend::{peek_message, FrontendMessage};
use crate::protocol::Lsn;
use crate::relay::Replay;
use crate::topology::HostState;

/// The insert position is at or past the end of every WAL record already
/// inserted, including this connection's commit record, even with
/// `synchronous_commit = off` (where `pg_current_wal_lsn()`, the write
/// position, may still be behind it).
const COMMIT_LSN_SQL: &str = "SELECT pg_current_wal_insert_lsn()::text";

/// Counts a read in flight on a replica, for least-outstanding balancing.
pub(super) struct Busy(Arc<HostState>);

impl Busy {
    pub(super) fn new(h: Arc<HostState>) -> Busy {
        h.outstanding.fetch_add(1, Relaxed);
        h.served.fetch_add(1, Relaxed);
        Busy(h)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// What becomes of a replica's lease whose request moves to the primary.
pub(super) enum Retry {
    /// The replica is idle and clean: give it back.
    AfterIdle,
    /// The replica connection is gone.
    Discard,
}

impl Session {
    /// Answers `SET`/`RESET`/`SHOW pglittle.*` without a server; false when
    /// the Query at the front of the buffer is anything else.
    pub(super) async fn answer_locally(&mut self) -> Result<bool, SessionError> {
        let Some((FrontendMessage::Query { sql }, len)) =
            peek_message(&self.buf, self.limits.max_message)?
        else {
            return Ok(false);
        };
        let Some(cmd) = crate::sql::local::parse(sql) else {
            return Ok(false);
        };
        let mut out = BytesMut::new();
        self.route.answer(cmd, &mut out);
        backend::ready_for_query(&mut out, crate::protocol::TxStatus::Idle);
        self.buf.advance(len);
        self.client.write_all(&out).await?;
        Ok(true)
    }

    /// Plans the request and lends a server of the chosen host; a replica
    /// that cannot lend one is banned and the primary serves instead.
    pub(super) async fn acquire_planned(
        &mut self,
        plan: &mut Option<Plan>,
    ) -> Result<Lease, SessionError> {
        if !self.routed {
            let primary = self.pool.clone();
            return self.acquire(&primary).await;
        }
        let config = self.shared.config();
        let primary = self.write_pool(&config);
        if self.mode != PoolMode::Transaction {
            return self.acquire(&primary).await;
        }
        let p = if std::mem::take(&mut self.force_primary) {
            Plan::primary(&primary, self.floor_mode(&config))
        } else {
            let request = (
                &self.buf,
                self.limits.max_message,
                &self.statements,
                &mut self.known,
            );
            super::routing::plan(&self.route, &self.shared, &config, &primary, request).await
        };
        let lease = match (self.acquire(&p.pool).await, &p.replica) {
            (Ok(lease), _) => lease,
            (Err(SessionError::Pool(e)), Some(host)) => {
                tracing::warn!(replica = %host.addr(), error = %e, "replica unavailable; reading from the primary");
                host.ban();
                *plan = Some(Plan {
                    pool: primary.clone(),
                    replica: None,
                    retry: false,
                    ..p
                });
                return self.acquire(&primary).await;
            }
            (Err(e), _) => return Err(e),
        };
        *plan = Some(p);
        Ok(lease)
    }

    /// The pool writes go to: the configured primary's, or with `role =
    /// "auto"` the pool of the host that took over after a failover.
    fn write_pool(&self, config: &crate::config::Config) -> Arc<crate::pool::Pool> {
        let primary = &self.pool;
        if let Some(hosts) = self
            .shared
            .topology
            .get(&primary.database)
            .filter(|d| d.auto)
        {
            let writer = hosts.writer();
            if !Arc::ptr_eq(&writer, &hosts.primary) {
                if let Some(p) =
                    self.shared
                        .writer_pool_for(config, &primary.database, &primary.user, &writer)
                {
                    return p;
                }
            }
        }
        primary.clone()
    }

    /// After a request ran on a replica: if the replica refused it (25006,
    /// 40001, swallowed by the relay) or died before anything reached the
    /// client, put what it was sent back in front of the buffer for the primary.
    pub(super) fn retry_on_primary(&mut self, plan: Plan, replay: Replay) -> Option<Retry> {
        if !plan.retry {
            return None;
        }
        let (next, sent) = match replay {
            Replay::Refused(sent) => (Retry::AfterIdle, sent),
            Replay::ServerDied { sent, .. } => {
                if let Some(h) = &plan.replica {
                    h.ban();
                }
                (Retry::Discard, sent)
            }
            Replay::No => return None,
        };
        // Exactly what the replica was sent (nothing, if the relay ended
        // before forwarding) goes back in front of what the client sent since.
        self.put_back(&sent);
        self.force_primary = true;
        self.shared.ryw.retried.fetch_add(1, Relaxed);
        Some(next)
    }

    /// The primary server lent for this request died before answering it
    /// (its first reply a FATAL, as a server shutting down sends, or no
    /// reply at all): if running the request again cannot run anything
    /// twice (`safe_to_move`), it goes back in front of the buffer for
    /// another server, once. True when it did.
    pub(super) fn retry_dead_on_arrival(&mut self, replay: Replay) -> bool {
        let Replay::ServerDied { sent, fatal_first } = replay else {
            return false;
        };
        let config = self.shared.config();
        let writers = config
            .databases
            .get(&self.pool.database)
            .map(|d| d.routing.writer_functions.as_slice())
            .unwrap_or_default();
        if !safe_to_move(&sent, fatal_first, writers, &self.statements) {
            return false;
        }
        tracing::debug!("a server died before answering; the request moves to another");
        self.put_back(&sent);
        self.moved_off_dead = true;
        true
    }

    /// `sent` goes back in front of what the client sent since.
    fn put_back(&mut self, sent: &[u8]) {
        let mut buf = BytesMut::with_capacity(sent.len() + self.buf.len());
        buf.extend_from_slice(sent);
        buf.extend_from_slice(&self.buf);
        self.buf = buf;
    }

    /// The read-your-writes mode this client's writes follow (`Off` when
    /// reads are not split to replicas), as `routing::plan` finds it.
    fn floor_mode(&self, config: &Config) -> ReadYourWrites {
        match config.databases.get(&self.pool.database) {
            Some(db) if db.routing.split == Switch::On && !db.replicas.is_empty() => {
                db.routing.read_your_writes
            }
            _ => ReadYourWrites::Off,
        }
    }

    /// A write transaction committed on the primary: learn its position
    /// (`mode` LSN) or its time (time mode), and tell the client the floor.
    /// `probed`: the position the relay read behind the commit
    /// (`TxRecord::commit_lsn`); without it, it is asked for now.
    pub(super) async fn learn_floor(
        &mut self,
        lease: &mut Lease,
        mode: ReadYourWrites,
        probed: Option<Lsn>,
    ) {
        match mode {
            ReadYourWrites::Off => return,
            ReadYourWrites::Time => {
                self.route.last_write = Some(std::time::Instant::now());
                return;
            }
            ReadYourWrites::Lsn => {}
        }
        let ryw = &self.shared.ryw;
        let lsn = match probed {
            Some(lsn) => {
                ryw.position_pipelined.fetch_add(1, Relaxed);
                Some(lsn)
            }
            None => {
                ryw.position_asked.fetch_add(1, Relaxed);
                self.ask_lsn(lease).await
            }
        };
        let Some(lsn) = lsn else {
            return;
        };
        self.route.learn(lsn);
        let mut out = BytesMut::new();
        self.route.announce(&mut out);
        if !out.is_empty() {
            let _ = self.client.write_all(&out).await;
        }
    }

    /// The primary's WAL position, by a round trip of its own (a write the
    /// relay could not follow with its probe: extended protocol, a block
    /// left by a multi-statement Query, pipelined requests).
    async fn ask_lsn(&mut self, lease: &mut Lease) -> Option<Lsn> {
        let timeout = self.pool.target().connect_timeout;
        match lease.conn().simple_query(COMMIT_LSN_SQL, timeout).await {
            Ok(o) if o.error.is_none() => o
                .rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|s| s.parse::<Lsn>().ok()),
            _ => None,
        }
    }
}

/// Pure: whether `sent` (what a server that died before answering was
/// sent) may run again on another server. It must be one simple Query,
/// and either a lone `BEGIN`/`START TRANSACTION` (it changes nothing), or,
/// reads only. When the server's first reply was a FATAL (`fatal_first`),
/// any read: PostgreSQL sends a query's RowDescription before running it
/// and flushes it ahead of any error, so a FATAL first means the read never
/// ran. A hang-up with no FATAL proves nothing (a backend killed after a
/// commit loses what it had not flushed), so then only a read whose every
/// call is known to change nothing (`sql::rerun`): running it twice is
/// running it once.
///
/// Extended-protocol batches (Parse, Bind, Describe, Execute, ending with
/// Sync) move under the same rule for their SQL, when they parse only the
/// unnamed statement (parsing it again is what PostgreSQL allows at any
/// time, where a named statement's Parse would redefine what the client's
/// books already hold) and bind it or statements the client `prepared`
/// before (the next server is sent their Parse if it lacks them).
pub fn safe_to_move<S: AsRef<str>>(
    sent: &[u8],
    fatal_first: bool,
    writers: &[S],
    prepared: &ClientStatements,
) -> bool {
    let rerunnable = |sql: &[u8]| {
        crate::sql::classify(sql, writers) == crate::sql::Class::Read
            && (fatal_first || crate::sql::rerun::calls_nothing_that_writes(sql))
    };
    match peek_message(sent, sent.len()) {
        Ok(Some((FrontendMessage::Query { sql }, len))) if len == sent.len() => {
            lone_begin(sql) || rerunnable(sql)
        }
        Ok(Some(_)) => extended_reads(sent, rerunnable, prepared),
        _ => false,
    }
}

/// One or more extended batches that parse only the unnamed statement,
/// whose every statement passes `rerunnable`; the last message is a Sync.
fn extended_reads(
    sent: &[u8],
    rerunnable: impl Fn(&[u8]) -> bool,
    prepared: &ClientStatements,
) -> bool {
    let (mut at, mut parsed, mut last_sync) = (0, false, false);
    while at < sent.len() {
        let Ok(Some((msg, len))) = peek_message(&sent[at..], sent.len()) else {
            return false;
        };
        at += len;
        last_sync = msg == FrontendMessage::Sync;
        let fine = match msg {
            FrontendMessage::Parse { name: b"", sql, .. } => {
                parsed = true;
                rerunnable(sql)
            }
            // Bound only to what this request parsed (the unnamed statement
            // of an earlier request is not known here).
            FrontendMessage::Bind { statement: b"", .. } => parsed,
            FrontendMessage::Bind { statement, .. } => prepared
                .get(statement)
                .is_some_and(|def| rerunnable(&def.sql)),
            FrontendMessage::Describe(_) | FrontendMessage::Execute | FrontendMessage::Sync => true,
            _ => false,
        };
        if !fine {
            return false;
        }
    }
    last_sync
}

/// One statement that opens a transaction block, and nothing else.
fn lone_begin(sql: &[u8]) -> bool {
    let mut lx = crate::sql::lexer::Lexer::new(sql);
    let opens = match lx.next() {
        Some(t) if t.is("begin") => true,
        Some(t) if t.is("start") => lx.next().is_some_and(|t| t.is("transaction")),
        _ => false,
    };
    let mut ended = false;
    for t in lx {
        if t == crate::sql::lexer::Token::Semicolon {
            ended = true;
        } else if ended {
            return false;
        }
    }
    opens
}

#[cfg(test)]
mod tests {
    use super::safe_to_move;
    use crate::prepared::client::ClientStatements;
    use crate::protocol::frontend::query;

    #[test]
    fn only_what_cannot_run_twice_moves_off_a_dead_server() {
        let w = crate::sql::classify::DEFAULT_WRITERS;
        for sql in [
            "BEGIN",
            "begin;",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "BEGIN READ ONLY; ",
        ] {
            assert!(safe_to_move(&query(sql), false, w, &none()), "{sql}");
            assert!(safe_to_move(&query(sql), true, w, &none()), "{sql}");
        }
        // A bare hang-up: reads that call nothing unknown still move.
        for sql in ["SELECT 1", "SELECT * FROM t; SHOW work_mem"] {
            assert!(safe_to_move(&query(sql), true, w, &none()), "{sql}");
            assert!(safe_to_move(&query(sql), false, w, &none()), "{sql}");
        }
        for sql in ["SELECT my_audit(1)", "SELECT count(*) FROM t WHERE f(x)"] {
            assert!(safe_to_move(&query(sql), true, w, &none()), "{sql}");
            assert!(
                !safe_to_move(&query(sql), false, w, &none()),
                "a hang-up alone: {sql}"
            );
        }
        for sql in [
            "BEGIN; INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (1)",
            "SELECT nextval('s')",
            "UPDATE t SET v = 1",
            "start",
            "",
        ] {
            assert!(!safe_to_move(&query(sql), true, w, &none()), "{sql}");
        }
        let two = [query("BEGIN"), query("SELECT 1")].concat();
        assert!(!safe_to_move(&two, true, w, &none()), "one Query only");
        assert!(!safe_to_move(b"", true, w, &none()));
    }

    #[test]
    fn extended_reads_of_the_unnamed_statement_move_too() {
        use crate::protocol::test_wire::{bind, execute, parse, sync, NO_PARAMS};
        let w = crate::sql::classify::DEFAULT_WRITERS;
        let batch = |sql: &str, name: &str| {
            [parse(name, sql), bind(name, NO_PARAMS), execute(), sync()].concat()
        };
        let read = batch("SELECT abalance FROM t WHERE aid = $1", "");
        assert!(safe_to_move(&read, false, w, &none()));
        let two = [read.clone(), batch("SELECT count(*) FROM t", "")].concat();
        assert!(
            safe_to_move(&two, false, w, &none()),
            "two batches of reads"
        );
        for (sent, why) in [
            (batch("SELECT my_audit($1)", ""), "an unknown call"),
            (batch("INSERT INTO t VALUES ($1)", ""), "a write"),
            (batch("SELECT 1", "s1"), "a named statement"),
            (read[..read.len() - 5].to_vec(), "no Sync at the end"),
            (
                [bind("", NO_PARAMS), execute(), sync()].concat(),
                "an unnamed statement of before",
            ),
        ] {
            assert!(!safe_to_move(&sent, false, w, &none()), "{why}");
        }
        // An unknown call moves only when a FATAL came first.
        assert!(safe_to_move(
            &batch("SELECT my_audit($1)", ""),
            true,
            w,
            &none()
        ));
        // A statement the client prepared before, bound again: its SQL
        // decides; one never prepared, or prepared in this request, does
        // not move.
        let mut prepared = ClientStatements::default();
        for (name, sql) in [
            ("s_read", "SELECT * FROM t WHERE id = $1"),
            ("s_call", "SELECT f($1)"),
        ] {
            let def = crate::prepared::client::StmtDef::new(sql.as_bytes(), b"\0\0");
            prepared.insert(name.as_bytes(), std::sync::Arc::new(def));
        }
        let bound = |name: &str| [bind(name, NO_PARAMS), execute(), sync()].concat();
        assert!(safe_to_move(&bound("s_read"), false, w, &prepared));
        assert!(!safe_to_move(&bound("s_call"), false, w, &prepared));
        assert!(!safe_to_move(&bound("s_never"), false, w, &prepared));
    }

    fn none() -> ClientStatements {
        ClientStatements::default()
    }
}
