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
use crate::pool::params::{canonical_name, is_read_only, quote_literal, Params};
use crate::pool::{Lease, ServerConn};
use crate::sql::settings::SettingOp;
use crate::sql::SqlEffects;

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
    /// A ROLLBACK (or ROLLBACK TO), or an error, came after a RESET: it
    /// may be undone.
    pub rolled_back: bool,
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
            SettingOp::Rollback => {
                plan.rolled_back |= plan.reset_all.is_some() || last.iter().any(|(_, r)| !r);
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

/// What the server says of a setting RESET (or reset by RESET ALL or
/// DISCARD ALL) during the transaction: its value now, and where that
/// value came from (`pg_settings.source`; `None` for names it does not
/// list: custom placeholders and `role`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub value: Option<String>,
    pub source: Option<String>,
    /// `pg_settings.setting = reset_val`: the server holds the value a
    /// RESET gives it.
    pub at_reset: Option<bool>,
}

impl Observed {
    /// Pure: whether the reset was undone (the transaction rolled back, or
    /// a savepoint before the RESET was rolled back to), or the setting was
    /// set again after it. `rolled_back`: something in the transaction may
    /// have been undone (a ROLLBACK after the reset, or an error).
    ///
    /// A reset value does not have the source `session`, with one
    /// exception: only SET (or set_config) gives that, and pglittle makes
    /// every value a client holds on a server come from SET
    /// (`Params::sync_sql`). The exception is a local set after the RESET
    /// in the same transaction (`SET LOCAL`, `set_config(.., true)`, one
    /// inside a DO block or a function): at COMMIT PostgreSQL puts the
    /// reset value back with the source `session`. So a `session` value
    /// that equals the reset value took effect unless something rolled
    /// back; then it is taken as undone (it may be wrong only when a
    /// savepoint rollback, not the whole transaction, followed).
    /// Names `pg_settings` does not list are judged by their value: a reset
    /// placeholder reads '' and a reset role 'none'.
    pub fn undone(&self, name: &str, rolled_back: bool) -> bool {
        match (self.source.as_deref(), self.value.as_deref()) {
            (Some("session"), _) => rolled_back || self.at_reset != Some(true),
            (Some(_), _) => false,
            (None, None | Some("")) => false,
            (None, Some("none")) => name != "role",
            (None, Some(_)) => true,
        }
    }
}

/// Pure: the settings a transaction's RESETs may have changed. RESET ALL
/// and DISCARD ALL reach every setting the client or the server holds.
/// Names SET after the reset are read instead.
pub fn reset_names(
    plan: &SettingPlan,
    startup: &Params,
    overrides: &Params,
    server: &Params,
) -> Vec<String> {
    let mut names: Vec<String> = plan.restore.clone();
    if plan.reset_all.is_some() {
        for (k, _) in startup.iter().chain(overrides.iter()).chain(server.iter()) {
            if !names.iter().any(|n| n == k) {
                names.push(k.to_string());
            }
        }
    }
    names.retain(|n| !is_read_only(n) && !plan.read.contains(n));
    names
}

/// Pure: applies the values read back and the resets observed to the
/// client's overrides and to pglittle's model of the server.
///
/// A reset that took effect returns the client to the value its session
/// started with, as on PostgreSQL; one that was undone leaves the client
/// with what the server holds, which is what it held before.
pub fn apply_settings(
    plan: &SettingPlan,
    values: &[Option<String>],
    resets: &[(String, Observed)],
    startup: &Params,
    defaults: &Params,
    overrides: &mut Params,
    server: &mut Params,
) {
    for (name, seen) in resets {
        if seen.undone(name, plan.rolled_back) {
            learn(name, seen.value.as_deref(), defaults, overrides, server);
            continue;
        }
        match startup.get(name) {
            Some(v) => overrides.set(name, v),
            None => overrides.remove(name),
        }
        match (defaults.get(name), seen.value.as_deref()) {
            (Some(_), Some(v)) => server.set(name, v),
            (Some(d), None) => server.set(name, d),
            (None, _) => server.remove(name),
        }
    }
    for (name, value) in plan.read.iter().zip(values) {
        learn(name, value.as_deref(), defaults, overrides, server);
    }
}

