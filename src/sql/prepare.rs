//! SQL-level prepared statements (`PREPARE`, `EXECUTE`, `DEALLOCATE`,
//! `DISCARD ALL`) found in a simple query, so the session can keep each
//! client's statements whichever server it is lent.

use super::lexer::{Lexer, Token};

#[derive(Debug, PartialEq, Eq)]
pub enum SqlPrepared<'a> {
    /// `PREPARE name ... AS ...`: `text` is the whole statement, to replay.
    Prepare {
        name: Vec<u8>,
        text: &'a [u8],
    },
    Execute {
        name: Vec<u8>,
    },
    Deallocate {
        name: Vec<u8>,
    },
    /// `DEALLOCATE ALL` or `DISCARD ALL`: every prepared statement is gone.
    DeallocateAll,
}

/// Folds an identifier as PostgreSQL does: bare words to lower case.
fn ident(t: Token<'_>) -> Option<Vec<u8>> {
    match t {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::Quoted(q) => Some(q.replace_doubled_quotes()),
        _ => None,
    }
}

trait Unquote {
    fn replace_doubled_quotes(&self) -> Vec<u8>;
}

impl Unquote for [u8] {
    fn replace_doubled_quotes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        let mut i = 0;
        while i < self.len() {
            out.push(self[i]);
            i += if self[i] == b'"' && self.get(i + 1) == Some(&b'"') {
                2
            } else {
                1
            };
        }
        out
    }
}

/// Every prepared-statement command in `sql`, in order.
pub fn scan(sql: &[u8]) -> Vec<SqlPrepared<'_>> {
    scan_numbered(sql).into_iter().map(|(_, op)| op).collect()
}

/// After `PREPARE`: the statement's name, and where its text ends (at its
/// semicolon; `None`: the end of the query). `None` for PREPARE
/// TRANSACTION 'gid' (two-phase commit), which is no statement.
fn prepare_at(lx: &mut Lexer<'_>) -> Option<(Option<usize>, Vec<u8>)> {
    let mut ahead = lx.clone();
    let name = ahead.next().and_then(ident)?;
    // Its string literal leaves no token, so AS or ( never follows.
    if name == b"transaction" {
        let mut after = ahead.clone();
        if !after
            .next()
            .is_some_and(|t| t.is("as") || t == Token::Punct(b'('))
        {
            return None;
        }
    }
    *lx = ahead;
    // The statement runs to its semicolon: string literals leave no token,
    // so the last token is not its end.
    while let Some(t) = lx.next() {
        if t == Token::Semicolon {
            return Some((Some(lx.token_start()), name));
        }
    }
    Some((None, name))
}

/// After `DEALLOCATE`: `[PREPARE] name` or `[PREPARE] ALL`.
fn deallocate_at<'a>(lx: &mut Lexer<'a>) -> Option<SqlPrepared<'a>> {
    let mut n = lx.next();
    if n.is_some_and(|t| t.is("prepare")) {
        n = lx.next();
    }
    match n? {
        t if t.is("all") => Some(SqlPrepared::DeallocateAll),
        t => ident(t).map(|name| SqlPrepared::Deallocate { name }),
    }
}

/// Like `scan`, with the index of the statement each command is in
/// (counting non-empty statements from 0), so a PREPARE can be undone
/// when an earlier statement of the same query failed.
pub fn scan_numbered(sql: &[u8]) -> Vec<(usize, SqlPrepared<'_>)> {
    let mut out = Vec::new();
    let mut lx = Lexer::new(sql);
    let mut at_start = true;
    let mut statement = 0usize;
    let mut first: Option<Token<'_>> = None;
    let mut prev: Option<Token<'_>> = None;
    while let Some(t) = lx.next() {
        let before = prev.replace(t);
        if t == Token::Semicolon {
            if !at_start {
                statement += 1;
            }
            at_start = true;
            continue;
        }
        if !at_start {
            // EXPLAIN [options] EXECUTE name; CREATE TABLE ... AS EXECUTE name.
            let runs = first.is_some_and(|f| f.is("explain"))
                || (first.is_some_and(|f| f.is("create")) && before.is_some_and(|p| p.is("as")));
            if t.is("execute") && runs {
                let mut ahead = lx.clone();
                if let Some(name) = ahead.next().and_then(ident) {
                    lx = ahead;
                    out.push((statement, SqlPrepared::Execute { name }));
                }
            }
            continue;
        }
        at_start = false;
        first = Some(t);
        let start = lx.token_start();
        if t.is("prepare") {
            let Some((text_end, name)) = prepare_at(&mut lx) else {
                continue;
            };
            let end = text_end.unwrap_or(sql.len());
            let text = &sql[start..end];
            out.push((statement, SqlPrepared::Prepare { name, text }));
            if text_end.is_some() {
                statement += 1;
                at_start = true;
            }
        } else if t.is("execute") {
            if let Some(name) = lx.next().and_then(ident) {
                out.push((statement, SqlPrepared::Execute { name }));
            }
        } else if t.is("deallocate") {
            if let Some(d) = deallocate_at(&mut lx) {
                out.push((statement, d));
            }
        } else if t.is("discard") && lx.next().is_some_and(|t| t.is("all")) {
            out.push((statement, SqlPrepared::DeallocateAll));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_prepare_execute_deallocate() {
        let sql = b"PREPARE Foo (int) AS select $1 + 1; execute foo(1); EXECUTE \"Bar\"; deallocate prepare foo; DEALLOCATE ALL; discard all; select 'prepare x'";
        let ops = scan(sql);
        assert_eq!(
            ops,
            vec![
                SqlPrepared::Prepare {
                    name: b"foo".to_vec(),
                    text: b"PREPARE Foo (int) AS select $1 + 1"
                },
                SqlPrepared::Execute {
                    name: b"foo".to_vec()
                },
                SqlPrepared::Execute {
                    name: b"Bar".to_vec()
                },
                SqlPrepared::Deallocate {
                    name: b"foo".to_vec()
                },
                SqlPrepared::DeallocateAll,
                SqlPrepared::DeallocateAll,
            ]
        );
        assert_eq!(
            scan(b"PREPARE s AS SELECT 'a;b' ; select 2"),
            vec![SqlPrepared::Prepare {
                name: b"s".to_vec(),
                text: b"PREPARE s AS SELECT 'a;b' "
            }]
        );
        assert!(scan(b"select 1").is_empty());
        assert!(scan(b"PREPARE TRANSACTION 'x'").is_empty());
        assert!(scan(b"prepare transaction 'x'; select 1").is_empty());
        assert_eq!(
            scan(b"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE q(1)"),
            vec![SqlPrepared::Execute {
                name: b"q".to_vec()
            }]
        );
        assert_eq!(
            scan(b"CREATE TEMP TABLE t AS EXECUTE q(41)"),
            vec![SqlPrepared::Execute {
                name: b"q".to_vec()
            }]
        );
        assert!(scan(b"CREATE TRIGGER t AFTER INSERT ON x EXECUTE FUNCTION f()").is_empty());
        let numbered =
            scan_numbered(b"select 1;; PREPARE a AS select 1; select 2; PREPARE b AS select 3");
        let at: Vec<usize> = numbered.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, vec![1, 3]);
        assert!(scan(b"select 'execute x'").is_empty());
        assert!(scan(b"update t set a = 1").is_empty());
        assert_eq!(
            scan(b"deallocate d"),
            vec![SqlPrepared::Deallocate {
                name: b"d".to_vec()
            }]
        );
    }
}
