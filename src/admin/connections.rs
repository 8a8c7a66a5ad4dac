//! SHOW CLIENTS and SHOW SERVERS: one row per connection, with PgBouncer
//! 1.18's columns.

use std::time::{Instant, SystemTime};

use super::show::now_micros;
use super::table::{timestamp, v, Table, INT4, TEXT};
use crate::shared::clients::ClientState;
use crate::shared::Shared;

const CONN_COLUMNS: &[(&str, u32)] = &[
    ("type", TEXT),
    ("user", TEXT),
    ("database", TEXT),
    ("state", TEXT),
    ("addr", TEXT),
    ("port", INT4),
    ("local_addr", TEXT),
    ("local_port", INT4),
    ("connect_time", TEXT),
    ("request_time", TEXT),
    ("wait", INT4),
    ("wait_us", INT4),
    ("close_needed", INT4),
    ("ptr", TEXT),
    ("link", TEXT),
    ("remote_pid", INT4),
    ("tls", TEXT),
    ("application_name", TEXT),
];

/// pglittle's columns after PgBouncer's in SHOW CLIENTS: `pinned` says why
/// a transaction-mode client keeps its server between transactions
/// (`listen`, `temp_tables`, `hold_cursors`, `advisory_locks`), empty if not.
const CLIENT_EXTRA: &[(&str, u32)] = &[("pinned", TEXT)];

pub fn clients(shared: &Shared) -> Table {
    let columns: Vec<(&'static str, u32)> =
        CONN_COLUMNS.iter().chain(CLIENT_EXTRA).copied().collect();
    let mut t = Table::new(&columns);
    let now = now_micros();
    for c in shared.client_list.all() {
        let Some(l) = c.login() else { continue };
        let state = c.state();
        let waited = if state == ClientState::Waiting {
            now.saturating_sub(c.changed_micros())
        } else {
            0
        };
        let connected = c
            .connected
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        t.row(vec![
            v("C"),
            v(&l.user),
            v(&l.database),
            v(if state == ClientState::Waiting {
                "waiting"
            } else {
                "active"
            }),
            v(c.addr.ip()),
            v(c.addr.port()),
            c.local.map(|a| a.ip().to_string()),
            c.local.map(|a| a.port().to_string()),
            v(timestamp(connected)),
            v(timestamp(c.changed_micros())),
            v(waited / 1_000_000),
            v(waited % 1_000_000),
            v(0),
            v(format!("0x{:x}", c.id)),
            v(""),
            v(0),
            v(""),
            v(&l.application_name),
            v(c.pinned().unwrap_or("")),
        ]);
    }
    t
}

pub fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(CONN_COLUMNS);
    let (now_i, now_u) = (Instant::now(), now_micros());
    let wall =
        |at: Instant| timestamp(now_u.saturating_sub(now_i.duration_since(at).as_micros() as u64));
    for p in shared.pools.all() {
        let target = p.target();
        for s in p.servers() {
            t.row(vec![
                v("S"),
                v(&p.user),
                v(&p.database),
                v(s.state.as_str()),
                v(&target.host),
                v(target.port),
                None,
                None,
                v(wall(s.created)),
                v(wall(s.since)),
                v(0),
                v(0),
                v(0),
                v(format!("0x{:x}", s.id)),
                v(""),
                v(s.pid),
                v(""),
                v(""),
            ]);
        }
    }
    t
}
