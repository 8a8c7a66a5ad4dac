//! Read/write splitting for one session: classifies the request waiting in
//! the buffer, asks the topology for a host, answers pglittle's own `SET`/
//! `SHOW pglittle.*`, and keeps the client's read-your-writes floor.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::Shared;
use crate::config::{Config, ReadYourWrites, Switch};
use crate::pool::Pool;
use crate::prepared::client::ClientStatements;
use crate::protocol::backend;
use crate::protocol::frontend::{peek_message, FrontendMessage, Target};
use crate::protocol::Lsn;
use crate::router::{self, Inputs, Route, RouteOverride};
use crate::sql::local::{Local, Var};
use crate::sql::{self, Class};
use crate::topology::{Choice, Eligibility, HostState};

/// The session's routing state.
#[derive(Debug, Default)]
pub struct RouteState {
    /// Reads must see at least this WAL position (the causal token).
    pub floor: Lsn,
    /// `SET pglittle.route`.
    pub session: RouteOverride,
    /// Time mode: when the client last wrote.
    pub last_write: Option<Instant>,
    /// The floor last sent to the client as ParameterStatus `pglittle.lsn`.
    pub announced: Lsn,
}

/// Where one request runs.
pub struct Plan {
    pub pool: Arc<Pool>,
    /// The replica, when the request goes to one.
    pub replica: Option<Arc<HostState>>,
    /// The request was classified as a read (no floor to learn after it).
    pub read: bool,
    /// A replica's refusal or death may move the request to the primary
    /// (the relay keeps what it sends): it can be sent again as it is (it
    /// closes no prepared statement and redefines none).
    pub retry: bool,
    /// A single autocommit batch: the lease serves no more than it.
    pub one_batch: bool,
    /// The 25006/40001 safety net applies: a simple Query, or a single
    /// autocommit extended batch up to its Sync.
    pub refusable: bool,
}

/// What the buffered request is, as far as routing goes.
struct Request {
    class: Class,
    hint: Option<sql::Hint>,
    batch_len: Option<usize>,
    simple: bool,
    /// Sending the batch a second time means what it meant the first. The
    /// first run already applied the batch's Parse and Close of named
    /// statements; that matters only to a Bind or Describe of a name that
    /// a later message of the batch parses or closes.
    replayable: bool,
}

/// Classifies the request at the front of `buf`: a simple Query, or an
/// extended batch up to its Sync (a batch whose Sync has not arrived, or
/// that names an unknown statement, counts as a write).
fn inspect(buf: &[u8], max: usize, stmts: &ClientStatements, writers: &[String]) -> Request {
    let mut req = Request {
        class: Class::Read,
        hint: None,
        batch_len: None,
        simple: false,
        replayable: true,
    };
    let mut at = 0;
    let mut unnamed: Option<&[u8]> = None;
    // Named statements bound or described so far in this batch.
    let mut used: Vec<&[u8]> = Vec::new();
    let worst = |c: Class, req: &mut Request| {
        req.class = match (req.class, c) {
            (Class::Write, _) | (_, Class::Write) => Class::Write,
            (Class::ReadOnlyTx, _) | (_, Class::ReadOnlyTx) => Class::ReadOnlyTx,
            _ => Class::Read,
        }
    };
    while let Ok(Some((msg, len))) = peek_message(&buf[at..], max) {
        at += len;
        let sql = match msg {
            FrontendMessage::Query { sql } if at == len => {
                req.simple = true;
                Some(sql)
            }
            FrontendMessage::Parse { name, sql, .. } => {
                if name.is_empty() {
                    unnamed = Some(sql);
                } else if used.contains(&name) {
                    req.replayable = false;
                }
                Some(sql)
            }
            // An unnamed statement parsed in an earlier batch: unknown here.
            FrontendMessage::Bind { statement: b"", .. } if unnamed.is_none() => {
                req.class = Class::Write;
                None
            }
            FrontendMessage::Bind { statement: b"", .. } => unnamed,
            FrontendMessage::Bind { statement, .. } => {
                used.push(statement);
                match stmts.get(statement) {
                    Some(def) => Some(&def.sql[..]),
                    None => {
                        req.class = Class::Write;
                        None
                    }
                }
            }
            FrontendMessage::Describe(Target::Statement(name)) if !name.is_empty() => {
                used.push(name);
                None
            }
            FrontendMessage::Close(Target::Statement(name)) if !name.is_empty() => {
                if used.contains(&name) {
                    req.replayable = false;
                }
                None
            }
            FrontendMessage::Describe(_)
            | FrontendMessage::Execute
            | FrontendMessage::Close(_)
            | FrontendMessage::Sync => None,
            _ => {
                req.class = Class::Write;
                return req;
            }
        };
        if let Some(sql) = sql {
            if req.hint.is_none() {
                req.hint = sql::hint(sql);
            }
            worst(sql::classify(sql, writers), &mut req);
        }
        if msg.ends_batch() {
            req.batch_len = Some(at);
            return req;
        }
    }
    // No Sync yet (a large message still arriving, or a batch left open):
    // the primary.
    req.class = Class::Write;
    req
}

