//! Settings that follow the client: the end state of each setting a
//! transaction SET or RESET (folded in order), whether a RESET stuck or
//! was undone (from what the server shows after the transaction), and the
//! client's values and pglittle's model of the server after it. Pure; used
//! by check-in.

use crate::pool::params::{canonical_name, is_read_only, Params};
use crate::sql::settings::SettingOp;

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
