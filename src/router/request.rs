//! A request as routing sees it: the simple Query, or the extended batch
//! up to its Sync, waiting in the client's buffer, folded into one class
//! (read, read-only transaction, write), its hint, and whether it may be
//! sent a second time. Pure.

use crate::prepared::client::ClientStatements;
use crate::protocol::frontend::{peek_message, FrontendMessage, Target};
use crate::sql::{self, Class, Known};

/// What the buffered request is, as far as routing goes.
pub struct Request {
    pub class: Class,
    pub hint: Option<sql::Hint>,
    pub batch_len: Option<usize>,
    pub simple: bool,
    /// Sending the batch a second time means what it meant the first. The
    /// first run already applied the batch's Parse and Close of named
    /// statements; that matters only to a Bind or Describe of a name that
    /// a later message of the batch parses or closes.
    pub replayable: bool,
}

/// Classifies the request at the front of `buf`: a simple Query, or an
/// extended batch up to its Sync (a batch whose Sync has not arrived, or
/// that names an unknown statement, counts as a write). The effects of its
/// Query or Parse texts go into `known`, for the relay (each text is lexed
/// once).
pub fn inspect(
    buf: &[u8],
    max: usize,
    stmts: &ClientStatements,
    writers: &[String],
    known: &mut Known,
) -> Request {
    known.clear();
    let mut req = Request {
        class: Class::Read,
        hint: None,
        batch_len: None,
        simple: false,
        replayable: true,
    };
    let mut batch = Batch::default();
    let mut at = 0;
    while let Ok(Some((msg, len))) = peek_message(&buf[at..], max) {
        at += len;
        let sql = match batch.sql_of(&msg, at == len, stmts, &mut req) {
            Ok(sql) => sql,
            Err(()) => {
                // Something routing cannot judge: the primary.
                req.class = Class::Write;
                return req;
            }
        };
        if let Some(sql) = sql {
            if req.hint.is_none() {
                req.hint = sql::hint(sql);
            }
            let class = match msg {
                FrontendMessage::Query { .. } | FrontendMessage::Parse { .. } => {
                    known.analyze(sql, writers)
                }
                FrontendMessage::Bind { statement: b"", .. } => match batch.unnamed_class {
                    Some(c) => c,
                    None => sql::classify(sql, writers),
                },
                _ => sql::classify(sql, writers),
            };
            if let FrontendMessage::Parse { name: b"", .. } = msg {
                batch.unnamed_class = Some(class);
            }
            req.class = worst(req.class, class);
        }
        if msg.ends_batch() {
            req.batch_len = Some(at);
            return req;
        }
    }
    // No Sync yet (a large message still arriving, or a batch left open):
    // the primary.
    req.class = Class::Write;
    req
}

/// The class of two statements run together.
fn worst(a: Class, b: Class) -> Class {
    match (a, b) {
        (Class::Write, _) | (_, Class::Write) => Class::Write,
        (Class::ReadOnlyTx, _) | (_, Class::ReadOnlyTx) => Class::ReadOnlyTx,
        _ => Class::Read,
    }
}

/// What the batch so far has named.
#[derive(Default)]
struct Batch<'a> {
    /// The unnamed statement parsed in this batch.
    unnamed: Option<&'a [u8]>,
    /// Its class (known from its Parse).
    unnamed_class: Option<Class>,
    /// Named statements bound or described so far in this batch.
    used: Vec<&'a [u8]>,
}