/// Reads the primary served, for SHOW REPLICAS.
fn count_primary_read(shared: &Shared, db: &str, read: bool) {
    if let Some(h) = shared.topology.get(db).filter(|_| read) {
        h.primary.served.fetch_add(1, Relaxed);
    }
}

impl RouteState {
    /// Decides where the request at the front of `buf` runs. `None` means
    /// the primary with nothing special to do.
    #[allow(clippy::too_many_arguments)]
    pub async fn plan(
        &mut self,
        shared: &Shared,
        config: &Config,
        primary: &Arc<Pool>,
        buf: &BytesMut,
        max: usize,
        stmts: &ClientStatements,
    ) -> Plan {
        let on_primary = |read: bool| Plan {
            pool: primary.clone(),
            replica: None,
            read,
            retry: false,
            one_batch: false,
            refusable: false,
        };
        let Some(dbc) = config.databases.get(&primary.database) else {
            return on_primary(false);
        };
        let r = &dbc.routing;
        if r.split == Switch::Off || dbc.replicas.is_empty() {
            return on_primary(false);
        }
        let req = inspect(buf, max, stmts, &r.writer_functions);
        let pinned = r.read_your_writes == ReadYourWrites::Time
            && self
                .last_write
                .is_some_and(|t| t.elapsed() < r.pin_after_write);
        let floor = if r.read_your_writes == ReadYourWrites::Off {
            Lsn::ZERO
        } else {
            self.floor
        };
        let route = router::decide(&Inputs {
            class: req.class,
            hint: req.hint,
            session: self.session,
            floor,
            pinned,
        });
        let read = req.class != Class::Write;
        let one_batch = req.class == Class::Read && req.batch_len.is_some();
        let on_primary = |read: bool| Plan {
            one_batch,
            ..on_primary(read)
        };
        let (Route::Replica { min_lsn }, Some(_)) = (route, req.batch_len) else {
            if pinned && read {
                shared.ryw.primary_time.fetch_add(1, Relaxed);
            }
            count_primary_read(shared, &primary.database, read);
            return on_primary(read);
        };
        let Some(hosts) = shared.topology.get(&primary.database) else {
            return on_primary(read);
        };
        let want = Eligibility {
            min_lsn,
            max_lag_bytes: r.max_replica_lag_bytes.map(|b| b as u64),
            max_lag: r.max_replica_lag,
        };
        let (choice, waited) = hosts
            .pick_waiting(&want, r.primary_reads, r.causal_wait)
            .await;
        if min_lsn > Lsn::ZERO {
            let c = match (&choice, waited) {
                (Choice::Replica(_), true) => &shared.ryw.waited,
                (Choice::Replica(_), false) => &shared.ryw.replica,
                (Choice::Primary, _) => &shared.ryw.primary_floor,
            };
            c.fetch_add(1, Relaxed);
        }
        let Choice::Replica(host) = choice else {
            hosts.primary.served.fetch_add(1, Relaxed);
            return on_primary(read);
        };
        let Some(pool) = shared.replica_pool_for(config, &primary.database, &primary.user, &host)
        else {
            return on_primary(read);
        };
        Plan {
            pool,
            replica: Some(host),
            read,
            // If the replica refuses it or dies before anything reached the
            // client, what it was sent runs on the primary instead.
            retry: req.replayable,
            one_batch,
            refusable: req.simple || one_batch,
        }
    }

