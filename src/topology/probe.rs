//! The background probe, pglittle's one health check: every
//! `health_check_period`, each host of a database with replicas is asked
//! for its role and WAL position over a connection kept for the purpose,
//! and a lone primary (which gets every request anyway, and needs no
//! connection of its own) is checked with a TCP connect. Results feed
//! health (ban/unban), replay LSNs and lag, and `/health`. Never on the
//! request path.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{DbHosts, HostState, Role, Topology};
use crate::config::Config;
use crate::pool::{ServerAuth, ServerConn, ServerTarget};
use crate::protocol::Lsn;
use crate::shutdown::{reached, Phase};

/// One round trip tells role and position on primaries and standbys alike,
/// and a primary's timeline (the first 8 hex digits of its current WAL file
/// name): after a promotion the new primary is on a higher timeline than an
/// old one that came back read-write.
const PROBE_SQL: &str = "SELECT pg_is_in_recovery()::text, \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
      ELSE pg_current_wal_insert_lsn() END)::text, \
     (CASE WHEN pg_is_in_recovery() THEN NULL \
      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::bigint END)::text";

/// Replay positions asked for on demand (`Topology::floor_missed`) are
/// asked at most this often.
pub const EAGER_GAP: Duration = Duration::from_millis(10);

/// How far back primary positions are remembered for time lag.
const HISTORY: Duration = Duration::from_secs(120);

/// Recent (time, primary position) samples.
#[derive(Default)]
pub struct History {
    samples: VecDeque<(Instant, Lsn)>,
}

impl History {
    pub fn push(&mut self, at: Instant, lsn: Lsn) {
        if self.samples.back().is_none_or(|&(_, l)| l != lsn) {
            self.samples.push_back((at, lsn));
        }
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| at.duration_since(t) > HISTORY)
        {
            self.samples.pop_front();
        }
    }

    /// How long ago the primary first wrote past `replayed`: the replica's
    /// lag in time. Zero when it has caught up with the last sample.
    pub fn lag(&self, replayed: Lsn, now: Instant) -> Option<Duration> {
        let &(_, latest) = self.samples.back()?;
        if replayed >= latest {
            return Some(Duration::ZERO);
        }
        // Oldest sample beyond the replica's position; older than the
        // window means "at least the window".
        let first_ahead = self.samples.iter().find(|&&(_, l)| l > replayed)?;
        Some(now.duration_since(first_ahead.0))
    }
}

/// Runs until shutdown.
pub async fn run(
    topology: Arc<Topology>,
    config: impl Fn() -> Arc<Config> + Send + 'static,
    mut shutdown: watch::Receiver<Phase>,
) {
    let mut conns = Conns::default();
    'rounds: loop {
        let cfg = config();
        round(&topology, &cfg, &mut conns, false).await;
        let period = cfg
            .pooler
            .health_check_period
            .max(Duration::from_millis(10));
        let next = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                _ = topology.floor_missed.notified() => {
                    replay_positions(&topology, &cfg, &mut conns).await;
                    tokio::time::sleep_until(next.min(tokio::time::Instant::now() + EAGER_GAP)).await;
                }
                _ = reached(&mut shutdown, Phase::Stopping) => break 'rounds,
            }
        }
    }
    for (_, c) in conns.map.drain() {
        c.terminate().await;
    }
}

/// The probe's connections, one per host and database, kept between rounds.
pub struct Conns {
    map: HashMap<String, Box<ServerConn>>,
    next_id: u64,
}

impl Default for Conns {
    fn default() -> Self {
        Conns {
            map: HashMap::new(),
            next_id: 1u64 << 48,
        }
    }
}

impl Conns {
    /// Closes the connections (after a first round run before serving).
    pub async fn close(mut self) {
        for (_, c) in self.map.drain() {
            c.terminate().await;
        }
    }
}

/// One probe round over every database (or, with `only_auto`, those with
/// replicas following failovers with `role = "auto"`, before pglittle
/// serves: so the first write already goes to the host the probe elected).
pub async fn round(topology: &Topology, cfg: &Config, conns: &mut Conns, only_auto: bool) {
    topology.sync(cfg);
    for (name, db) in topology.all() {
        if only_auto && !db.auto {
            continue;
        }
        let Some(dbc) = cfg.databases.get(&name) else {
            continue;
        };
        let probe = Probe {
            cfg,
            dbname: &dbc.dbname,
            tls: topology.server_tls(),
        };
        // A lone primary gets every request anyway: it needs no extra
        // connection, only a liveness check (for /health).
        if dbc.replicas.is_empty() {
            if !only_auto {
                probe.tcp_only(&db.primary).await;
            }
            continue;
        }
        let now = Instant::now();
        let primary_lsn = probe.host(&db.primary, conns).await;
        if let Some(l) = primary_lsn {
            db.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(now, l);
        }
        for r in &db.replicas {
            let replayed = probe.host(r, conns).await;
            update_lag(&db, r, replayed, primary_lsn, now);
        }
        if db.auto {
            db.elect();
        }
        db.probed.notify_waiters();
    }
}

