//! What the two pumps of a relay share about one transaction in flight:
//! outstanding replies, transaction status, session effects, and the state
//! of a replica request that may still move to the primary.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::protocol::frontend::FrontendMessage;
use crate::sql::settings::{changes, SettingOp};
use crate::sql::{inspect, SqlEffects};

const SETTINGS: u8 = 1;
const NEEDS_RESET: u8 = 2;
const SESSION_STATE: u8 = 4;
const LISTEN: u8 = 8;

/// A replica request bigger than this is not kept for a replay on the primary.
const MAX_REPLAY: usize = 1 << 20;

/// Shared between the two pumps (same task; atomics only to stay `Send`).
#[derive(Default)]
pub struct Flight {
    /// Query/Sync/FunctionCall messages sent and not yet answered.
    pub(super) outstanding: AtomicUsize,
    /// Extended-protocol messages sent since the last Sync.
    pub(super) unsynced: AtomicBool,
    /// Transaction status from the last ReadyForQuery.
    pub(super) status: AtomicU8,
    /// What the client's SQL did to its session (`SqlEffects` as bits).
    effects: AtomicU8,
    /// The setting changes of this transaction, in order.
    settings: Mutex<Vec<SettingOp>>,
    /// The client's session makes lexing unreliable (standard_conforming_strings
    /// off, or a client-only multibyte encoding): any query with a byte the
    /// lexer could misread needs a reset.
    pub lex_unsafe: AtomicBool,
    pub(super) stopping: AtomicBool,
    pub(super) stop: Notify,
    /// Wakes the client pump to re-arm its idle-in-transaction timer when a
    /// ReadyForQuery changes the transaction status.
    pub(super) status_changed: Notify,
    /// Wakes the server pump to emit a made-up reply that is due now.
    pub(super) synth_due: Notify,
    /// Wakes the client pump to replay a batch (stale cached plan).
    pub(super) resend_due: Notify,
    /// Batches replayed in this relay.
    pub retries: std::sync::atomic::AtomicU64,
    /// A replica lease: forward only the first batch (a pipelined write
    /// behind a read must not reach the replica).
    pub one_batch: AtomicBool,
    pub(super) batch_sent: AtomicBool,
    /// The safety net is on: a 25006/40001 before anything reached the
    /// client is swallowed (with everything up to ReadyForQuery) and
    /// `retry_primary` is set.
    pub retry_armed: AtomicBool,
    pub(super) forwarded: AtomicBool,
    /// What was sent to the server is kept and may run on the primary instead.
    pub may_retry: AtomicBool,
    /// The client bytes sent to the server, while `may_retry`.
    pub(super) replay: Mutex<BytesMut>,
    pub retry_primary: AtomicBool,
}

impl Flight {
    pub fn new() -> Flight {
        let f = Flight::default();
        f.status.store(b'I', Relaxed);
        f
    }

    /// True when nothing is in flight: safe to roll back or release.
    pub fn quiet(&self) -> bool {
        self.outstanding.load(Relaxed) == 0 && !self.unsynced.load(Relaxed)
    }

    /// Keeps client bytes sent to the server, for a replay on the primary;
    /// past `MAX_REPLAY` the request can no longer move.
    pub(super) fn keep_for_replay(&self, bytes: &[u8]) {
        let mut r = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() + bytes.len() > MAX_REPLAY || self.forwarded.load(Relaxed) {
            self.may_retry.store(false, Relaxed);
            *r = BytesMut::new();
        } else {
            r.extend_from_slice(bytes);
        }
    }

    /// The client bytes the server was sent (to run them elsewhere).
    pub fn take_replay(&self) -> BytesMut {
        std::mem::take(&mut *self.replay.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Nothing but notices reached the client: the request may run elsewhere.
    pub fn untouched(&self) -> bool {
        !self.forwarded.load(Relaxed)
    }

    pub fn status(&self) -> u8 {
        self.status.load(Relaxed)
    }

    pub fn effects(&self) -> SqlEffects {
        let bits = self.effects.load(Relaxed);
        SqlEffects {
            settings: bits & SETTINGS != 0,
            needs_reset: bits & NEEDS_RESET != 0,
            session_state: bits & SESSION_STATE != 0,
            listen: bits & LISTEN != 0,
            prepared: false,
        }
    }

    /// The setting changes the client made, in order (emptied).
    pub fn take_settings(&self) -> Vec<SettingOp> {
        std::mem::take(&mut *self.settings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A statement parsed earlier runs now (a Bind, an SQL EXECUTE): what
    /// it does counts for this transaction.
    pub(super) fn note_bound(&self, run: &crate::prepared::client::Bound) {
        self.mark(run.effects);
        if !run.settings.is_empty() {
            self.settings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(run.settings.iter().cloned());
        }
    }

    fn mark(&self, fx: SqlEffects) {
        let bits = (fx.settings as u8 * SETTINGS)
            | (fx.needs_reset as u8 * NEEDS_RESET)
            | (fx.session_state as u8 * SESSION_STATE)
            | (fx.listen as u8 * LISTEN);
        if bits != 0 {
            self.effects.fetch_or(bits, Relaxed);
        }
    }

    /// Records what a client message means for the session; returns what
    /// its SQL (if any) does.
    pub(super) fn note(&self, msg: &FrontendMessage<'_>) -> SqlEffects {
        let mut found = SqlEffects::default();
        if let FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } = msg {
            let mut fx = inspect(sql);
            if fx.settings {
                self.settings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(changes(sql));
            }
            if self.lex_unsafe.load(Relaxed) && sql.iter().any(|&b| b == b'\\' || b >= 0x80) {
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
            self.unsynced.store(false, Relaxed);
        } else if msg.is_extended() && *msg != FrontendMessage::Flush {
            // A Flush leaves nothing pending on the server by itself.
            self.unsynced.store(true, Relaxed);
        }
        found
    }
}
