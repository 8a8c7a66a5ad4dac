//! Keeping named prepared statements working in transaction mode.
//!
//! Client -> server: a client's named Parse is sent under pglittle's
//! content-derived name, or answered locally when the lent server already
//! has it; a Bind or Describe of a statement the server lacks is preceded by
//! an invisible Parse; a Close of a statement is answered locally. SQL-level
//! `PREPARE` statements are replayed before an `EXECUTE` that needs them.
//!
//! Server -> client: every message pglittle sends the server pushes an
//! `Action` saying what to do with its reply (forward it, swallow it, or, for
//! a message answered locally, emit a made-up reply in its place). Replies
//! come back in request order, so the queue lines them up; after an error in
//! an extended-protocol batch the server skips to Sync, and so does the queue.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;

use crate::protocol::frontend::{self, FrontendMessage, Target};
use crate::protocol::scan::{BackendKind, CLOSE_COMPLETE, PARSE_COMPLETE};
use crate::sql::SqlEffects;
use client::{Bound, ClientStatements, StmtDef, UNKNOWN_STATEMENT};
use server::ServerStatements;

pub mod client;
mod reply;
pub mod server;
mod sql;
#[cfg(test)]
mod tests;

/// Which reply ends the answer to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Parse,
    Bind,
    Close,
    Describe,
    Execute,
    /// Query, Sync or FunctionCall: answered up to ReadyForQuery.
    Cycle,
    /// Not a request: marks where the client ended COPY data (CopyDone or
    /// CopyFail), so Syncs sent during COPY IN, which the server ignores,
    /// can be told apart from those after it.
    CopyEnd,
}

