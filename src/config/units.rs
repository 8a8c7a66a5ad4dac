//! Durations and sizes written with units ("30s", "64MiB").
//!
//! Units are mandatory (except for zero) because a bare number is the most
//! common way to get a timeout wrong by a factor of 1000: PgBouncer takes
//! seconds, PostgreSQL mostly milliseconds. Errors here are messages
//! without the key; the caller prefixes the key's path.

use std::time::Duration;

/// Longest accepted duration. Far beyond any sensible timeout, yet small
/// enough that `Instant::now() + d` cannot overflow anywhere it is used.
const MAX_DURATION_SECS: u64 = 1_000_000 * 3600;

const DURATION_UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];

const KIB: u64 = 1024;
const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", KIB),
    ("MiB", KIB * KIB),
    ("GiB", KIB * KIB * KIB),
];

/// Splits "30s" into its number and unit, rejecting the mistakes both kinds
/// of value share: empty, negative, fractional, missing number, overflow.
fn split_number<'a>(value: &'a str, example: &str) -> Result<(u64, &'a str), String> {
    let s = value.trim();
    if s.is_empty() {
        return Err(format!("empty value; write e.g. {example:?}"));
    }
    if s.starts_with('-') {
        return Err(format!(
            "{value:?} is negative; only zero or positive values are allowed"
        ));
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, rest) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "{value:?} does not start with a number; write e.g. {example:?}"
        ));
    }
    if rest.starts_with('.') {
        return Err(format!(
            "{value:?} has a fraction; use whole numbers of a smaller unit"
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is too large"))?;
    Ok((number, rest.trim_start()))
}

/// Parses "500ms", "30s", "5m", "1h", or "0" (zero needs no unit).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(value, "30s")?;
    if unit.is_empty() {
        if number == 0 {
            return Ok(Duration::ZERO);
        }
        return Err(format!("{value:?} has no unit; write e.g. \"{number}s\""));
    }
    let Some(&(_, millis_per_unit)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "{value:?} has an unknown unit {unit:?}; use ms, s, m or h"
        ));
    };
    let too_large = || format!("{value:?} is too large; the limit is 1000000h");
    let millis = number.checked_mul(millis_per_unit).ok_or_else(too_large)?;
    if millis / 1000 > MAX_DURATION_SECS {
        return Err(too_large());
    }
    Ok(Duration::from_millis(millis))
}

/// The canonical spelling: "0", or the largest unit that divides the value
/// exactly ("2m", "1500ms"). Sub-millisecond parts, which the parser never
/// produces, are rounded up so a timeout is never rendered as shorter.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0".to_owned();
    }
    let mut millis = d.as_millis();
    if d.subsec_nanos() % 1_000_000 != 0 {
        millis += 1;
    }
    let (name, per_unit) = DURATION_UNITS
        .iter()
        .rev()
        .find(|(_, per)| millis % u128::from(*per) == 0)
        .copied()
        .unwrap_or(("ms", 1));
    format!("{}{name}", millis / u128::from(per_unit))
}

/// Parses "512B", "8KiB", "64MiB", "1GiB", or a plain number of bytes.
/// Decimal units (KB, MB) are refused: whether they mean 1000 or 1024 is a
/// guess, and a wrong guess silently changes a limit.
pub fn parse_size(value: &str) -> Result<usize, String> {
    let (number, unit) = split_number(value, "64MiB")?;
    let bytes_per_unit = if unit.is_empty() {
        1
    } else {
        match SIZE_UNITS.iter().find(|(name, _)| *name == unit) {
            Some(&(_, per)) => per,
            None => {
                return Err(format!(
                    "{value:?} has an unknown unit {unit:?}; use B, KiB, MiB or GiB (1KiB = 1024 bytes)"
                ))
            }
        }
    };
    number
        .checked_mul(bytes_per_unit)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// The canonical spelling: the largest unit that divides the value exactly.
pub fn format_size(bytes: usize) -> String {
    let bytes = bytes as u64;
    let (name, per_unit) = SIZE_UNITS
        .iter()
        .rev()
        .find(|(_, per)| bytes != 0 && bytes % per == 0)
        .copied()
        .unwrap_or(("B", 1));
    format!("{}{name}", bytes / per_unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 15 s "), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("1000000h"),
            Ok(Duration::from_secs(MAX_DURATION_SECS))
        );
    }

    #[test]
    fn bad_durations() {
        let err = |s: &str| parse_duration(s).unwrap_err();
        assert_eq!(err("30"), r#""30" has no unit; write e.g. "30s""#);
        assert!(err("-5s").contains("negative"), "{}", err("-5s"));
        assert!(err("-0").contains("negative"));
        assert!(err("1.5s").contains("fraction"));
        assert!(err("30x").contains(r#"unknown unit "x"; use ms, s, m or h"#));
        assert!(err("30S").contains("unknown unit"));
        assert!(err("30sec").contains("unknown unit"));
        assert!(err("").contains("empty"));
        assert!(err("s").contains("does not start with a number"));
        assert!(err("+5s").contains("does not start with a number"));
        assert!(err("99999999999999999999999s").contains("too large"));
        assert!(err("18446744073709551615h").contains("too large"));
        assert!(err("1000001h").contains("too large"));
    }

    #[test]
    fn duration_formatting_is_canonical() {
        assert_eq!(format_duration(Duration::ZERO), "0");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_micros(1500)), "2ms");
        for s in ["500ms", "30s", "5m", "1h", "0", "1000000h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes() {
        let err = |s: &str| parse_size(s).unwrap_err();
        assert!(err("64MB").contains(r#"unknown unit "MB"; use B, KiB, MiB or GiB"#));
        assert!(err("8kib").contains("unknown unit"));
        assert!(err("1K").contains("unknown unit"));
        assert!(err("-1KiB").contains("negative"));
        assert!(err("1.5MiB").contains("fraction"));
        assert!(err("MiB").contains("does not start with a number"));
        assert!(err("99999999999999999999").contains("too large"));
        assert!(err("17179869184GiB").contains("too large"));
    }

    #[test]
    fn size_formatting_is_canonical() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(512), "512B");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(8192), "8KiB");
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(3 << 30), "3GiB");
        for s in ["512B", "8KiB", "64MiB", "1GiB"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
    }
}