/// The client's session and the server now hold `value` for `name`.
fn learn(
    name: &str,
    value: Option<&str>,
    defaults: &Params,
    overrides: &mut Params,
    server: &mut Params,
) {
    match value {
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

/// The one query of step 1 and 2: the settings to read, the resets to
/// observe (value and source), then (if asked) the `ServerState` columns.
fn checkin_query(read: &[String], resets: &[String], probe: bool) -> Option<String> {
    let mut cols: Vec<String> = read
        .iter()
        .map(|n| format!("current_setting({}, true)", quote_literal(n)))
        .collect();
    for n in resets {
        let q = quote_literal(n);
        let lower = quote_literal(&n.to_ascii_lowercase());
        cols.push(format!(
            "current_setting({q}, true), \
             (SELECT source FROM pg_settings WHERE lower(name) = {lower}), \
             (SELECT (setting = reset_val)::text FROM pg_settings WHERE lower(name) = {lower})"
        ));
    }
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
        let names = reset_names(&plan, &self.startup, &self.overrides, &conn.params);
        let mut state = None;
        let mut values = Vec::new();
        let mut resets = Vec::new();
        if let Some(sql) = checkin_query(&plan.read, &names, probe) {
            match conn.simple_query(&sql, timeout).await {
                Ok(o) if o.error.is_none() => {
                    let mut row = o.rows.into_iter().next().unwrap_or_default().into_iter();
                    values = row.by_ref().take(plan.read.len()).collect();
                    for name in names {
                        let value = row.next().flatten();
                        let source = row.next().flatten();
                        let at_reset = row.next().flatten().map(|v| v == "true");
                        let seen = Observed {
                            value,
                            source,
                            at_reset,
                        };
                        resets.push((name, seen));
                    }
                    let rest: Vec<_> = row.collect();
                    state = probe.then(|| parse_state(&rest));
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
                &resets,
                &self.startup,
                &self.defaults,
                &mut self.overrides,
                &mut server,
            );
            conn.params = server;
            if !resets.is_empty() {
                conn.synced_for = None;
            }
        }
        let clean = match decide(self.policy, &fx, state.as_ref()) {
            Checkin::Pin(reason) => {
                // The client keeps this server, so no lend will sync it: a
                // reset that took effect is undone for the client here.
                if !resets.is_empty() && !matches!(self.sync_params(conn, timeout).await, Ok(None))
                {
                    self.give_back(lease, false);
                    return None;
                }
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
        if clean {
            self.settle_cancels().await;
        }
        self.give_back(lease, clean);
        None
    }

    /// A cancel this client sent may still be on its way to the server
    /// about to go back: wait for it, so it cannot cancel the next
    /// client's query (as PgBouncer does).
    async fn settle_cancels(&mut self) {
        if self.cancel.clear_server() {
            let limit = crate::shared::cancel::DELIVERY_LIMIT;
            let _ = tokio::time::timeout(limit, self.cancel.settle()).await;
        }
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
        if clean {
            self.settle_cancels().await;
        }
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
                rolled_back: false,
            }
        );
    }

    fn seen(value: Option<&str>, source: Option<&str>) -> Observed {
        Observed {
            value: value.map(String::from),
            source: source.map(String::from),
            at_reset: None,
        }
    }

    #[test]
    fn a_reset_that_took_effect_returns_to_the_start_value() {
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
            rolled_back: false,
        };
        let values = [Some("2MB".to_string()), None];
        let resets = [(
            "statement_timeout".to_string(),
            seen(Some("0"), Some("default")),
        )];
        apply_settings(
            &plan,
            &values,
            &resets,
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
    fn a_reset_that_rolled_back_leaves_the_client_as_it_was() {
        // BEGIN; RESET ALL; ROLLBACK: the server still holds what the
        // client had (SET by pglittle, so the source says session).
        let startup = p(&[("search_path", "app")]);
        let defaults = p(&[("TimeZone", "UTC")]);
        let before = p(&[("search_path", "other"), ("work_mem", "7MB")]);
        let mut overrides = before.clone();
        let mut server = p(&[
            ("TimeZone", "UTC"),
            ("search_path", "other"),
            ("work_mem", "7MB"),
        ]);
        let plan = SettingPlan {
            reset_all: Some(false),
            ..SettingPlan::default()
        };
        let names = reset_names(&plan, &startup, &overrides, &server);
        assert_eq!(names, ["search_path", "work_mem", "TimeZone"]);
        let resets: Vec<_> = [
            ("search_path", seen(Some("other"), Some("session"))),
            ("work_mem", seen(Some("7MB"), Some("session"))),
            ("TimeZone", seen(Some("UTC"), Some("configuration file"))),
        ]
        .into_iter()
        .map(|(n, o)| (n.to_string(), o))
        .collect();
        apply_settings(
            &plan,
            &[],
            &resets,
            &startup,
            &defaults,
            &mut overrides,
            &mut server,
        );
        assert_eq!(overrides, before);
        assert_eq!(
            server,
            p(&[
                ("TimeZone", "UTC"),
                ("search_path", "other"),
                ("work_mem", "7MB")
            ])
        );
    }

    #[test]
    fn role_and_placeholders_are_judged_by_value() {
        for rolled_back in [false, true] {
            let undone = |o: Observed, name: &str| o.undone(name, rolled_back);
            assert!(undone(seen(Some("bob"), None), "role"));
            assert!(!undone(seen(Some("none"), None), "role"));
            assert!(undone(seen(Some("none"), None), "myapp.x"));
            assert!(!undone(seen(Some(""), None), "myapp.x"));
            assert!(!undone(seen(None, None), "myapp.x"));
            assert!(undone(
                seen(Some("5s"), Some("session")),
                "statement_timeout"
            ));
            assert!(!undone(
                seen(Some("0"), Some("default")),
                "statement_timeout"
            ));
            assert!(!undone(seen(Some("x"), Some("client")), "application_name"));
        }
    }

    #[test]
    fn a_local_set_after_the_reset_does_not_hide_it() {
        // BEGIN; RESET search_path; SET LOCAL search_path = x; COMMIT:
        // PostgreSQL restores the reset value with the source `session`.
        let masked = Observed {
            at_reset: Some(true),
            ..seen(Some("\"$user\", public"), Some("session"))
        };
        assert!(!masked.undone("search_path", false));
        // The same state after a ROLLBACK (or an error): the client's
        // value was the server's default, SET by pglittle; undone.
        assert!(masked.undone("search_path", true));
        // A session value other than the reset value: undone, or set
        // again by code pglittle cannot see; either way it is learnt.
        let other = Observed {
            at_reset: Some(false),
            ..seen(Some("app"), Some("session"))
        };
        assert!(other.undone("search_path", false));
        let plan = plan_settings(&[SettingOp::Reset("search_path".into()), SettingOp::Rollback]);
        assert!(plan.rolled_back);
        let plan = plan_settings(&[
            SettingOp::Rollback,
            SettingOp::Reset("search_path".into()),
            SettingOp::Set("work_mem".into()),
        ]);
        assert!(
            !plan.rolled_back,
            "a rollback before the reset undoes nothing of it"
        );
    }

    #[test]
    fn names_set_after_the_reset_are_read_instead() {
        let plan = plan_settings(&[
            SettingOp::Reset("work_mem".into()),
            SettingOp::ResetAll { discard: true },
            SettingOp::Set("work_mem".into()),
        ]);
        let overrides = p(&[("work_mem", "1MB"), ("server_version", "15")]);
        let names = reset_names(&plan, &Params::new(), &overrides, &Params::new());
        assert!(names.is_empty(), "{names:?}");
        assert_eq!(plan.read, ["work_mem"]);
    }

    #[test]
    fn the_checkin_query_reads_then_probes() {
        assert_eq!(checkin_query(&[], &[], false), None);
        let q = checkin_query(&["work_mem".into()], &[], true).unwrap();
        assert!(q.starts_with("SELECT current_setting('work_mem', true), (SELECT count(*) FROM pg_listening_channels())"));
        let q = checkin_query(&[], &["DateStyle".into()], false).unwrap();
        assert_eq!(
            q,
            "SELECT current_setting('DateStyle', true), \
             (SELECT source FROM pg_settings WHERE lower(name) = 'datestyle'), \
             (SELECT (setting = reset_val)::text FROM pg_settings WHERE lower(name) = 'datestyle')"
        );
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
