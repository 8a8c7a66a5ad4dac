//! Fleet sync (`fleet = "..."`): this instance's side of a database budget
//! shared by a fleet of pglittle instances with no coordinator.
//!
//! Every `fleet_sync_period`, for each database with a budget
//! (`max_db_connections`), on a connection of its own to the primary, the
//! instance reads the other members' published states from
//! `pg_stat_activity`, asks [`crate::sizing::fleet::next_cap`] for its cap,
//! and carries out the step in the order that keeps the fleet under the
//! budget: a raise is published before the pools may use it; a lowering
//! is applied to the pools first and published only once they hold no
//! more than it. The arithmetic and its safety argument are in
//! `sizing::fleet`; this file holds the I/O and the state the console
//! and /metrics show.
//!
//! The cap bounds the database's auto-sized pools (through the
//! autosize controller's `cap_of`), on each of its servers. An instance
//! that cannot reach the database keeps its last cap; once its sync
//! connection is back it joins again from round 0 with that cap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Shared;
use crate::config::fleet::FleetSettings;
use crate::config::Config;
use crate::pool::{PoolError, ServerAuth, ServerConn, ServerTarget};
use crate::sizing::fleet::{self as rules, Published, Round, Step};

/// The other members of the fleet, by their published application_name.
const READ_SQL: &str = "SELECT application_name FROM pg_stat_activity \
     WHERE starts_with(application_name, $1) AND pid <> pg_backend_pid()";
/// The window demand is measured over.
const DEMAND_WINDOW: Duration = Duration::from_secs(1);
/// Publishes this instance's state on the sync connection.
const PUBLISH_SQL: &str = "SELECT set_config('application_name', $1, false)";

/// One database's fleet state, as this instance sees it.
#[derive(Clone, Debug)]
pub struct DbFleet {
    pub budget: u32,
    /// What this instance last published (its cap is the current one).
    pub mine: Published,
    /// The other members, as last read.
    pub members: Vec<Published>,
    /// Rounds completed since this instance (re)joined.
    pub rounds: u32,
    /// The cap its pools follow now: the published cap, or a lower one
    /// they are closing down to before it is published.
    pub limit: u32,
    pub last_sync: Option<Instant>,
}

/// Fleet state per database.
#[derive(Default)]
pub struct Fleet {
    dbs: Mutex<BTreeMap<String, DbFleet>>,
    /// Told when a cap moved, so the janitor applies it to the pools at
    /// once rather than at its next tick: a lowering is published only once
    /// the pools hold no more, so every tick waited would slow the hand-back.
    pub moved: tokio::sync::Notify,
}

impl Fleet {
    /// The cap on the database's auto-sized pools (`None`: no fleet
    /// budget for it).
    pub fn cap(&self, db: &str) -> Option<usize> {
        self.lock().get(db).map(|f| f.limit as usize)
    }

    /// Every database's state, for SHOW FLEET and /metrics.
    pub fn snapshot(&self) -> Vec<(String, DbFleet)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DbFleet>> {
        self.dbs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database's state, made on first use: a new member holds
    /// nothing and has published nothing.
    fn entry(&self, db: &str, settings: &FleetSettings, budget: u32) -> DbFleet {
        let mut dbs = self.lock();
        let f = dbs.entry(db.to_string()).or_insert_with(|| DbFleet {
            budget,
            mine: Published {
                fleet: settings.name.clone(),
                instance: settings.instance.clone(),
                demand: 0,
                cap: 0,
                held: 0,
                short: false,
            },
            members: Vec::new(),
            rounds: 0,
            limit: 0,
            last_sync: None,
        });
        f.budget = budget;
        f.clone()
    }

    fn store(&self, db: &str, f: DbFleet) {
        self.lock().insert(db.to_string(), f);
    }

    /// The sync connection was lost: join again from round 0, keeping the
    /// cap held.
    fn rejoin(&self, db: &str) {
        if let Some(f) = self.lock().get_mut(db) {
            f.rounds = 0;
        }
    }
}

/// The sync connections, one per database.
#[derive(Default)]
pub struct FleetConns {
    map: HashMap<String, ServerConn>,
}

impl FleetConns {
    pub async fn close(mut self) {
        for (_, c) in self.map.drain() {
            c.terminate().await;
        }
    }
}

/// What this instance's pools of a database on its primary hold and want.
struct Local {
    held: u32,
    demand: u32,
}

impl Shared {
    /// One sync round over every database with a budget. Returns how long
    /// to wait for the next: the sync period, or [`rules::SOON`] (if
    /// shorter) after a round some database's decision wants followed soon
    /// ([`rules::Decision::soon`]).
    pub async fn fleet_round(&self, conns: &mut FleetConns) -> Duration {
        let config = self.config();
        let Some(settings) = config.pooler.fleet.clone() else {
            return crate::config::fleet::DEFAULT_SYNC_PERIOD;
        };
        let mut wait = settings.sync_period;
        for name in config.databases.keys() {
            let budget = config.max_db_connections_for(name);
            if budget == 0 {
                continue;
            }
            let budget = u32::try_from(budget).unwrap_or(rules::MAX_FIGURE);
            let result = self
                .fleet_db_round(&config, &settings, name, budget, conns)
                .await;
            match result {
                Ok(true) => wait = wait.min(rules::SOON),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(database = %name, error = %e, "fleet sync failed; keeping the last cap");
                    conns.map.remove(name);
                    self.fleet.rejoin(name);
                }
            }
        }
        wait
    }

