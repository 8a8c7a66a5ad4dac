//! Pure statement analysis, no I/O, table-tested and fuzzed: the lexer,
//! which statements change session state (`effects`, `settings`), whether
//! a request only reads (`classify`), SQL PREPARE/EXECUTE/DEALLOCATE
//! (`prepare`), the statements pglittle answers itself (`local`), and
//! which reads may run twice (`rerun`). `analyze` lexes a text once for
//! both routing and effects; the relay is handed what it found.

pub mod classify;
pub mod commit;
pub mod effects;
pub mod lexer;
pub mod local;
pub mod prepare;
pub mod rerun;
pub mod settings;

#[cfg(test)]
mod no_panic_tests;

pub use classify::{classify, hint, Class, Hint};
pub use effects::{inspect, SqlEffects};

pub use lexer::Spans;

/// Whether a text reads only, and what it does to the session, from one
/// lexing of it.
pub fn analyze<S: AsRef<str>>(sql: &[u8], writers: &[S]) -> (Class, SqlEffects) {
    let mut spans = Spans::default();
    spans.fill(sql);
    if u32::try_from(sql.len()).is_err() {
        return (classify(sql, writers), inspect(sql));
    }
    let class = classify::classify_tokens(spans.cursor(sql), writers);
    (class, effects::inspect_tokens(spans.cursor(sql)))
}

/// The effects of a request's SQL texts (its Query, or its Parses), in
/// order, found while routing it: the relay takes each instead of lexing
/// its text again. Emptied at the start of every request.
#[derive(Debug, Default)]
pub struct Known {
    /// (text length, its effects), in the order of the messages.
    effects: Vec<(usize, SqlEffects)>,
    /// The next entry `effects_of` hands out.
    next: usize,
}

impl Known {
    pub fn clear(&mut self) {
        self.effects.clear();
        self.next = 0;
    }

    /// Analyzes the next text of the request (lexing it once) and keeps its
    /// effects for the relay.
    pub fn analyze<S: AsRef<str>>(&mut self, sql: &[u8], writers: &[S]) -> Class {
        let (class, fx) = analyze(sql, writers);
        self.effects.push((sql.len(), fx));
        class
    }

    /// The effects of the next text the relay sees: the ones found while
    /// routing, when it is that text (same place in the order, same
    /// length), or else from inspecting it now.
    pub fn effects_of(&mut self, sql: &[u8]) -> SqlEffects {
        match self.effects.get(self.next) {
            Some(&(len, fx)) if len == sql.len() => {
                self.next += 1;
                fx
            }
            _ => {
                // Out of step: trust none of the rest.
                self.next = usize::MAX;
                inspect(sql)
            }
        }
    }
}

#[cfg(test)]
mod analyze_tests {
    use super::*;

    #[test]
    fn one_lexing_answers_as_the_two_analyses_do() {
        let w = classify::DEFAULT_WRITERS;
        for sql in [
            "SELECT 1",
            "SELECT set_config('a.b', '1', false)",
            "SELECT set_config(name, '1', false) FROM t",
            "SET search_path TO DEFAULT; select nextval('s')",
            "BEGIN READ ONLY; SELECT * FROM t; COMMIT",
            "CREATE TEMP TABLE x (a int)",
            "SELECT pg_advisory_lock (1)",
            "EXPLAIN EXECUTE p(1)",
            "DO $$ begin perform 1; end $$",
            "LISTEN x; select 1 for update",
            "SET TIME ZONE LOCAL",
            "",
        ] {
            let got = analyze(sql.as_bytes(), w);
            let want = (classify(sql.as_bytes(), w), inspect(sql.as_bytes()));
            assert_eq!(got, want, "{sql}");
        }
    }

    #[test]
    fn the_relay_is_handed_what_routing_found_in_order_and_only_that() {
        let w = classify::DEFAULT_WRITERS;
        let (a, b) = (&b"SET x.y = 1"[..], &b"SELECT 1"[..]);
        let mut k = Known::default();
        assert_eq!(k.analyze(a, w), Class::Write);
        assert_eq!(k.analyze(b, w), Class::Read);
        assert_eq!(k.effects_of(a), inspect(a));
        assert_eq!(k.effects_of(b), inspect(b));
        // Past the end, or out of step: inspected afresh.
        assert_eq!(k.effects_of(a), inspect(a));
        k.clear();
        k.analyze(b, w);
        assert_eq!(k.effects_of(a), inspect(a), "another text");
        assert_eq!(k.effects_of(b), inspect(b));
    }
}
