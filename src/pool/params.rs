//! Session parameters (GUCs) and the statements that make a server's
//! parameters match a client's.
//!
//! A client's `Params` are what it believes its session holds: the server
//! defaults, overlaid with its startup parameters and whatever the server
//! reported back while it held a connection. Before a server is lent, the
//! differences are applied with one `SELECT set_config(...); RESET ...`
//! round trip. `set_config` takes a value exactly as `SHOW` prints it, so
//! a list such as `"$user", public` stays a list (a quoted `SET x TO '...'`
//! would make it one name).

/// Parameters the server reports that can never be SET; never synced.
const READ_ONLY: &[&str] = &[
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
    "scram_iterations",
];

/// Startup parameters that are not GUCs, or that pglittle handles itself.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// True for parameters the server reports that can never be SET.
pub fn is_read_only(name: &str) -> bool {
    READ_ONLY.contains(&name)
}

/// Ordered name -> value pairs; names are canonical (as the server reports them).
#[derive(Clone, Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Set whenever a value changes; lets a server skip the parameter
    /// comparison when nothing moved since its last sync.
    changed: bool,
}

impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for Params {}

/// Maps a client-supplied name onto the spelling the server reports, so that
/// `datestyle` from a startup packet and `DateStyle` from ParameterStatus are one key.
pub fn canonical_name(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "datestyle" => "DateStyle".into(),
        "timezone" => "TimeZone".into(),
        "intervalstyle" => "IntervalStyle".into(),
        other => other.to_string(),
    }
}

