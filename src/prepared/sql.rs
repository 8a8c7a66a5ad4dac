//! SQL-level prepared statements: `PREPARE`, `EXECUTE`, `DEALLOCATE` and
//! `DISCARD ALL` in a client's SQL, and the setup query pglittle sends
//! first so the lent server holds exactly this client's statements.
//!
//! Rewriter change when the SQL is sent, before the server has run it. Each
//! change is recorded with the index of the statement that makes it, so
//! that when a query fails at statement `n` (`Rewriter::completed`), the
//! changes of statements `n` and later, which never ran, are undone: a
//! failed PREPARE is not kept, and a DISCARD ALL refused inside a
//! transaction block forgets nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;

use super::client::{Bound, SavedStatements};
use super::server::SavedServerStatements;
use super::{ClientStep, Expect, Reply, Rewriter, Undo};
use crate::protocol::frontend;
use crate::protocol::sqlstate;
use crate::sql::prepare::{scan_numbered, SqlPrepared};

/// What the server holds under a name pglittle knows is taken but not by
/// what: matches no client's text, so the next use deallocates it first.
const SOMEONES: &[u8] = b"";

/// One change to the books, made by the statement at some index.
#[derive(Debug)]
enum Step {
    /// The client's PREPARE of this text: on both sides.
    Prepared(Box<[u8]>, Arc<[u8]>),
    /// The client's DEALLOCATE: gone from both sides (what they held; the
    /// server's only if `replayed`, the setup's replay of it, succeeded).
    Dropped {
        name: Box<[u8]>,
        client: Option<Arc<[u8]>>,
        server: Option<Arc<[u8]>>,
        replayed: Option<Arc<AtomicBool>>,
    },
    /// DEALLOCATE ALL or DISCARD ALL: both books emptied (what they held).
    Cleared(Box<(SavedStatements, SavedServerStatements)>),
    /// pglittle's DEALLOCATE of a statement the client must not see.
    Deallocated(Box<[u8]>),
    /// pglittle's replay of the client's PREPARE (false once it failed).
    Replayed(Box<[u8]>, Arc<AtomicBool>),
}

/// The changes a query made to the books, by statement index.
#[derive(Debug, Default)]
pub(super) struct SqlUndo {
    steps: Vec<(usize, Step)>,
}

impl SqlUndo {
    pub(super) fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The query pglittle sends before the client's, and what it changes.
#[derive(Debug, Default)]
pub(super) struct Setup {
    pub(super) sql: Vec<u8>,
    statements: usize,
    undo: SqlUndo,
}

impl Setup {
    fn deallocate(&mut self, name: &[u8]) {
        deallocate(&mut self.sql, name);
        self.undo
            .steps
            .push((self.statements, Step::Deallocated(name.into())));
        self.statements += 1;
    }

    fn replay(&mut self, name: &[u8], text: &[u8]) -> Arc<AtomicBool> {
        self.sql.extend_from_slice(text);
        self.sql.push(b';');
        let ran = Arc::new(AtomicBool::new(true));
        self.undo
            .steps
            .push((self.statements, Step::Replayed(name.into(), ran.clone())));
        self.statements += 1;
        ran
    }

    pub(super) fn undo(self) -> Undo {
        Undo::Sql(Box::new(self.undo))
    }
}

/// Which half of `Rewriter::sql_prepared` to do: the setup (the server made
/// to hold this client's statements), the changes the SQL makes when it
/// runs, or both (a simple query does both at once; a statement sent with
/// Parse is set up at the start of a batch and changes the books when it
/// is executed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    Setup,
    Run,
    Both,
}

impl Pass {
    fn setup(self) -> bool {
        self != Pass::Run
    }

    fn run(self) -> bool {
        self != Pass::Setup
    }
}

