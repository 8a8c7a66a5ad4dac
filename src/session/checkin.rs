//! Check-in: what happens to a server when a transaction-mode client's
//! transaction ends, or when any client leaves while holding one. This is
//! the one place a server is cleaned before someone else gets it.
//!
//! At the end of a transaction, in order:
//! 1. Settings the client SET or RESET are read back (one query, only when
//!    the SQL changed a setting the server does not report), so they follow
//!    the client to its next server. RESET returns a setting to the value
//!    the client's session started with, as on PostgreSQL.
//! 2. If the SQL touched LISTEN, temp tables, WITH HOLD cursors or session
//!    advisory locks, the same query asks the server what is left.
//! 3. `decide` picks: keep the server (a listening client, or session state
//!    with `pin_on_session_state`), reset it, or give it back as it is.

use super::Session;
use crate::config::ServerReset;
use crate::pool::params::{canonical_name, quote_literal, Params};
use crate::pool::{Lease, ServerConn};
use crate::router::settings::SettingOp;
use crate::router::SqlEffects;

/// How servers are cleaned for this client (from the config at login).
#[derive(Debug, Clone, Copy)]
pub struct CheckinPolicy {
    pub server_reset: ServerReset,
    pub pin_on_session_state: bool,
}

/// Why a transaction-mode client keeps its server between transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    Listen,
    TempTables,
    HoldCursors,
    AdvisoryLocks,
}

impl PinReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Listen => "listen",
            PinReason::TempTables => "temp_tables",
            PinReason::HoldCursors => "hold_cursors",
            PinReason::AdvisoryLocks => "advisory_locks",
        }
    }
}

/// Session state left on a server: channels listened to, temp relations,
/// WITH HOLD cursors, session advisory locks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    pub listening: u64,
    pub temp: u64,
    pub cursors: u64,
    pub locks: u64,
}

impl ServerState {
    fn any(&self) -> bool {
        self.listening + self.temp + self.cursors + self.locks > 0
    }
}

/// The columns that measure `ServerState`, in its field order.
const STATE_COLUMNS: &str = "(SELECT count(*) FROM pg_listening_channels()), \
     (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()), \
     (SELECT count(*) FROM pg_cursors WHERE is_holdable), \
     (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())";

/// `server_reset = "always"`: everything DISCARD ALL does except dropping
/// prepared statements (pglittle's own, and SQL-level ones it tracks).
pub const ALWAYS_RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// What to do with a server whose client's transaction just ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkin {
    /// Give it back as it is.
    Release,
    /// The client keeps it.
    Pin(PinReason),
    /// DISCARD ALL, then give it back.
    Discard,
    /// Write the `ALWAYS_RESET` without waiting, then give it back.
    ResetPipelined,
}

/// Pure: the check-in decision from what the SQL did and, when it was
/// asked, what is left on the server.
pub fn decide(policy: CheckinPolicy, fx: &SqlEffects, state: Option<&ServerState>) -> Checkin {
    if let Some(s) = state {
        if s.listening > 0 {
            return Checkin::Pin(PinReason::Listen);
        }
        if policy.pin_on_session_state {
            for (n, reason) in [
                (s.temp, PinReason::TempTables),
                (s.cursors, PinReason::HoldCursors),
                (s.locks, PinReason::AdvisoryLocks),
            ] {
                if n > 0 {
                    return Checkin::Pin(reason);
                }
            }
        }
    }
    if policy.server_reset == ServerReset::Always {
        return Checkin::ResetPipelined;
    }
    if fx.needs_reset || state.is_some_and(ServerState::any) {
        return Checkin::Discard;
    }
    Checkin::Release
}

/// Pure: whether the check-in must ask the server what session state is
/// left. Not when `server_reset = "always"` removes it anyway and nothing
/// could pin the client.
pub fn needs_probe(policy: CheckinPolicy, fx: &SqlEffects, pinned: bool) -> bool {
    if pinned || fx.listen {
        return true;
    }
    fx.session_state && (policy.pin_on_session_state || policy.server_reset == ServerReset::Detect)
}

/// The end state of each setting a transaction changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SettingPlan {
    /// RESET ALL (`Some(false)`) or DISCARD ALL (`Some(true)`) ran.
    pub reset_all: Option<bool>,
    /// Settings last RESET: back to the client's start value.
    pub restore: Vec<String>,
    /// Settings last SET: read back from the server.
    pub read: Vec<String>,
}