impl Expect {
    fn ends_with(self, kind: BackendKind) -> bool {
        use BackendKind as K;
        match self {
            Expect::Parse => kind == K::ParseComplete,
            Expect::Bind => kind == K::BindComplete,
            Expect::Close => kind == K::CloseComplete,
            Expect::Describe => matches!(kind, K::RowDescription | K::NoData),
            Expect::Execute => matches!(
                kind,
                K::CommandComplete | K::EmptyQuery | K::PortalSuspended
            ),
            Expect::Cycle => kind == K::ReadyForQuery,
            Expect::CopyEnd => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Forward,
    Swallow,
    /// Not sent to the server: emit this reply when its turn comes.
    Synth(&'static [u8]),
}

/// Bookkeeping to undo when the server skips or fails a Parse.
#[derive(Debug)]
enum Undo {
    None,
    /// The server does not have this statement after all.
    Server(Arc<[u8]>),
    /// Nor does the client have its name.
    ServerAndClient(Arc<[u8]>, Box<[u8]>),
    /// The client does not have its name (the server keeps the statement).
    Client(Box<[u8]>),
    /// A Parse of the unnamed statement failed or was skipped: neither the
    /// client nor the server has one now.
    Unnamed,
    /// What a simple query's SQL-level PREPARE, DEALLOCATE ALL or
    /// DISCARD ALL, or pglittle's own setup query, did to the books, by
    /// statement index: what did not run is undone.
    Sql(Box<sql::SqlUndo>),
}

#[derive(Debug)]
pub struct Action {
    expect: Expect,
    reply: Reply,
    undo: Undo,
    /// Index of the client message in `Books::log`, if logged.
    log: Option<usize>,
}

/// A client message of the current extended-protocol batch, as sent to the
/// server, kept so the batch can be replayed once after a stale plan.
#[derive(Debug)]
struct Logged {
    expect: Expect,
    /// Where its bytes are in `Books::log_buf`.
    range: std::ops::Range<usize>,
    stmt: Option<Arc<StmtDef>>,
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Forward,
    Drop,
    /// Dropped, and the batch is being replayed: one more ReadyForQuery will come.
    Retry,
}

/// Batches larger than this are not kept for replay.
const MAX_LOGGED_BATCH: usize = 1 << 20;

/// The state both pumps share: the reply queue and both statement books.
pub struct Books<'a> {
    actions: VecDeque<Action>,
    client: &'a mut ClientStatements,
    server: &'a mut ServerStatements,
    /// Transaction mode renames statements; session mode passes them through.
    rewrite: bool,
    /// The current batch's client messages (transaction mode only).
    log: Vec<Logged>,
    /// The logged messages' bytes, one buffer for the whole batch.
    log_buf: Vec<u8>,
    /// An Execute in the current batch has completed: replaying is unsafe.
    batch_executed: bool,
    /// The current batch was already replayed once.
    batch_retried: bool,
    /// Bytes the client pump must send the server before anything else.
    pub resend: Option<BytesMut>,
    /// The server is in COPY IN: Syncs the client sends now are ignored.
    copy_in: bool,
    /// Syncs dropped from the queue because the server ignores them; the
    /// relay takes this to correct its count of replies still due.
    pub ignored_cycles: usize,
    /// Statements of the head simple query completed so far.
    completed: usize,
    /// An extended-protocol message failed and the client has sent no Sync
    /// since: the server discards everything up to the next Sync, so
    /// messages until then expect no reply and change nothing.
    skipping: bool,
    /// The SQL of the statement bound last, when it has SQL-level
    /// PREPARE/EXECUTE/DEALLOCATE: the next Execute runs it.
    pending_sql: Option<Box<[u8]>>,
    /// The server's transaction block has failed and nothing is in
    /// flight (set by the relay before each client message): a Parse must
    /// reach the server, which refuses it, rather than be answered here.
    pub aborted: bool,
}

impl<'a> Books<'a> {
    pub fn new(
        client: &'a mut ClientStatements,
        server: &'a mut ServerStatements,
        rewrite: bool,
    ) -> Self {
        Books {
            actions: VecDeque::new(),
            client,
            server,
            rewrite,
            log: Vec::new(),
            log_buf: Vec::new(),
            batch_executed: false,
            batch_retried: false,
            resend: None,
            copy_in: false,
            ignored_cycles: 0,
            completed: 0,
            skipping: false,
            pending_sql: None,
            aborted: false,
        }
    }
}

/// What the client pump must account for after one client message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Query/Sync/FunctionCall messages written (each answered by one ReadyForQuery).
    pub cycles: usize,
    /// A made-up reply is at the head of the queue and may be due now.
    pub synth: bool,
    /// What the statements this message runs do to the session, when they
    /// were parsed earlier (a Bind, an SQL EXECUTE) and do something.
    pub runs: Vec<Bound>,
}

impl Books<'_> {
    fn push(&mut self, expect: Expect, reply: Reply, undo: Undo) {
        self.actions.push_back(Action {
            expect,
            reply,
            undo,
            log: None,
        });
    }

    /// Queues the reply handling for a client message sent as `bytes`,
    /// logging it for a possible replay of its batch.
    fn push_logged(
        &mut self,
        expect: Expect,
        reply: Reply,
        bytes: &[u8],
        stmt: Option<Arc<StmtDef>>,
    ) {
        // A replay starts at a Bind of a renamed statement, so nothing
        // before one needs keeping: plain batches log (and copy) nothing.
        let wanted = stmt.is_some() || !self.log.is_empty();
        let log = if self.rewrite && wanted && self.log_buf.len() + bytes.len() <= MAX_LOGGED_BATCH
        {
            let start = self.log_buf.len();
            self.log_buf.extend_from_slice(bytes);
            self.log.push(Logged {
                expect,
                range: start..self.log_buf.len(),
                stmt,
            });
            Some(self.log.len() - 1)
        } else {
            None
        };
        self.actions.push_back(Action {
            expect,
            reply,
            undo: Undo::None,
            log,
        });
    }

    /// A new batch starts after a Sync or Query: forget the previous one.
    fn start_message(&mut self) {
        if self.log.last().is_some_and(|l| l.expect == Expect::Cycle) {
            self.log.clear();
            self.log_buf.clear();
        }
    }

