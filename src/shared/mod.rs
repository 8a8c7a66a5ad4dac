//! State every session shares: the live config, the pools, the cancel keys
//! and the shutdown signal. Built by `app`, passed explicitly; no statics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

pub mod cancel;
pub mod clients;
pub mod failed_logins;
pub mod fleet;
pub mod secrets;

use crate::config::Config;
use crate::config::PoolSize;
use crate::metrics::Metrics;
use crate::pool::{
    registry::Pools, AutoBounds, HostRole, Pool, PoolSettings, ServerAuth, ServerTarget,
};
use crate::protocol::auth::scram::ScramSecret;
use crate::shutdown::{Phase, Shutdown};
use crate::topology::{HostState, Topology};
use cancel::CancelRegistry;
use clients::ClientRegistry;

/// An idle client on its way to the new process: its socket and its
/// session as bytes (`session::handover`).
pub type HandedOver = (std::net::TcpStream, Vec<u8>);

/// Re-reads the configuration for RELOAD (the file, or the sidecar flags).
pub type Reloader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

pub struct Shared {
    config: RwLock<Arc<Config>>,
    pub pools: Pools,
    pub cancels: Arc<CancelRegistry>,
    pub shutdown: watch::Receiver<Phase>,
    /// Live client connections (for max_client_conn).
    pub clients: AtomicUsize,
    /// Every live client, for the admin console and the clients gauges.
    pub client_list: Arc<ClientRegistry>,
    /// This instance's metric registry.
    pub metrics: Metrics,
    /// The shutdown signal itself, so the admin console can SHUTDOWN.
    pub control: Shutdown,
    /// Clients refused because max_client_conn was reached.
    pub refused: AtomicU64,
    reloader: RwLock<Option<Reloader>>,
    /// Databases paused by PAUSE/KILL (`None` = PAUSE of everything), so a
    /// pool created while its database is paused starts paused.
    pub paused: Mutex<std::collections::BTreeSet<Option<String>>>,
    /// SCRAM secrets derived from plaintext passwords: PBKDF2 runs once per user.
    derived: Mutex<HashMap<String, (String, ScramSecret)>>,
    /// Random per instance: the seed of unknown users' mock SCRAM secrets.
    mock_nonce: [u8; 32],
    /// Hosts per database: health, WAL positions, lag (kept by the probe).
    pub topology: Arc<Topology>,
    /// Read-your-writes decisions: replica, primary_floor, waited, primary_time.
    pub ryw: RywCounters,
    /// auth_query's cache and connections, and credentials learned from logins.
    pub secrets: secrets::Secrets,
    /// Failed logins per source address and user (delay, then refusal).
    pub failed_logins: failed_logins::FailedLogins,
    /// This instance's view of its fleet's shared budgets (`fleet`).
    pub fleet: fleet::Fleet,
    /// Rolling restart: where idle sessions go (their socket and state)
    /// once a new process has taken over the listener.
    handover: Mutex<Option<std::sync::mpsc::Sender<HandedOver>>>,
    /// What clients are offered for TLS, from the config's files as last
    /// (re)loaded; `None` when client_tls_mode is disable.
    client_tls: RwLock<Option<crate::tls::ClientTlsSetup>>,
}

/// How reads were placed with respect to the client's own writes.
#[derive(Default, Debug)]
pub struct RywCounters {
    /// A replica had replayed the client's floor.
    pub replica: AtomicU64,
    /// No replica had: the primary served the read.
    pub primary_floor: AtomicU64,
    /// The read waited (causal_wait) for a replica to catch up.
    pub waited: AtomicU64,
    /// Time mode: the read came soon after a write and went to the primary.
    pub primary_time: AtomicU64,
    /// Reads retried on the primary after a replica refused them (25006, 40001).
    pub retried: AtomicU64,
    /// LSN mode: a write's WAL position read by the query pipelined behind
    /// it (`relay`), or by a round trip of its own after the transaction.
    pub position_pipelined: AtomicU64,
    pub position_asked: AtomicU64,
}

impl Shared {
    pub fn new(config: Arc<Config>, control: &Shutdown) -> Shared {
        let topology = Arc::new(Topology::new());
        topology.sync(&config);
        Shared {
            topology,
            ryw: RywCounters::default(),
            failed_logins: Default::default(),
            fleet: Default::default(),
            handover: Mutex::new(None),
            secrets: Default::default(),
            config: RwLock::new(config),
            pools: Pools::new(),
            cancels: Arc::new(CancelRegistry::new()),
            shutdown: control.subscribe(),
            clients: AtomicUsize::new(0),
            client_list: Arc::new(ClientRegistry::default()),
            metrics: Metrics::new(),
            control: control.clone(),
            refused: AtomicU64::new(0),
            reloader: RwLock::new(None),
            paused: Mutex::new(std::collections::BTreeSet::new()),
            derived: Mutex::new(HashMap::new()),
            mock_nonce: rand::random(),
            client_tls: RwLock::new(None),
        }
    }