impl SettingPlan {
    /// Nothing changed: most transactions.
    pub fn is_empty(&self) -> bool {
        self.reset_all.is_none() && self.restore.is_empty() && self.read.is_empty()
    }
}

/// Pure: folds a transaction's setting changes, in order; the last change
/// to each name wins, and RESET ALL forgets everything before it.
pub fn plan_settings(ops: &[SettingOp]) -> SettingPlan {
    let mut plan = SettingPlan::default();
    let mut last: Vec<(String, bool)> = Vec::new(); // (name, read?)
    for op in ops {
        let (name, read) = match op {
            SettingOp::ResetAll { discard } => {
                plan.reset_all = Some(plan.reset_all.unwrap_or(false) | discard);
                last.clear();
                continue;
            }
            SettingOp::Set(n) => (canonical_name(n), true),
            SettingOp::Reset(n) => (canonical_name(n), false),
        };
        last.retain(|(n, _)| *n != name);
        last.push((name, read));
    }
    for (name, read) in last {
        if read {
            plan.read.push(name);
        } else {
            plan.restore.push(name);
        }
    }
    plan
}

/// Pure: applies a plan and the values read back to the client's overrides
/// and to pglittle's model of the server.
pub fn apply_settings(
    plan: &SettingPlan,
    values: &[Option<String>],
    startup: &Params,
    defaults: &Params,
    overrides: &mut Params,
    server: &mut Params,
) {
    if let Some(discard) = plan.reset_all {
        // RESET ALL leaves the role alone; DISCARD ALL resets it.
        let role = (!discard).then(|| (overrides.get("role"), server.get("role")));
        let role = role.map(|(c, s)| (c.map(String::from), s.map(String::from)));
        *overrides = startup.clone();
        *server = defaults.clone();
        if let Some((client_role, server_role)) = role {
            if let Some(r) = client_role {
                overrides.set("role", &r);
            }
            if let Some(r) = server_role {
                server.set("role", &r);
            }
        }
    }
    for name in &plan.restore {
        match startup.get(name) {
            Some(v) => overrides.set(name, v),
            None => overrides.remove(name),
        }
        match defaults.get(name) {
            Some(v) => server.set(name, v),
            None => server.remove(name),
        }
    }
    for (name, value) in plan.read.iter().zip(values) {
        match value.as_deref() {
            None => {
                overrides.remove(name);
                server.remove(name);
            }
            Some("none") if name == "role" => {
                overrides.remove(name);
                server.remove(name);
            }
            Some(v) => {
                overrides.set_override(defaults, name, v);
                server.set(name, v);
            }
        }
    }
}

/// The one query of step 1 and 2: the settings to read, then (if asked)
/// the `ServerState` columns.
fn checkin_query(read: &[String], probe: bool) -> Option<String> {
    let mut cols: Vec<String> = read
        .iter()
        .map(|n| format!("current_setting({}, true)", quote_literal(n)))
        .collect();
    if probe {
        cols.push(STATE_COLUMNS.to_string());
    }
    (!cols.is_empty()).then(|| format!("SELECT {}", cols.join(", ")))
}

