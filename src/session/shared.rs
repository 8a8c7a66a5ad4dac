//! State every session shares: the live config, the pools, the cancel keys
//! and the shutdown signal. Built by `app`, passed explicitly; no statics.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use super::cancel::CancelRegistry;
use crate::config::Config;
use crate::pool::{registry::Pools, Pool, PoolSettings, ServerAuth, ServerTarget};
use crate::protocol::auth::scram::ScramSecret;
use crate::shutdown::Phase;

pub struct Shared {
    config: RwLock<Arc<Config>>,
    pub pools: Pools,
    pub cancels: Arc<CancelRegistry>,
    pub shutdown: watch::Receiver<Phase>,
    /// Live client connections (for max_client_conn).
    pub clients: AtomicUsize,
    /// SCRAM secrets derived from plaintext passwords: PBKDF2 runs once per user.
    derived: Mutex<HashMap<String, (String, ScramSecret)>>,
}

impl Shared {
    pub fn new(config: Arc<Config>, shutdown: watch::Receiver<Phase>) -> Shared {
        Shared {
            config: RwLock::new(config),
            pools: Pools::new(),
            cancels: Arc::new(CancelRegistry::new()),
            shutdown,
            clients: AtomicUsize::new(0),
            derived: Mutex::new(HashMap::new()),
        }
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
                pool.update_settings(pool_settings(&config, &pool.database, &pool.user));
            }
        }
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The SCRAM secret a client must prove for `user`: the configured one,
    /// or one derived (once) from the plaintext password.
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

    /// The pool for (database, user); both must exist in the config.
    pub fn pool_for(&self, config: &Config, db: &str, user: &str) -> Option<Arc<Pool>> {
        let dbc = config.databases.get(db)?;
        let uc = config.users.get(user)?;
        Some(self.pools.get_or_create(db, user, || {
            let target = ServerTarget {
                host: dbc.host.clone(),
                port: dbc.port,
                dbname: dbc.dbname.clone(),
                user: user.to_string(),
                connect_timeout: config.pooler.server_connect_timeout,
                max_prepared_statements: config.pooler.max_prepared_statements,
            };
            let auth = match uc.server_password.as_ref().or(uc.password.as_ref()) {
                Some(p) => ServerAuth::Password(p.clone()),
                None => ServerAuth::None,
            };
            Pool::new(db, user, target, auth, pool_settings(config, db, user))
        }))
    }
}

pub fn pool_settings(config: &Config, db: &str, user: &str) -> PoolSettings {
    let p = &config.pooler;
    PoolSettings {
        mode: config.pool_mode_for(db),
        size: config.pool_size_for(db, user),
        min_size: config.min_pool_size_for(db),
        query_wait_timeout: p.query_wait_timeout,
        server_idle_timeout: p.server_idle_timeout,
        server_lifetime: p.server_lifetime,
        server_check_delay: p.server_check_delay,
    }
}
