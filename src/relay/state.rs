//! The state both pumps of a relay share, as one plain struct behind one
//! lock: the transaction record and the prepared-statement rewriter. Its methods
//! are pure (bytes in, bytes out, and what to do next), so the unit tests
//! beside it drive whole conversations without a socket.

use bytes::BytesMut;

use super::tx_record::{TxRecord, LSN_PROBE};
use crate::prepared::client::LimitError;
use crate::prepared::{ReplyAction, Rewriter};
use crate::protocol::frontend::FrontendMessage;
use crate::protocol::scan::{BackendEvent, BackendKind, Segment};
use crate::protocol::sqlstate;
use crate::protocol::TxStatus;

pub(super) struct State<'a> {
    pub record: &'a mut TxRecord,
    pub rewriter: Rewriter<'a>,
    /// The relay is over: the client pump stops at its next step.
    pub stopping: bool,
    /// The client pump waits for the client (or a wake-up) with nothing
    /// half done: between its wait and the top of its loop.
    pub client_parked: bool,
    /// Queued replies the server will send without a Sync: those of the
    /// messages up to the client's last Flush, less those that came.
    flush_due: usize,
    /// The client pump stopped reading because the reply queue was full.
    held_up: bool,
    /// The client message being taken is not the last one buffered: a
    /// pipelining client is not made to wait for a probe between its
    /// requests (its writes get their position by a query after the relay).
    pub more_buffered: bool,
}

/// Replies queued (to come from the server, or made up here) past which
/// the relay reads no more from the client until some have been sent: a
/// client that sends Close or Parse messages pglittle answers itself and
/// never reads the answers cannot grow the queue without bound.
pub(super) const MAX_QUEUED_REPLIES: usize = 16 * 1024;

/// What the server pump must do after one server message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ServerStep {
    /// Send the message on (or hold it back, see `State::hold_back`).
    pub forward: bool,
    /// A ReadyForQuery changed the transaction status.
    pub status_changed: bool,
    /// A stale plan: the client pump must replay the batch now.
    pub resend: bool,
}

/// A reply that does not stop a retry elsewhere: everything but the
/// ReadyForQuery that ends it, or an error that is its answer. Until one
/// comes, a replica's reply is held back (up to `MAX_HELD` bytes, see the
/// server pump) and dropped if the request moves to the primary: a replica
/// that dies after sending some rows costs the client nothing.
fn holdable(kind: BackendKind) -> bool {
    !matches!(kind, BackendKind::ReadyForQuery | BackendKind::Error)
}

impl<'a> State<'a> {
    pub fn new(record: &'a mut TxRecord, rewriter: Rewriter<'a>) -> Self {
        State {
            record,
            rewriter,
            stopping: false,
            client_parked: false,
            flush_due: 0,
            held_up: false,
            more_buffered: false,
        }
    }

    /// The client pump may read no further message: a replica lease has
    /// sent its one batch, or a probe follows the client's last query (what
    /// the client sends next is a new request, routed afresh once the
    /// probe has answered and the relay is over).
    pub fn batch_full(&self) -> bool {
        self.record.batch_sent || self.record.probe_pending
    }

    /// Every reply the client asked for has come; only a probe's is due.
    pub fn only_probe_left(&self) -> bool {
        let f = &*self.record;
        f.probe_pending && f.outstanding == 1 && !f.unsynced && self.rewriter.probe_at_front()
    }

    /// Small DataRows must be read whole: a probe may answer.
    pub fn reads_lsn_rows(&self) -> bool {
        self.record.lsn_probe
    }

    /// Bytes of a stale-plan replay to send before anything else.
    pub fn take_resend(&mut self) -> Option<BytesMut> {
        self.rewriter.resend.take()
    }

    /// The reply queue is full: the client pump must stop reading.
    pub fn backlogged(&mut self) -> bool {
        self.held_up = self.rewriter.pending() >= MAX_QUEUED_REPLIES;
        self.held_up
    }

