//! Statements pglittle answers itself and never forwards: `SET`, `RESET`
//! and `SHOW` of `pglittle.min_lsn`, `pglittle.route` and `pglittle.lsn`.

use std::fmt;
use std::str::FromStr;

use crate::protocol::Lsn;

/// `SET pglittle.route = ...` / the `pglittle.route` startup parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteOverride {
    #[default]
    Auto,
    Primary,
    Replica,
}

impl FromStr for RouteOverride {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(RouteOverride::Auto),
            "primary" => Ok(RouteOverride::Primary),
            "replica" => Ok(RouteOverride::Replica),
            _ => Err(format!(
                "pglittle.route: expected \"auto\", \"primary\" or \"replica\", got {s:?}"
            )),
        }
    }
}

impl fmt::Display for RouteOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteOverride::Auto => "auto",
            RouteOverride::Primary => "primary",
            RouteOverride::Replica => "replica",
        })
    }
}

/// One of pglittle's own session variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The causal token: this session's read-your-writes floor.
    Lsn,
    MinLsn,
    Route,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    SetMinLsn(Lsn),
    SetRoute(RouteOverride),
    Reset(Var),
    Show(Var),
}

/// `None` when `sql` is not about a `pglittle.` variable; `Some(Err)` with
/// a message when it is, but malformed.
/// A query of several statements, one of which is pglittle's own SET, RESET
/// or SHOW: PostgreSQL would fail on it half-way, so none of it is run.
fn mixed_in(sql: &[u8]) -> Option<String> {
    use super::lexer::{Lexer, Token};
    let mut lx = Lexer::new(sql);
    let (mut statements, mut own, mut at_start) = (0usize, false, true);
    while let Some(t) = lx.next() {
        if t == Token::Semicolon {
            at_start = true;
            continue;
        }
        if !at_start {
            continue;
        }
        at_start = false;
        statements += 1;
        if t.is("set") || t.is("reset") || t.is("show") {
            let mut name = lx.next();
            if name.is_some_and(|n| n.is("session")) {
                name = lx.next();
            }
            own |= name.is_some_and(|n| n.is("pglittle")) && lx.next() == Some(Token::Punct(b'.'));
        }
    }
    (own && statements > 1).then(|| {
        "pglittle's own SET, RESET and SHOW of pglittle.* must be sent alone, as a query of \
         their own; this query has other statements too, and none of it was run"
            .to_string()
    })
}

/// Whether "pglittle" (any case) appears in `sql`: a vectorised search
/// for its first letter, then a look at the next seven bytes.
fn mentions_pglittle(sql: &[u8]) -> bool {
    memchr::memchr2_iter(b'p', b'P', sql).any(|i| {
        sql.get(i..i + 8)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"pglittle"))
    })
}

pub fn parse(sql: &[u8]) -> Option<Result<Local, String>> {
    // Runs for every simple query of a routed client: reject the common case
    // (no "pglittle" anywhere) on bytes, without allocating or validating UTF-8.
    if !mentions_pglittle(sql) {
        return None;
    }
    if let Some(e) = mixed_in(sql) {
        return Some(Err(e));
    }
    let text = std::str::from_utf8(sql).ok()?;
    let text = text.trim().trim_end_matches(';').trim();
    let (verb, rest) = split_word(text);
    let verb = verb.to_ascii_lowercase();
    if !matches!(verb.as_str(), "set" | "reset" | "show") {
        return None;
    }
    let (mut name, mut rest) = split_name(rest);
    if verb == "set" && name.eq_ignore_ascii_case("session") {
        (name, rest) = split_name(rest);
    }
    let var = name
        .to_ascii_lowercase()
        .strip_prefix("pglittle.")
        .map(str::to_owned)?;
    let var = match var.as_str() {
        "lsn" => Var::Lsn,
        "min_lsn" => Var::MinLsn,
        "route" => Var::Route,
        other => {
            return Some(Err(format!(
                "unrecognized pglittle parameter \"pglittle.{other}\""
            )))
        }
    };
    Some(match verb.as_str() {
        "show" if rest.is_empty() => Ok(Local::Show(var)),
        "reset" if rest.is_empty() => Ok(Local::Reset(var)),
        "set" => set(var, rest),
        _ => Err(format!("syntax error in {verb} pglittle.{name}")),
    })
}

