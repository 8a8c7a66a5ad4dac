//! The `[databases]` and `[users]` sections: connection strings become
//! `[databases.NAME]` tables and sketches of `[users.NAME]` ones.

use std::net::Ipv4Addr;

use super::ini::{conn_pairs, Entry};
use super::values::{first_of, port, whole};
use super::{Database, ImportError, Translation};

impl Translation {
    /// One `[databases]` line.
    pub(super) fn database(&mut self, e: &Entry) -> Result<(), ImportError> {
        let label = format!("[databases] {}", e.key);
        let console = ["pgbouncer", "pglittle"].contains(&e.key.to_ascii_lowercase().as_str());
        if e.key == "*" || console {
            self.note(
                e.line,
                &label,
                if console { "db console" } else { "db fallback" },
            );
            return Ok(());
        }
        let mut db = Database {
            name: e.key.clone(),
            ..Database::default()
        };
        let mut host = String::new();
        for (key, value) in conn_pairs(e)? {
            let what = format!("{label}: {key}");
            match key.as_str() {
                "host" => host = value,
                "port" => {
                    db.port = Some(port(e, &what, &value)?);
                    if value.contains(',') {
                        self.note(e.line, &what, "~ port list");
                    }
                }
                "dbname" => db.dbname = Some(value),
                "pool_size" => db.pool_size = self.pool_size(e, &what, &value)?,
                "min_pool_size" => db.min_pool_size = Some(whole(e, &what, &value)?),
                "max_db_connections" => {
                    db.max_db_connections = Some(whole(e, &what, &value)?).filter(|n| *n > 0);
                    if db.max_db_connections.is_some() {
                        self.note(e.line, &what, "~ max_db_connections");
                    }
                }
                "pool_mode" => db.pool_mode = Some(self.pool_mode(e, &what, &value)?),
                _ => self.note(e.line, &what, &format!("db {key}")),
            }
        }
        db.host = self.db_host(e.line, &format!("{label}: host"), &host);
        self.databases.retain(|d| d.name != db.name);
        self.databases.push(db);
        Ok(())
    }

    /// The first host of the list; a Unix socket (or none) becomes 127.0.0.1.
    fn db_host(&mut self, line: usize, what: &str, list: &str) -> String {
        let (first, more) = first_of(list);
        if more {
            self.note(line, what, "~ host list");
        }
        if first.is_empty() || first.starts_with(['/', '@']) {
            self.note(line, what, "~ socket");
            return Ipv4Addr::LOCALHOST.to_string();
        }
        first.to_owned()
    }

    /// A pool size override; 0 is left out with a note.
    fn pool_size(&mut self, e: &Entry, what: &str, v: &str) -> Result<Option<u64>, ImportError> {
        let n = whole(e, what, v)?;
        if n == 0 {
            self.note(e.line, what, "0 pool_size");
        }
        Ok(Some(n).filter(|n| *n > 0))
    }

    /// One `[users]` line.
    pub(super) fn user(&mut self, e: &Entry) -> Result<(), ImportError> {
        self.users.retain(|(name, _)| *name != e.key);
        for (key, value) in conn_pairs(e)? {
            let what = format!("[users] {}: {key}", e.key);
            match key.as_str() {
                "pool_size" => {
                    if let Some(n) = self.pool_size(e, &what, &value)? {
                        self.users.push((e.key.clone(), n));
                        self.note(e.line, &what, "~ users pool_size");
                    }
                }
                _ => self.note(e.line, &what, &format!("users {key}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{has_note, ok, typed};
    #[test]
    fn consoles_zero_sizes_and_repeated_names() {
        let ini = "[databases]\npgbouncer = host=h\na = host=h1 pool_size=0 max_db_connections=0\na = host=h2 port=6000\nb = host=@sock\n[users]\nu = pool_size=3\nu = pool_size=0\n";
        let out = ok(ini);
        let c = typed(&out.toml);
        assert_eq!(c.databases.len(), 2, "{}", out.toml);
        let a = &c.databases["a"];
        assert_eq!(
            (a.host.as_str(), a.port),
            ("h2", 6000),
            "the later line wins"
        );
        assert_eq!(c.databases["b"].host, "127.0.0.1");
        assert!(has_note(
            &out,
            "line 2: [databases] pgbouncer",
            "admin console"
        ));
        assert!(has_note(
            &out,
            "line 3: [databases] a: pool_size",
            "at least 1"
        ));
        assert!(!has_note(
            &out,
            "line 3: [databases] a: max_db_connections",
            ""
        ));
        assert!(has_note(&out, "line 5: [databases] b: host", "Unix socket"));
        assert!(has_note(&out, "line 8: [users] u: pool_size", "at least 1"));
        assert!(
            !out.toml.contains("[users.u]"),
            "the later line wins: {}",
            out.toml
        );
    }
}
