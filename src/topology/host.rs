//! One host's live state, written by the probe and read on the request path
//! (atomics only: no lock is taken to route a read).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use super::Eligibility;
use crate::protocol::Lsn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

pub struct HostState {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub role: Role,
    healthy: AtomicBool,
    /// A probe (or a failed connection) has reported on this host.
    probed: AtomicBool,
    fails: AtomicUsize,
    oks: AtomicUsize,
    /// Replay position (replica) or insert position (primary); 0 = unknown.
    lsn: AtomicU64,
    lag_bytes: AtomicU64,
    /// Lag in microseconds; `u64::MAX` = unknown.
    lag_micros: AtomicU64,
    /// Reads running on this host now.
    pub outstanding: AtomicUsize,
    /// Requests served here, for SHOW REPLICAS and metrics.
    pub served: AtomicU64,
    /// The host answered `pg_is_in_recovery()` against its configured role.
    pub wrong_role: AtomicBool,
    /// The last probe's `pg_is_in_recovery()` (the configured role until then).
    pub in_recovery: AtomicBool,
    /// A primary's timeline, from the last probe; 0 = unknown or in recovery.
    pub timeline: AtomicU64,
}

impl HostState {
    pub fn new(host: &str, port: u16, weight: u32, role: Role) -> HostState {
        HostState {
            host: host.to_string(),
            port,
            weight: weight.max(1),
            role,
            healthy: AtomicBool::new(true),
            probed: AtomicBool::new(false),
            fails: AtomicUsize::new(0),
            oks: AtomicUsize::new(0),
            lsn: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lag_micros: AtomicU64::new(u64::MAX),
            outstanding: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            wrong_role: AtomicBool::new(false),
            in_recovery: AtomicBool::new(role == Role::Replica),
            timeline: AtomicU64::new(0),
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Health as the probe last saw it; `None` until it has reported.
    pub fn health(&self) -> Option<bool> {
        self.probed.load(Relaxed).then(|| self.healthy())
    }

    pub fn lsn(&self) -> Option<Lsn> {
        match self.lsn.load(Relaxed) {
            0 => None,
            v => Some(Lsn(v)),
        }
    }

    pub fn lag_bytes(&self) -> u64 {
        self.lag_bytes.load(Relaxed)
    }

    pub fn lag(&self) -> Option<Duration> {
        match self.lag_micros.load(Relaxed) {
            u64::MAX => None,
            v => Some(Duration::from_micros(v)),
        }
    }

    /// A probe succeeded: unbanned after `unban_after` in a row.
    pub fn probe_ok(&self, lsn: Option<Lsn>, unban_after: usize) {
        self.probed.store(true, Relaxed);
        self.fails.store(0, Relaxed);
        let oks = self.oks.fetch_add(1, Relaxed) + 1;
        if let Some(l) = lsn {
            self.lsn.store(l.0, Relaxed);
        }
        if !self.healthy() && oks >= unban_after {
            tracing::info!(host = %self.addr(), role = self.role.as_str(), "host is healthy again");
            self.healthy.store(true, Relaxed);
        }
    }

    /// A probe (or a connection attempt on the request path) failed: banned
    /// after `ban_after` in a row.
    pub fn probe_failed(&self, ban_after: usize) {
        self.probed.store(true, Relaxed);
        self.oks.store(0, Relaxed);
        let fails = self.fails.fetch_add(1, Relaxed) + 1;
        if self.healthy() && fails >= ban_after.max(1) {
            tracing::warn!(host = %self.addr(), role = self.role.as_str(), "host banned after failed probes");
            self.healthy.store(false, Relaxed);
        }
    }

    /// Bans at once (a connection failure seen by a client's request).
    pub fn ban(&self) {
        self.probed.store(true, Relaxed);
        self.oks.store(0, Relaxed);
        if self.healthy.swap(false, Relaxed) {
            tracing::warn!(host = %self.addr(), "host banned after a failed connection");
        }
    }

    pub fn set_lag(&self, bytes: u64, time: Option<Duration>) {
        self.lag_bytes.store(bytes, Relaxed);
        let micros = time.map_or(u64::MAX, |t| t.as_micros().min(u64::MAX as u128 - 1) as u64);
        self.lag_micros.store(micros, Relaxed);
    }

    /// Lower is better: reads in flight per unit of weight.
    pub fn load_score(&self) -> u64 {
        (self.outstanding.load(Relaxed) as u64 * 1000) / u64::from(self.weight)
    }

    pub fn eligible(&self, want: &Eligibility) -> bool {
        if !self.healthy() || self.wrong_role.load(Relaxed) {
            return false;
        }
        if want.min_lsn > Lsn::ZERO && self.lsn().is_none_or(|l| l < want.min_lsn) {
            return false;
        }
        if want.max_lag_bytes.is_some_and(|max| self.lag_bytes() > max) {
            return false;
        }
        if let Some(max) = want.max_lag {
            if self.lag().is_none_or(|l| l > max) {
                return false;
            }
        }
        true
    }
}