    /// One database's round; returns whether the next should come soon.
    async fn fleet_db_round(
        &self,
        config: &Config,
        settings: &FleetSettings,
        db: &str,
        budget: u32,
        conns: &mut FleetConns,
    ) -> Result<bool, PoolError> {
        let timeout = settings.sync_period.max(Duration::from_secs(1));
        let conn = self.fleet_conn(config, db, conns).await?;
        let mut state = self.fleet.entry(db, settings, budget);
        let limit_before = state.limit;
        let read_at = Instant::now();
        let prefix = rules::fleet_prefix(&settings.name);
        let rows = conn.query_with_param(READ_SQL, &prefix, timeout).await?;
        let names = rows.iter().filter_map(|r| r.first()?.as_deref());
        state.members = rules::members_of(&settings.name, names);
        let local = self.fleet_local(db);
        let decision = rules::next_cap(&Round {
            budget,
            mine: &state.mine,
            demand: local.demand,
            held: local.held,
            members: &state.members,
            rounds: state.rounds,
        });
        let decision = if rules::raise_in_time(read_at, Instant::now(), settings.sync_period) {
            decision
        } else {
            decision.without_raise()
        };
        let publish = match decision.step {
            // Published first; the pools may use it from the next tick.
            Step::Raise { to, .. } | Step::Keep { cap: to } => {
                let p = decision.publish.clone();
                conn.query_with_param(PUBLISH_SQL, &rules::encode(&p), timeout)
                    .await?;
                state.limit = to;
                p
            }
            // The pools close down first; the lower cap is published once
            // they hold no more than it (until then the old one stands).
            Step::Lower { from, to } => {
                state.limit = to;
                let mut p = decision.publish.clone();
                if local.held > to {
                    (p.cap, p.held) = (from, local.held);
                }
                conn.query_with_param(PUBLISH_SQL, &rules::encode(&p), timeout)
                    .await?;
                p
            }
        };
        let moved = state.limit != limit_before;
        state.mine = publish;
        state.rounds = state.rounds.saturating_add(1);
        state.last_sync = Some(Instant::now());
        self.fleet.store(db, state);
        if moved {
            self.fleet.moved.notify_one();
        }
        Ok(decision.soon)
    }

    /// The database's sync connection, opened (again) if needed, to its
    /// primary, as the first user with a password (as the probe logs in).
    async fn fleet_conn<'c>(
        &self,
        config: &Config,
        db: &str,
        conns: &'c mut FleetConns,
    ) -> Result<&'c mut ServerConn, PoolError> {
        if conns.map.get_mut(db).is_some_and(|c| c.is_broken()) {
            conns.map.remove(db);
            self.fleet.rejoin(db);
        }
        if !conns.map.contains_key(db) {
            let (target, auth) = self.fleet_target(config, db)?;
            let conn = ServerConn::connect(&target, &auth, 0).await?;
            conns.map.insert(db.to_string(), conn);
        }
        conns
            .map
            .get_mut(db)
            .ok_or_else(|| PoolError::Closed(db.to_string()))
    }

    fn fleet_target(
        &self,
        config: &Config,
        db: &str,
    ) -> Result<(ServerTarget, ServerAuth), PoolError> {
        let no_login = || PoolError::LookupFailed {
            code: crate::protocol::sqlstate::INVALID_AUTHORIZATION_SPECIFICATION.into(),
            message: "fleet sync needs a user entry with a password".into(),
        };
        let (user, password) = config.own_login().ok_or_else(no_login)?;
        let dbc = config
            .databases
            .get(db)
            .ok_or_else(|| PoolError::Closed(db.to_string()))?;
        let primary = self
            .topology
            .get(db)
            .map(|h| (h.primary.host.clone(), h.primary.port))
            .unwrap_or_else(|| (dbc.host.clone(), dbc.port));
        let p = &config.pooler;
        let target = ServerTarget {
            host: primary.0,
            port: primary.1,
            dbname: dbc.dbname.clone(),
            user: user.to_string(),
            connect_timeout: p.server_connect_timeout.min(Duration::from_secs(2)),
            max_prepared_statements: 0,
            allow_cleartext: p.server_allow_cleartext,
            tls: self.topology.server_tls(),
        };
        Ok((target, ServerAuth::Password(password.to_string())))
    }

    /// Held connections and demand of the database's pools on its primary.
    /// Demand: the servers in use plus the clients queued, as the mean of
    /// the last [`DEMAND_WINDOW`] (or now, if more), with the auto-size
    /// headroom: it follows a load that moves in and out within seconds,
    /// where the controller's own size shrinks only after a while.
    fn fleet_local(&self, db: &str) -> Local {
        let primary = self.topology.get(db).map(|h| h.primary.addr());
        let headroom = 1.0 + f64::from(self.config().pooler.sizing_headroom_percent) / 100.0;
        let now = Instant::now();
        let mut local = Local { held: 0, demand: 0 };
        for pool in self.pools.all() {
            let on_primary = primary.as_ref().is_none_or(|a| *a == pool.target().addr());
            if pool.database != db || !on_primary {
                continue;
            }
            let s = pool.status();
            let f = pool.stats.figures(now, DEMAND_WINDOW);
            let used = (f.busy_mean + f.waiting_mean).max((s.active + s.waiting) as f64);
            local.held += (s.idle + s.active + s.connecting) as u32;
            local.demand += (used * headroom).ceil() as u32;
        }
        local
    }
}
