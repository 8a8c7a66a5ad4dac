//! The set of pools, created on first use of a (database, user, host)
//! triple: the primary's pool and one per replica.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::Pool;

#[derive(Default)]
pub struct Pools {
    map: RwLock<HashMap<(String, String, String), Arc<Pool>>>,
}

impl Pools {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool for (database, user, host), built by `make` on first use.
    pub fn get_or_create(
        &self,
        database: &str,
        user: &str,
        host: &str,
        make: impl FnOnce() -> Pool,
    ) -> Arc<Pool> {
        let key = (database.to_string(), user.to_string(), host.to_string());
        if let Some(p) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return p.clone();
        }
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<_> = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            let key = |p: &Pool| {
                (
                    p.database.clone(),
                    p.user.clone(),
                    p.role,
                    p.target().addr(),
                )
            };
            key(a).cmp(&key(b))
        });
        v
    }
}
