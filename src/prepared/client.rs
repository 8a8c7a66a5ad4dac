//! A client's prepared statements in transaction mode.
//!
//! Drivers prepare a named statement on one server connection and use it on
//! whichever the pooler lends next. pglittle records each named statement in
//! the client's session and keeps it on servers under its own name, derived
//! from the statement's text and parameter types, so identical statements
//! from different clients share one server-side statement.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::sql::settings::{changes, SettingOp};
use crate::sql::SqlEffects;

/// One protocol-level named statement, as needed to prepare it on any server.
#[derive(Debug, PartialEq, Eq)]
pub struct StmtDef {
    /// pglittle's server-side name: `pgl_` + the 64 hex digits of SHA-256.
    /// At 68 bytes it is longer than any SQL identifier (63 bytes), so no
    /// client's SQL `EXECUTE` or `DEALLOCATE` can ever name it.
    pub server_name: Arc<[u8]>,
    pub sql: Box<[u8]>,
    /// The Parse message's parameter-type section (count and OIDs).
    pub types: Box<[u8]>,
    /// What running it does to the session (see `Bound`).
    pub bound: Bound,
}

/// What running a prepared statement does to session state, found once
/// when it is parsed: every later Bind of it (in another transaction, on
/// another server) must count it again, or a cached
/// `SELECT set_config('app.tenant', $1, false)` would not follow its client.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bound {
    pub effects: SqlEffects,
    /// Empty (no allocation) unless the statement changes settings.
    pub settings: Vec<SettingOp>,
}

impl Bound {
    pub fn of(sql: &[u8], effects: SqlEffects) -> Bound {
        let settings = if effects.settings {
            changes(sql)
        } else {
            Vec::new()
        };
        Bound { effects, settings }
    }

    /// True when binding it changes nothing pglittle follows (and no query
    /// of pglittle's may not follow it: `SqlEffects::blocks`).
    pub fn is_inert(&self) -> bool {
        let fx = self.effects;
        !(fx.settings || fx.needs_reset || fx.session_state || fx.listen || fx.blocks)
    }
}

impl StmtDef {
    pub fn new(sql: &[u8], types: &[u8]) -> StmtDef {
        Self::hashed(sql, types, None)
    }

    /// A statement only this client may use on a server: its text means
    /// something per session (an SQL `EXECUTE` names the client's own
    /// prepared statement), so it must not be shared by content.
    pub fn private(sql: &[u8], types: &[u8], client: u64) -> StmtDef {
        Self::hashed(sql, types, Some(client))
    }

    fn hashed(sql: &[u8], types: &[u8], client: Option<u64>) -> StmtDef {
        let mut h = Sha256::new();
        h.update((sql.len() as u64).to_be_bytes());
        h.update(sql);
        h.update(types);
        if let Some(c) = client {
            h.update(c.to_be_bytes());
        }
        let digest = h.finalize();
        let mut name = b"pgl_".to_vec();
        for b in &digest[..] {
            name.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        StmtDef {
            server_name: Arc::from(name),
            sql: sql.into(),
            types: types.into(),
            bound: Bound::default(),
        }
    }
}

/// What a Bind or Describe of a named statement the client never prepared
/// is sent as: never one of pglittle's names (not hex) nor a SQL-level
/// one (longer than 63 bytes), so the server answers 26000 whatever other
/// clients prepared on it.
pub const UNKNOWN_STATEMENT: &[u8] =
    b"pgl_unknown_statement_________________________________________________";

#[derive(Debug, Default)]
pub struct ClientStatements {
    /// Protocol-level: client's name -> definition.
    named: HashMap<Box<[u8]>, Arc<StmtDef>>,
    /// SQL-level: `PREPARE name` -> the whole PREPARE statement text.
    pub sql: HashMap<Box<[u8]>, Arc<[u8]>>,
    /// The client's unnamed statement (SQL text and parameter types), as
    /// its last Parse of "" made it; a simple Query or Close destroys it.
    pub unnamed: Option<Box<Unnamed>>,
    /// Who this client is, to servers that remember whose unnamed
    /// statement they hold (random, so no client can guess another's).
    pub token: u64,
    /// Bumped by every Parse of the unnamed statement.
    pub unnamed_generation: u64,
    /// At most this many named statements, protocol and SQL level
    /// together (`max_client_statements`; 0: no cap).
    pub max_statements: usize,
}

/// A client went past one of its memory caps: its session ends (54000).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "too many prepared statements for one client: at most {0} (max_client_statements); \
         close or DEALLOCATE statements you no longer use"
    )]
    Statements(usize),
}

/// A client's unnamed statement, kept to prepare it again on another server.
#[derive(Debug, Default)]
pub struct Unnamed {
    pub sql: Vec<u8>,
    pub types: Vec<u8>,
    pub bound: Bound,
}

impl ClientStatements {
    pub fn new() -> Self {
        ClientStatements {
            token: rand::random(),
            ..Default::default()
        }
    }

    /// Rewriter for a client that may hold at most `max_statements` named
    /// statements (0: no cap).
    pub fn capped(max_statements: usize) -> Self {
        ClientStatements {
            max_statements,
            ..ClientStatements::new()
        }
    }

    /// This client's current unnamed statement, as servers record it.
    pub fn unnamed_owner(&self) -> (u64, u64) {
        (self.token, self.unnamed_generation)
    }