    /// Makes sure the server has `def`, injecting Close (eviction) and Parse.
    fn ensure(&mut self, def: &StmtDef, out: &mut BytesMut) {
        if self.server.touch(&def.server_name) {
            return;
        }
        if let Some(evicted) = self.server.insert(def.server_name.clone()) {
            frontend::encode_close_statement(out, &evicted);
            self.push(Expect::Close, Reply::Swallow, Undo::None);
        }
        frontend::encode_parse(out, &def.server_name, &def.sql, &def.types);
        self.push(
            Expect::Parse,
            Reply::Swallow,
            Undo::Server(def.server_name.clone()),
        );
    }

    /// Appends what to send the server for one client message (`raw` is
    /// its bytes) and queues how to treat the replies.
    /// `fx`: what the message's own SQL does (`sql::inspect`).
    pub fn client_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        raw: &[u8],
        fx: SqlEffects,
        out: &mut BytesMut,
    ) -> Written {
        let sql_prepared = fx.prepared;
        let mut w = Written::default();
        if self.skipping {
            self.pending_sql = None;
            if !matches!(msg, FrontendMessage::Sync) {
                // Discarded by the server: pass it on, expect nothing.
                out.extend_from_slice(raw);
                return w;
            }
            self.skipping = false;
        }
        let rewrite = self.rewrite;
        match *msg {
            FrontendMessage::Parse { name, sql, types } if rewrite && !name.is_empty() => {
                self.start_message();
                if fx.prepared {
                    self.sql_setup(sql, out, &mut w);
                }
                let mut def = if fx.prepared {
                    StmtDef::private(sql, types, self.client.token)
                } else {
                    StmtDef::new(sql, types)
                };
                def.bound = Bound::of(sql, fx);
                let def = Arc::new(def);
                self.client.insert(name, def.clone());
                if self.server.touch(&def.server_name) {
                    if self.aborted && !crate::sql::effects::ends_failed_block(sql) {
                        // PostgreSQL refuses it (25P02): so must the server.
                        frontend::encode_parse(out, &def.server_name, sql, types);
                        let undo = Undo::Client(name.into());
                        self.push(Expect::Parse, Reply::Forward, undo);
                    } else {
                        self.push(Expect::Parse, Reply::Synth(PARSE_COMPLETE), Undo::None);
                        w.synth = self.actions.len() == 1;
                    }
                } else {
                    if let Some(evicted) = self.server.insert(def.server_name.clone()) {
                        frontend::encode_close_statement(out, &evicted);
                        self.push(Expect::Close, Reply::Swallow, Undo::None);
                    }
                    frontend::encode_parse(out, &def.server_name, sql, types);
                    let undo = Undo::ServerAndClient(def.server_name.clone(), name.into());
                    self.push(Expect::Parse, Reply::Forward, undo);
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } if rewrite && !statement.is_empty() => {
                self.start_message();
                match self.client.get(statement).cloned() {
                    Some(def) => {
                        let sql = def.bound.effects.prepared.then_some(&def.sql[..]);
                        self.sql_bound(sql, out, &mut w);
                        self.ensure(&def, out);
                        if !def.bound.is_inert() {
                            w.runs.push(def.bound.clone());
                        }
                        let at = out.len();
                        frontend::encode_bind(out, portal, &def.server_name, rest);
                        self.push_logged(Expect::Bind, Reply::Forward, &out[at..], Some(def));
                    }
                    None => {
                        let at = out.len();
                        frontend::encode_bind(out, portal, UNKNOWN_STATEMENT, rest);
                        self.push_logged(Expect::Bind, Reply::Forward, &out[at..], None);
                    }
                }
            }
            FrontendMessage::Describe(Target::Statement(name)) if rewrite && !name.is_empty() => {
                self.start_message();
                match self.client.get(name).cloned() {
                    Some(def) => {
                        self.ensure(&def, out);
                        frontend::encode_describe_statement(out, &def.server_name);
                    }
                    None => frontend::encode_describe_statement(out, UNKNOWN_STATEMENT),
                }
                self.push(Expect::Describe, Reply::Forward, Undo::None);
            }
            FrontendMessage::Close(Target::Statement(name)) if rewrite && !name.is_empty() => {
                self.start_message();
                // The server-side statement may serve other clients: leave it to the LRU.
                self.client.remove(name);
                self.push(Expect::Close, Reply::Synth(CLOSE_COMPLETE), Undo::None);
                w.synth = self.actions.len() == 1;
            }
            FrontendMessage::Parse { name, sql, types } if rewrite => {
                // The unnamed statement (named ones are handled above).
                self.start_message();
                if fx.prepared {
                    self.sql_setup(sql, out, &mut w);
                }
                self.client.parse_unnamed(sql, types, fx);
                self.server.unnamed = Some(self.client.unnamed_owner());
                out.extend_from_slice(raw);
                debug_assert!(name.is_empty());
                self.push(Expect::Parse, Reply::Forward, Undo::Unnamed);
            }
            FrontendMessage::Bind { .. } if rewrite => {
                self.start_message();
                // Copied only in the rare case that it is SQL PREPARE & co.
                let sql = self
                    .client
                    .unnamed
                    .as_ref()
                    .filter(|u| u.bound.effects.prepared)
                    .map(|u| u.sql.clone());
                self.sql_bound(sql.as_deref(), out, &mut w);
                self.ensure_unnamed(out);
                if let Some(u) = self.client.unnamed.as_ref().filter(|u| !u.bound.is_inert()) {
                    w.runs.push(u.bound.clone());
                }
                out.extend_from_slice(raw);
                self.push_logged(Expect::Bind, Reply::Forward, raw, None);
            }
            FrontendMessage::Describe(Target::Statement(_)) if rewrite => {
                self.start_message();
                self.ensure_unnamed(out);
                out.extend_from_slice(raw);
                self.push(Expect::Describe, Reply::Forward, Undo::None);
            }
            FrontendMessage::Close(Target::Statement(_)) if rewrite => {
                self.start_message();
                self.client.unnamed = None;
                self.server.unnamed = None;
                out.extend_from_slice(raw);
                self.push(Expect::Close, Reply::Forward, Undo::None);
            }
            FrontendMessage::Query { sql } => {
                self.start_message();
                // A simple query destroys the unnamed statement.
                self.client.unnamed = None;
                self.server.unnamed = None;
                let mut undo = Undo::None;
                if rewrite && sql_prepared {
                    let (setup, own) = self.sql_prepared(sql, &mut w.runs, sql::Pass::Both);
                    if let Some(setup) = setup {
                        out.extend_from_slice(&frontend::query_bytes(&setup.sql));
                        self.push(Expect::Cycle, Reply::Swallow, setup.undo());
                        w.cycles += 1;
                    }
                    if !own.is_empty() {
                        undo = Undo::Sql(Box::new(own));
                    }
                }
                out.extend_from_slice(raw);
                self.push(Expect::Cycle, Reply::Forward, undo);
                w.cycles += 1;
            }
            FrontendMessage::Sync if self.copy_in => {
                // Ignored by a server in COPY IN: expect no reply.
                out.extend_from_slice(raw);
            }
            FrontendMessage::CopyDone | FrontendMessage::CopyFail => {
                out.extend_from_slice(raw);
                if self.copy_in {
                    self.copy_in = false;
                } else {
                    self.push(Expect::CopyEnd, Reply::Forward, Undo::None);
                }
            }
            ref m => {
                self.start_message();
                out.extend_from_slice(raw);
                let expect = match m {
                    FrontendMessage::Parse { .. } => Expect::Parse,
                    FrontendMessage::Bind { .. } => Expect::Bind,
                    FrontendMessage::Describe(_) => Expect::Describe,
                    FrontendMessage::Close(_) => Expect::Close,
                    FrontendMessage::Execute => Expect::Execute,
                    FrontendMessage::Sync | FrontendMessage::FunctionCall => Expect::Cycle,
                    _ => return w,
                };
                self.push_logged(expect, Reply::Forward, raw, None);
                match expect {
                    Expect::Cycle => {
                        w.cycles += 1;
                        self.pending_sql = None;
                    }
                    Expect::Execute => {
                        let undo = self.sql_executed(&mut w);
                        if let Some(a) = self.actions.back_mut() {
                            a.undo = undo;
                        }
                    }
                    _ => {}
                }
            }
        }
        w
    }

    /// A Bind of a statement whose SQL is PREPARE/EXECUTE/DEALLOCATE: set
    /// up the server now if the batch starts here, and change the books
    /// at the Execute.
    /// `sql` is `None` for every other statement (the common case).
    fn sql_bound(&mut self, sql: Option<&[u8]>, out: &mut BytesMut, w: &mut Written) {
        let Some(sql) = sql else {
            self.pending_sql = None;
            return;
        };
        self.sql_setup(sql, out, w);
        self.pending_sql = Some(sql.into());
    }

    /// The server must hold this client's unnamed statement (or none) before
    /// a Bind or Describe of it: another client's may be there.
    fn ensure_unnamed(&mut self, out: &mut BytesMut) {
        let owner = self.client.unnamed_owner();
        if self.client.unnamed.is_some() && self.server.unnamed == Some(owner) {
            return;
        }
        match &self.client.unnamed {
            Some(u) => {
                frontend::encode_parse(out, b"", &u.sql, &u.types);
                self.server.unnamed = Some(owner);
                self.push(Expect::Parse, Reply::Swallow, Undo::Unnamed);
            }
            None => {
                // The client has none: nor must the server, so PostgreSQL
                // itself answers 26000 as on the client's own connection.
                frontend::encode_close_statement(out, b"");
                self.server.unnamed = None;
                self.push(Expect::Close, Reply::Swallow, Undo::None);
            }
        }
    }

    /// The server is reading COPY data: the transaction is not over, even
    /// with no reply due (an extended-protocol COPY's Sync is ignored).
    pub fn in_copy_in(&self) -> bool {
        self.copy_in
    }

    /// The server is discarding messages until the client's next Sync.
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Like `client_message` for the head of a message relayed in pieces
    /// (`frontend::peek_stream_head`): a Bind's names are rewritten and
    /// its `rest_len` bytes of parameters follow untouched; CopyData and
    /// FunctionCall pass as they are (`raw_head` is their header). A
    /// streamed Bind is never kept for a replay.
    pub fn client_stream_head(
        &mut self,
        msg: &FrontendMessage<'_>,
        raw_head: &[u8],
        rest_len: usize,
        out: &mut BytesMut,
    ) -> Written {
        let FrontendMessage::Bind {
            portal, statement, ..
        } = *msg
        else {
            return self.client_message(msg, raw_head, SqlEffects::default(), out);
        };
        self.start_message();
        let def = if self.rewrite && !statement.is_empty() {
            self.client.get(statement).cloned()
        } else {
            None
        };
        let name: &[u8] = match &def {
            _ if !self.rewrite => statement,
            Some(def) => {
                self.ensure(def, out);
                &def.server_name
            }
            None if statement.is_empty() => {
                self.ensure_unnamed(out);
                b""
            }
            None => UNKNOWN_STATEMENT,
        };
        frontend::encode_bind_head(out, portal, name, rest_len);
        self.push(Expect::Bind, Reply::Forward, Undo::None);
        Written::default()
    }

    /// Undoes what a message that failed (with SQLSTATE `error`) or was
    /// skipped (`None`) was taken to do.
    fn undo(&mut self, undo: Undo, error: Option<&[u8; 5]>) {
        match undo {
            Undo::None => {}
            Undo::Server(name) => self.server.forget(&name),
            Undo::ServerAndClient(name, client) => {
                self.server.forget(&name);
                self.client.remove(&client);
            }
            Undo::Client(client) => self.client.remove(&client),
            Undo::Unnamed => {
                self.client.unnamed = None;
                self.server.unnamed = None;
            }
            Undo::Sql(undo) => self.undo_sql(*undo, error),
        }
    }
}