    /// The client pump is held up and the queue has drained to half: it
    /// may read again.
    fn room_again(&mut self) -> bool {
        if self.held_up && self.rewriter.pending() <= MAX_QUEUED_REPLIES / 2 {
            self.held_up = false;
            return true;
        }
        false
    }

    /// One complete client message (`raw`): appends what the server must
    /// be sent to `out`; true when a made-up reply may be due now. A
    /// client past a cap (`LimitError`) is refused and nothing is sent.
    pub fn client_message(
        &mut self,
        msg: &FrontendMessage<'_>,
        raw: &[u8],
        out: &mut BytesMut,
    ) -> Result<bool, LimitError> {
        let f = &mut *self.record;
        let fx = f.note(msg);
        let aborted = f.status == TxStatus::Failed && f.outstanding == 0;
        // Known only with nothing in flight: where the server will be once
        // this Query has run.
        let settled = f.outstanding == 0;
        let w = self.rewriter.client_message(msg, raw, fx, aborted, out);
        if f.lsn_probe {
            let fits = f.probe_fits(msg, fx, settled, &w.runs)
                && !self.more_buffered
                && self.rewriter.refused.is_none();
            if fits && w.cycles > 0 {
                self.rewriter.push_probe(LSN_PROBE, out);
                f.outstanding += 1;
                (f.probed, f.probe_pending) = (None, true);
            }
            if w.cycles > 0 {
                f.probe_last = fits;
            }
        }
        if *msg == FrontendMessage::Flush {
            self.flush_due = self.rewriter.pending();
        }
        for run in &w.runs {
            f.note_bound(run);
        }
        if self.rewriter.skipping() {
            // Not over until the Sync the server waits for.
            f.unsynced = true;
        }
        f.outstanding += w.cycles;
        if msg.ends_batch() && f.one_batch {
            f.batch_sent = true;
        }
        match self.rewriter.refused.take() {
            Some(e) => Err(e),
            None => Ok(w.synth),
        }
    }

    /// The head of a message relayed in pieces; the rest follows untouched.
    pub fn client_stream_head(
        &mut self,
        msg: &FrontendMessage<'_>,
        raw_head: &[u8],
        rest_len: usize,
        out: &mut BytesMut,
    ) -> bool {
        self.record.note(msg);
        let w = self
            .rewriter
            .client_stream_head(msg, raw_head, rest_len, out);
        self.record.outstanding += w.cycles;
        w.synth
    }

    /// Client bytes that were forwarded: kept while the request may still
    /// move to the primary.
    pub fn client_bytes(&mut self, bytes: &[u8]) {
        if self.record.may_retry {
            self.record.keep_for_replay(bytes);
        }
    }

    /// Made-up replies due before any server message (a Close or Parse
    /// answered here at the head of the queue); true when they were the
    /// last replies due in an open batch (the client's timer starts).
    pub fn emit_due(&mut self, out: &mut Vec<Segment>) -> bool {
        let (before, pending) = (out.len(), self.rewriter.pending());
        self.rewriter.emit_due(out);
        let answered = pending.saturating_sub(self.rewriter.pending());
        self.flush_due = self.flush_due.saturating_sub(answered);
        let room = self.room_again();
        (out.len() > before && self.batch_left_open()) || room
    }

