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

use super::statements::{ClientStatements, StmtDef};
use crate::pool::prepared::ServerStatements;
use crate::protocol::frontend::{self, FrontendMessage, Target};
use crate::protocol::scan::{BackendKind, CLOSE_COMPLETE, PARSE_COMPLETE};
use crate::router::prepared::{scan as scan_sql_prepared, SqlPrepared};

mod reply;

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
#[derive(Debug, Clone)]
enum Undo {
    None,
    /// The server does not have this statement after all.
    Server(Arc<[u8]>),
    /// Nor does the client have its name.
    ServerAndClient(Arc<[u8]>, Box<[u8]>),
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
    /// `sql_prepared`: the SQL mentions PREPARE/EXECUTE/DEALLOCATE/DISCARD.
    pub fn client_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        raw: &[u8],
        sql_prepared: bool,
        out: &mut BytesMut,
    ) -> Written {
        let mut w = Written::default();
        let rewrite = self.rewrite;
        match *msg {
            FrontendMessage::Parse { name, sql, types } if rewrite && !name.is_empty() => {
                self.start_message();
                let def = Arc::new(StmtDef::new(sql, types));
                self.client.insert(name, def.clone());
                if self.server.touch(&def.server_name) {
                    self.push(Expect::Parse, Reply::Synth(PARSE_COMPLETE), Undo::None);
                    w.synth = self.actions.len() == 1;
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
                        self.ensure(&def, out);
                        let at = out.len();
                        frontend::encode_bind(out, portal, &def.server_name, rest);
                        self.push_logged(Expect::Bind, Reply::Forward, &out[at..], Some(def));
                    }
                    None => {
                        out.extend_from_slice(raw);
                        self.push_logged(Expect::Bind, Reply::Forward, raw, None);
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
                    None => out.extend_from_slice(raw),
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
            FrontendMessage::Query { sql } => {
                self.start_message();
                if rewrite && sql_prepared {
                    if let Some(setup) = self.sql_prepared(sql) {
                        out.extend_from_slice(&frontend::query(&setup));
                        self.push(Expect::Cycle, Reply::Swallow, Undo::None);
                        w.cycles += 1;
                    }
                }
                out.extend_from_slice(raw);
                self.push(Expect::Cycle, Reply::Forward, Undo::None);
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
                if expect == Expect::Cycle {
                    w.cycles += 1;
                }
            }
        }
        w
    }

    /// Tracks SQL-level prepared statements in a simple query; returns the
    /// SQL to run first so this server holds what the query needs.
    fn sql_prepared(&mut self, sql: &[u8]) -> Option<String> {
        let mut setup = String::new();
        for op in scan_sql_prepared(sql) {
            match op {
                SqlPrepared::Prepare { name, text } => {
                    if self.server.sql.remove(name.as_slice()).is_some() {
                        setup.push_str(&format!("DEALLOCATE {};", quote(&name)));
                    }
                    let text: Arc<[u8]> = Arc::from(text);
                    self.client.sql.insert(name.clone().into(), text.clone());
                    self.server.sql.insert(name.into(), text);
                }
                SqlPrepared::Execute { name } | SqlPrepared::Deallocate { name } => {
                    if let Some(text) = self.client.sql.get(name.as_slice()).cloned() {
                        if self.server.sql.get(name.as_slice()) != Some(&text) {
                            if self.server.sql.contains_key(name.as_slice()) {
                                setup.push_str(&format!("DEALLOCATE {};", quote(&name)));
                            }
                            setup.push_str(&String::from_utf8_lossy(&text));
                            setup.push(';');
                            self.server.sql.insert(name.clone().into(), text);
                        }
                    }
                }
                SqlPrepared::DeallocateAll => {
                    self.client.clear();
                    self.server.clear();
                }
            }
        }
        // A DEALLOCATE in the query removes the statement on both sides.
        for op in scan_sql_prepared(sql) {
            if let SqlPrepared::Deallocate { name } = op {
                self.client.sql.remove(name.as_slice());
                self.server.sql.remove(name.as_slice());
            }
        }
        (!setup.is_empty()).then_some(setup)
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::None => {}
            Undo::Server(name) => self.server.forget(&name),
            Undo::ServerAndClient(name, client) => {
                self.server.forget(&name);
                self.client.remove(&client);
            }
        }
    }
}

fn quote(name: &[u8]) -> String {
    format!("\"{}\"", String::from_utf8_lossy(name).replace('"', "\"\""))
}
