//! What a statement does to session state, so transaction pooling can keep
//! every client's session to itself.

use super::lexer::{Lexer, Token};

/// Session-level side effects found in a query string.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SqlEffects {
    /// search_path may have changed; PostgreSQL before 18 does not report
    /// it, so the session asks the server before letting the connection go.
    pub search_path: bool,
    /// State pglittle does not carry between servers (untracked SET, SET
    /// ROLE, temp tables, LISTEN, session advisory locks, WITH HOLD cursors):
    /// the server is reset with DISCARD ALL before anyone else gets it.
    pub needs_reset: bool,
    /// A statement starts with PREPARE, EXECUTE, DEALLOCATE or DISCARD:
    /// worth a closer look by `router::prepared::scan`.
    pub prepared: bool,
}

impl SqlEffects {
    pub fn merge(&mut self, other: SqlEffects) {
        self.search_path |= other.search_path;
        self.needs_reset |= other.needs_reset;
        self.prepared |= other.prepared;
    }
}

/// Parameters whose changes the server reports with ParameterStatus, which
/// pglittle follows per client; SETting them needs no reset.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
];

/// Functions that leave session state behind.
const STATEFUL_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Scans a query string (one or many statements).
pub fn inspect(sql: &[u8]) -> SqlEffects {
    let mut fx = SqlEffects::default();
    let mut toks = Lexer::new(sql).peekable();
    let mut at_start = true;
    while let Some(t) = toks.next() {
        if t == Token::Semicolon {
            at_start = true;
            continue;
        }
        if let Token::Word(w) = t {
            if STATEFUL_FUNCTIONS
                .iter()
                .any(|f| w.eq_ignore_ascii_case(f.as_bytes()))
                && toks.peek() == Some(&Token::Punct(b'('))
            {
                fx.needs_reset = true;
                fx.search_path |= w.eq_ignore_ascii_case(b"set_config");
            }
            if t.is("temp") || t.is("temporary") || t.is("hold") {
                fx.needs_reset = true;
            }
        }
        if !at_start {
            continue;
        }
        at_start = false;
        if t.is("set") {
            fx.merge(set_effects(&mut toks));
        } else if t.is("reset") || t.is("discard") {
            fx.search_path = true;
            fx.prepared |= t.is("discard");
        } else if t.is("prepare") || t.is("execute") || t.is("deallocate") {
            fx.prepared = true;
        } else if t.is("listen") {
            fx.needs_reset = true;
        }
    }
    fx
}

fn set_effects<'a>(toks: &mut impl Iterator<Item = Token<'a>>) -> SqlEffects {
    let mut name = toks.next();
    if name.is_some_and(|t| t.is("local") || t.is("transaction") || t.is("constraints")) {
        return SqlEffects::default();
    }
    if name.is_some_and(|t| t.is("session")) {
        name = toks.next();
        if name.is_some_and(|t| t.is("characteristics") || t.is("authorization")) {
            return reset();
        }
    }
    let Some(name) = name else {
        return SqlEffects::default();
    };
    if name.is("search_path") || name.is("schema") {
        return SqlEffects {
            search_path: true,
            ..SqlEffects::default()
        };
    }
    if name.is("time") || name.is("names") || REPORTED.iter().any(|r| name.is(r)) {
        return SqlEffects::default();
    }
    reset()
}

fn reset() -> SqlEffects {
    SqlEffects {
        needs_reset: true,
        ..SqlEffects::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(sql: &str) -> (bool, bool) {
        let f = inspect(sql.as_bytes());
        (f.search_path, f.needs_reset)
    }

    #[test]
    fn classifies_session_effects() {
        let table: &[(&str, (bool, bool))] = &[
            ("select 1", (false, false)),
            ("UPDATE t SET a = 1", (false, false)),
            ("SET application_name = 'x'", (false, false)),
            ("set TimeZone to 'UTC'", (false, false)),
            ("SET TIME ZONE 'UTC'", (false, false)),
            ("SET LOCAL statement_timeout = 1", (false, false)),
            ("SET statement_timeout = 1", (false, true)),
            ("SET SESSION statement_timeout = 1", (false, true)),
            ("set search_path = a", (true, false)),
            ("SET SCHEMA 'a'", (true, false)),
            ("select 1; set work_mem='1MB'", (false, true)),
            ("select 'set work_mem=1'", (false, false)),
            ("/* x */ SET ROLE bob", (false, true)),
            ("SET SESSION AUTHORIZATION bob", (false, true)),
            ("SELECT set_config('search_path', 'a', false)", (true, true)),
            ("select pg_advisory_lock(1)", (false, true)),
            ("select pg_advisory_xact_lock(1)", (false, false)),
            ("CREATE TEMP TABLE t (a int)", (false, true)),
            ("LISTEN ch", (false, true)),
            ("RESET ALL", (true, false)),
            ("DISCARD ALL", (true, false)),
            (
                "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                (false, false),
            ),
            ("BEGIN; SET LOCAL work_mem = '1MB'; COMMIT", (false, false)),
        ];
        assert!(inspect(b"select 1; execute s(1)").prepared);
        assert!(inspect(b"DEALLOCATE ALL").prepared);
        assert!(!inspect(b"select 'execute'").prepared);
        for (sql, want) in table {
            assert_eq!(fx(sql), *want, "{sql}");
        }
    }
}