    /// Reads the TLS files `config` names and installs what clients are
    /// offered from now on (connected clients keep their session). An error
    /// names the key; the previous setup stays.
    pub fn load_tls(&self, config: &Config) -> Result<(), String> {
        let acceptor =
            crate::tls::client_acceptor(&config.pooler.client_tls).map_err(|e| e.to_string())?;
        let server =
            crate::tls::server_connector(&config.pooler.server_tls).map_err(|e| e.to_string())?;
        *self.client_tls.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
        // Pools made from now on use it; existing ones keep theirs (their
        // open connections are not redone).
        self.topology.set_server_tls(server);
        Ok(())
    }

    /// From now on idle sessions are handed to `to` instead of closed at
    /// the drain (a rolling restart).
    pub fn hand_over_to(&self, to: std::sync::mpsc::Sender<HandedOver>) {
        *self.handover.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
    }

    pub fn handing_over(&self) -> bool {
        self.handover
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Sends an idle session to the new process; false if none takes it.
    pub fn hand_over(&self, moved: HandedOver) -> bool {
        let to = self.handover.lock().unwrap_or_else(|e| e.into_inner());
        to.as_ref().is_some_and(|tx| tx.send(moved).is_ok())
    }

    /// What clients are offered for TLS now (`None`: TLS is off).
    pub fn client_tls(&self) -> Option<crate::tls::ClientTlsSetup> {
        self.client_tls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Installs how RELOAD re-reads the configuration.
    pub fn set_reloader(&self, r: Reloader) {
        *self.reloader.write().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }

    /// Re-reads and applies the configuration (RELOAD, SIGHUP).
    pub fn reload(&self) -> Result<(), String> {
        let r = self
            .reloader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or("this instance was started without a configuration source to reload")?;
        let config = r()?;
        self.load_tls(&config)?;
        self.apply_config(Arc::new(config));
        tracing::info!("configuration reloaded");
        Ok(())
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Installs a reloaded config and applies pool sizes and timeouts to
    /// existing pools; clients stay connected.
    pub fn apply_config(&self, config: Arc<Config>) {
        for pool in self.pools.all() {
            if config.databases.contains_key(&pool.database) {
                let mut settings = pool_settings(&config, &pool.database, &pool.user);
                if pool.role == HostRole::Replica {
                    settings.server_check_delay = std::time::Duration::ZERO;
                }
                pool.update_settings(settings);
            }
        }
        self.topology.sync(&config);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The SCRAM secret a client must prove for `user`: the configured one,
    /// or one derived (once) from the plaintext password.
    /// The mock secret of a user that does not exist (`ScramSecret::mock`).
    pub fn mock_secret(&self, user: &str) -> ScramSecret {
        ScramSecret::mock(&self.mock_nonce, user)
    }

    pub fn scram_secret(&self, user: &str, password: &str) -> ScramSecret {
        let mut cache = self.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, s)) = cache.get(user) {
            if p == password {
                return s.clone();
            }
        }
        let secret = ScramSecret::generate(password);
        cache.insert(user.to_string(), (password.to_string(), secret.clone()));
        secret
    }

    /// The primary's pool for (database, user); both must exist in the config.
    pub fn pool_for(&self, config: &Config, db: &str, user: &str) -> Option<Arc<Pool>> {
        let dbc = config.databases.get(db)?;
        self.host_pool(config, db, user, &dbc.host, dbc.port, HostRole::Primary)
    }

    /// The pool for (database, user) on one replica.
    pub fn replica_pool_for(
        &self,
        config: &Config,
        db: &str,
        user: &str,
        host: &HostState,
    ) -> Option<Arc<Pool>> {
        self.host_pool(config, db, user, &host.host, host.port, HostRole::Replica)
    }

    /// The pool writes go to after a failover moved them to `host` (`role
    /// = "auto"`): a primary's pool (settings, and `role="primary"` in its
    /// metrics), not the one that served reads there while it was a replica.
    pub fn writer_pool_for(
        &self,
        config: &Config,
        db: &str,
        user: &str,
        host: &HostState,
    ) -> Option<Arc<Pool>> {
        self.host_pool(config, db, user, &host.host, host.port, HostRole::Primary)
    }

    fn host_pool(
        &self,
        config: &Config,
        db: &str,
        user: &str,
        host: &str,
        port: u16,
        role: HostRole,
    ) -> Option<Arc<Pool>> {
        let dbc = config.databases.get(db)?;
        let auth = self.server_auth(config, user)?;
        let paused = {
            let p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
            p.contains(&None) || p.contains(&Some(db.to_string()))
        };
        // One pool per role on a host: a promoted replica's writes do not
        // share (or take the labels of) the pool its reads used.
        let key = format!("{host}:{port}/{}", role.as_str());
        Some(self.pools.get_or_create(db, user, &key, || {
            let target = self.server_target(config, host, port, &dbc.dbname, user);
            let labels = vec![
                ("database", db.to_string()),
                ("user", user.to_string()),
                ("host", target.addr()),
                ("role", role.as_str().to_string()),
            ];
            let mut settings = pool_settings(config, db, user);
            if role == HostRole::Replica {
                // A replica may vanish at any moment: check every idle
                // server (one non-blocking read) before lending it.
                settings.server_check_delay = std::time::Duration::ZERO;
            }
            let mut pool = Pool::new(db, user, target, auth, settings);
            if role == HostRole::Replica {
                pool = pool.for_replica();
            }
            let pool = pool.with_metrics(self.metrics.pool(labels));
            if paused {
                pool.hold();
            }
            pool
        }))
    }
}

impl Shared {
    /// How `user` logs in to servers: the configured password (or md5
    /// secret), else what a client's login gave (pass-through). `None`:
    /// a user neither listed nor logged in.
    fn server_auth(&self, config: &Config, user: &str) -> Option<ServerAuth> {
        let learned = || self.secrets.learned(user);
        let Some(uc) = config.users.get(user) else {
            return learned();
        };
        secrets::configured_auth(uc)
            .or_else(learned)
            .or(Some(ServerAuth::None))
    }

    /// Records the credential a client's login gave for `user`, who has
    /// none configured, and hands a new one to the user's pools.
    pub fn learn_server_auth(&self, user: &str, auth: ServerAuth) {
        if !self.secrets.learn(user, auth.clone()) {
            return;
        }
        for pool in self.pools.all().into_iter().filter(|p| p.user == user) {
            pool.set_auth(auth.clone());
        }
    }

    fn server_target(
        &self,
        config: &Config,
        host: &str,
        port: u16,
        dbname: &str,
        user: &str,
    ) -> ServerTarget {
        ServerTarget {
            host: host.to_string(),
            port,
            dbname: dbname.to_string(),
            user: user.to_string(),
            connect_timeout: config.pooler.server_connect_timeout,
            max_prepared_statements: config.pooler.max_prepared_statements,
            allow_cleartext: config.pooler.server_allow_cleartext,
            tls: self.topology.server_tls(),
        }
    }

    /// Where `auth_query` runs for database `db`: its primary, as
    /// `auth_user`, in `auth_dbname` (or the database itself).
    pub fn lookup_target(&self, config: &Config, db: &str) -> Option<ServerTarget> {
        let dbc = config.databases.get(db)?;
        let lookup = &config.pooler.auth_lookup;
        let dbname = lookup.dbname.as_deref().unwrap_or(&dbc.dbname);
        let user = lookup.user.as_deref()?;
        Some(self.server_target(config, &dbc.host, dbc.port, dbname, user))
    }
}

pub fn pool_settings(config: &Config, db: &str, user: &str) -> PoolSettings {
    let p = &config.pooler;
    let min_size = config.min_pool_size_for(db);
    let (size, auto) = match config.pool_size_for(db, user) {
        PoolSize::Fixed(n) => (n, None),
        PoolSize::Auto => {
            let bounds = AutoBounds {
                min: min_size,
                max: p.max_pool_size,
            };
            (bounds.start(), Some(bounds))
        }
    };
    PoolSettings {
        mode: config.pool_mode_for(db),
        size,
        auto,
        reserve_size: p.reserve_pool_size,
        reserve_timeout: p.reserve_pool_timeout,
        min_size,
        query_wait_timeout: p.query_wait_timeout,
        server_idle_timeout: p.server_idle_timeout,
        server_lifetime: p.server_lifetime,
        server_check_delay: p.server_check_delay,
        max_queue: p.max_queue,
        shed_on_predicted_wait: p.shed_on_predicted_wait,
    }
}
