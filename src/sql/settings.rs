//! Which session settings a query SETs or RESETs, in order, so a setting
//! follows its client from server to server instead of vanishing at the end
//! of the transaction. Only called for queries `effects::inspect` flagged.

use super::lexer::{Lexer, Token, Tokens};

/// One change to session settings, in the order the query makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingOp {
    /// `SET name ...` or `set_config('name', ...)`: the value is read back
    /// from the server after the transaction (a rolled-back SET is undone).
    Set(String),
    /// `RESET name`: on PostgreSQL it returns to the session's start value.
    Reset(String),
    /// `RESET ALL` (`discard: false`) or `DISCARD ALL` (`discard: true`,
    /// which also resets the role).
    ResetAll { discard: bool },
    /// `ROLLBACK` or `ABORT` (also `ROLLBACK TO SAVEPOINT`): what came
    /// before in the transaction may be undone.
    Rollback,
}

/// The setting changes in `sql`, in order. Names are lower case.
pub fn changes(sql: &[u8]) -> Vec<SettingOp> {
    let mut out = Vec::new();
    let mut lx = Lexer::new(sql);
    let mut at_start = true;
    while let Some(t) = lx.next() {
        if t == Token::Semicolon {
            at_start = true;
            continue;
        }
        if t.is("set_config") {
            let mut ahead = lx.clone();
            if ahead.next() == Some(Token::Punct(b'(')) {
                if let Some((name, _)) = literal_at(sql, ahead.offset()) {
                    // `is_local => true` lasts for the transaction only:
                    // nothing follows the client (as SET LOCAL).
                    if !third_argument_true(ahead) {
                        out.push(SettingOp::Set(lower(&name)));
                    }
                }
            }
        }
        if !at_start {
            continue;
        }
        at_start = false;
        if t.is("rollback") || t.is("abort") {
            out.push(SettingOp::Rollback);
        } else if t.is("set") {
            if let Some(names) = set_target(&mut lx) {
                if names.len() == 1 && to_default(lx.clone()) {
                    // `SET x TO DEFAULT` is RESET x.
                    out.extend(names.into_iter().map(SettingOp::Reset));
                } else {
                    out.extend(names.into_iter().map(SettingOp::Set));
                }
            }
        } else if t.is("reset") {
            match lx.next() {
                Some(t) if t.is("all") => out.push(SettingOp::ResetAll { discard: false }),
                Some(t) if t.is("session") => out.push(SettingOp::Reset("role".into())),
                Some(t) => {
                    if let Some(name) = dotted_name(t, &mut lx) {
                        out.push(SettingOp::Reset(name));
                    }
                }
                None => {}
            }
        } else if t.is("discard") && lx.next().is_some_and(|t| t.is("all")) {
            out.push(SettingOp::ResetAll { discard: true });
        }
    }
    out
}

/// Inside `set_config(` (the lexer just past the parenthesis): the third
/// argument is the literal `true`. Arguments are skipped by their commas
/// at depth 0, so `set_config('x', f(a, b), true)` is read right.
fn third_argument_true(mut lx: Lexer<'_>) -> bool {
    let mut depth = 0usize;
    let mut commas = 0;
    while let Some(t) = lx.next() {
        match t {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') if depth == 0 => return false,
            Token::Punct(b')') => depth -= 1,
            Token::Punct(b',') if depth == 0 => {
                commas += 1;
                if commas == 2 {
                    let arg = lx.next();
                    let end = lx.next();
                    return arg.is_some_and(|a| a.is("true")) && end == Some(Token::Punct(b')'));
                }
            }
            Token::Semicolon => return false,
            _ => {}
        }
    }
    false
}

/// After a SET's name: the value is `DEFAULT` (`TO DEFAULT`, `= DEFAULT`,
/// and `TIME ZONE DEFAULT` or `LOCAL`).
pub fn to_default<'a>(mut lx: impl Tokens<'a>) -> bool {
    let mut t = lx.next();
    let zone = t.is_some_and(|t| t.is("zone"));
    if zone {
        t = lx.next();
    }
    if t.is_some_and(|t| t.is("to") || t == Token::Punct(b'=')) {
        t = lx.next();
    }
    let default = t.is_some_and(|t| t.is("default") || (zone && t.is("local")));
    default && lx.next().is_none_or(|t| t == Token::Semicolon)
}

/// The names a session-level `SET` (after the keyword) changes.
fn set_target(lx: &mut Lexer<'_>) -> Option<Vec<String>> {
    let mut t = lx.next()?;
    if t.is("local") || t.is("transaction") || t.is("constraints") {
        return None;
    }
    if t.is("session") {
        t = lx.next()?;
        if t.is("characteristics") {
            return Some(
                [
                    "default_transaction_isolation",
                    "default_transaction_read_only",
                    "default_transaction_deferrable",
                ]
                .map(String::from)
                .to_vec(),
            );
        }
        if t.is("authorization") {
            return None;
        }
    }
    if t.is("time") {
        return Some(vec!["timezone".into()]);
    }
    if t.is("names") {
        return Some(vec!["client_encoding".into()]);
    }
    if t.is("schema") {
        return Some(vec!["search_path".into()]);
    }
    dotted_name(t, lx).map(|n| vec![n])
}