impl Rewriter<'_> {
    /// Tracks SQL-level prepared statements in `sql`. Returns the setup to
    /// run first so this server holds what the SQL needs (bytes: the
    /// client's text may be in any encoding), and the changes to undo if
    /// the SQL fails before the statements that make them.
    pub(super) fn sql_prepared(
        &mut self,
        sql: &[u8],
        runs: &mut Vec<Bound>,
        pass: Pass,
    ) -> (Option<Setup>, SqlUndo) {
        let mut setup = Setup::default();
        let mut own = SqlUndo::default();
        for (at, op) in scan_numbered(sql) {
            match op {
                SqlPrepared::Prepare { name, text } => {
                    if self.client.sql.contains_key(name.as_slice()) {
                        // PostgreSQL answers 42P05, from a server that
                        // must hold the client's statement.
                        if pass.setup() {
                            let _ = self.ensure_sql(&name, &mut setup);
                        }
                        continue;
                    }
                    if pass.setup() && self.server.sql.remove(name.as_slice()).is_some() {
                        setup.deallocate(&name);
                    }
                    if pass.run() {
                        if let Err(e) = self.client.room_for_sql(&name) {
                            self.refused = Some(e);
                            continue;
                        }
                        let text: Arc<[u8]> = Arc::from(text);
                        self.client.sql.insert(name.clone().into(), text.clone());
                        self.server.sql.insert(name.clone().into(), text.clone());
                        own.steps.push((at, Step::Prepared(name.into(), text)));
                    }
                }
                SqlPrepared::Execute { name } => {
                    if let Some(text) = self.client.sql.get(name.as_slice()).filter(|_| pass.run())
                    {
                        let bound = Bound::of(text, crate::sql::inspect(text));
                        if !bound.is_inert() {
                            runs.push(bound);
                        }
                    }
                    if pass.setup() {
                        let _ = self.ensure_sql(&name, &mut setup);
                    }
                }
                SqlPrepared::Deallocate { name } => {
                    let replayed = if pass.setup() {
                        self.ensure_sql(&name, &mut setup)
                    } else {
                        None
                    };
                    if !pass.run() {
                        continue;
                    }
                    let client = self.client.sql.remove(name.as_slice());
                    let server = self.server.sql.remove(name.as_slice());
                    let name = name.into();
                    own.steps.push((
                        at,
                        Step::Dropped {
                            name,
                            client,
                            server,
                            replayed,
                        },
                    ));
                }
                SqlPrepared::DeallocateAll if pass.run() => {
                    let saved = (self.client.take_all(), self.server.take_all());
                    own.steps.push((at, Step::Cleared(Box::new(saved))));
                }
                SqlPrepared::DeallocateAll => {}
            }
        }
        ((!setup.sql.is_empty()).then_some(setup), own)
    }

    /// The server must hold the client's statement `name`, or none of that
    /// name (so that PostgreSQL answers 26000 as on the client's own
    /// connection, never running another client's).
    /// Returns the flag of the replay, when it sets one up.
    fn ensure_sql(&mut self, name: &[u8], setup: &mut Setup) -> Option<Arc<AtomicBool>> {
        match self.client.sql.get(name).cloned() {
            Some(text) if self.server.sql.get(name) != Some(&text) => {
                if self.server.sql.contains_key(name) {
                    setup.deallocate(name);
                }
                let ran = setup.replay(name, &text);
                self.server.sql.insert(name.into(), text);
                Some(ran)
            }
            Some(_) => None,
            None => {
                if self.server.sql.remove(name).is_some() {
                    setup.deallocate(name);
                }
                None
            }
        }
    }

    /// SQL PREPARE/EXECUTE/DEALLOCATE sent through Parse (a driver's
    /// `query("EXECUTE p")`), at its Parse or Bind: the same setup as for
    /// a simple query (another client's statement of that name
    /// deallocated, the client's own replayed), sent as a Query of its own
    /// first. Only at the start of a batch (`batch_start`, before anything
    /// of this message was queued): a Query in the middle of one would
    /// commit its implicit transaction.
    pub(super) fn sql_setup(&mut self, sql: &[u8], out: &mut BytesMut, w: &mut ClientStep) {
        if !self.batch_start() {
            return;
        }
        let (setup, _) = self.sql_prepared(sql, &mut w.runs, Pass::Setup);
        if let Some(setup) = setup {
            out.extend_from_slice(&frontend::query_bytes(&setup.sql));
            self.push(Expect::Cycle, Reply::Swallow, setup.undo());
            w.cycles += 1;
            // That query destroyed the server's unnamed statement.
            self.server.unnamed = None;
        }
    }

    /// Nothing of the current batch is queued yet.
    pub(super) fn batch_start(&self) -> bool {
        self.actions
            .back()
            .is_none_or(|a| a.expect == Expect::Cycle)
    }

    /// An Execute of the portal bound last: the SQL-level statements of its
    /// statement (`pending_sql`, set at Bind) change the books now, undone
    /// if the Execute fails.
    pub(super) fn sql_executed(&mut self, w: &mut ClientStep) -> Undo {
        let Some(sql) = self.pending_sql.take() else {
            return Undo::None;
        };
        let (_, own) = self.sql_prepared(&sql, &mut w.runs, Pass::Run);
        if own.is_empty() {
            Undo::None
        } else {
            Undo::Sql(Box::new(own))
        }
    }

    /// A query failed at statement `self.completed`: the changes of that
    /// statement and the later ones never happened. Undone newest first,
    /// so an emptied book comes back as it was before the statement.
    pub(super) fn undo_sql(&mut self, undo: SqlUndo, error: Option<&[u8; 5]>) {
        let failed = self.completed;
        // pglittle's DEALLOCATE that failed because there was no such
        // statement: the books were wrong, and now they are right.
        let missing = error.is_some_and(|c| sqlstate::is(c, sqlstate::INVALID_SQL_STATEMENT_NAME));
        for (at, step) in undo.steps.into_iter().rev() {
            if at < failed {
                continue;
            }
            match step {
                Step::Prepared(name, text) => {
                    self.client.sql.remove(&name);
                    // Unless the failed setup said the name is taken.
                    if self.server.sql.get(&name) == Some(&text) {
                        self.server.sql.remove(&name);
                    }
                }
                Step::Dropped {
                    name,
                    client,
                    server,
                    replayed,
                } => {
                    if let Some(text) = client {
                        self.client.sql.insert(name.clone(), text);
                    }
                    let on_server = replayed.is_none_or(|r| r.load(Ordering::Relaxed));
                    if let Some(text) = server.filter(|_| on_server) {
                        self.server.sql.insert(name, text);
                    }
                }
                Step::Cleared(saved) => {
                    let (client, server) = *saved;
                    self.client.restore(client);
                    self.server.restore(server);
                }
                Step::Deallocated(name) if missing && at == failed => {
                    self.server.sql.remove(&name);
                }
                Step::Deallocated(name) => {
                    self.server.sql.insert(name, Arc::from(SOMEONES));
                }
                Step::Replayed(name, ran) => {
                    ran.store(false, Ordering::Relaxed);
                    self.server.sql.remove(&name);
                }
            }
        }
    }
}

/// Appends `DEALLOCATE "name";`, quoting the name byte for byte.
fn deallocate(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b"DEALLOCATE \"");
    for &b in name {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.extend_from_slice(b"\";");
}
