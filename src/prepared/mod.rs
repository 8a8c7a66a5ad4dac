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

use crate::protocol::frontend;
use crate::protocol::scan::BackendKind;
use client::{Bound, ClientStatements, StmtDef};
use server::ServerStatements;

pub mod client;
mod reply;
mod rewrite;
/// For the fuzz target `rewriter` (cargo-fuzz sets `cfg(fuzzing)`) and a proptest.
#[cfg(any(test, fuzzing))]
pub mod script;
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
    /// Swallowed too: the replies to pglittle's own query behind the
    /// client's ([`Rewriter::push_probe`]), which the relay reads.
    Probe,
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
    /// Index of the client message in `Rewriter::log`, if logged.
    log: Option<usize>,
}

/// A client message of the current extended-protocol batch, as sent to the
/// server, kept so the batch can be replayed once after a stale plan.
#[derive(Debug)]
struct Logged {
    expect: Expect,
    /// Where its bytes are in `Rewriter::log_buf`.
    range: std::ops::Range<usize>,
    stmt: Option<Arc<StmtDef>>,
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyAction {
    Forward,
    Drop,
    /// Dropped, and the batch is being replayed: one more ReadyForQuery will come.
    Retry,
}

/// Batches larger than this are not kept for replay.
const MAX_LOGGED_BATCH: usize = 1 << 20;

/// The state both pumps share: the reply queue and both statement books.
pub struct Rewriter<'a> {
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
    /// The client went past a cap: nothing more is sent, the session ends.
    pub refused: Option<client::LimitError>,
}

impl<'a> Rewriter<'a> {
    pub fn new(
        client: &'a mut ClientStatements,
        server: &'a mut ServerStatements,
        rewrite: bool,
    ) -> Self {
        Rewriter {
            actions: std::mem::take(&mut server.spare_queue),
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
            refused: None,
        }
    }
}

impl Drop for Rewriter<'_> {
    /// Gives the queue's storage back to the server's books for the next
    /// transaction (not a large one: that memory is let go).
    fn drop(&mut self) {
        if self.actions.capacity() <= 64 {
            self.actions.clear();
            std::mem::swap(&mut self.server.spare_queue, &mut self.actions);
        }
    }
}

/// What the client pump must account for after one client message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientStep {
    /// Query/Sync/FunctionCall messages written (each answered by one ReadyForQuery).
    pub cycles: usize,
    /// A made-up reply is at the head of the queue and may be due now.
    pub synth: bool,
    /// What the statements this message runs do to the session, when they
    /// were parsed earlier (a Bind, an SQL EXECUTE) and do something.
    pub runs: Vec<Bound>,
}

impl Rewriter<'_> {
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

    /// Messages whose replies are still to come (or be made up).
    pub fn pending(&self) -> usize {
        self.actions.len()
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

    /// Sends the server pglittle's own simple query `query` (its bytes)
    /// behind what is queued: its replies reach no client, and the relay
    /// reads them while [`Rewriter::probe_at_front`] says they are its.
    pub fn push_probe(&mut self, query: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(query);
        self.push(Expect::Cycle, Reply::Probe, Undo::None);
    }

    /// The next server message answers a probe.
    pub fn probe_at_front(&self) -> bool {
        self.actions
            .front()
            .is_some_and(|a| a.reply == Reply::Probe)
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
