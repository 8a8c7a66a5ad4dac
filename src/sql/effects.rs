//! What a statement does to session state, so transaction pooling can keep
//! every client's session to itself.

use super::lexer::{Lexer, Token, Tokens};

/// Session-level side effects found in a query string.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SqlEffects {
    /// A session-level SET or RESET of a setting the server does not
    /// report, RESET ALL, DISCARD ALL, or `set_config('literal', ...)`:
    /// `settings::changes` says which, and the session reads the values
    /// back at the end of the transaction so they follow the client.
    pub settings: bool,
    /// State pglittle can neither carry nor check (SET SESSION
    /// AUTHORIZATION, `set_config` with a computed name, a DO block): the
    /// server is reset before anyone else gets it.
    pub needs_reset: bool,
    /// Temp tables, WITH HOLD cursors or session advisory locks may exist:
    /// checked at the end of the transaction (reset, or pinned with
    /// `pin_on_session_state`).
    pub session_state: bool,
    /// LISTEN or UNLISTEN: a listening client keeps its server.
    pub listen: bool,
    /// A statement starts with PREPARE, EXECUTE, DEALLOCATE or DISCARD, or
    /// an EXPLAIN or CREATE ... AS runs EXECUTE: worth a closer look by
    /// `sql::prepare::scan`.
    pub prepared: bool,
    /// A statement controls transactions (BEGIN, COMMIT, SAVEPOINT...) or
    /// runs COPY: no query of pglittle's may follow it in the same
    /// pipeline (`sql::commit`).
    pub blocks: bool,
}

impl SqlEffects {
    pub fn merge(&mut self, other: SqlEffects) {
        self.settings |= other.settings;
        self.needs_reset |= other.needs_reset;
        self.session_state |= other.session_state;
        self.listen |= other.listen;
        self.prepared |= other.prepared;
        self.blocks |= other.blocks;
    }
}

/// Parameters whose changes the server reports with ParameterStatus, which
/// pglittle follows per client; SETting them needs no reading back.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
];

/// Functions that take session-level advisory locks.
const LOCK_FUNCTIONS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// True when PostgreSQL accepts this statement in a failed transaction
/// block (Parse of anything else is 25P02 there): COMMIT, END, ROLLBACK,
/// ABORT (also ROLLBACK TO), PREPARE TRANSACTION, or no statement at all.
pub fn ends_failed_block(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql);
    let Some(first) = lx.find(|t| *t != Token::Semicolon) else {
        return true;
    };
    ["commit", "end", "rollback", "abort"]
        .iter()
        .any(|k| first.is(k))
        || (first.is("prepare") && lx.next().is_some_and(|t| t.is("transaction")))
}

/// Scans a query string (one or many statements).
pub fn inspect(sql: &[u8]) -> SqlEffects {
    if plainly_without_effects(sql) {
        return SqlEffects::default();
    }
    inspect_tokens(Lexer::new(sql))
}

/// First words of statements that have no session effect of their own.
const PLAIN_FIRST_WORDS: &[&[u8]] = &[b"select", b"insert", b"update", b"delete"];

/// Words whose presence anywhere (in any case, even inside a longer word,
/// a string or a comment) may mean an effect: `temp`/`temporary`/`pg_temp`,
/// `hold`, `set_config`, the advisory lock functions.
const EFFECT_WORDS: &[&[u8]] = &[b"temp", b"hold", b"set_config", b"advisory"];

/// Pure, conservative and cheap: true only when `inspect_tokens` would
/// find nothing, proven without lexing. One statement (a `;` only at the
/// end) that starts with SELECT, INSERT, UPDATE or DELETE, and no byte
/// sequence that could start an effect word. Anything else (a leading
/// comment, a second statement, `temp` in a string) is lexed.
pub fn plainly_without_effects(sql: &[u8]) -> bool {
    let start = sql.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return false;
    };
    let rest = &sql[start..];
    let word_len = rest.iter().position(|b| !b.is_ascii_alphabetic());
    let word = &rest[..word_len.unwrap_or(rest.len())];
    if !PLAIN_FIRST_WORDS
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
    {
        return false;
    }
    if let Some(semi) = memchr::memchr(b';', rest) {
        if !rest[semi + 1..].iter().all(u8::is_ascii_whitespace) {
            return false;
        }
    }
    // set_config and the lock functions matter only as calls.
    !has_effect_word(rest, memchr::memchr(b'(', rest).is_some())
}

