//! Hosts per database: role, health, WAL position and lag, and the choice
//! of a replica for a read. Knows nothing of sessions; `probe` keeps the
//! state fresh from a background task, never on the request path.

pub mod host;
pub mod probe;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{Config, DatabaseConfig, PrimaryReads};
use crate::protocol::Lsn;

pub use host::{HostState, Role};

/// FNV-1a over a database name. The names are the config's (never a
/// client's), short, and looked up on every request: SipHash's keyed
/// defence against chosen collisions buys nothing here and costs ~150
/// instructions a lookup.
pub struct NameHash(u64);

impl Default for NameHash {
    fn default() -> Self {
        NameHash(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Every database's hosts.
#[derive(Default)]
pub struct Topology {
    dbs: RwLock<HashMap<String, Arc<DbHosts>, BuildHasherDefault<NameHash>>>,
    /// A read went to the primary only because no replica was seen past
    /// its client's floor: the probe asks the healthy replicas for their
    /// replay position early (see `probe::EAGER_GAP`), so reads come back
    /// to a replica a few milliseconds after a write instead of up to one
    /// `health_check_period` later. Shared with every `DbHosts`.
    pub floor_missed: Arc<Notify>,
    /// How servers are connected to (`server_tls_mode`), for the pools and
    /// the probe; set at start and at RELOAD.
    server_tls: RwLock<crate::tls::ServerTls>,
}

/// One database: its primary and replicas.
pub struct DbHosts {
    pub primary: Arc<HostState>,
    pub replicas: Vec<Arc<HostState>>,
    rr: AtomicUsize,
    /// Signalled after every probe round (for `causal_wait`).
    pub probed: Notify,
    /// Recent (time, primary WAL position) samples, to turn a replica's
    /// byte lag into time lag.
    pub(crate) history: Mutex<probe::History>,
    /// `role = "auto"`: follow a failover.
    pub auto: bool,
    /// `Topology::floor_missed`.
    floor_missed: Arc<Notify>,
    /// Where writes go when it is not the configured primary (after a
    /// promotion was seen).
    writer: Mutex<Option<Arc<HostState>>>,
}

/// Which host a read goes to.
#[derive(Clone)]
pub enum Choice {
    Primary,
    Replica(Arc<HostState>),
}

/// The limits a replica must meet to take a read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Eligibility {
    pub min_lsn: Lsn,
    pub max_lag_bytes: Option<u64>,
    pub max_lag: Option<Duration>,
}

impl Topology {
    pub fn new() -> Topology {
        Topology::default()
    }

    pub fn server_tls(&self) -> crate::tls::ServerTls {
        self.server_tls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_server_tls(&self, tls: crate::tls::ServerTls) {
        *self.server_tls.write().unwrap_or_else(|e| e.into_inner()) = tls;
    }

    /// Creates (or, when its hosts changed, replaces) each database's entry.
    pub fn sync(&self, config: &Config) {
        let mut dbs = self.dbs.write().unwrap_or_else(|e| e.into_inner());
        dbs.retain(|name, _| config.databases.contains_key(name));
        for (name, db) in &config.databases {
            let same = dbs.get(name).is_some_and(|d| d.matches(db));
            if !same {
                let hosts = DbHosts::new(db, self.floor_missed.clone());
                dbs.insert(name.clone(), Arc::new(hosts));
            }
        }
    }

    pub fn get(&self, db: &str) -> Option<Arc<DbHosts>> {
        self.dbs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(db)
            .cloned()
    }

    /// For /health: whether some database's configured primary passed its
    /// last probe (true before the probe has reported on any: nothing
    /// says otherwise yet).
    pub fn any_primary_up(&self) -> bool {
        let dbs = self.dbs.read().unwrap_or_else(|e| e.into_inner());
        let mut seen = dbs.values().filter_map(|d| d.primary.health()).peekable();
        seen.peek().is_none() || seen.any(|up| up)
    }

    pub fn all(&self) -> Vec<(String, Arc<DbHosts>)> {
        let mut v: Vec<_> = self
            .dbs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl DbHosts {
    fn new(db: &DatabaseConfig, floor_missed: Arc<Notify>) -> DbHosts {
        DbHosts {
            primary: Arc::new(HostState::new(&db.host, db.port, 1, Role::Primary)),
            replicas: db
                .replicas
                .iter()
                .map(|r| Arc::new(HostState::new(&r.host, r.port, r.weight, Role::Replica)))
                .collect(),
            rr: AtomicUsize::new(0),
            probed: Notify::new(),
            history: Mutex::new(probe::History::default()),
            auto: db.routing.role == crate::config::RoleMode::Auto,
            floor_missed,
            writer: Mutex::new(None),
        }
    }

    /// The host writes go to: the configured primary, or (with `role =
    /// "auto"`) the host last seen taking over from it.
    pub fn writer(&self) -> Arc<HostState> {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| self.primary.clone())
    }

    /// After a probe round (`role = "auto"`), picks the host writes go to.
    /// Candidates are the healthy hosts that are not in recovery; the
    /// newest timeline wins, because a promotion starts a new timeline and
    /// an old primary that comes back read-write (split brain) stays on the
    /// old one. The current writer stays while it is such a candidate on the
    /// newest timeline (so two hosts on one timeline do not flap); otherwise
    /// the one other host on the newest timeline takes over. With two or more
    /// such hosts the choice is ambiguous and nothing changes (logged).
    pub fn elect(&self) {
        let current = self.writer();
        let candidates: Vec<&Arc<HostState>> = std::iter::once(&self.primary)
            .chain(&self.replicas)
            .filter(|h| h.healthy() && h.lsn().is_some() && !h.in_recovery.load(Relaxed))
            .collect();
        let Some(newest) = candidates.iter().map(|h| h.timeline.load(Relaxed)).max() else {
            return;
        };
        let on_newest = |h: &HostState| h.timeline.load(Relaxed) == newest;
        if candidates.iter().any(|h| Arc::ptr_eq(h, &current)) && on_newest(&current) {
            return;
        }
        let mut next = candidates.iter().filter(|h| on_newest(h));
        match (next.next(), next.next()) {
            (Some(next), None) => {
                if !current.in_recovery.load(Relaxed) && current.healthy() {
                    tracing::error!(
                        stale = %current.addr(),
                        stale_timeline = current.timeline.load(Relaxed),
                        to = %next.addr(),
                        timeline = newest,
                        "two hosts accept writes; the one on the older timeline is a former primary and gets no more writes"
                    );
                } else {
                    tracing::warn!(from = %current.addr(), to = %next.addr(), timeline = newest, "failover: writes now go to the new primary");
                }
                *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some((*next).clone());
            }
            (Some(a), Some(b)) => {
                tracing::error!(a = %a.addr(), b = %b.addr(), timeline = newest, "two hosts accept writes on the same timeline; keeping writes where they were");
            }
            _ => {}
        }
    }

    fn matches(&self, db: &DatabaseConfig) -> bool {
        self.auto == (db.routing.role == crate::config::RoleMode::Auto)
            && self.primary.host == db.host
            && self.primary.port == db.port
            && self.replicas.len() == db.replicas.len()
            && self
                .replicas
                .iter()
                .zip(&db.replicas)
                .all(|(h, c)| h.host == c.host && h.port == c.port && h.weight == c.weight)
    }

    /// Picks a host for a read: among eligible replicas (healthy, within
    /// lag, replayed past `min_lsn`), the least busy relative to its
    /// weight, round robin on ties. `None` when no host may take it now.
    pub fn pick(&self, want: &Eligibility, primary_reads: PrimaryReads) -> Option<Choice> {
        let n = self.replicas.len();
        let start = self.rr.fetch_add(1, Relaxed);
        let mut best: Option<(u64, &Arc<HostState>)> = None;
        for i in 0..n {
            let h = &self.replicas[(start + i) % n];
            if !h.eligible(want) {
                continue;
            }
            let score = h.load_score();
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, h));
            }
        }
        match (best, primary_reads) {
            (Some((score, _)), PrimaryReads::Always)
                if self.primary.healthy() && self.primary.load_score() < score =>
            {
                Some(Choice::Primary)
            }
            (Some((_, h)), _) => Some(Choice::Replica(h.clone())),
            (None, PrimaryReads::Never) if want.min_lsn == Lsn::ZERO => self
                .replicas
                .iter()
                .find(|h| h.healthy())
                .map(|h| Choice::Replica(h.clone()))
                .or(Some(Choice::Primary)),
            (None, _) => Some(Choice::Primary),
        }
    }

    /// The replica for a read, waiting up to `wait` for one to replay
    /// `min_lsn` (each probe round re-checks); the primary after that.
    pub async fn pick_waiting(
        &self,
        want: &Eligibility,
        primary_reads: PrimaryReads,
        wait: Duration,
    ) -> (Choice, bool) {
        let first = self.pick(want, primary_reads).unwrap_or(Choice::Primary);
        if matches!(first, Choice::Primary) && want.min_lsn > Lsn::ZERO {
            // Perhaps only the last probe is behind: ask the replicas now.
            self.floor_missed.notify_one();
        }
        if wait.is_zero() || matches!(first, Choice::Replica(_)) || self.replicas.is_empty() {
            return (first, false);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let probed = self.probed.notified();
            if tokio::time::timeout_at(deadline, probed).await.is_err() {
                return (Choice::Primary, true);
            }
            if let Some(c @ Choice::Replica(_)) = self.pick(want, primary_reads) {
                return (c, true);
            }
        }
    }
}

#[cfg(test)]
mod tests;