/// A setting name: `word`, `"Quoted"` or `ext.name`, lower-cased as
/// PostgreSQL matches setting names.
fn dotted_name(first: Token<'_>, lx: &mut Lexer<'_>) -> Option<String> {
    let part = |t: Token<'_>| match t {
        Token::Word(w) | Token::Quoted(w) => Some(lower(w)),
        _ => None,
    };
    let mut name = part(first)?;
    let mut ahead = lx.clone();
    if ahead.next() == Some(Token::Punct(b'.')) {
        if let Some(rest) = ahead.next().and_then(part) {
            *lx = ahead;
            name.push('.');
            name.push_str(&rest);
        }
    }
    Some(name)
}

fn lower(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_lowercase()
}

/// A plain or `E''` string literal starting at `pos` (after whitespace):
/// its value and the offset just past it.
pub fn literal_at(sql: &[u8], mut pos: usize) -> Option<(Vec<u8>, usize)> {
    while sql.get(pos).is_some_and(|c| c.is_ascii_whitespace()) {
        pos += 1;
    }
    let escapes = matches!(sql.get(pos), Some(b'e' | b'E'));
    if escapes {
        pos += 1;
    }
    if sql.get(pos) != Some(&b'\'') {
        return None;
    }
    pos += 1;
    let mut value = Vec::new();
    loop {
        let c = *sql.get(pos)?;
        pos += 1;
        match c {
            b'\\' if escapes => {
                // Only the simple escapes a setting name could use.
                value.push(*sql.get(pos)?);
                pos += 1;
            }
            b'\'' if sql.get(pos) == Some(&b'\'') => {
                value.push(b'\'');
                pos += 1;
            }
            b'\'' => return Some((value, pos)),
            c => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SettingOp::*;

    fn set(n: &str) -> SettingOp {
        Set(n.into())
    }

    #[test]
    fn finds_sets_and_resets_in_order() {
        let table: &[(&str, Vec<SettingOp>)] = &[
            ("SET work_mem = '1MB'", vec![set("work_mem")]),
            ("set session Work_Mem to 1", vec![set("work_mem")]),
            ("SET LOCAL work_mem = 1", vec![]),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", vec![]),
            ("SET myapp.tenant = 'a'", vec![set("myapp.tenant")]),
            ("SET \"MyApp\".x = 'a'", vec![set("myapp.x")]),
            ("SET TIME ZONE 'UTC'", vec![set("timezone")]),
            ("SET SCHEMA 'a'", vec![set("search_path")]),
            ("SET ROLE bob", vec![set("role")]),
            ("SET SESSION AUTHORIZATION bob", vec![]),
            ("SET work_mem TO DEFAULT", vec![Reset("work_mem".into())]),
            (
                "set session work_mem = default;",
                vec![Reset("work_mem".into())],
            ),
            ("SET TIME ZONE LOCAL", vec![Reset("timezone".into())]),
            ("SET TIME ZONE DEFAULT", vec![Reset("timezone".into())]),
            (
                "SET search_path TO default, public",
                vec![set("search_path")],
            ),
            (
                "RESET work_mem; RESET ALL; DISCARD ALL",
                vec![
                    Reset("work_mem".into()),
                    ResetAll { discard: false },
                    ResetAll { discard: true },
                ],
            ),
            (
                "select set_config('myapp.t', $1, false), set_config(e'a\\'b', 'x', true)",
                vec![set("myapp.t")],
            ),
            (
                "select set_config('a', f(1, 2), TRUE), set_config('b', 'x', $1), set_config('c', 'y', true or false)",
                vec![set("b"), set("c")],
            ),
            (
                "begin; reset work_mem; rollback to savepoint s; abort",
                vec![Reset("work_mem".into()), Rollback, Rollback],
            ),
            ("select set_config(name, 'x', false) from t", vec![]),
            ("select 'set work_mem = 1'", vec![]),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", {
                vec![
                    set("default_transaction_isolation"),
                    set("default_transaction_read_only"),
                    set("default_transaction_deferrable"),
                ]
            }),
        ];
        for (sql, want) in table {
            assert_eq!(&changes(sql.as_bytes()), want, "{sql}");
        }
    }

    #[test]
    fn literals_unquote() {
        assert_eq!(literal_at(b"  'it''s' ,", 0), Some((b"it's".to_vec(), 9)));
        assert_eq!(literal_at(b"E'a\\'b'", 0), Some((b"a'b".to_vec(), 7)));
        assert_eq!(literal_at(b"name", 0), None);
        assert_eq!(literal_at(b"'unterminated", 0), None);
        assert_eq!(literal_at(b"E'\\", 0), None);
    }
}