    /// One server message (its kind and what the scanner saw in it):
    /// appends made-up replies due before it to `out`, and says what to do.
    pub fn server_message(
        &mut self,
        kind: BackendKind,
        event: Option<&BackendEvent>,
        out: &mut Vec<Segment>,
    ) -> ServerStep {
        let f = &mut *self.record;
        let mut step = ServerStep::default();
        let mut error = None;
        if self.rewriter.probe_at_front() {
            match event {
                Some(&BackendEvent::LsnRow(lsn)) => f.probed = Some(lsn),
                Some(BackendEvent::ReadyForQuery(_)) => f.probe_pending = false,
                _ => {}
            }
        }
        if f.dead_on_arrival && !matches!(event, Some(BackendEvent::Error { fatal: true, .. })) {
            // The server answered: the request stays where it is.
            f.dead_on_arrival = false;
            f.may_retry = false;
            f.forget_replay();
        }
        match event {
            Some(&BackendEvent::ReadyForQuery(s)) => {
                f.status = s;
                f.outstanding = f.outstanding.saturating_sub(1);
                step.status_changed = true;
            }
            Some(&BackendEvent::Error { fatal, code }) => {
                error = Some(code);
                f.note_error();
                let refused = f.retry_armed
                    && (sqlstate::is(&code, sqlstate::READ_ONLY_SQL_TRANSACTION)
                        || sqlstate::is(&code, sqlstate::SERIALIZATION_FAILURE));
                // A replica shutting down says FATAL and hangs up: if the
                // client saw nothing yet, the request moves.
                let dying = fatal && (f.one_batch || f.dead_on_arrival);
                if !f.forwarded && f.may_retry && (refused || dying) {
                    f.retry_primary = true;
                } else {
                    f.told |= fatal;
                }
            }
            _ => {}
        }
        let in_tx = f.status.in_block();
        let before = self.rewriter.pending();
        let fate = self
            .rewriter
            .server_message(kind, error.as_ref(), in_tx, out);
        let answered = before.saturating_sub(self.rewriter.pending());
        self.flush_due = self.flush_due.saturating_sub(answered);
        let ignored = std::mem::take(&mut self.rewriter.ignored_cycles);
        f.outstanding = f.outstanding.saturating_sub(ignored);
        // The last reply due in an open batch: the client's timer starts.
        step.status_changed |= f.unsynced && f.outstanding == 0 && self.flush_due == 0;
        let retry_primary = f.retry_primary;
        step.status_changed |= self.room_again();
        let f = &mut *self.record;
        if retry_primary {
            return step;
        }
        match fate {
            ReplyAction::Forward => {
                f.forwarded |= !holdable(kind);
                step.forward = true;
            }
            ReplyAction::Drop => {}
            ReplyAction::Retry => {
                f.outstanding += 1;
                f.retries += 1;
                step.resend = true;
            }
        }
        step
    }

    /// Replies must be held back: the request may still move to the
    /// primary and nothing final reached the client.
    pub fn hold_back(&self) -> bool {
        self.record.may_retry && !self.record.forwarded && !self.record.dead_on_arrival
    }

    /// The request can no longer move to the primary (its held-back reply
    /// grew too big to keep).
    pub fn stay(&mut self) {
        self.record.may_retry = false;
    }

    /// The replica refused: nothing of its reply reaches the client.
    pub fn retry_primary(&self) -> bool {
        self.record.retry_primary
    }

    /// A FATAL error reached the client.
    pub fn told(&self) -> bool {
        self.record.told
    }

    /// The transaction is over: the server is idle outside a block, every
    /// cycle is answered, no message waits for a Sync, the scanner is
    /// between messages (`at_boundary`) and the server is not in COPY IN.
    pub fn done(&self, at_boundary: bool) -> bool {
        self.record.status == TxStatus::Idle
            && self.record.quiet()
            && at_boundary
            && !self.rewriter.in_copy_in()
    }

    /// The client sent extended-protocol messages and no Sync, and the
    /// server owes nothing: only the client can move (client_batch_timeout).
    pub fn batch_left_open(&self) -> bool {
        self.record.unsynced && self.record.outstanding == 0 && self.flush_due == 0
    }

    /// The client sits in an open transaction with nothing in flight (the
    /// idle-in-transaction timer runs).
    pub fn idle_in_transaction(&self) -> bool {
        self.record.status.in_block() && self.record.quiet()
    }
}