/// Between rounds, on demand: the replay position of each healthy replica.
/// A failure counts toward a ban as in a full round; lag, the primary and
/// banned hosts are left to the full rounds.
async fn replay_positions(topology: &Topology, cfg: &Config, conns: &mut Conns) {
    for (name, db) in topology.all() {
        let Some(dbc) = cfg.databases.get(&name).filter(|d| !d.replicas.is_empty()) else {
            continue;
        };
        let probe = Probe {
            cfg,
            dbname: &dbc.dbname,
            tls: topology.server_tls(),
        };
        for r in db.replicas.iter().filter(|r| r.healthy()) {
            probe.host(r, conns).await;
        }
        db.probed.notify_waiters();
    }
}

fn update_lag(
    db: &DbHosts,
    r: &HostState,
    replayed: Option<Lsn>,
    primary: Option<Lsn>,
    now: Instant,
) {
    let (Some(replayed), Some(primary)) = (replayed, primary) else {
        return;
    };
    let bytes = primary.0.saturating_sub(replayed.0);
    let time = db
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .lag(replayed, now);
    r.set_lag(bytes, time);
}

struct Probe<'a> {
    cfg: &'a Config,
    dbname: &'a str,
    /// The pools' TLS settings: the probe connects as they do.
    tls: crate::tls::ServerTls,
}

impl Probe<'_> {
    /// Probes one host; its WAL position on success.
    async fn host(&self, h: &HostState, conns: &mut Conns) -> Option<Lsn> {
        let p = &self.cfg.pooler;
        let key = format!("{}/{}", h.addr(), self.dbname);
        let result = match conns.map.remove(&key) {
            Some(c) => Ok(c),
            None => match self.login() {
                Some((user, auth)) => {
                    conns.next_id += 1;
                    let target = ServerTarget {
                        host: h.host.clone(),
                        port: h.port,
                        dbname: self.dbname.to_string(),
                        user,
                        connect_timeout: p.server_connect_timeout.min(Duration::from_secs(2)),
                        max_prepared_statements: 0,
                        allow_cleartext: p.server_allow_cleartext,
                        tls: self.tls.clone(),
                    };
                    ServerConn::connect(&target, &auth, conns.next_id)
                        .await
                        .map(Box::new)
                }
                None => return self.tcp_only(h).await,
            },
        };
        let mut conn = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(host = %h.addr(), error = %e, "probe could not connect");
                h.probe_failed(p.ban_after);
                return None;
            }
        };
        let timeout = p.health_check_period.max(Duration::from_secs(1));
        match conn.simple_query(PROBE_SQL, timeout).await {
            Ok(o) if o.error.is_none() => {
                let row = o.rows.first();
                let cell = |i: usize| row.and_then(|r| r.get(i).cloned().flatten());
                let in_recovery = cell(0).as_deref() == Some("true");
                let lsn = cell(1).and_then(|s| s.parse::<Lsn>().ok());
                let timeline = cell(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                h.timeline
                    .store(timeline, std::sync::atomic::Ordering::Relaxed);
                h.in_recovery
                    .store(in_recovery, std::sync::atomic::Ordering::Relaxed);
                let wrong = in_recovery != (h.role == Role::Replica);
                if wrong
                    != h.wrong_role
                        .swap(wrong, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(host = %h.addr(), configured = h.role.as_str(), in_recovery, "host's role differs from its configuration");
                }
                h.probe_ok(lsn, p.unban_after);
                conns.map.insert(key, conn);
                lsn
            }
            _ => {
                h.probe_failed(p.ban_after);
                None
            }
        }
    }

    /// The first configured user with a password logs the probe in.
    fn login(&self) -> Option<(String, ServerAuth)> {
        let (user, password) = self.cfg.own_login()?;
        Some((user.to_string(), ServerAuth::Password(password.to_string())))
    }

    /// Liveness only: a lone primary, or a host with no password to log in
    /// with.
    async fn tcp_only(&self, h: &HostState) -> Option<Lsn> {
        let connect = tokio::net::TcpStream::connect((h.host.as_str(), h.port));
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Ok(_)) => h.probe_ok(None, self.cfg.pooler.unban_after),
            _ => h.probe_failed(self.cfg.pooler.ban_after),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_lag_from_primary_history() {
        let t0 = Instant::now();
        let mut h = History::default();
        assert_eq!(h.lag(Lsn(5), t0), None);
        h.push(t0, Lsn(100));
        h.push(t0 + Duration::from_secs(1), Lsn(200));
        h.push(t0 + Duration::from_secs(2), Lsn(300));
        let now = t0 + Duration::from_secs(3);
        assert_eq!(h.lag(Lsn(300), now), Some(Duration::ZERO));
        assert_eq!(h.lag(Lsn(250), now), Some(Duration::from_secs(1)));
        assert_eq!(h.lag(Lsn(150), now), Some(Duration::from_secs(2)));
        assert_eq!(h.lag(Lsn(50), now), Some(Duration::from_secs(3)));
    }
}
