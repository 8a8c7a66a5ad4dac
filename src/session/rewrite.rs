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
use crate::protocol::scan::{BackendKind, Segment, CLOSE_COMPLETE, PARSE_COMPLETE};
use crate::router::prepared::{scan as scan_sql_prepared, SqlPrepared};

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
}

/// The state both pumps share: the reply queue and both statement books.
pub struct Books<'a> {
    pub actions: VecDeque<Action>,
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    /// Transaction mode renames statements; session mode passes them through.
    pub rewrite: bool,
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
        });
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
    pub fn client_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        raw: &[u8],
        out: &mut BytesMut,
    ) -> Written {
        let mut w = Written::default();
        let rewrite = self.rewrite;
        match *msg {
            FrontendMessage::Parse { name, sql, types } if rewrite && !name.is_empty() => {
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
                match self.client.get(statement).cloned() {
                    Some(def) => {
                        self.ensure(&def, out);
                        frontend::encode_bind(out, portal, &def.server_name, rest);
                    }
                    None => out.extend_from_slice(raw),
                }
                self.push(Expect::Bind, Reply::Forward, Undo::None);
            }
            FrontendMessage::Describe(Target::Statement(name)) if rewrite && !name.is_empty() => {
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
                // The server-side statement may serve other clients: leave it to the LRU.
                self.client.remove(name);
                self.push(Expect::Close, Reply::Synth(CLOSE_COMPLETE), Undo::None);
                w.synth = self.actions.len() == 1;
            }
            FrontendMessage::Query { sql } => {
                if rewrite {
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
            ref m => {
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
                self.push(expect, Reply::Forward, Undo::None);
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

    /// Decides the fate of one server message: appends any made-up replies
    /// that are due, and returns whether to forward the message itself.
    pub fn server_message(&mut self, kind: BackendKind, out: &mut Vec<Segment>) -> bool {
        if kind == BackendKind::Async {
            return true;
        }
        self.emit_due(out);
        let Some(front) = self.actions.front() else {
            return true;
        };
        if kind == BackendKind::Error && front.expect != Expect::Cycle {
            // The message failed; the server now ignores everything up to Sync.
            if let Some(a) = self.actions.pop_front() {
                self.undo(a.undo);
            }
            while self
                .actions
                .front()
                .is_some_and(|a| a.expect != Expect::Cycle)
            {
                if let Some(a) = self.actions.pop_front() {
                    self.undo(a.undo);
                }
            }
            return true;
        }
        let forward = front.reply == Reply::Forward;
        if front.expect.ends_with(kind) {
            self.actions.pop_front();
        }
        forward
    }

    /// Emits made-up replies at the head of the queue: everything before
    /// them has been answered.
    pub fn emit_due(&mut self, out: &mut Vec<Segment>) {
        while let Some(Action {
            reply: Reply::Synth(bytes),
            ..
        }) = self.actions.front()
        {
            out.push(Segment::Static(bytes));
            self.actions.pop_front();
        }
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
