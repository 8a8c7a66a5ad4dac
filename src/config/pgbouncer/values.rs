//! Parsing PgBouncer's values: times, numbers, ports, lists, modes.

use std::time::Duration;

use super::ini::Entry;
use super::ImportError;

/// A PgBouncer time: seconds, possibly fractional, or a number with a unit.
pub(super) fn seconds(e: &Entry) -> Result<Duration, ImportError> {
    let v = e.value.as_str();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let bad = || e.bad_number(&e.key, "seconds such as 30 or 0.5", v);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(bad()),
    };
    let secs = number.parse::<f64>().map_err(|_| bad())? * scale;
    if secs > 3.6e9 {
        return Err(bad()); // pglittle's longest duration is 1000000h
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

pub(super) fn whole(e: &Entry, key: &str, value: &str) -> Result<u64, ImportError> {
    value
        .parse()
        .map_err(|_| e.bad_number(key, "a whole number", value))
}

/// The first port of a list.
pub(super) fn port(e: &Entry, key: &str, value: &str) -> Result<u16, ImportError> {
    let port = value.split(',').next().unwrap_or("").trim();
    port.parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| e.bad_number(key, "a port 1-65535", value))
}

/// The first item of a comma-separated list ("" if none), and whether
/// more follow.
pub(super) fn first_of(list: &str) -> (&str, bool) {
    let mut items = list.split(',').map(str::trim).filter(|i| !i.is_empty());
    (items.next().unwrap_or(""), items.next().is_some())
}

/// `session` and `transaction` as they are; `statement` as the nearest,
/// with `true` for the approximation.
pub(super) fn pool_mode(e: &Entry, value: &str) -> Result<(&'static str, bool), ImportError> {
    match value.to_ascii_lowercase().as_str() {
        "session" => Ok(("session", false)),
        "transaction" => Ok(("transaction", false)),
        "statement" => Ok(("transaction", true)),
        _ => Err(e.bad_value("session, transaction, statement", value)),
    }
}

pub(super) fn tls_mode(e: &Entry, v: &str) -> Result<&'static str, ImportError> {
    const MODES: &str = "disable, allow, prefer, require, verify-ca, verify-full";
    let lower = v.to_ascii_lowercase();
    MODES
        .split(", ")
        .find(|m| *m == lower)
        .ok_or_else(|| e.bad_value(MODES, v))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ok, typed};

    #[test]
    fn times_are_seconds_unless_they_carry_a_unit() {
        for (value, want) in [
            ("30", "30s"),
            ("0.5", "500ms"),
            ("15.0", "15s"),
            ("600", "10m"),
            ("250ms", "250ms"),
            ("2min", "2m"),
            ("0", "0"),
        ] {
            let out = ok(&format!(
                "[databases]\na = host=h\n[pgbouncer]\nquery_wait_timeout = {value}\n"
            ));
            assert!(
                out.toml
                    .contains(&format!("query_wait_timeout = \"{want}\"\n")),
                "{value}: {}",
                out.toml
            );
            typed(&out.toml);
        }
    }
}
