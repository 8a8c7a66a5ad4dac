//! What one relay learns about the transaction in flight: outstanding
//! replies, transaction status, session effects, and the state of a
//! replica request that may still move to the primary. A plain struct:
//! the session fills in the first four fields, the relay does the rest
//! (through `State`), and the session reads the outcome.

use bytes::BytesMut;

use crate::prepared::client::Bound;
use crate::protocol::frontend::FrontendMessage;
use crate::protocol::{Lsn, TxStatus};
use crate::sql::commit::ends_block;
use crate::sql::settings::{changes, SettingOp};
use crate::sql::{Known, SqlEffects};

/// A replica request bigger than this is not kept for a replay on the primary.
const MAX_REPLAY: usize = 1 << 20;

#[derive(Debug)]
pub struct TxRecord {
    /// The client's session makes lexing unreliable (standard_conforming_strings
    /// off, or a client-only multibyte encoding): any query with a byte the
    /// lexer could misread needs a reset.
    pub lex_unsafe: bool,
    /// A replica lease: forward only the first batch (a pipelined write
    /// behind a read must not reach the replica).
    pub one_batch: bool,
    /// The safety net is on: a 25006/40001 before anything reached the
    /// client is swallowed (with everything up to ReadyForQuery) and
    /// `retry_primary` is set.
    pub retry_armed: bool,
    /// What was sent to the server is kept and may run on the primary instead.
    pub may_retry: bool,
    /// A request on a primary server just lent: if the server's first
    /// reply is a FATAL (it was shutting down) or it hangs up before any,
    /// the session may run the request on another server (with
    /// `may_retry`; nothing is held back, and the first other reply ends it).
    pub dead_on_arrival: bool,

    /// What routing found in the request's SQL (its Query or Parses), so
    /// the relay lexes none of them again; the session lends it.
    pub known: Known,
    /// Read-your-writes by WAL position, on the primary: a simple Query
    /// after which the server is outside any block is followed, in the
    /// same write, by [`LSN_PROBE`], and the relay reads its answer.
    pub lsn_probe: bool,

    /// Query/Sync/FunctionCall messages sent and not yet answered.
    pub(super) outstanding: usize,
    /// Extended-protocol messages sent since the last Sync.
    pub(super) unsynced: bool,
    /// Transaction status from the last ReadyForQuery.
    pub(super) status: TxStatus,
    /// What the client's SQL did to its session.
    effects: SqlEffects,
    /// The setting changes of this transaction, in order.
    settings: Vec<SettingOp>,
    /// The first batch went out and `one_batch` holds the rest back.
    pub(super) batch_sent: bool,
    /// Something other than a notice or a holdable reply reached the client.
    pub(super) forwarded: bool,
    /// A FATAL error reached the client (it knows the server is gone).
    pub(super) told: bool,
    /// The client bytes sent to the server, while `may_retry`.
    replay: BytesMut,
    /// Batches replayed in this relay (stale cached plans).
    pub retries: u64,
    /// The replica refused or died before the client saw anything: run
    /// `take_replay` on the primary.
    pub retry_primary: bool,
    /// The last Query/Sync/FunctionCall the client sent was followed by a
    /// probe.
    pub(super) probe_last: bool,
    /// What the last probe read.
    pub(super) probed: Option<Lsn>,
    /// A probe is sent and not yet answered.
    pub(super) probe_pending: bool,
    /// A Query, Execute or FunctionCall was sent: something ran (a batch
    /// that only parses and describes wrote nothing, and needs no floor).
    ran: bool,
    /// The extended-protocol batch since the last Sync bound a statement,
    /// and whether one it bound may leave a block open or copies: a probe
    /// may follow its Sync only if it did the first and not the second.
    batch_bound: bool,
    batch_blocks: bool,
}

/// The query pipelined behind a write (`TxRecord::lsn_probe`), as a simple
/// Query message: the WAL insert position once the client's commit is in.
pub const LSN_PROBE: &[u8] = b"Q\0\0\0\x2dSELECT pg_current_wal_insert_lsn()::text\0";

