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
use crate::pool::params::{quote_literal, Params};
use crate::pool::{Lease, ServerConn};
use crate::sql::settings::SettingOp;
use crate::sql::SqlEffects;

#[cfg(test)]
use super::follow::SettingPlan;
use super::follow::{apply_settings, plan_settings, reset_names, Observed};

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

/// The answer to `checkin_query`: the values read, the resets observed,
/// and (if asked) what session state is left.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReadBack {
    values: Vec<Option<String>>,
    resets: Vec<(String, Observed)>,
    state: Option<ServerState>,
}

impl ReadBack {
    /// Pure: the columns of the check-in query's one row, in its order.
    fn parse(row: Vec<Option<String>>, read: usize, resets: Vec<String>, probe: bool) -> Self {
        let mut row = row.into_iter();
        let values = row.by_ref().take(read).collect();
        let resets = resets
            .into_iter()
            .map(|name| {
                let value = row.next().flatten();
                let source = row.next().flatten();
                let at_reset = row.next().flatten().map(|v| v == "true");
                let seen = Observed {
                    value,
                    source,
                    at_reset,
                };
                (name, seen)
            })
            .collect();
        let rest: Vec<_> = row.collect();
        ReadBack {
            values,
            resets,
            state: probe.then(|| parse_state(&rest)),
        }
    }
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
        let mut seen = ReadBack::default();
        if let Some(sql) = checkin_query(&plan.read, &names, probe) {
            match conn.simple_query(&sql, timeout).await {
                Ok(o) if o.error.is_none() => {
                    let row = o.rows.into_iter().next().unwrap_or_default();
                    seen = ReadBack::parse(row, plan.read.len(), names, probe);
                }
                outcome => {
                    tracing::warn!(?outcome, "reading session state at check-in failed");
                    self.release(lease, false);
                    return None;
                }
            }
        }
        let ReadBack {
            values,
            resets,
            state,
        } = seen;
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
                // The client keeps this server, so no acquire will sync it: a
                // reset that took effect is undone for the client here.
                if !resets.is_empty() && !matches!(self.sync_params(conn, timeout).await, Ok(None))
                {
                    self.release(lease, false);
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
        self.release(lease, clean);
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
    pub(super) fn release(&mut self, lease: Lease, clean: bool) {
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
        self.release(lease, clean);
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
    fn the_checkin_row_is_read_in_the_query_order() {
        let col = |v: &str| Some(v.to_string());
        let row = vec![
            col("2MB"),
            col("pg_catalog, public"),
            col("session"),
            col("true"),
            col("1"),
            col("0"),
            None,
            col("3"),
        ];
        let got = ReadBack::parse(row, 1, vec!["search_path".into()], true);
        assert_eq!(got.values, [col("2MB")]);
        assert_eq!(
            got.resets,
            [(
                "search_path".to_string(),
                Observed {
                    value: col("pg_catalog, public"),
                    source: col("session"),
                    at_reset: Some(true),
                }
            )]
        );
        assert_eq!(got.state.map(|s| (s.listening, s.locks)), Some((1, 3)));
        let none = ReadBack::parse(vec![col("x")], 1, vec![], false);
        assert_eq!(none.state, None);
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