/// True when a startup parameter should follow the client as a session setting.
pub fn is_session_setting(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !NOT_SETTINGS.contains(&lower.as_str()) && !lower.starts_with("_pq_.")
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Params holding `pairs`, for tests.
    #[cfg(test)]
    pub fn of(pairs: &[(&str, &str)]) -> Self {
        let mut out = Params::new();
        for (k, v) in pairs {
            out.set(k, v);
        }
        out
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: &str) {
        match self.pairs.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => {
                if entry.1 != value {
                    entry.1 = value.to_string();
                    self.changed = true;
                }
            }
            None => {
                self.pairs.push((name.to_string(), value.to_string()));
                self.changed = true;
            }
        }
    }

    pub fn remove(&mut self, name: &str) {
        let before = self.pairs.len();
        self.pairs.retain(|(k, _)| k != name);
        self.changed |= self.pairs.len() != before;
    }

    /// Keeps only the names `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let before = self.pairs.len();
        self.pairs.retain(|(k, _)| keep(k));
        self.changed |= self.pairs.len() != before;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True if a value changed since the last `mark_synced`.
    pub fn changed(&self) -> bool {
        self.changed
    }

    pub fn mark_synced(&mut self) {
        self.changed = false;
    }

    /// The SQL that makes a server holding `server` match a client whose
    /// session is `defaults` overlaid with `overrides`, or `None` when they
    /// already agree (the common, free case). Clients keep only their
    /// overrides, so an idle client costs a few bytes, not a full map.
    ///
    /// A setting the client's session started with (`startup`) but has
    /// since set back to the server's default is SET even when the server
    /// holds that value already: check-in tells a RESET that rolled back
    /// from one that took effect by the value's source, which must then be
    /// `session` (`session::checkin::Observed`).
    pub fn sync_sql(&self, defaults: &Params, server: &Params, startup: &Params) -> Option<String> {
        let mut sets = Vec::new();
        let mut set = |k: &str, v: &str| {
            sets.push(format!(
                "set_config({}, {}, false)",
                quote_literal(k),
                quote_literal(v)
            ))
        };
        for (k, v) in self.iter() {
            if READ_ONLY.contains(&k) || server.get(k) == Some(v) {
                continue;
            }
            set(k, v);
        }
        for (k, _) in startup.iter() {
            if READ_ONLY.contains(&k) || self.get(k).is_some() {
                continue;
            }
            if let Some(d) = defaults.get(k) {
                set(k, d);
            }
        }
        let mut sql = String::new();
        if !sets.is_empty() {
            sql = format!("SELECT {};", sets.join(", "));
        }
        for (k, v) in server.iter() {
            if READ_ONLY.contains(&k) || self.get(k).is_some() || defaults.get(k) == Some(v) {
                continue;
            }
            if startup.get(k).is_some() && defaults.get(k).is_some() {
                continue; // set to the default above
            }
            sql.push_str(&format!("RESET {};", quote_ident(k)));
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// This server's model after the SQL of `overrides.sync_sql` ran.
    pub fn synced(&mut self, overrides: &Params, defaults: &Params) {
        for (k, v) in overrides.iter() {
            self.set(k, v);
        }
        self.retain(|k| overrides.get(k).is_some() || defaults.get(k).is_some());
    }

    /// Records a value the client's session now has: kept only when it
    /// differs from the default.
    pub fn set_override(&mut self, defaults: &Params, name: &str, value: &str) {
        if defaults.get(name) == Some(value) {
            self.remove(name);
        } else {
            self.set(name, value);
        }
    }
}

/// Quotes a GUC name; dotted custom names (`myapp.x`) quote each part.
fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// A string literal that means the same whatever standard_conforming_strings says.
pub fn quote_literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params::of(pairs)
    }

    #[test]
    fn equal_params_need_no_round_trip() {
        let d = p(&[("TimeZone", "UTC"), ("server_version", "15")]);
        assert_eq!(Params::new().sync_sql(&d, &d.clone(), &Params::new()), None);
        let o = p(&[("TimeZone", "UTC")]);
        assert_eq!(o.sync_sql(&d, &d.clone(), &Params::new()), None);
    }

    #[test]
    fn differences_become_set_and_reset() {
        let defaults = p(&[
            ("TimeZone", "UTC"),
            ("application_name", ""),
            ("DateStyle", "ISO"),
        ]);
        let client = p(&[("TimeZone", "Europe/Paris"), ("application_name", "it's")]);
        let server = p(&[
            ("TimeZone", "UTC"),
            ("application_name", "it's"),
            ("DateStyle", "German"),
            ("statement_timeout", "5s"),
            ("server_version", "15"),
        ]);
        assert_eq!(
            client.sync_sql(&defaults, &server, &Params::new()).unwrap(),
            "SELECT set_config('TimeZone', 'Europe/Paris', false);RESET \"DateStyle\";RESET \"statement_timeout\";"
        );
    }

    #[test]
    fn quoting_is_injection_safe() {
        let client = p(&[("search_path", "a'; DROP TABLE x; --\\")]);
        let sql = client
            .sync_sql(&Params::new(), &Params::new(), &Params::new())
            .unwrap();
        assert_eq!(
            sql,
            "SELECT set_config('search_path', E'a''; DROP TABLE x; --\\\\', false);"
        );
        assert_eq!(quote_ident("my.x\""), "\"my\".\"x\"\"\"");
    }

    #[test]
    fn list_values_are_applied_as_lists() {
        // The value as SHOW prints it goes to set_config untouched: a
        // list stays a list, never one quoted name.
        let client = p(&[("search_path", "\"$user\", public")]);
        let sql = client
            .sync_sql(&Params::new(), &Params::new(), &Params::new())
            .unwrap();
        assert_eq!(
            sql,
            "SELECT set_config('search_path', '\"$user\", public', false);"
        );
    }

    #[test]
    fn changes_are_tracked() {
        let mut a = p(&[("TimeZone", "UTC"), ("application_name", "x")]);
        assert!(a.changed());
        a.mark_synced();
        a.set("TimeZone", "UTC");
        assert!(!a.changed(), "same value is no change");
        a.set("TimeZone", "Asia/Tokyo");
        assert!(a.changed());
        assert_ne!(a, p(&[("TimeZone", "Asia/Tokyo")]));
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(canonical_name("datestyle"), "DateStyle");
        assert_eq!(canonical_name("Application_Name"), "application_name");
        assert!(!is_session_setting("user"));
        assert!(!is_session_setting("_pq_.foo"));
        assert!(is_session_setting("extra_float_digits"));
    }
}