/// What a relay's outcome allows for the request it carried: may it run
/// again elsewhere? The relay answers from what it saw (as pingora's
/// `RetryType` answers for an error); the session decides where.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Something reached the client, or the server may have run it.
    No,
    /// A replica refused it (25006, 40001) before anything reached the
    /// client, and its server is idle and clean: `sent` may run elsewhere.
    Refused(BytesMut),
    /// The server failed before anything reached the client. `fatal_first`:
    /// its first reply was a FATAL (a server shutting down), so it never
    /// began a query.
    ServerDied { sent: BytesMut, fatal_first: bool },
}

impl Default for TxRecord {
    fn default() -> TxRecord {
        TxRecord::new()
    }
}

impl TxRecord {
    pub fn new() -> TxRecord {
        TxRecord {
            lex_unsafe: false,
            one_batch: false,
            retry_armed: false,
            may_retry: false,
            dead_on_arrival: false,
            known: Known::default(),
            lsn_probe: false,
            outstanding: 0,
            unsynced: false,
            status: TxStatus::Idle,
            effects: SqlEffects::default(),
            settings: Vec::new(),
            batch_sent: false,
            forwarded: false,
            told: false,
            replay: BytesMut::new(),
            retries: 0,
            retry_primary: false,
            probe_last: false,
            probed: None,
            probe_pending: false,
            ran: false,
            batch_bound: false,
            batch_blocks: false,
        }
    }

    /// Whether the server is sure to be outside any block once the client
    /// message just queued has run, so a probe may follow it (see
    /// `lsn_probe`); `settled`: nothing was in flight before it, so the
    /// status is known. A simple Query outside a block whose statements
    /// (`fx`, found once for routing) neither control transactions nor
    /// copy, or one that only ends the block it runs in; a Sync when the
    /// batch began outside a block and every statement it bound (`runs` at
    /// each Bind) neither controls transactions nor copies.
    pub(super) fn probe_fits(
        &mut self,
        msg: &FrontendMessage<'_>,
        fx: SqlEffects,
        settled: bool,
        runs: &[Bound],
    ) -> bool {
        match msg {
            FrontendMessage::Query { sql } => {
                settled
                    && match self.status.in_block() {
                        false => !fx.blocks,
                        true => ends_block(sql),
                    }
            }
            // `runs` holds what the Bind runs unless it is inert (which
            // includes not blocking); a statement pglittle does not know
            // fails on the server, which opens no block either.
            FrontendMessage::Bind { .. } => {
                self.batch_bound = true;
                self.batch_blocks |= runs.iter().any(|r| r.effects.blocks);
                false
            }
            FrontendMessage::Sync => {
                let fits = settled
                    && self.status == TxStatus::Idle
                    && self.batch_bound
                    && !self.batch_blocks;
                (self.batch_bound, self.batch_blocks) = (false, false);
                fits
            }
            _ => false,
        }
    }

    /// Whether anything ran in this relay (see `ran`).
    pub fn ran(&self) -> bool {
        self.ran
    }

    /// The WAL position after everything the client sent in this relay,
    /// when a probe was the last query the server ran and it answered.
    pub fn commit_lsn(&self) -> Option<Lsn> {
        self.probed.filter(|_| self.probe_last)
    }

    /// Whether the request may run again elsewhere, after `outcome` (the
    /// bytes it was sent are handed over, so this is asked once).
    pub fn replay(&mut self, outcome: &super::Outcome) -> Replay {
        use super::Outcome;
        if !self.may_retry {
            return Replay::No;
        }
        match outcome {
            Outcome::Idle if self.retry_primary => Replay::Refused(self.take_replay()),
            Outcome::ServerGone { told: false } if self.untouched() => Replay::ServerDied {
                sent: self.take_replay(),
                fatal_first: self.retry_primary,
            },
            _ => Replay::No,
        }
    }

    /// True when nothing is in flight: safe to roll back or release.
    pub fn quiet(&self) -> bool {
        self.outstanding == 0 && !self.unsynced
    }