fn set(var: Var, rest: &str) -> Result<Local, String> {
    let value = rest
        .strip_prefix('=')
        .or_else(|| {
            let (w, r) = split_word(rest);
            w.eq_ignore_ascii_case("to").then_some(r)
        })
        .ok_or("expected = or TO after the parameter name")?
        .trim();
    let value = unquote(value);
    match var {
        Var::MinLsn => value
            .parse()
            .map(Local::SetMinLsn)
            .map_err(|e| format!("pglittle.min_lsn: {e}")),
        Var::Route => value.parse().map(Local::SetRoute),
        Var::Lsn => Err("pglittle.lsn is read-only; set pglittle.min_lsn".into()),
    }
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => v.to_string(),
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s.find(|c: char| c.is_whitespace()).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start())
}

/// A parameter name ends at whitespace or `=`.
fn split_name(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = s
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(s.len());
    (&s[..end], s[end..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<Result<Local, String>> {
        parse(s.as_bytes())
    }

    #[test]
    fn the_quick_search_finds_the_name_in_any_case_and_place() {
        for sql in ["pglittle", "SHOW PgLittle.lsn", "x ppglittle", "p pglittlE"] {
            assert!(mentions_pglittle(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "",
            "p",
            "pglittl",
            "SELECT abalance FROM pgbench_accounts",
            "pg little",
        ] {
            assert!(!mentions_pglittle(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn own_commands_among_other_statements_are_refused_whole() {
        for sql in [
            "INSERT INTO t VALUES (1); SHOW pglittle.lsn",
            "SET pglittle.route = 'primary'; SELECT 1",
            "select 1; set session pglittle.min_lsn = '0/1'",
        ] {
            let got = p(sql);
            assert!(
                matches!(&got, Some(Err(e)) if e.contains("alone")),
                "{sql}: {got:?}"
            );
        }
        assert_eq!(p("SELECT 'pglittle.lsn'; SELECT 2"), None);
        assert!(matches!(p("SHOW pglittle.lsn;"), Some(Ok(_))));
    }

    #[test]
    fn parses_pglittle_commands() {
        let lsn: Lsn = "0/16B3748".parse().unwrap();
        assert_eq!(
            p("SET pglittle.min_lsn = '0/16B3748'"),
            Some(Ok(Local::SetMinLsn(lsn)))
        );
        assert_eq!(
            p("set pglittle.min_lsn to '0/16B3748';"),
            Some(Ok(Local::SetMinLsn(lsn)))
        );
        assert_eq!(
            p("SET SESSION pglittle.min_lsn='0/16B3748'"),
            Some(Ok(Local::SetMinLsn(lsn)))
        );
        assert_eq!(
            p("SET pglittle.route = primary"),
            Some(Ok(Local::SetRoute(RouteOverride::Primary)))
        );
        assert_eq!(
            p("SET pglittle.route TO 'replica'"),
            Some(Ok(Local::SetRoute(RouteOverride::Replica)))
        );
        assert_eq!(
            p("RESET pglittle.route"),
            Some(Ok(Local::Reset(Var::Route)))
        );
        assert_eq!(p("SHOW pglittle.lsn"), Some(Ok(Local::Show(Var::Lsn))));
        assert_eq!(
            p(" show PGLITTLE.MIN_LSN ; "),
            Some(Ok(Local::Show(Var::MinLsn)))
        );
        assert!(matches!(p("SET pglittle.min_lsn = 'nope'"), Some(Err(_))));
        assert!(matches!(p("SET pglittle.route = sideways"), Some(Err(_))));
        assert!(matches!(p("SET pglittle.other = 1"), Some(Err(_))));
        assert!(matches!(p("SET pglittle.lsn = '0/1'"), Some(Err(_))));
        assert_eq!(p("SET work_mem = '1MB'"), None);
        assert_eq!(p("SELECT 1"), None);
        assert_eq!(p("SHOW search_path"), None);
    }
}
