//! Read/write classification of one request's SQL, for routing reads to
//! replicas. Pure and conservative: anything not recognised with confidence
//! as a read is a write, because a write sent to a replica fails while a
//! read sent to the primary only costs the primary a little.

use super::lexer::{block_comment_end, Lexer, Token};

/// What a query string does, as far as routing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Only reads (one or more SELECT/WITH/VALUES/TABLE/SHOW statements).
    Read,
    /// Opens a read-only transaction (`BEGIN READ ONLY`), possibly followed
    /// by reads and its COMMIT in the same string.
    ReadOnlyTx,
    /// Writes, or cannot be told apart from a write.
    Write,
}

/// A routing hint written as a leading comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

pub use crate::config::DEFAULT_WRITERS;

/// Classifies a query string; `writers` lists the functions that write.
pub fn classify<S: AsRef<str>>(sql: &[u8], writers: &[S]) -> Class {
    classify_tokens(Lexer::new(sql), writers)
}

/// `classify` over tokens already lexed (`super::analyze`).
pub fn classify_tokens<'a, S: AsRef<str>>(
    toks: impl Iterator<Item = Token<'a>>,
    writers: &[S],
) -> Class {
    let mut toks = toks.peekable();
    let mut saw_begin_ro = false;
    let mut saw_any = false;
    loop {
        let stmt = match statement(&mut toks, writers) {
            None => break,
            Some(s) => s,
        };
        match stmt {
            Stmt::Empty => {}
            Stmt::Read => saw_any = true,
            Stmt::BeginReadOnly => {
                saw_any = true;
                saw_begin_ro = true;
            }
            Stmt::End if saw_begin_ro => {}
            Stmt::End | Stmt::Write => return Class::Write,
        }
    }
    if !saw_any {
        return Class::Write;
    }
    if saw_begin_ro {
        Class::ReadOnlyTx
    } else {
        Class::Read
    }
}

/// The hint in the query's leading comments, if any. Comments nest as in
/// PostgreSQL, and the opening `/*` never counts towards the closing `*/`
/// (`/*/ x */ SELECT 1` is one comment, then a query). Never panics.
pub fn hint(sql: &[u8]) -> Option<Hint> {
    let mut rest = sql;
    loop {
        rest = rest.trim_ascii_start();
        let len = block_comment_end(rest)?;
        // `len` >= 4 and covers the `/*` and the `*/`.
        let body = rest.get(2..len - 2)?.trim_ascii();
        if body.eq_ignore_ascii_case(b"pglittle:primary") {
            return Some(Hint::Primary);
        }
        if body.eq_ignore_ascii_case(b"pglittle:replica") {
            return Some(Hint::Replica);
        }
        rest = rest.get(len..)?;
    }
}

enum Stmt {
    Empty,
    Read,
    BeginReadOnly,
    /// COMMIT/END/ROLLBACK/ABORT: harmless after a read-only BEGIN.
    End,
    Write,
}

/// Reads one statement (up to `;` or the end); `None` at the end of input.
fn statement<'a, S: AsRef<str>>(
    toks: &mut std::iter::Peekable<impl Iterator<Item = Token<'a>>>,
    writers: &[S],
) -> Option<Stmt> {
    let first = loop {
        match toks.next()? {
            Token::Semicolon => return Some(Stmt::Empty),
            Token::Punct(b'(') => continue,
            t => break t,
        }
    };
    let kind = if ["select", "with", "values", "table", "show"]
        .iter()
        .any(|k| first.is(k))
    {
        Kind::Read
    } else if first.is("begin") || first.is("start") {
        Kind::Begin
    } else if ["commit", "end", "rollback", "abort"]
        .iter()
        .any(|k| first.is(k))
    {
        Kind::End
    } else {
        Kind::Other
    };
    let mut writes = false;
    let mut read_only = false;
    let mut read_write = false;
    let mut prev = first;
    check_call(first, toks.peek(), writers, &mut writes);
    while let Some(t) = toks.next() {
        if t == Token::Semicolon {
            break;
        }
        match kind {
            Kind::Read => {
                // Data-modifying CTEs, SELECT INTO, FOR UPDATE/SHARE.
                if ["insert", "update", "delete", "merge", "into"]
                    .iter()
                    .any(|k| t.is(k))
                    || (prev.is("for") && (t.is("share") || t.is("no") || t.is("key")))
                {
                    writes = true;
                }
                check_call(t, toks.peek(), writers, &mut writes);
            }
            Kind::Begin => {
                if prev.is("read") && t.is("only") {
                    read_only = true;
                }
                if prev.is("read") && t.is("write") {
                    read_write = true;
                }
            }
            _ => {}
        }
        prev = t;
    }
    Some(match kind {
        Kind::Read if !writes => Stmt::Read,
        Kind::Begin if read_only && !read_write => Stmt::BeginReadOnly,
        Kind::End => Stmt::End,
        _ => Stmt::Write,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Begin,
    End,
    Other,
}

/// A name followed by `(` that is on the writers list marks a write.
fn check_call<S: AsRef<str>>(
    t: Token<'_>,
    next: Option<&Token<'_>>,
    writers: &[S],
    writes: &mut bool,
) {
    if next != Some(&Token::Punct(b'(')) {
        return;
    }
    let is_writer = match t {
        Token::Word(w) => writers.iter().any(|f| matches(f.as_ref(), w, true)),
        Token::Quoted(w) => writers.iter().any(|f| matches(f.as_ref(), w, false)),
        _ => false,
    };
    *writes |= is_writer;
}

fn matches(pattern: &str, name: &[u8], fold: bool) -> bool {
    let eq = |a: &[u8], b: &[u8]| {
        if fold {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern.strip_suffix('*') {
        Some(prefix) => name.len() >= prefix.len() && eq(&name[..prefix.len()], prefix.as_bytes()),
        None => eq(name, pattern.as_bytes()),
    }
}

#[cfg(test)]
mod tests;