/// Whether one of `EFFECT_WORDS` occurs in `text` (ASCII case ignored;
/// the function names only when `calls`, the text has a parenthesis).
fn has_effect_word(text: &[u8], calls: bool) -> bool {
    let has = |word: &[u8]| {
        let (lower, upper) = (word[0], word[0].to_ascii_uppercase());
        memchr::memchr2_iter(lower, upper, text).any(|i| {
            text.get(i..i + word.len())
                .is_some_and(|here| here.eq_ignore_ascii_case(word))
        })
    };
    has(EFFECT_WORDS[0])
        || has(EFFECT_WORDS[1])
        || (calls && (has(EFFECT_WORDS[2]) || has(EFFECT_WORDS[3])))
}

/// `inspect` over tokens already lexed (`super::analyze`).
pub fn inspect_tokens<'a>(mut lx: impl Tokens<'a>) -> SqlEffects {
    let mut fx = SqlEffects::default();
    let mut at_start = true;
    // The first word of the current statement.
    let mut first: Option<Token<'_>> = None;
    while let Some(t) = lx.next() {
        if t == Token::Semicolon {
            at_start = true;
            continue;
        }
        if let Token::Word(w) = t {
            word_effects(w, &mut lx, &mut fx);
            if t.is("execute") && first.is_some_and(|f| f.is("explain") || f.is("create")) {
                fx.prepared = true;
            }
        }
        if !at_start {
            continue;
        }
        at_start = false;
        first = Some(t);
        fx.blocks |= super::commit::blocks_pipelining(t);
        if t.is("set") {
            fx.merge(set_effects(&mut lx));
        } else if t.is("reset") || t.is("discard") {
            fx.settings = true;
            fx.prepared |= t.is("discard");
        } else if t.is("prepare") || t.is("execute") || t.is("deallocate") {
            fx.prepared = true;
        } else if t.is("listen") || t.is("unlisten") {
            fx.listen = true;
        } else if t.is("do") {
            fx.needs_reset = true;
        }
    }
    fx
}

/// Effects of a word anywhere in a statement.
fn word_effects<'a>(w: &[u8], lx: &mut impl Tokens<'a>, fx: &mut SqlEffects) {
    let is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
    if is("temp") || is("temporary") || is("hold") || starts_with_ci(w, b"pg_temp") {
        fx.session_state = true;
    } else if LOCK_FUNCTIONS.iter().any(|f| is(f)) {
        let mut ahead = lx.clone();
        if ahead.next() == Some(Token::Punct(b'(')) {
            fx.session_state = true;
        }
    } else if is("set_config") {
        let mut ahead = lx.clone();
        if ahead.next() == Some(Token::Punct(b'(')) {
            if super::settings::literal_at(lx.source(), ahead.offset()).is_some() {
                fx.settings = true;
            } else {
                fx.needs_reset = true;
            }
        }
    }
}

