//! Secrets of users pglittle does not list, fetched with `auth_query` and
//! kept for `auth_query_ttl`, and the server credentials learned from
//! clients' logins (SCRAM and md5 pass-through).
//!
//! The query runs on one kept connection per database, logged in as
//! `auth_user`, so lookups for that database take turns: a burst of new
//! logins (or of guessed user names) costs the server one connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, Secret, UserConfig};
use crate::pool::error::PoolError;
use crate::pool::server::{ServerAuth, ServerConn, ServerTarget};

/// How long pglittle's own lookup may take once connected.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

type ConnSlot = Arc<tokio::sync::Mutex<Option<ServerConn>>>;

/// Pure: fetched secrets and when they were fetched.
#[derive(Default)]
pub struct SecretCache {
    entries: HashMap<(String, String), (Option<Secret>, Instant)>,
}

impl SecretCache {
    /// The secret (or the absence of the user) fetched within `ttl`.
    pub fn get(&self, db: &str, user: &str, ttl: Duration, now: Instant) -> Option<Option<Secret>> {
        let (secret, at) = self.entries.get(&(db.to_string(), user.to_string()))?;
        (now.duration_since(*at) < ttl).then(|| secret.clone())
    }

    pub fn put(&mut self, db: &str, user: &str, secret: Option<Secret>, now: Instant) {
        self.entries
            .insert((db.to_string(), user.to_string()), (secret, now));
    }

    /// Forgets one entry: its login failed, so the next one asks again.
    pub fn forget(&mut self, db: &str, user: &str) {
        self.entries.remove(&(db.to_string(), user.to_string()));
    }

    /// Drops expired entries (so guessed names do not pile up).
    pub fn expire(&mut self, ttl: Duration, now: Instant) {
        self.entries
            .retain(|_, (_, at)| now.duration_since(*at) < ttl);
    }
}

#[derive(Default)]
pub struct Secrets {
    cache: Mutex<SecretCache>,
    conns: Mutex<HashMap<String, ConnSlot>>,
    /// Server credentials learned from clients, per user.
    learned: Mutex<HashMap<String, ServerAuth>>,
}

impl Secrets {
    fn cached(&self, db: &str, user: &str, ttl: Duration) -> Option<Option<Secret>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(db, user, ttl, Instant::now())
    }

    /// After a failed login: the user's secret is asked for again next time
    /// (a changed password is picked up).
    pub fn forget(&self, db: &str, user: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.forget(db, user);
    }

    /// Records the credential a client's login gave for `user`; true if
    /// it is new (pools then take it).
    pub fn learn(&self, user: &str, auth: ServerAuth) -> bool {
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if learned.get(user) == Some(&auth) {
            return false;
        }
        learned.insert(user.to_string(), auth);
        true
    }

    pub fn learned(&self, user: &str) -> Option<ServerAuth> {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        learned.get(user).cloned()
    }

    fn slot(&self, key: String) -> ConnSlot {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.entry(key).or_default().clone()
    }

    /// `user`'s secret for database `db`: from the cache, or by running
    /// `auth_query` as `auth_user`. `None`: no such user (or no password).
    pub async fn lookup(
        &self,
        config: &Config,
        target: ServerTarget,
        db: &str,
        user: &str,
    ) -> Result<Option<Secret>, PoolError> {
        let lookup = &config.pooler.auth_lookup;
        if let Some(hit) = self.cached(db, user, lookup.ttl) {
            return Ok(hit);
        }
        let auth = lookup_auth(config).ok_or_else(|| PoolError::LookupFailed {
            code: crate::protocol::sqlstate::INVALID_AUTHORIZATION_SPECIFICATION.into(),
            message: "auth_user has no password".into(),
        })?;
        let slot = self.slot(format!("{}/{}", target.addr(), target.dbname));
        let mut conn = slot.lock().await;
        // Another login may have fetched it while this one waited its turn.
        if let Some(hit) = self.cached(db, user, lookup.ttl) {
            return Ok(hit);
        }
        let rows = query(&mut conn, &target, &auth, &lookup.query, user).await?;
        let secret = rows
            .first()
            .and_then(|row| row.last().cloned().flatten())
            .filter(|s| !s.is_empty())
            .map(|s| Secret::classify(&s));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        cache.expire(lookup.ttl, now);
        if !lookup.ttl.is_zero() {
            cache.put(db, user, secret.clone(), now);
        }
        Ok(secret)
    }
}

/// Runs the query on the kept connection, opening it (again) if needed: a
/// kept connection the server closed meanwhile is replaced once.
async fn query(
    conn: &mut Option<ServerConn>,
    target: &ServerTarget,
    auth: &ServerAuth,
    sql: &str,
    user: &str,
) -> Result<Vec<Vec<Option<String>>>, PoolError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut c = match conn.take() {
            Some(mut c) if attempts == 1 => match c.is_broken() {
                false => c,
                true => ServerConn::connect(target, auth, 0).await?,
            },
            _ => ServerConn::connect(target, auth, 0).await?,
        };
        match c.query_with_param(sql, user, LOOKUP_TIMEOUT).await {
            Ok(rows) => {
                *conn = Some(c);
                return Ok(rows);
            }
            Err(e @ PoolError::LookupFailed { .. }) => {
                *conn = Some(c);
                return Err(e);
            }
            Err(e) if attempts > 1 => return Err(e),
            Err(_) => {}
        }
    }
}

/// How `auth_user` logs in.
fn lookup_auth(config: &Config) -> Option<ServerAuth> {
    let name = config.pooler.auth_lookup.user.as_ref()?;
    configured_auth(config.users.get(name)?)
}

/// The credential a user entry itself gives for logging in to servers:
/// its server_password, else its password, else its md5 secret. `None`:
/// only what a client's login proves (SCRAM pass-through) can log it in.
pub fn configured_auth(u: &UserConfig) -> Option<ServerAuth> {
    match (&u.server_password, &u.password, &u.md5_secret) {
        (Some(p), _, _) | (None, Some(p), _) => Some(ServerAuth::Password(p.clone())),
        (None, None, Some(s)) => Some(ServerAuth::Md5Secret(s.clone())),
        (None, None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_for_the_ttl_and_a_failure_forgets_them() {
        let mut c = SecretCache::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        c.put("db", "alice", Some(Secret::Plain("x".into())), t0);
        c.put("db", "ghost", None, t0);
        assert_eq!(
            c.get("db", "alice", ttl, t0),
            Some(Some(Secret::Plain("x".into())))
        );
        assert_eq!(
            c.get("db", "ghost", ttl, t0),
            Some(None),
            "absence is cached too"
        );
        assert_eq!(c.get("other", "alice", ttl, t0), None, "per database");
        assert_eq!(c.get("db", "alice", ttl, t0 + ttl), None, "expired");
        c.forget("db", "alice");
        assert_eq!(c.get("db", "alice", ttl, t0), None);
        c.expire(ttl, t0 + ttl);
        assert!(c.entries.is_empty());
    }

    #[test]
    fn a_learned_credential_is_new_only_when_it_changes() {
        let s = Secrets::default();
        assert!(s.learn("alice", ServerAuth::Md5Secret("md5a".into())));
        assert!(!s.learn("alice", ServerAuth::Md5Secret("md5a".into())));
        assert!(s.learn("alice", ServerAuth::Md5Secret("md5b".into())));
        assert!(s.learned("bob").is_none());
    }
}
