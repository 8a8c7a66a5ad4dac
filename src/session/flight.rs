//! What the two pumps of a relay share about one transaction in flight:
//! outstanding replies, transaction status, session effects, and the state
//! of a replica request that may still move to the primary.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::protocol::frontend::FrontendMessage;
use crate::router::{inspect, SqlEffects};

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
    pub(super) search_path: AtomicBool,
    pub(super) needs_reset: AtomicBool,
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
        SqlEffects {
            search_path: self.search_path.load(Relaxed),
            needs_reset: self.needs_reset.load(Relaxed),
            prepared: false,
        }
    }

    /// Records what a client message means for the session; returns what
    /// its SQL (if any) does.
    pub(super) fn note(&self, msg: &FrontendMessage<'_>) -> SqlEffects {
        let mut found = SqlEffects::default();
        if let FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } = msg {
            let fx = inspect(sql);
            found = fx;
            if fx.search_path {
                self.search_path.store(true, Relaxed);
            }
            if fx.needs_reset {
                self.needs_reset.store(true, Relaxed);
            }
        }
        if msg.ends_batch() {
            self.unsynced.store(false, Relaxed);
        } else if msg.is_extended() {
            self.unsynced.store(true, Relaxed);
        }
        found
    }
}