    /// Keeps client bytes sent to the server, for a replay on the primary;
    /// past `MAX_REPLAY` the request can no longer move.
    pub(super) fn keep_for_replay(&mut self, bytes: &[u8]) {
        if self.replay.len() + bytes.len() > MAX_REPLAY || self.forwarded {
            self.may_retry = false;
            self.replay.clear();
        } else {
            self.replay.extend_from_slice(bytes);
        }
    }

    /// Takes the connection's spare buffer to keep the sent bytes in, when
    /// the request may move (no allocation per transaction).
    pub(super) fn lend_replay_room(&mut self, room: &mut BytesMut) {
        if self.may_retry && self.replay.capacity() == 0 {
            std::mem::swap(&mut self.replay, room);
            self.replay.clear();
        }
    }

    /// Gives the buffer back once the request can no longer move (its
    /// bytes are needed no more).
    pub(super) fn return_replay_room(&mut self, room: &mut BytesMut) {
        if !self.may_retry && room.capacity() == 0 {
            std::mem::swap(&mut self.replay, room);
            room.clear();
        }
    }

    /// Forgets the bytes kept for a move (the buffer stays for the next).
    pub(super) fn forget_replay(&mut self) {
        self.replay.clear();
    }

    /// The client bytes the server was sent (to run them elsewhere).
    pub fn take_replay(&mut self) -> BytesMut {
        std::mem::take(&mut self.replay)
    }

    /// Nothing but notices reached the client: the request may run elsewhere.
    pub fn untouched(&self) -> bool {
        !self.forwarded
    }

    pub fn status(&self) -> TxStatus {
        self.status
    }

    pub fn effects(&self) -> SqlEffects {
        SqlEffects {
            prepared: false,
            ..self.effects
        }
    }

    /// The setting changes the client made, in order (emptied).
    pub fn take_settings(&mut self) -> Vec<SettingOp> {
        std::mem::take(&mut self.settings)
    }

    /// The server answered an error: what the transaction changed so far
    /// may be rolled back (recorded in order with the setting changes).
    pub(super) fn note_error(&mut self) {
        if !self.settings.is_empty() {
            self.settings.push(SettingOp::Rollback);
        }
    }

    /// A statement parsed earlier runs now (a Bind, an SQL EXECUTE): what
    /// it does counts for this transaction.
    pub(super) fn note_bound(&mut self, run: &Bound) {
        self.mark(run.effects);
        self.settings.extend(run.settings.iter().cloned());
    }

    fn mark(&mut self, fx: SqlEffects) {
        let e = &mut self.effects;
        e.settings |= fx.settings;
        e.needs_reset |= fx.needs_reset;
        e.session_state |= fx.session_state;
        e.listen |= fx.listen;
    }

    /// Records what a client message means for the session; returns what
    /// its SQL (if any) does.
    pub(super) fn note(&mut self, msg: &FrontendMessage<'_>) -> SqlEffects {
        let mut found = SqlEffects::default();
        self.ran |= matches!(
            msg,
            FrontendMessage::Query { .. }
                | FrontendMessage::Execute
                | FrontendMessage::FunctionCall
        );
        if let FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } = msg {
            let mut fx = self.known.effects_of(sql);
            // After a setting changed, a ROLLBACK may undo it (check-in
            // needs to know, `session::checkin::Observed::reset_took_effect`).
            if fx.settings || !self.settings.is_empty() {
                self.settings.extend(changes(sql));
            }
            if self.lex_unsafe && sql.iter().any(|&b| b == b'\\' || b >= 0x80) {
                fx.needs_reset = true;
            }
            self.mark(fx);
            found = fx;
        } else if let FrontendMessage::FunctionCall = msg {
            // A fastpath call may run any function (set_config, an advisory lock).
            self.mark(SqlEffects {
                needs_reset: true,
                ..SqlEffects::default()
            });
        }
        if msg.ends_batch() {
            self.unsynced = false;
        } else if msg.is_extended() && *msg != FrontendMessage::Flush {
            // A Flush leaves nothing pending on the server by itself.
            self.unsynced = true;
        }
        found
    }
}
