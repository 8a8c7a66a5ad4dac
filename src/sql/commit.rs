//! Whether a simple Query ends the transaction it runs in, so that a read
//! of the commit's WAL position may be pipelined right behind it on the
//! same server (read-your-writes, `relay::state`). Pure and conservative:
//! `false` costs a separate round trip after the transaction, a wrong
//! `true` would run pglittle's query inside the client's transaction (as
//! the first statement of a new REPEATABLE READ block it would take the
//! block's snapshot early) or into a COPY.

use super::lexer::{Lexer, Token};

/// First words after which a Query may leave a block open (or end one, or
/// be something pglittle must not follow with a query: COPY FROM STDIN).
const NOT_OUTSIDE: &[&str] = &[
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "abort",
    "savepoint",
    "release",
    "prepare",
    "copy",
];

/// Whether a statement starting with `first` may leave a block open (or
/// end one) or run COPY: for `SqlEffects::blocks`.
pub fn blocks_pipelining(first: Token<'_>) -> bool {
    NOT_OUTSIDE.iter().any(|k| first.is(k))
}

/// Words that end a transaction block as the only statement of a Query.
const ENDS_BLOCK: &[&str] = &["commit", "end", "rollback", "abort"];

/// Whether the server is outside any transaction block once the simple
/// Query `sql` has run (whatever its outcome), given whether a block was
/// open before it (`in_block`, a failed block included).
///
/// Outside a block: statements none of which controls transactions or
/// copies (the Query is its own implicit transaction, over when it ends).
/// In a block: exactly one COMMIT, END, ROLLBACK or ABORT, with nothing but
/// WORK or TRANSACTION after it (AND CHAIN opens the next block at once).
pub fn ends_outside_block(sql: &[u8], in_block: bool) -> bool {
    let mut lx = Lexer::new(sql);
    if in_block {
        return only_ends_block(&mut lx);
    }
    let mut at_start = true;
    let mut statements = 0;
    for t in lx {
        if t == Token::Semicolon {
            at_start = true;
            continue;
        }
        if at_start {
            if blocks_pipelining(t) {
                return false;
            }
            statements += 1;
            at_start = false;
        }
    }
    statements > 0
}

fn only_ends_block(lx: &mut Lexer<'_>) -> bool {
    let Some(first) = lx.find(|t| *t != Token::Semicolon) else {
        return false;
    };
    if !ENDS_BLOCK.iter().any(|k| first.is(k)) {
        return false;
    }
    let mut rest = lx.filter(|t| *t != Token::Semicolon);
    match rest.next() {
        None => true,
        Some(t) if t.is("work") || t.is("transaction") => rest.next().is_none(),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocommit_statements_end_outside_a_block() {
        for sql in [
            "UPDATE a SET v = 1 WHERE id = 2",
            "insert into t values (1); select 1;",
            "/* begin */ DELETE FROM t -- commit",
            "SELECT 'begin; copy'",
            "CALL p()",
        ] {
            assert!(ends_outside_block(sql.as_bytes(), false), "{sql}");
        }
    }

    #[test]
    fn transaction_control_and_copy_are_not_followed() {
        for sql in [
            "BEGIN",
            "begin; update t set v = 1",
            "UPDATE t SET v = 1; START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "update t set v = 1; commit",
            "COPY t FROM STDIN",
            "select 1; copy t to stdout",
            "PREPARE TRANSACTION 'x'",
            "SAVEPOINT s",
            "",
            " ; ",
        ] {
            assert!(!ends_outside_block(sql.as_bytes(), false), "{sql}");
        }
    }

    #[test]
    fn statement_effects_say_what_blocks_a_probe() {
        let blocks = |sql: &str| crate::sql::inspect(sql.as_bytes()).blocks;
        for sql in [
            "BEGIN",
            "select 1; commit",
            "COPY t FROM STDIN",
            "savepoint a",
        ] {
            assert!(blocks(sql), "{sql}");
        }
        for sql in [
            "select 1",
            "UPDATE t SET v = 1",
            "insert into begin values (1)",
        ] {
            assert!(!blocks(sql), "{sql}");
        }
    }

    #[test]
    fn only_a_plain_commit_or_rollback_ends_a_block() {
        for sql in [
            "COMMIT",
            "end;",
            "commit work",
            "ROLLBACK TRANSACTION;",
            "abort",
        ] {
            assert!(ends_outside_block(sql.as_bytes(), true), "{sql}");
        }
        for sql in [
            "COMMIT AND CHAIN",
            "rollback to savepoint s",
            "ROLLBACK TO s",
            "commit; begin",
            "update t set v = 1; commit",
            "COMMIT PREPARED 'x'",
            "select 1",
            "",
        ] {
            assert!(!ends_outside_block(sql.as_bytes(), true), "{sql}");
        }
    }
}