    /// Records a Parse of the unnamed statement, reusing the buffers.
    pub fn parse_unnamed(&mut self, sql: &[u8], types: &[u8], effects: SqlEffects) {
        let u = self.unnamed.get_or_insert_with(Box::default);
        u.bound = Bound::of(sql, effects);
        u.sql.clear();
        u.sql.extend_from_slice(sql);
        u.types.clear();
        u.types.extend_from_slice(types);
        self.unnamed_generation += 1;
    }
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<StmtDef>> {
        self.named.get(name)
    }

    pub fn insert(&mut self, name: &[u8], def: Arc<StmtDef>) {
        self.named.insert(name.into(), def);
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.named.remove(name);
    }

    /// Whether a new protocol-level statement `name` fits under the cap
    /// (one that replaces an existing name always does).
    pub fn room_for(&self, name: &[u8]) -> Result<(), LimitError> {
        self.room(self.named.contains_key(name))
    }

    /// Whether a new SQL-level `PREPARE name` fits under the cap.
    pub fn room_for_sql(&self, name: &[u8]) -> Result<(), LimitError> {
        self.room(self.sql.contains_key(name))
    }

    fn room(&self, replaces: bool) -> Result<(), LimitError> {
        let cap = self.max_statements;
        if cap == 0 || replaces || self.named.len() + self.sql.len() < cap {
            return Ok(());
        }
        Err(LimitError::Statements(cap))
    }

    /// DEALLOCATE ALL / DISCARD ALL: empties the books, returning what
    /// they held, for `restore` if the statement turns out to have failed.
    /// The unnamed statement survives them on PostgreSQL.
    pub fn take_all(&mut self) -> SavedStatements {
        SavedStatements {
            named: std::mem::take(&mut self.named),
            sql: std::mem::take(&mut self.sql),
        }
    }

    /// Undoes `take_all`.
    pub fn restore(&mut self, saved: SavedStatements) {
        self.named = saved.named;
        self.sql = saved.sql;
    }
}

/// A client's statements as plain data, to rebuild them in another
/// process (a rolling restart): what a client defined, not what pglittle
/// derived from it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Protocol-level: (client's name, SQL, parameter-type section).
    pub named: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// SQL-level: (name, the whole PREPARE text).
    pub sql: Vec<(Vec<u8>, Vec<u8>)>,
    /// The unnamed statement: (SQL, parameter-type section).
    pub unnamed: Option<(Vec<u8>, Vec<u8>)>,
    pub token: u64,
}

impl ClientStatements {
    pub fn export(&self) -> Exported {
        let mut named: Vec<_> = self
            .named
            .iter()
            .map(|(n, d)| (n.to_vec(), d.sql.to_vec(), d.types.to_vec()))
            .collect();
        named.sort();
        let mut sql: Vec<_> = self
            .sql
            .iter()
            .map(|(n, t)| (n.to_vec(), t.to_vec()))
            .collect();
        sql.sort();
        Exported {
            named,
            sql,
            unnamed: self
                .unnamed
                .as_ref()
                .map(|u| (u.sql.clone(), u.types.clone())),
            token: self.token,
        }
    }

    /// Rebuilds what `export` gave, as the Parses and PREPAREs that made
    /// it would have (the same server-side names, the same effects).
    pub fn import(max_statements: usize, e: Exported) -> ClientStatements {
        let mut s = ClientStatements::capped(max_statements);
        s.token = e.token;
        for (name, sql, types) in e.named {
            let fx = crate::sql::inspect(&sql);
            let mut def = if fx.prepared {
                StmtDef::private(&sql, &types, s.token)
            } else {
                StmtDef::new(&sql, &types)
            };
            def.bound = Bound::of(&sql, fx);
            s.insert(&name, Arc::new(def));
        }
        for (name, text) in e.sql {
            s.sql.insert(name.into(), text.into());
        }
        if let Some((sql, types)) = e.unnamed {
            s.parse_unnamed(&sql, &types, crate::sql::inspect(&sql));
        }
        s
    }
}

/// What `ClientStatements::take_all` took.
#[derive(Debug)]
pub struct SavedStatements {
    named: HashMap<Box<[u8]>, Arc<StmtDef>>,
    sql: HashMap<Box<[u8]>, Arc<[u8]>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_depend_on_text_and_types_only() {
        let a = StmtDef::new(b"select $1", b"\0\x01\0\0\0\x17");
        let b = StmtDef::new(b"select $1", b"\0\x01\0\0\0\x17");
        let c = StmtDef::new(b"select $1", b"\0\x01\0\0\0\x19");
        let d = StmtDef::new(b"select $2", b"\0\x01\0\0\0\x17");
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert_ne!(a.server_name, d.server_name);
        assert_eq!(a.server_name.len(), 4 + 64);
        assert!(UNKNOWN_STATEMENT.len() > 63);
        assert!(a.server_name.starts_with(b"pgl_"));
    }

    #[test]
    fn statements_rebuilt_from_an_export_are_the_same() {
        let mut a = ClientStatements::capped(10);
        let def = StmtDef::new(b"select $1", b"\0\x01\0\0\0\x17");
        a.insert(b"s1", Arc::new(def));
        a.sql.insert(
            b"p1".as_slice().into(),
            b"PREPARE p1 AS select 2".as_slice().into(),
        );
        a.parse_unnamed(b"select 3", b"\0\0", crate::sql::inspect(b"select 3"));
        let e = a.export();
        let b = ClientStatements::import(10, e.clone());
        assert_eq!(b.export(), e);
        assert_eq!(
            b.get(b"s1").unwrap().server_name,
            a.get(b"s1").unwrap().server_name
        );
        assert_eq!(b.token, a.token);
        assert_eq!(b.max_statements, 10);
    }
}
