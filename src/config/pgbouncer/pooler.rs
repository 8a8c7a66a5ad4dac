//! The `[pgbouncer]` section: its keys become `[pooler]` settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::ini::{unquote_setting, Entry};
use super::keys::{Kind, MAPPED};
use super::values::{first_of, port, seconds, tls_mode, whole};
use super::{ImportError, Translation};
use crate::config::toml_string;
use crate::config::units::{format_duration, format_size};

impl Translation {
    /// One `[pgbouncer]` key.
    pub(super) fn setting(&mut self, e: &Entry) -> Result<(), ImportError> {
        let (line, key) = (e.line, e.key.as_str());
        let v = unquote_setting(&e.value);
        match key {
            "listen_addr" => self.listen.0 = Some((line, v.to_owned())),
            "listen_port" => self.listen.1 = Some(port(e, key, v)?),
            "auth_type" => self.auth_type(e, v),
            "server_reset_query_always" => match v.to_ascii_lowercase().as_str() {
                "1" | "on" | "yes" | "true" => self.set("server_reset", toml_string("always"), key),
                "0" | "off" | "no" | "false" => {}
                _ => return Err(e.bad_value("0, 1", v)),
            },
            "max_packet_size" => {
                let n = whole(e, key, v)?;
                let clamped = n.clamp(1024, 1 << 30);
                if clamped != n {
                    self.note(line, key, "~ max_packet_size");
                }
                let size = format_size(usize::try_from(clamped).unwrap_or(1 << 30));
                self.set("max_message_size", toml_string(&size), key);
            }
            _ => match MAPPED.iter().find(|m| m.0 == key) {
                Some(&(_, to, kind)) => self.mapped(e, v, to, kind)?,
                None => self.note(line, key, key),
            },
        }
        Ok(())
    }

    /// A key of [`MAPPED`], converted by its kind.
    fn mapped(&mut self, e: &Entry, v: &str, to: &str, kind: Kind) -> Result<(), ImportError> {
        let (line, key) = (e.line, e.key.as_str());
        let value = match kind {
            Kind::Count(zero_differs) => match whole(e, key, v)? {
                0 if zero_differs => {
                    self.note(line, key, &format!("0 {key}"));
                    return Ok(());
                }
                n => n.to_string(),
            },
            Kind::Time(zero_differs) => match seconds(e)? {
                d if d.is_zero() && zero_differs => {
                    self.reserve_off |= key == "reserve_pool_timeout";
                    self.note(line, key, &format!("0 {key}"));
                    return Ok(());
                }
                d => toml_string(&format_duration(d)),
            },
            Kind::Text => toml_string(v),
            Kind::List => {
                let names: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(toml_string)
                    .collect();
                format!("[{}]", names.join(", "))
            }
            Kind::Tls => toml_string(tls_mode(e, v)?),
            Kind::Mode => toml_string(self.pool_mode(e, key, v)?),
        };
        if key == "max_db_connections" {
            self.note(line, key, "~ max_db_connections");
        }
        self.set(to, value, key);
        Ok(())
    }

    fn auth_type(&mut self, e: &Entry, v: &str) {
        let v = v.to_ascii_lowercase();
        self.auth = match v.as_str() {
            "trust" => Some("trust"),
            "cert" => Some("cert"),
            _ => self.auth,
        };
        self.note(e.line, "auth_type", &format!("auth_type {v}"));
    }

    /// `listen` from `listen_addr` and `listen_port`.
    pub(super) fn listen_addr(&mut self) -> String {
        let (line, list) = self.listen.0.take().unwrap_or_default();
        let (first, more) = first_of(&list);
        if more {
            self.note(line, "listen_addr", "~ listen list");
        }
        let ip = match first {
            "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            "" => {
                self.note(line, "listen_addr", "~ listen unset");
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            name => name.trim_matches(['[', ']']).parse().unwrap_or_else(|_| {
                self.note(line, "listen_addr", "~ listen name");
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }),
        };
        SocketAddr::new(ip, self.listen.1.unwrap_or(6432)).to_string()
    }

    /// PgBouncer caps min_pool_size at the pool size; pglittle refuses a
    /// larger one, so the cap is written out.
    pub(super) fn cap_min_sizes(&mut self) {
        let size = self.number("pool_size").unwrap_or(20);
        let mut min = self.number("min_pool_size").unwrap_or(0);
        if min > size {
            min = size;
            self.set("min_pool_size", size.to_string(), "min_pool_size");
            self.note(0, "min_pool_size", "~ min_pool_size");
        }
        let mut capped = Vec::new();
        for db in &mut self.databases {
            let db_size = db.pool_size.unwrap_or(size);
            if db.min_pool_size.unwrap_or(min) > db_size {
                db.min_pool_size = Some(db_size);
                capped.push(format!("[databases] {}: min_pool_size", db.name));
            }
        }
        for what in capped {
            self.note(0, &what, "~ min_pool_size");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{has_note, ok, typed};
    use crate::config::{PoolMode, ServerReset};

    #[test]
    fn defaults_that_differ_and_zeroes_that_mean_something_else() {
        let out = ok("[databases]\napp = host=db\n[pgbouncer]\nserver_lifetime = 0\nreserve_pool_size = 4\nreserve_pool_timeout = 0\nclient_login_timeout = 0\nmax_prepared_statements = 0\n");
        let c = typed(&out.toml);
        assert_eq!(
            c.pooler.pool_mode,
            PoolMode::Session,
            "PgBouncer's default pool_mode"
        );
        assert_eq!(c.pooler.listen.to_string(), "127.0.0.1:6432");
        assert_eq!(c.pooler.server_lifetime, Duration::from_secs(3600));
        assert_eq!(
            c.pooler.reserve_pool_size, 0,
            "reserve_pool_timeout = 0 turns the reserve off"
        );
        assert_eq!(c.pooler.client_login_timeout, Duration::from_secs(60));
        for key in [
            "line 4: server_lifetime",
            "line 6: reserve_pool_timeout",
            "line 7: client_login_timeout",
            "line 8: max_prepared_statements",
            "listen_addr",
            "auth_file: not set",
        ] {
            assert!(
                out.notes.iter().any(|n| n.starts_with(key)),
                "{key}: {:#?}",
                out.notes
            );
        }
    }

    #[test]
    fn statement_pooling_and_sizes_pglittle_would_refuse() {
        let ini = "[databases]\na = host=h pool_mode=statement pool_size=3\n[pgbouncer]\npool_mode = statement\nmin_pool_size = 10\ndefault_pool_size = 8\nmax_packet_size = 2147483647\nserver_reset_query_always = 1\n";
        let out = ok(ini);
        let c = typed(&out.toml);
        assert_eq!(c.pooler.pool_mode, PoolMode::Transaction);
        assert_eq!(c.databases["a"].pool_mode, Some(PoolMode::Transaction));
        assert_eq!(
            (c.pooler.min_pool_size, c.databases["a"].min_pool_size),
            (8, Some(3))
        );
        assert_eq!(c.pooler.max_message_size, 1 << 30);
        assert_eq!(c.pooler.server_reset, ServerReset::Always);
        assert!(
            c.validate().is_err(),
            "no users: validation still wants some"
        );
        assert!(has_note(&out, "line 4: pool_mode", "statement"));
        assert!(has_note(
            &out,
            "line 2: [databases] a: pool_mode",
            "statement"
        ));
        assert!(has_note(&out, "[databases] a: min_pool_size", "pool size"));
        assert!(has_note(&out, "line 7: max_packet_size", "1GiB"));
    }
}