impl<'a> Batch<'a> {
    /// The SQL one message runs, if any (a Bind runs its statement's);
    /// marks the request a write when it binds a statement unknown here,
    /// and not replayable when it closes or redefines one it used. `Err`:
    /// a message routing cannot judge. `first`: the message opens the buffer.
    fn sql_of(
        &mut self,
        msg: &FrontendMessage<'a>,
        first: bool,
        stmts: &'a ClientStatements,
        req: &mut Request,
    ) -> Result<Option<&'a [u8]>, ()> {
        Ok(match *msg {
            FrontendMessage::Query { sql } if first => {
                req.simple = true;
                Some(sql)
            }
            FrontendMessage::Parse { name, sql, .. } => {
                if name.is_empty() {
                    self.unnamed = Some(sql);
                } else if self.used.contains(&name) {
                    req.replayable = false;
                }
                Some(sql)
            }
            // An unnamed statement parsed in an earlier batch: unknown here.
            FrontendMessage::Bind { statement: b"", .. } if self.unnamed.is_none() => {
                req.class = Class::Write;
                None
            }
            FrontendMessage::Bind { statement: b"", .. } => self.unnamed,
            FrontendMessage::Bind { statement, .. } => {
                self.used.push(statement);
                match stmts.get(statement) {
                    Some(def) => Some(&def.sql[..]),
                    None => {
                        req.class = Class::Write;
                        None
                    }
                }
            }
            FrontendMessage::Describe(Target::Statement(name)) if !name.is_empty() => {
                self.used.push(name);
                None
            }
            FrontendMessage::Close(Target::Statement(name)) if !name.is_empty() => {
                if self.used.contains(&name) {
                    req.replayable = false;
                }
                None
            }
            FrontendMessage::Describe(_)
            | FrontendMessage::Execute
            | FrontendMessage::Close(_)
            | FrontendMessage::Sync => None,
            _ => return Err(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frontend::query;
    use std::sync::Arc;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        msg(
            b'P',
            &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat(),
        )
    }

    fn bind(stmt: &str) -> Vec<u8> {
        msg(b'B', &[b"\0", stmt.as_bytes(), b"\0\0\0\0\0\0\0"].concat())
    }

    fn sync() -> Vec<u8> {
        msg(b'S', b"")
    }

    fn execute() -> Vec<u8> {
        msg(b'E', b"\0\0\0\0\0")
    }

    fn class(parts: &[Vec<u8>], stmts: &ClientStatements) -> (Class, Option<usize>) {
        let buf = parts.concat();
        let writers: Vec<String> = vec!["nextval".into()];
        let r = inspect(&buf, 1 << 20, stmts, &writers, &mut Known::default());
        (r.class, r.batch_len)
    }

    #[test]
    fn classifies_buffered_requests() {
        let mut stmts = ClientStatements::default();
        stmts.insert(
            b"s_read",
            Arc::new(crate::prepared::client::StmtDef::new(b"SELECT 1", b"\0\0")),
        );
        stmts.insert(
            b"s_write",
            Arc::new(crate::prepared::client::StmtDef::new(
                b"DELETE FROM t",
                b"\0\0",
            )),
        );
        let q = query("SELECT 1");
        assert_eq!(
            class(std::slice::from_ref(&q), &stmts),
            (Class::Read, Some(q.len()))
        );
        assert_eq!(
            class(&[query("INSERT INTO t VALUES (1)")], &stmts).0,
            Class::Write
        );
        assert_eq!(
            class(&[query("BEGIN READ ONLY")], &stmts).0,
            Class::ReadOnlyTx
        );
        // Extended: the Parse text, or the named statement a Bind uses, up to Sync.
        let batch = [parse("", "SELECT 1"), bind(""), execute(), sync()];
        let len = batch.concat().len();
        assert_eq!(class(&batch, &stmts), (Class::Read, Some(len)));
        assert_eq!(
            class(&[bind("s_read"), execute(), sync()], &stmts).0,
            Class::Read
        );
        assert_eq!(
            class(&[bind("s_write"), execute(), sync()], &stmts).0,
            Class::Write
        );
        assert_eq!(
            class(&[bind("unknown"), execute(), sync()], &stmts).0,
            Class::Write
        );
        assert_eq!(
            class(&[bind(""), execute(), sync()], &stmts).0,
            Class::Write
        );
        assert_eq!(
            class(
                &[
                    parse("", "SELECT nextval('s')"),
                    bind(""),
                    execute(),
                    sync()
                ],
                &stmts
            )
            .0,
            Class::Write
        );
        // A read followed by a write in the same batch; a batch without its Sync.
        let mixed = [
            bind("s_read"),
            execute(),
            bind("s_write"),
            execute(),
            sync(),
        ];
        assert_eq!(class(&mixed, &stmts).0, Class::Write);
        assert_eq!(
            class(&[parse("", "SELECT 1"), bind("")], &stmts),
            (Class::Write, None)
        );
        // Only the first batch counts: the lease serves no more than it.
        let (c, len) = class(&[query("SELECT 1"), query("DELETE FROM t")], &stmts);
        assert_eq!((c, len), (Class::Read, Some(query("SELECT 1").len())));
    }

    #[test]
    fn a_batch_that_closes_or_redefines_a_statement_it_uses_is_not_sent_twice() {
        let mut stmts = ClientStatements::default();
        stmts.insert(
            b"s1",
            Arc::new(crate::prepared::client::StmtDef::new(b"SELECT 1", b"\0\0")),
        );
        let replayable = |parts: &[Vec<u8>]| {
            let buf = parts.concat();
            inspect(&buf, 1 << 20, &stmts, &[], &mut Known::default()).replayable
        };
        assert!(replayable(&[bind("s1"), execute(), sync()]));
        assert!(replayable(&[
            parse("s2", "SELECT 2"),
            bind("s2"),
            execute(),
            sync()
        ]));
        assert!(replayable(&[
            parse("", "SELECT 2"),
            bind(""),
            execute(),
            sync()
        ]));
        let close_s1 = msg(b'C', b"Ss1\0");
        let describe_s1 = msg(b'D', b"Ss1\0");
        // A replay would bind a name the first run closed or redefined.
        assert!(!replayable(&[
            bind("s1"),
            execute(),
            close_s1.clone(),
            sync()
        ]));
        assert!(!replayable(&[
            bind("s1"),
            execute(),
            parse("s1", "SELECT 3"),
            sync()
        ]));
        assert!(!replayable(&[describe_s1, close_s1.clone(), sync()]));
        // Closing or redefining first means the same both times (drivers
        // close a statement in a batch of its own).
        assert!(replayable(&[close_s1, sync()]));
        assert!(replayable(&[
            parse("s1", "SELECT 3"),
            bind("s1"),
            execute(),
            sync()
        ]));
        // Closing a portal forgets nothing a replay needs.
        let close_portal = msg(b'C', b"P\0");
        assert!(replayable(&[bind("s1"), execute(), close_portal, sync()]));
    }
}
