//! Whether the server is outside any transaction block once a client's
//! message has run, so that a read of the commit's WAL position may be
//! pipelined right behind it on the same server (read-your-writes,
//! `relay::tx_record`): the statements that may not be followed
//! (`SqlEffects::blocks`), and the Query that ends a block. Pure and conservative:
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

/// Whether the simple Query `sql`, run inside a transaction block (a
/// failed one included), leaves the server outside any: exactly one COMMIT,
/// END, ROLLBACK or ABORT, with nothing but WORK or TRANSACTION after it
/// (AND CHAIN opens the next block at once). Outside a block, a Query whose
/// `SqlEffects::blocks` is false leaves the server outside one too: it is
/// its own implicit transaction, over when it ends.
pub fn ends_block(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql);
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
    fn statement_effects_say_what_blocks_a_probe() {
        let blocks = |sql: &str| crate::sql::inspect(sql.as_bytes()).blocks;
        for sql in [
            "BEGIN",
            "begin; update t set v = 1",
            "UPDATE t SET v = 1; START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "update t set v = 1; commit",
            "COPY t FROM STDIN",
            "select 1; copy t to stdout",
            "PREPARE TRANSACTION 'x'",
            "SAVEPOINT s",
        ] {
            assert!(blocks(sql), "{sql}");
        }
        for sql in [
            "UPDATE a SET v = 1 WHERE id = 2",
            "insert into t values (1); select 1;",
            "/* begin */ DELETE FROM t -- commit",
            "SELECT 'begin; copy'",
            "insert into begin values (1)",
            "CALL p()",
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
            assert!(ends_block(sql.as_bytes()), "{sql}");
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
            assert!(!ends_block(sql.as_bytes()), "{sql}");
        }
    }
}
