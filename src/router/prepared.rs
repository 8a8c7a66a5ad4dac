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
    let mut out = Vec::new();
    let mut lx = Lexer::new(sql);
    let mut at_start = true;
    while let Some(t) = lx.next() {
        if t == Token::Semicolon {
            at_start = true;
            continue;
        }
        if !at_start {
            continue;
        }
        at_start = false;
        let start = lx.token_start();
        if t.is("prepare") {
            let Some(name) = lx.next().and_then(ident) else {
                continue;
            };
            let mut end = lx.offset();
            while let Some(t) = lx.next() {
                if t == Token::Semicolon {
                    at_start = true;
                    break;
                }
                end = lx.offset();
            }
            out.push(SqlPrepared::Prepare {
                name,
                text: &sql[start..end],
            });
        } else if t.is("execute") {
            if let Some(name) = lx.next().and_then(ident) {
                out.push(SqlPrepared::Execute { name });
            }
        } else if t.is("deallocate") {
            let mut n = lx.next();
            if n.is_some_and(|t| t.is("prepare")) {
                n = lx.next();
            }
            match n {
                Some(t) if t.is("all") => out.push(SqlPrepared::DeallocateAll),
                Some(t) => {
                    if let Some(name) = ident(t) {
                        out.push(SqlPrepared::Deallocate { name });
                    }
                }
                None => {}
            }
        } else if t.is("discard") && lx.next().is_some_and(|t| t.is("all")) {
            out.push(SqlPrepared::DeallocateAll);
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
        assert!(scan(b"select 1").is_empty());
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
