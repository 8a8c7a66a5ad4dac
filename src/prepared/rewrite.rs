//! Client -> server: what to send the server for each client message, and
//! what each of the server's replies will mean (pushed on the queue).

use std::sync::Arc;

use bytes::BytesMut;

use super::client::{Bound, StmtDef, UNKNOWN_STATEMENT};
use super::{sql, ClientStep, Expect, Reply, Rewriter, Undo};
use crate::protocol::frontend::{self, FrontendMessage, Target};
use crate::protocol::scan::{CLOSE_COMPLETE, PARSE_COMPLETE};
use crate::sql::SqlEffects;

impl Rewriter<'_> {
    /// Appends what to send the server for one client message (`raw` is
    /// its bytes) and queues how to treat the replies.
    /// `fx`: what the message's own SQL does (`sql::inspect`).
    /// `aborted`: the server's transaction block has failed and nothing is
    /// in flight, so a Parse must reach the server, which refuses it,
    /// rather than be answered here.
    pub fn client_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        raw: &[u8],
        fx: SqlEffects,
        aborted: bool,
        out: &mut BytesMut,
    ) -> ClientStep {
        let mut w = ClientStep::default();
        if self.skipping {
            self.pending_sql = None;
            if !matches!(msg, FrontendMessage::Sync) {
                // Discarded by the server: pass it on, expect nothing.
                out.extend_from_slice(raw);
                return w;
            }
            self.skipping = false;
        }
        if self.rewrite && self.statement_message(msg, raw, (fx, aborted), out, &mut w) {
            return w;
        }
        match *msg {
            FrontendMessage::Query { sql } => {
                self.start_message();
                self.query(sql, raw, fx, out, &mut w);
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
                self.passed_through(m, raw, &mut w);
            }
        }
        w
    }

    /// Parse, Bind, Describe and Close of statements, named (renamed to
    /// their content names) or unnamed (this client's own re-established);
    /// false for any other message. `cx`: what the message's SQL does, and
    /// whether the server's block has failed.
    fn statement_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        raw: &[u8],
        cx: (SqlEffects, bool),
        out: &mut BytesMut,
        w: &mut ClientStep,
    ) -> bool {
        match *msg {
            FrontendMessage::Parse { name, sql, types } if !name.is_empty() => {
                self.start_message();
                self.parse_named((name, sql, types), cx, out, w);
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } if !statement.is_empty() => {
                self.start_message();
                self.bind_named(portal, statement, rest, out, w);
            }
            FrontendMessage::Describe(Target::Statement(name)) if !name.is_empty() => {
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
            FrontendMessage::Close(Target::Statement(name)) if !name.is_empty() => {
                self.start_message();
                // The server-side statement may serve other clients: leave it to the LRU.
                self.client.remove(name);
                self.push(Expect::Close, Reply::Synth(CLOSE_COMPLETE), Undo::None);
                w.synth = self.actions.len() == 1;
            }
            FrontendMessage::Parse { sql, types, .. } => {
                self.start_message();
                self.parse_unnamed(sql, types, cx.0, raw, out, w);
            }
            FrontendMessage::Bind { .. } => {
                self.start_message();
                self.bind_unnamed(raw, out, w);
            }
            FrontendMessage::Describe(Target::Statement(_)) => {
                self.start_message();
                self.ensure_unnamed(out);
                out.extend_from_slice(raw);
                self.push(Expect::Describe, Reply::Forward, Undo::None);
            }
            FrontendMessage::Close(Target::Statement(_)) => {
                self.start_message();
                self.client.unnamed = None;
                self.server.unnamed = None;
                out.extend_from_slice(raw);
                self.push(Expect::Close, Reply::Forward, Undo::None);
            }
            _ => return false,
        }
        true
    }

    /// A Parse of the unnamed statement: recorded as this client's, and
    /// sent as it is.
    fn parse_unnamed(
        &mut self,
        sql: &[u8],
        types: &[u8],
        fx: SqlEffects,
        raw: &[u8],
        out: &mut BytesMut,
        w: &mut ClientStep,
    ) {
        if fx.prepared {
            self.sql_setup(sql, out, w);
        }
        self.client.parse_unnamed(sql, types, fx);
        self.server.unnamed = Some(self.client.unnamed_owner());
        out.extend_from_slice(raw);
        self.push(Expect::Parse, Reply::Forward, Undo::Unnamed);
    }

    /// A Parse of a named statement: sent under its content name, or
    /// answered here when the lent server already has it.
    fn parse_named(
        &mut self,
        (name, sql, types): (&[u8], &[u8], &[u8]),
        (fx, aborted): (SqlEffects, bool),
        out: &mut BytesMut,
        w: &mut ClientStep,
    ) {
        if let Err(e) = self.client.room_for(name) {
            self.refused = Some(e);
            return;
        }
        if fx.prepared {
            self.sql_setup(sql, out, w);
        }
        let mut def = if fx.prepared {
            StmtDef::private(sql, types, self.client.token)
        } else {
            StmtDef::new(sql, types)
        };
        def.bound = Bound::of(sql, fx);
        let def = Arc::new(def);
        self.client.insert(name, def.clone());
        let cached = self.server.touch(&def.server_name);
        if cached && !fx.prepared {
            if aborted && !crate::sql::effects::ends_failed_block(sql) {
                // PostgreSQL refuses it (25P02): so must the server.
                frontend::encode_parse(out, &def.server_name, sql, types);
                let undo = Undo::Client(name.into());
                self.push(Expect::Parse, Reply::Forward, undo);
            } else {
                self.push(Expect::Parse, Reply::Synth(PARSE_COMPLETE), Undo::None);
                w.synth = self.actions.len() == 1;
            }
            return;
        }
        if cached {
            // A statement that runs SQL EXECUTE keeps the row description
            // PostgreSQL found when it was parsed (a utility statement is
            // never revalidated), which the client's statements may have
            // changed since: parsed afresh, as on the client's own
            // connection, where every Parse makes a new statement.
            self.server.forget(&def.server_name);
            frontend::encode_close_statement(out, &def.server_name);
            self.push(Expect::Close, Reply::Swallow, Undo::None);
        }
        if let Some(evicted) = self.server.insert(def.server_name.clone()) {
            frontend::encode_close_statement(out, &evicted);
            self.push(Expect::Close, Reply::Swallow, Undo::None);
        }
        frontend::encode_parse(out, &def.server_name, sql, types);
        let undo = Undo::ServerAndClient(def.server_name.clone(), name.into());
        self.push(Expect::Parse, Reply::Forward, undo);
    }

    /// A Bind of a named statement: the server is made to hold it first,
    /// and an unknown name is bound under one no server has (26000).
    fn bind_named(
        &mut self,
        portal: &[u8],
        statement: &[u8],
        rest: &[u8],
        out: &mut BytesMut,
        w: &mut ClientStep,
    ) {
        let Some(def) = self.client.get(statement).cloned() else {
            let at = out.len();
            frontend::encode_bind(out, portal, UNKNOWN_STATEMENT, rest);
            self.push_logged(Expect::Bind, Reply::Forward, &out[at..], None);
            return;
        };
        let sql = def.bound.effects.prepared.then_some(&def.sql[..]);
        self.sql_bound(sql, out, w);
        self.ensure(&def, out);
        if !def.bound.is_inert() {
            w.runs.push(def.bound.clone());
        }
        let at = out.len();
        frontend::encode_bind(out, portal, &def.server_name, rest);
        self.push_logged(Expect::Bind, Reply::Forward, &out[at..], Some(def));
    }

    /// A Bind of the unnamed statement: this client's is re-established
    /// on the server first.
    fn bind_unnamed(&mut self, raw: &[u8], out: &mut BytesMut, w: &mut ClientStep) {
        // Copied only in the rare case that it is SQL PREPARE & co.
        let sql = self
            .client
            .unnamed
            .as_ref()
            .filter(|u| u.bound.effects.prepared)
            .map(|u| u.sql.clone());
        self.sql_bound(sql.as_deref(), out, w);
        self.ensure_unnamed(out);
        if let Some(u) = self.client.unnamed.as_ref().filter(|u| !u.bound.is_inert()) {
            w.runs.push(u.bound.clone());
        }
        out.extend_from_slice(raw);
        self.push_logged(Expect::Bind, Reply::Forward, raw, None);
    }

    /// A simple query, preceded by pglittle's setup when its SQL uses
    /// SQL-level prepared statements.
    fn query(
        &mut self,
        sql: &[u8],
        raw: &[u8],
        fx: SqlEffects,
        out: &mut BytesMut,
        w: &mut ClientStep,
    ) {
        // A simple query destroys the unnamed statement.
        self.client.unnamed = None;
        self.server.unnamed = None;
        let mut undo = Undo::None;
        if self.rewrite && fx.prepared {
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

    /// Any other message, already copied to `out` as it is: queue what
    /// its reply means (nothing, for a Flush or CopyData).
    fn passed_through(&mut self, m: &FrontendMessage<'_>, raw: &[u8], w: &mut ClientStep) {
        let expect = match m {
            FrontendMessage::Parse { .. } => Expect::Parse,
            FrontendMessage::Bind { .. } => Expect::Bind,
            FrontendMessage::Describe(_) => Expect::Describe,
            FrontendMessage::Close(_) => Expect::Close,
            FrontendMessage::Execute => Expect::Execute,
            FrontendMessage::Sync | FrontendMessage::FunctionCall => Expect::Cycle,
            _ => return,
        };
        self.push_logged(expect, Reply::Forward, raw, None);
        match expect {
            Expect::Cycle => {
                w.cycles += 1;
                self.pending_sql = None;
            }
            Expect::Execute => {
                let undo = self.sql_executed(w);
                if let Some(a) = self.actions.back_mut() {
                    a.undo = undo;
                }
            }
            _ => {}
        }
    }

    /// A Bind of a statement whose SQL is PREPARE/EXECUTE/DEALLOCATE: set
    /// up the server now if the batch starts here, and change the books
    /// at the Execute.
    /// `sql` is `None` for every other statement (the common case).
    fn sql_bound(&mut self, sql: Option<&[u8]>, out: &mut BytesMut, w: &mut ClientStep) {
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
    ) -> ClientStep {
        let FrontendMessage::Bind {
            portal, statement, ..
        } = *msg
        else {
            return self.client_message(msg, raw_head, SqlEffects::default(), false, out);
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
        ClientStep::default()
    }
}
