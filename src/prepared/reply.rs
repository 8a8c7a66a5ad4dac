//! Server -> client: the fate of each reply (forward, drop, made up), the
//! skip to Sync after an error, COPY IN's ignored Syncs, and the one-time
//! replay of a batch whose cached plan went stale.

use bytes::BytesMut;

use super::{Action, Expect, Reply, ReplyAction, Rewriter, Undo};
use crate::protocol::frontend;
use crate::protocol::scan::{BackendKind, Segment};
use crate::protocol::sqlstate;

impl Rewriter<'_> {
    /// Decides the fate of one server message: appends any made-up replies
    /// that are due, and says whether to forward the message itself.
    /// `error` is the SQLSTATE of an ErrorResponse; `in_transaction` whether
    /// the batch began inside a transaction block.
    pub fn server_message(
        &mut self,
        kind: BackendKind,
        error: Option<&[u8; 5]>,
        in_transaction: bool,
        out: &mut Vec<Segment>,
    ) -> ReplyAction {
        if kind == BackendKind::Async {
            return ReplyAction::Forward;
        }
        self.emit_due(out);
        self.skip_copy_markers();
        if kind == BackendKind::CopyIn {
            self.enter_copy_in();
        }
        let Some(front) = self.actions.front_mut() else {
            return ReplyAction::Forward;
        };
        if front.expect == Expect::Cycle {
            match kind {
                BackendKind::CommandComplete | BackendKind::EmptyQuery => self.completed += 1,
                BackendKind::Error => {
                    // A simple query failed at statement `completed`.
                    let undo = std::mem::replace(&mut front.undo, Undo::None);
                    self.undo(undo, error);
                }
                _ => {}
            }
        }
        let Some(front) = self.actions.front() else {
            return ReplyAction::Forward;
        };
        if kind == BackendKind::Error && front.expect != Expect::Cycle {
            let unsupported =
                error.is_some_and(|c| sqlstate::is(c, sqlstate::FEATURE_NOT_SUPPORTED));
            if unsupported && !in_transaction && self.replay_batch() {
                return ReplyAction::Retry;
            }
            // The message failed; the server now ignores everything up to Sync.
            if let Some(a) = self.actions.pop_front() {
                self.undo(a.undo, error);
            }
            while self
                .actions
                .front()
                .is_some_and(|a| a.expect != Expect::Cycle)
            {
                if let Some(a) = self.actions.pop_front() {
                    self.undo(a.undo, None);
                }
            }
            // No Sync sent yet: what the client sends until its Sync is
            // discarded too.
            self.skipping = self.actions.is_empty();
            return ReplyAction::Forward;
        }
        let forward = front.reply == Reply::Forward;
        if front.expect.ends_with(kind) {
            match front.expect {
                Expect::Execute => self.batch_executed = true,
                Expect::Cycle if forward => {
                    self.batch_executed = false;
                    self.batch_retried = false;
                }
                _ => {}
            }
            if front.expect == Expect::Cycle {
                self.completed = 0;
            }
            self.actions.pop_front();
        }
        if forward {
            ReplyAction::Forward
        } else {
            ReplyAction::Drop
        }
    }

    /// Markers of COPY ends already past answer nothing: drop them.
    fn skip_copy_markers(&mut self) {
        while self
            .actions
            .front()
            .is_some_and(|a| a.expect == Expect::CopyEnd)
        {
            self.actions.pop_front();
        }
    }

    /// The head request started COPY IN. Syncs queued after it and before
    /// the client's CopyDone/CopyFail reached the server during COPY and are
    /// ignored there; if the client has not ended COPY yet, Syncs it sends
    /// from now on are ignored too.
    fn enter_copy_in(&mut self) {
        let mut i = 1;
        let mut ended = false;
        while i < self.actions.len() {
            match self.actions[i].expect {
                Expect::CopyEnd => {
                    self.actions.remove(i);
                    ended = true;
                    break;
                }
                Expect::Cycle => {
                    self.actions.remove(i);
                    self.ignored_cycles += 1;
                }
                _ => i += 1,
            }
        }
        self.copy_in = !ended;
    }

    /// "cached plan must not change result type": the statement's plan went
    /// stale after DDL. If nothing in this batch has run yet and the batch
    /// is the last one sent, prepare the statement afresh and send the rest
    /// of the batch again; the client never sees the error. Returns false
    /// (and changes nothing) when that is not safe.
    fn replay_batch(&mut self) -> bool {
        if self.batch_executed || self.batch_retried {
            return false;
        }
        let Some(first) = self.actions.front().and_then(|a| a.log) else {
            return false;
        };
        let Some(def) = self.log.get(first).and_then(|l| l.stmt.clone()) else {
            return false;
        };
        // Everything from the failed message to the Sync must be logged,
        // plain forwards, and the Sync must be the last thing sent.
        let mut indices = Vec::new();
        let mut saw_sync = false;
        for a in &self.actions {
            if saw_sync || a.reply != Reply::Forward {
                return false;
            }
            let Some(i) = a.log else { return false };
            indices.push(i);
            saw_sync = a.expect == Expect::Cycle;
        }
        if !saw_sync {
            return false;
        }
        let mut bytes = BytesMut::new();
        frontend::encode_close_statement(&mut bytes, &def.server_name);
        frontend::encode_parse(&mut bytes, &def.server_name, &def.sql, &def.types);
        for &i in &indices {
            bytes.extend_from_slice(&self.log_buf[self.log[i].range.clone()]);
        }
        // The failed batch's ReadyForQuery is not the client's any more.
        let pending: Vec<Action> = self.actions.drain(..).collect();
        self.push(Expect::Cycle, Reply::Swallow, Undo::None);
        self.push(Expect::Close, Reply::Swallow, Undo::None);
        self.push(
            Expect::Parse,
            Reply::Swallow,
            Undo::Server(def.server_name.clone()),
        );
        for a in pending {
            self.actions.push_back(Action {
                undo: Undo::None,
                ..a
            });
        }
        self.resend = Some(bytes);
        self.batch_retried = true;
        true
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
}