fn starts_with_ci(w: &[u8], prefix: &[u8]) -> bool {
    w.len() >= prefix.len() && w[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn set_effects<'a>(lx: &mut impl Tokens<'a>) -> SqlEffects {
    let mut name = lx.next();
    if name.is_some_and(|t| t.is("local") || t.is("transaction") || t.is("constraints")) {
        return SqlEffects::default();
    }
    if name.is_some_and(|t| t.is("session")) {
        name = lx.next();
        if name.is_some_and(|t| t.is("authorization")) {
            return SqlEffects {
                needs_reset: true,
                ..SqlEffects::default()
            };
        }
    }
    let Some(name) = name else {
        return SqlEffects::default();
    };
    if name.is("names") || name.is("time") || REPORTED.iter().any(|r| name.is(r)) {
        // The server reports the new value, except that `TO DEFAULT` means
        // the session's start value, which the server does not know.
        return SqlEffects {
            settings: !name.is("names") && super::settings::to_default(lx.clone()),
            ..SqlEffects::default()
        };
    }
    // A dotted name (`myapp.x`) starts with a word that is no reported name.
    SqlEffects {
        settings: true,
        ..SqlEffects::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        // The fast path may only ever say "nothing" where the lexer agrees.
        #[test]
        fn the_fast_path_never_hides_an_effect(
            first in proptest::sample::select(&["SELECT ", "insert ", "Update ", "DELETE"][..]),
            parts in proptest::collection::vec(proptest::sample::select(&[
                " ", "x", "(", ")", ";", "'", "\"", "--", "\n", "/*", "*/", "$$", ",", "1",
                "temp", "TEMPORARY", "pg_temp.t", "hold", "HOLD", "set_config", "SET",
                "pg_advisory_lock", "pg_try_advisory_lock_shared", "into", "with", "cursor",
                "DO", "listen", "prepare", "execute", "explain", "create", "reset", "discard",
            ][..]), 0..24),
        ) {
            let sql = format!("{first}{}", parts.concat());
            if plainly_without_effects(sql.as_bytes()) {
                proptest::prop_assert_eq!(
                    inspect_tokens(Lexer::new(sql.as_bytes())),
                    SqlEffects::default(),
                    "{}", sql
                );
            }
        }
    }

    #[test]
    fn plain_statements_skip_the_lexer_and_nothing_else_does() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "  select 1",
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2;\n",
            "INSERT INTO h (tid, mtime) VALUES (1, CURRENT_TIMESTAMP)",
            "delete from t where id = $1",
        ] {
            assert!(plainly_without_effects(sql.as_bytes()), "{sql}");
            assert_eq!(
                inspect_tokens(Lexer::new(sql.as_bytes())),
                SqlEffects::default()
            );
        }
        for sql in [
            "SELECT 1; SET x = 1",
            "SELECT pg_advisory_lock(1)",
            "SELECT set_config('a.b', '1', false)",
            "SELECT * INTO TEMP t FROM x",
            "select * into Temporary t from x",
            "SELECT 'temp'",
            "/* c */ SELECT 1",
            "SET search_path = a",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "",
            "   ",
            "SELECTx 1",
        ] {
            assert!(!plainly_without_effects(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn a_reported_setting_set_to_default_is_followed() {
        assert!(!inspect(b"SET application_name = 'x'").settings);
        assert!(inspect(b"SET application_name TO DEFAULT").settings);
        assert!(inspect(b"SET TIME ZONE LOCAL").settings);
        assert!(!inspect(b"SET TIME ZONE 'UTC'").settings);
    }

    #[test]
    fn what_a_failed_block_accepts() {
        for sql in [
            "COMMIT",
            " end",
            "/* x */ rollback to s",
            "ABORT",
            "prepare transaction 'x'",
            "",
            ";",
        ] {
            assert!(ends_failed_block(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "prepare p as select 1",
            "begin",
            "select 'commit'",
        ] {
            assert!(!ends_failed_block(sql.as_bytes()), "{sql}");
        }
    }

    /// (settings, needs_reset, session_state, listen)
    type Fx = (bool, bool, bool, bool);

    fn fx(sql: &str) -> Fx {
        let f = inspect(sql.as_bytes());
        (f.settings, f.needs_reset, f.session_state, f.listen)
    }

    #[test]
    fn classifies_session_effects() {
        const NONE: Fx = (false, false, false, false);
        const SETTINGS: Fx = (true, false, false, false);
        const RESET: Fx = (false, true, false, false);
        const STATE: Fx = (false, false, true, false);
        const LISTEN: Fx = (false, false, false, true);
        let table: &[(&str, Fx)] = &[
            ("select 1", NONE),
            ("UPDATE t SET a = 1", NONE),
            ("SET application_name = 'x'", NONE),
            ("set TimeZone to 'UTC'", NONE),
            ("SET TIME ZONE 'UTC'", NONE),
            ("SET LOCAL statement_timeout = 1", NONE),
            ("SET statement_timeout = 1", SETTINGS),
            ("SET SESSION statement_timeout = 1", SETTINGS),
            ("set search_path = a", SETTINGS),
            ("SET SCHEMA 'a'", SETTINGS),
            ("select 1; set work_mem='1MB'", SETTINGS),
            ("select 'set work_mem=1'", NONE),
            ("/* x */ SET ROLE bob", SETTINGS),
            ("SET SESSION AUTHORIZATION bob", RESET),
            ("SELECT set_config('search_path', 'a', false)", SETTINGS),
            ("SELECT set_config(n, 'a', false) FROM t", RESET),
            ("select pg_advisory_lock(1)", STATE),
            ("select pg_advisory_xact_lock(1)", NONE),
            ("CREATE TEMP TABLE t (a int)", STATE),
            ("CREATE TABLE pg_temp.t (a int)", STATE),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", STATE),
            ("LISTEN ch", LISTEN),
            ("UNLISTEN *", LISTEN),
            ("RESET ALL", SETTINGS),
            ("DISCARD ALL", SETTINGS),
            ("DO $$ BEGIN PERFORM 1; END $$", RESET),
            ("-- c\rSET work_mem = 1", SETTINGS),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", NONE),
            ("BEGIN; SET LOCAL work_mem = '1MB'; COMMIT", NONE),
        ];
        assert!(inspect(b"select 1; execute s(1)").prepared);
        assert!(inspect(b"DEALLOCATE ALL").prepared);
        assert!(inspect(b"EXPLAIN (ANALYZE) EXECUTE s(1)").prepared);
        assert!(inspect(b"CREATE TABLE t AS EXECUTE s").prepared);
        assert!(!inspect(b"select 'execute'").prepared);
        for (sql, want) in table {
            assert_eq!(fx(sql), *want, "{sql}");
        }
    }
}