    /// Raises the floor to `lsn` (never lowers it).
    pub fn learn(&mut self, lsn: Lsn) {
        self.floor = self.floor.max(lsn);
        self.last_write = Some(Instant::now());
    }

    /// Appends ParameterStatus `pglittle.lsn` if the floor moved since last told.
    pub fn announce(&mut self, out: &mut BytesMut) {
        if self.floor > self.announced {
            self.announced = self.floor;
            backend::parameter_status(out, "pglittle.lsn", &self.floor.to_string());
        }
    }

    /// Answers one of pglittle's own commands into `out` (without the
    /// final ReadyForQuery).
    pub fn answer(&mut self, cmd: Result<Local, String>, out: &mut BytesMut) {
        match cmd {
            Ok(Local::SetMinLsn(lsn)) => {
                self.floor = self.floor.max(lsn);
                backend::command_complete(out, "SET");
            }
            Ok(Local::SetRoute(r)) => {
                self.session = r;
                backend::command_complete(out, "SET");
            }
            Ok(Local::Reset(Var::Route)) => {
                self.session = RouteOverride::Auto;
                backend::command_complete(out, "RESET");
            }
            Ok(Local::Reset(_)) => {
                self.floor = Lsn::ZERO;
                self.announced = Lsn::ZERO;
                backend::command_complete(out, "RESET");
            }
            Ok(Local::Show(var)) => {
                let (name, value) = match var {
                    Var::Lsn => ("pglittle.lsn", self.floor.to_string()),
                    Var::MinLsn => ("pglittle.min_lsn", self.floor.to_string()),
                    Var::Route => ("pglittle.route", self.session.to_string()),
                };
                backend::row_description(out, &[(name, 25)]);
                backend::data_row(out, &[Some(&value)]);
                backend::command_complete(out, "SHOW");
            }
            Err(message) => {
                backend::error_response(out, backend::Severity::Error, "22023", &message, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frontend::query;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        msg(
            b'P',
            &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat(),
        )
    }

    fn bind(stmt: &str) -> Vec<u8> {
        msg(b'B', &[b"\0", stmt.as_bytes(), b"\0\0\0\0\0\0\0"].concat())
    }

    fn sync() -> Vec<u8> {
        msg(b'S', b"")
    }

    fn execute() -> Vec<u8> {
        msg(b'E', b"\0\0\0\0\0")
    }

    fn class(parts: &[Vec<u8>], stmts: &ClientStatements) -> (Class, Option<usize>) {
        let buf = parts.concat();
        let writers: Vec<String> = vec!["nextval".into()];
        let r = inspect(&buf, 1 << 20, stmts, &writers);
        (r.class, r.batch_len)
    }

    #[test]
    fn classifies_buffered_requests() {
        let mut stmts = ClientStatements::default();
        stmts.insert(
            b"s_read",
            Arc::new(crate::prepared::client::StmtDef::new(b"SELECT 1", b"\0\0")),
        );
        stmts.insert(
            b"s_write",
            Arc::new(crate::prepared::client::StmtDef::new(
                b"DELETE FROM t",
                b"\0\0",
            )),
        );
        let q = query("SELECT 1");
        assert_eq!(
            class(std::slice::from_ref(&q), &stmts),
            (Class::Read, Some(q.len()))
        );
        assert_eq!(
            class(&[query("INSERT INTO t VALUES (1)")], &stmts).0,
            Class::Write
        );
        assert_eq!(
            class(&[query("BEGIN READ ONLY")], &stmts).0,
            Class::ReadOnlyTx
        );
        // Extended: the Parse text, or the named statement a Bind uses, up to Sync.
        let batch = [parse("", "SELECT 1"), bind(""), execute(), sync()];
        let len = batch.concat().len();
        assert_eq!(class(&batch, &stmts), (Class::Read, Some(len)));
        assert_eq!(
            class(&[bind("s_read"), execute(), sync()], &stmts).0,
            Class::Read
        );
        assert_eq!(
            class(&[bind("s_write"), execute(), sync()], &stmts).0,
            Class::Write
        );
        assert_eq!(
            class(&[bind("unknown"), execute(), sync()], &stmts).0,
            Class::Write
        );
        assert_eq!(
            class(&[bind(""), execute(), sync()], &stmts).0,
            Class::Write
        );
        assert_eq!(
            class(
                &[
                    parse("", "SELECT nextval('s')"),
                    bind(""),
                    execute(),
                    sync()
                ],
                &stmts
            )
            .0,
            Class::Write
        );
        // A read followed by a write in the same batch; a batch without its Sync.
        let mixed = [
            bind("s_read"),
            execute(),
            bind("s_write"),
            execute(),
            sync(),
        ];
        assert_eq!(class(&mixed, &stmts).0, Class::Write);
        assert_eq!(
            class(&[parse("", "SELECT 1"), bind("")], &stmts),
            (Class::Write, None)
        );
        // Only the first batch counts: the lease serves no more than it.
        let (c, len) = class(&[query("SELECT 1"), query("DELETE FROM t")], &stmts);
        assert_eq!((c, len), (Class::Read, Some(query("SELECT 1").len())));
    }

    #[test]
    fn a_batch_that_closes_or_redefines_a_statement_it_uses_is_not_sent_twice() {
        let mut stmts = ClientStatements::default();
        stmts.insert(
            b"s1",
            Arc::new(crate::prepared::client::StmtDef::new(b"SELECT 1", b"\0\0")),
        );
        let replayable = |parts: &[Vec<u8>]| {
            let buf = parts.concat();
            inspect(&buf, 1 << 20, &stmts, &[]).replayable
        };
        assert!(replayable(&[bind("s1"), execute(), sync()]));
        assert!(replayable(&[
            parse("s2", "SELECT 2"),
            bind("s2"),
            execute(),
            sync()
        ]));
        assert!(replayable(&[
            parse("", "SELECT 2"),
            bind(""),
            execute(),
            sync()
        ]));
        let close_s1 = msg(b'C', b"Ss1\0");
        let describe_s1 = msg(b'D', b"Ss1\0");
        // A replay would bind a name the first run closed or redefined.
        assert!(!replayable(&[
            bind("s1"),
            execute(),
            close_s1.clone(),
            sync()
        ]));
        assert!(!replayable(&[
            bind("s1"),
            execute(),
            parse("s1", "SELECT 3"),
            sync()
        ]));
        assert!(!replayable(&[describe_s1, close_s1.clone(), sync()]));
        // Closing or redefining first means the same both times (drivers
        // close a statement in a batch of its own).
        assert!(replayable(&[close_s1, sync()]));
        assert!(replayable(&[
            parse("s1", "SELECT 3"),
            bind("s1"),
            execute(),
            sync()
        ]));
        // Closing a portal forgets nothing a replay needs.
        let close_portal = msg(b'C', b"P\0");
        assert!(replayable(&[bind("s1"), execute(), close_portal, sync()]));
    }
}
