//! Issue 12: no input panics the SQL inspection that runs on every query of
//! a routed client. Arbitrary bytes, arbitrary strings, and strings built
//! from the fragments that open and close comments, quotes and dollar
//! quotes go through the hint parser, the lexer, the classifier, pglittle's
//! own SET/SHOW parser, the session-effects scan and the PREPARE scan.

use proptest::prelude::*;

use super::classify::{classify, hint, DEFAULT_WRITERS};
use super::lexer::{block_comment_end, Lexer};
use super::{effects, local, prepare as prepared};

/// Pieces that start or end a lexical state, or that the parsers look for.
const FRAGMENTS: &[&str] = &[
    "/*",
    "*/",
    "/",
    "*",
    "/*/",
    "*/*",
    "--",
    "\n",
    " ",
    "\t",
    "'",
    "''",
    "\"",
    "E'",
    "e'",
    "\\",
    "\\'",
    "$",
    "$$",
    "$a$",
    "$1",
    "$_$",
    ";",
    "(",
    ")",
    "=",
    "x",
    "SELECT",
    "select 1",
    "pglittle:replica",
    "pglittle:primary",
    "/* pglittle:replica */",
    "SET",
    "RESET",
    "SHOW",
    "SESSION",
    "pglittle.",
    "pglittle.min_lsn",
    "pglittle.route",
    "pglittle.lsn",
    "TO",
    "'0/16B3748'",
    "0/",
    "primary",
    "begin read only",
    "commit",
    "for update",
    "nextval",
    "pg_advisory",
    "PREPARE p AS",
    "EXECUTE p",
    "DEALLOCATE",
    "ALL",
    "DISCARD",
    "LISTEN",
    "é",
    "\u{80}",
    "\u{0}",
    "\u{feff}",
    "\u{2028}",
];

/// Runs every parser on `sql`; a panic fails the property.
fn inspect_all(sql: &[u8]) {
    let _ = hint(sql);
    let _ = classify(sql, DEFAULT_WRITERS);
    let _ = classify(sql, &["lo_*", "audit"]);
    let _ = local::parse(sql);
    let _ = effects::inspect(sql);
    let _ = prepared::scan(sql);
    let mut lx = Lexer::new(sql);
    while lx.next().is_some() {
        assert!(
            lx.token_start() <= lx.offset(),
            "token ends before it starts"
        );
        assert!(lx.offset() <= sql.len(), "token past the end of the input");
    }
    if let Some(len) = block_comment_end(sql) {
        assert!((4..=sql.len()).contains(&len));
        assert!(sql[..len].ends_with(b"*/"));
    }
}

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|v| v.concat())
}

proptest! {
    // Seeds of past failures live beside this file
    // (`no_panic_tests.regressions`), not in a top-level folder.
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(sql in prop::collection::vec(any::<u8>(), 0..300)) {
        inspect_all(&sql);
    }

    #[test]
    fn arbitrary_strings_never_panic(sql in any::<String>()) {
        inspect_all(sql.as_bytes());
    }

    #[test]
    fn comment_and_quote_fragments_never_panic(sql in fragments()) {
        inspect_all(sql.as_bytes());
    }

    #[test]
    fn fragments_cut_anywhere_never_panic(sql in fragments(), cut in any::<prop::sample::Index>()) {
        // A query cut mid-character or mid-token (a truncated packet).
        let bytes = sql.as_bytes();
        let cut = cut.index(bytes.len() + 1);
        inspect_all(&bytes[..cut]);
        inspect_all(&bytes[cut..]);
    }

    #[test]
    fn a_hint_after_any_leading_comments_is_found(
        comments in prop::collection::vec("([a-z /]{0,7}[a-z ])?", 0..4),
        replica in any::<bool>(),
        query in fragments(),
    ) {
        // Leading comments that close cleanly: no `*` inside, so none
        // ends early, and no body ends in `/`, which would open a nested
        // comment with the closing `*/`. Then the hint: it is always seen.
        let mut sql = String::new();
        for c in &comments {
            sql.push_str(&format!("/*{c}*/ "));
        }
        let want = if replica { "replica" } else { "primary" };
        sql.push_str(&format!("/* pglittle:{want} */ {query}"));
        let got = hint(sql.as_bytes());
        let expected = if replica { super::Hint::Replica } else { super::Hint::Primary };
        prop_assert_eq!(got, Some(expected), "{}", sql);
    }
}

#[test]
fn the_issue_12_input_does_not_panic() {
    inspect_all(b"/*/ x */ SELECT 1");
    for cut in 0..=b"/*/ x */ SELECT 1".len() {
        inspect_all(&b"/*/ x */ SELECT 1"[..cut]);
    }
}
