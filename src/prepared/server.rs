//! Which prepared statements a server connection holds, under pglittle's
//! content-derived names, with least-recently-used eviction.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A bounded LRU set of statement names prepared on one server.
#[derive(Debug)]
pub struct ServerStatements {
    /// name -> last use (a logical clock).
    used: HashMap<Arc<[u8]>, u64>,
    clock: u64,
    capacity: usize,
    /// Counts since the last `take_counts`: hits, misses, evictions.
    counts: (u64, u64, u64),
    /// SQL-level `PREPARE name` statements on this server: name -> text.
    pub sql: HashMap<Box<[u8]>, Arc<[u8]>>,
    /// Whose unnamed statement the server holds: (client token, that
    /// client's unnamed-statement generation). `None`: nobody's, or unknown.
    pub unnamed: Option<(u64, u64)>,
    /// The expected-reply queue's storage, empty, between transactions (a
    /// `Rewriter` takes it and gives it back, so none allocates its own).
    pub(super) spare_queue: VecDeque<super::Action>,
}

/// What `ServerStatements::take_all` took.
#[derive(Debug)]
pub struct SavedServerStatements {
    used: HashMap<Arc<[u8]>, u64>,
    sql: HashMap<Box<[u8]>, Arc<[u8]>>,
}

impl ServerStatements {
    pub fn new(capacity: usize) -> Self {
        ServerStatements {
            used: HashMap::new(),
            clock: 0,
            capacity: capacity.max(1),
            counts: (0, 0, 0),
            sql: HashMap::new(),
            unnamed: None,
            spare_queue: VecDeque::new(),
        }
    }

    /// Marks `name` as used; true if the server already has it.
    pub fn touch(&mut self, name: &[u8]) -> bool {
        self.clock += 1;
        match self.used.get_mut(name) {
            Some(t) => {
                *t = self.clock;
                self.counts.0 += 1;
                true
            }
            None => {
                self.counts.1 += 1;
                false
            }
        }
    }

    /// Records that `name` is being prepared; returns the statement to
    /// close first if the cache is full.
    pub fn insert(&mut self, name: Arc<[u8]>) -> Option<Arc<[u8]>> {
        self.clock += 1;
        let evicted = if self.used.len() >= self.capacity {
            let oldest = self
                .used
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(n, _)| n.clone());
            if let Some(n) = &oldest {
                self.used.remove(n);
                self.counts.2 += 1;
            }
            oldest
        } else {
            None
        };
        self.used.insert(name, self.clock);
        evicted
    }

    /// Hits, misses and evictions since the last call.
    pub fn take_counts(&mut self) -> (u64, u64, u64) {
        std::mem::take(&mut self.counts)
    }

    pub fn forget(&mut self, name: &[u8]) {
        self.used.remove(name);
    }

    /// After DEALLOCATE ALL / DISCARD ALL the server holds nothing.
    pub fn clear(&mut self) {
        self.used.clear();
        self.sql.clear();
        self.unnamed = None;
    }

    /// Empties the books (DEALLOCATE ALL / DISCARD ALL), returning what
    /// they held, for `restore` if the statement turns out to have failed.
    /// The unnamed statement survives them.
    pub fn take_all(&mut self) -> SavedServerStatements {
        SavedServerStatements {
            used: std::mem::take(&mut self.used),
            sql: std::mem::take(&mut self.sql),
        }
    }

    /// Undoes `take_all`.
    pub fn restore(&mut self, saved: SavedServerStatements) {
        self.used = saved.used;
        self.sql = saved.sql;
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut c = ServerStatements::new(2);
        assert_eq!(c.insert(n("a")), None);
        assert_eq!(c.insert(n("b")), None);
        assert!(c.touch(b"a"));
        assert_eq!(c.insert(n("c")), Some(n("b")));
        assert!(c.touch(b"a") && c.touch(b"c") && !c.touch(b"b"));
        c.forget(b"a");
        assert_eq!(c.len(), 1);
        c.clear();
        assert!(c.is_empty());
    }
}
