//! A result set built in memory and written with the protocol's backend
//! encoders: RowDescription, DataRow per row, CommandComplete.

use bytes::BytesMut;

use crate::protocol::backend;

/// PostgreSQL type OIDs used by the console (PgBouncer uses the same).
pub const TEXT: u32 = 25;
pub const INT4: u32 = 23;
pub const INT8: u32 = 20;
pub const NUMERIC: u32 = 1700;

pub struct Table {
    columns: Vec<(&'static str, u32)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, u32)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; values are already text. A short row is padded with NULLs.
    pub fn row(&mut self, mut values: Vec<Option<String>>) {
        values.resize(self.columns.len(), None);
        self.rows.push(values);
    }

    pub fn encode(&self, out: &mut BytesMut) {
        backend::row_description(out, &self.columns);
        for r in &self.rows {
            let values: Vec<Option<&str>> = r.iter().map(|v| v.as_deref()).collect();
            backend::data_row(out, &values);
        }
        backend::command_complete(out, "SHOW");
    }
}

/// Shorthand for a non-NULL cell.
pub fn v(x: impl ToString) -> Option<String> {
    Some(x.to_string())
}

/// A float cell with fixed decimals (numeric columns).
pub fn num(x: f64, decimals: usize) -> Option<String> {
    if x.is_finite() {
        Some(format!("{x:.decimals$}"))
    } else {
        None
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time in microseconds, as PgBouncer
/// prints connect_time and request_time.
pub fn timestamp(unix_micros: u64) -> String {
    let secs = unix_micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(timestamp(1_795_364_319_000_000), "2026-11-22 16:18:39 UTC");
    }

    #[test]
    fn rows_are_padded_and_encoded() {
        let mut t = Table::new(&[("a", TEXT), ("b", INT4)]);
        t.row(vec![v("x")]);
        let mut out = BytesMut::new();
        t.encode(&mut out);
        assert_eq!(out[0], b'T');
        assert_eq!(num(1.23456, 2).as_deref(), Some("1.23"));
        assert_eq!(num(f64::INFINITY, 2), None);
    }
}