fn parse_state(cols: &[Option<String>]) -> ServerState {
    let n = |i: usize| {
        cols.get(i)
            .and_then(|c| c.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    ServerState {
        listening: n(0),
        temp: n(1),
        cursors: n(2),
        locks: n(3),
    }
}

/// Forgets everything pglittle knew of a server's session after a reset.
fn after_reset(conn: &mut ServerConn, defaults: &Params, statements_too: bool) {
    conn.params = defaults.clone();
    conn.synced_for = None;
    if statements_too {
        conn.statements.clear();
    }
}

impl Session {
    /// The client's transaction is over and the server idle. Returns the
    /// lease if the client keeps it (pinned).
    pub(super) async fn check_in(
        &mut self,
        mut lease: Lease,
        fx: SqlEffects,
        ops: Vec<SettingOp>,
    ) -> Option<Lease> {
        let plan = plan_settings(&ops);
        let probe = needs_probe(self.policy, &fx, self.pin.is_some());
        let timeout = self.pool.target().connect_timeout;
        let conn = lease.conn();
        let mut state = None;
        let mut values = Vec::new();
        if let Some(sql) = checkin_query(&plan.read, probe) {
            match conn.simple_query(&sql, timeout).await {
                Ok(o) if o.error.is_none() => {
                    let row = o.rows.into_iter().next().unwrap_or_default();
                    let (read, rest) = row.split_at(plan.read.len().min(row.len()));
                    values = read.to_vec();
                    state = probe.then(|| parse_state(rest));
                }
                outcome => {
                    tracing::warn!(?outcome, "reading session state at check-in failed");
                    self.give_back(lease, false);
                    return None;
                }
            }
        }
        if !plan.is_empty() {
            let mut server = std::mem::take(&mut conn.params);
            apply_settings(
                &plan,
                &values,
                &self.startup,
                &self.defaults,
                &mut self.overrides,
                &mut server,
            );
            conn.params = server;
            if plan.reset_all.is_some() || !plan.restore.is_empty() {
                conn.synced_for = None;
            }
        }
        let clean = match decide(self.policy, &fx, state.as_ref()) {
            Checkin::Pin(reason) => {
                self.set_pin(Some(reason));
                return Some(lease);
            }
            Checkin::Release => true,
            Checkin::Discard => match conn.simple_query("DISCARD ALL", timeout).await {
                Ok(o) if o.error.is_none() => {
                    after_reset(conn, &self.defaults, true);
                    true
                }
                _ => false,
            },
            Checkin::ResetPipelined => {
                let started = conn.start_reset(ALWAYS_RESET).await.is_ok();
                after_reset(conn, &self.defaults, false);
                started
            }
        };
        self.give_back(lease, clean);
        None
    }

    /// The client no longer holds the server: back to the pool if it is
    /// known clean, closed otherwise.
    pub(super) fn give_back(&mut self, lease: Lease, clean: bool) {
        self.set_pin(None);
        self.cancel.clear_server();
        if clean {
            lease.release();
        } else {
            lease.discard();
        }
    }

    /// The client is leaving (or broke off) while holding a server: roll
    /// back if it was in a transaction, then DISCARD ALL, as two pipelined
    /// queries (DISCARD ALL cannot run inside a transaction block). A
    /// server that cannot be made clean is closed.
    pub(super) async fn finish_lease(&mut self, mut lease: Lease, idle: bool) {
        let timeout = self.pool.target().connect_timeout;
        let conn = lease.conn();
        let sqls: &[&str] = if idle {
            &["DISCARD ALL"]
        } else {
            &["ROLLBACK", "DISCARD ALL"]
        };
        let clean = match conn.simple_queries(sqls, timeout).await {
            Ok(o) if o.error.is_none() => {
                after_reset(conn, &self.defaults, true);
                true
            }
            _ => false,
        };
        self.give_back(lease, clean);
    }

    /// Records (or clears) why this client keeps its server, for SHOW
    /// CLIENTS and the pinned-clients gauge.
    pub(super) fn set_pin(&mut self, pin: Option<PinReason>) {
        if self.pin == pin {
            return;
        }
        let gauge = &self.pool.metrics.pinned_clients;
        match (self.pin, pin) {
            (None, Some(_)) => {
                gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (Some(_), None) => {
                gauge.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            _ => {}
        }
        self.pin = pin;
        self.entry.entry.set_pinned(pin.map(PinReason::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params::of(pairs)
    }

    const DETECT: CheckinPolicy = CheckinPolicy {
        server_reset: ServerReset::Detect,
        pin_on_session_state: false,
    };

    #[test]
    fn decisions() {
        let none = SqlEffects::default();
        let reset = SqlEffects {
            needs_reset: true,
            ..SqlEffects::default()
        };
        let listening = ServerState {
            listening: 1,
            ..ServerState::default()
        };
        let temp = ServerState {
            temp: 2,
            ..ServerState::default()
        };
        let clean = ServerState::default();
        let pin = CheckinPolicy {
            pin_on_session_state: true,
            ..DETECT
        };
        let always = CheckinPolicy {
            server_reset: ServerReset::Always,
            ..DETECT
        };
        assert_eq!(decide(DETECT, &none, None), Checkin::Release);
        assert_eq!(decide(DETECT, &reset, None), Checkin::Discard);
        assert_eq!(decide(DETECT, &none, Some(&clean)), Checkin::Release);
        assert_eq!(decide(DETECT, &none, Some(&temp)), Checkin::Discard);
        assert_eq!(
            decide(DETECT, &none, Some(&listening)),
            Checkin::Pin(PinReason::Listen)
        );
        assert_eq!(
            decide(pin, &none, Some(&temp)),
            Checkin::Pin(PinReason::TempTables)
        );
        assert_eq!(decide(always, &none, None), Checkin::ResetPipelined);
        assert_eq!(decide(always, &reset, Some(&temp)), Checkin::ResetPipelined);
        assert_eq!(
            decide(always, &none, Some(&listening)),
            Checkin::Pin(PinReason::Listen)
        );
    }

    #[test]
    fn the_server_is_asked_only_when_the_answer_matters() {
        let state = SqlEffects {
            session_state: true,
            ..SqlEffects::default()
        };
        let listen = SqlEffects {
            listen: true,
            ..SqlEffects::default()
        };
        let always = CheckinPolicy {
            server_reset: ServerReset::Always,
            ..DETECT
        };
        assert!(!needs_probe(DETECT, &SqlEffects::default(), false));
        assert!(needs_probe(DETECT, &SqlEffects::default(), true));
        assert!(needs_probe(DETECT, &state, false));
        assert!(!needs_probe(always, &state, false));
        assert!(needs_probe(always, &listen, false));
        let always_pin = CheckinPolicy {
            pin_on_session_state: true,
            ..always
        };
        assert!(needs_probe(always_pin, &state, false));
    }

    #[test]
    fn the_last_change_to_a_setting_wins() {
        use SettingOp::*;
        let ops = [
            Set("work_mem".into()),
            Reset("work_mem".into()),
            Set("statement_timeout".into()),
            ResetAll { discard: false },
            Set("datestyle".into()),
            Reset("search_path".into()),
        ];
        assert_eq!(
            plan_settings(&ops),
            SettingPlan {
                reset_all: Some(false),
                restore: vec!["search_path".into()],
                read: vec!["DateStyle".into()],
            }
        );
    }

    #[test]
    fn reset_returns_to_the_start_value_and_set_reads_back() {
        let startup = p(&[("statement_timeout", "5s")]);
        let defaults = p(&[("TimeZone", "UTC")]);
        let mut overrides = p(&[("statement_timeout", "9s"), ("work_mem", "1MB")]);
        let mut server = p(&[
            ("TimeZone", "UTC"),
            ("statement_timeout", "9s"),
            ("work_mem", "1MB"),
        ]);
        let plan = SettingPlan {
            reset_all: None,
            restore: vec!["statement_timeout".into()],
            read: vec!["work_mem".into(), "myapp.x".into()],
        };
        let values = [Some("2MB".to_string()), None];
        apply_settings(
            &plan,
            &values,
            &startup,
            &defaults,
            &mut overrides,
            &mut server,
        );
        assert_eq!(
            overrides,
            p(&[("statement_timeout", "5s"), ("work_mem", "2MB")])
        );
        assert_eq!(server, p(&[("TimeZone", "UTC"), ("work_mem", "2MB")]));
    }

    #[test]
    fn reset_all_keeps_the_role_and_discard_all_does_not() {
        let startup = p(&[("statement_timeout", "5s")]);
        let defaults = p(&[("TimeZone", "UTC")]);
        for (discard, role) in [(false, Some("bob")), (true, None)] {
            let mut overrides = p(&[("role", "bob"), ("work_mem", "1MB")]);
            let mut server = p(&[("TimeZone", "UTC"), ("role", "bob"), ("work_mem", "1MB")]);
            let plan = SettingPlan {
                reset_all: Some(discard),
                ..SettingPlan::default()
            };
            apply_settings(&plan, &[], &startup, &defaults, &mut overrides, &mut server);
            assert_eq!(overrides.get("role"), role);
            assert_eq!(server.get("role"), role);
            assert_eq!(overrides.get("statement_timeout"), Some("5s"));
            assert_eq!(overrides.get("work_mem"), None);
            assert_eq!(server.get("work_mem"), None);
        }
    }

    #[test]
    fn the_checkin_query_reads_then_probes() {
        assert_eq!(checkin_query(&[], false), None);
        let q = checkin_query(&["work_mem".into()], true).unwrap();
        assert!(q.starts_with("SELECT current_setting('work_mem', true), (SELECT count(*) FROM pg_listening_channels())"));
        let s = parse_state(&[Some("1".into()), Some("0".into()), None, Some("3".into())]);
        assert_eq!(
            s,
            ServerState {
                listening: 1,
                temp: 0,
                cursors: 0,
                locks: 3
            }
        );
    }
}
