//! Per-transaction query accounting for the relay: bytes each way, queries,
//! query time and server errors, into the pool's hot-path counters.
//!
//! The relay calls one method per event it already handles; each is a
//! relaxed atomic add (query time adds one histogram bucket add per
//! ReadyForQuery). Query time runs from the moment a Query, Sync or
//! FunctionCall is relayed (the first of a pipeline) to its ReadyForQuery.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use crate::metrics::PoolMetrics;
use crate::protocol::frontend::FrontendMessage;
use crate::protocol::scan::BackendEvent;

pub struct Meter<'a> {
    m: &'a PoolMetrics,
    base: Instant,
    /// Nanoseconds after `base` when the oldest unanswered batch was sent.
    started: AtomicU64,
    in_flight: AtomicUsize,
}

impl<'a> Meter<'a> {
    pub fn new(m: &'a PoolMetrics) -> Meter<'a> {
        Meter {
            m,
            base: Instant::now(),
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// A client message about to be relayed.
    pub fn client_message(&self, msg: &FrontendMessage<'_>) {
        if msg.ends_batch() && self.in_flight.fetch_add(1, Relaxed) == 0 {
            self.started.store(self.now(), Relaxed);
        }
    }

    pub fn client_bytes(&self, n: usize) {
        self.m.received.fetch_add(n as u64, Relaxed);
    }

    pub fn server_bytes(&self, n: usize) {
        self.m.sent.fetch_add(n as u64, Relaxed);
    }

    /// Something the server said that the relay reads anyway.
    pub fn server_event(&self, ev: &BackendEvent) {
        match ev {
            BackendEvent::ReadyForQuery(_) => {
                let now = self.now();
                let took = now.saturating_sub(self.started.load(Relaxed));
                self.m.queries.fetch_add(1, Relaxed);
                self.m.query_micros.fetch_add(took / 1000, Relaxed);
                self.m.query.record_nanos(took);
                let left = self.in_flight.load(Relaxed).saturating_sub(1);
                self.in_flight.store(left, Relaxed);
                if left > 0 {
                    self.started.store(now, Relaxed);
                }
            }
            BackendEvent::Error { code, .. } => self.m.error(code),
            BackendEvent::ParameterStatus { .. } | BackendEvent::LsnRow(_) => {}
        }
    }
}
