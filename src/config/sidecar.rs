//! Sidecar mode: a whole configuration from a few command-line flags, for
//! deployments that run pglittle next to one application and one database
//! and would rather not ship a file.
//!
//! `pglittle --listen ADDR --primary postgres://USER:PASS@HOST:PORT/DB
//! [--replica URL]... [--pool-mode MODE] [--pool-size N]`

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};

use super::{
    AuthMethod, Config, ConfigError, DatabaseConfig, HostConfig, PoolMode, PoolSize,
    PoolerSettings, ReadYourWrites, Routing, UserConfig, REDACTED,
};

const DEFAULT_PORT: u16 = 5432;
const URL_SHAPE: &str = "postgres://USER:PASSWORD@HOST:PORT/DBNAME";

/// The sidecar flags, as the command-line parser hands them over. `Debug`
/// is written by hand because the URLs carry the password.
#[derive(Clone, Default)]
pub struct SidecarArgs {
    pub listen: Option<SocketAddr>,
    pub primary: String,
    pub replicas: Vec<String>,
    pub pool_mode: Option<PoolMode>,
    /// `--pool-size N|auto`.
    pub pool_size: Option<PoolSize>,
    /// `--max-db-connections N`: the budget of auto-sized pools.
    pub max_db_connections: Option<usize>,
    /// `--fleet NAME` and `--fleet-instance ID`: share the budget with a fleet.
    pub fleet: Option<String>,
    pub fleet_instance: Option<String>,
    /// `--metrics ADDR`: serve /metrics and /health there.
    pub metrics: Option<SocketAddr>,
    /// `--admin-users`: console admins; empty = the `--primary` URL's user.
    pub admin_users: Vec<String>,
    /// `--read-your-writes`: lsn (default), time or off.
    pub read_your_writes: Option<ReadYourWrites>,
    /// `--client-tls-cert` and `--client-tls-key`: offer clients TLS
    /// (client_tls_mode "prefer") with this PEM certificate and key.
    pub client_tls_cert: Option<std::path::PathBuf>,
    pub client_tls_key: Option<std::path::PathBuf>,
}

impl fmt::Debug for SidecarArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let replicas: Vec<String> = self.replicas.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("SidecarArgs")
            .field("listen", &self.listen)
            .field("primary", &redact_url(&self.primary))
            .field("replicas", &replicas)
            .field("pool_mode", &self.pool_mode)
            .field("pool_size", &self.pool_size)
            .field("max_db_connections", &self.max_db_connections)
            .field("fleet", &self.fleet)
            .field("fleet_instance", &self.fleet_instance)
            .field("metrics", &self.metrics)
            .field("admin_users", &self.admin_users)
            .field("read_your_writes", &self.read_your_writes)
            .field("client_tls_cert", &self.client_tls_cert)
            .field("client_tls_key", &self.client_tls_key)
            .finish()
    }
}

/// A URL as safe to print: parsed and shown without its password, or not
/// shown at all when it does not parse (it might be a password typed in
/// the wrong place).
fn redact_url(url: &str) -> String {
    match PgUrl::parse(url) {
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable url>".to_owned(),
    }
}

/// A `postgres://` connection URL, taken apart and percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub user: String,
    pub password: Option<String>,
    /// Without brackets for IPv6 (`::1`), ready for `(host, port)` lookups.
    pub host: String,
    pub port: u16,
    /// Defaults to the user name, as libpq does.
    pub dbname: String,
    /// `?sslmode=`, with libpq's meanings (pglittle's server_tls_mode).
    pub sslmode: Option<super::TlsMode>,
    /// `?sslrootcert=`: the CA file for verify-ca and verify-full.
    pub sslrootcert: Option<String>,
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUrl")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .finish()
    }
}

/// The URL with the password replaced, for logs.
impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}", self.user)?;
        if self.password.is_some() {
            write!(f, ":{REDACTED}")?;
        }
        if self.host.contains(':') {
            write!(f, "@[{}]:{}/{}", self.host, self.port, self.dbname)
        } else {
            write!(f, "@{}:{}/{}", self.host, self.port, self.dbname)
        }
    }
}

impl PgUrl {
    /// Parses the `--primary` URL; errors name that flag.
    pub fn parse(s: &str) -> Result<PgUrl, ConfigError> {
        PgUrl::parse_for("--primary", s)
    }

    /// Parses a URL given to `flag`, which errors name. No error repeats the
    /// URL, since it may hold a password.
    pub fn parse_for(flag: &str, s: &str) -> Result<PgUrl, ConfigError> {
        let err = |message: String| ConfigError::flag(flag, message);
        let s = s.trim();
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(err(format!("expected a URL like {URL_SHAPE}")));
        };
        if !scheme.eq_ignore_ascii_case("postgres") && !scheme.eq_ignore_ascii_case("postgresql") {
            let plausible = scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            let shown = if plausible {
                format!(" {scheme:?}")
            } else {
                String::new()
            };
            return Err(err(format!(
                "unsupported URL scheme{shown}; expected postgres:// or postgresql://"
            )));
        }
        if rest.contains('#') {
            return Err(err(format!(
                "a '#' in the URL; write {URL_SHAPE}, percent-encoding any '?', '#', '/' \
                 or '@' in the password"
            )));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (sslmode, sslrootcert) = url_parameters(query).map_err(err)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((user, password)) => (
                decode(user)
                    .ok_or_else(|| err("the user name has invalid percent-encoding".into()))?,
                decode(password)
                    .ok_or_else(|| err("the password has invalid percent-encoding".into()))?,
            ),
            None => (String::new(), String::new()),
        };
        if user.is_empty() {
            return Err(err(format!("the URL has no user name; write {URL_SHAPE}")));
        }
        let (host, port) = split_host_port(hostport).map_err(err)?;
        let dbname = decode(path)
            .ok_or_else(|| err("the database name has invalid percent-encoding".into()))?;
        Ok(PgUrl {
            dbname: if dbname.is_empty() {
                user.clone()
            } else {
                dbname
            },
            user,
            password: (!password.is_empty()).then_some(password),
            host,
            port,
            sslmode,
            sslrootcert,
        })
    }
}

/// The URL's `?k=v&...`: only `sslmode` and `sslrootcert` are taken; any
/// other parameter is refused by name (its value is never shown).
fn url_parameters(query: &str) -> Result<(Option<super::TlsMode>, Option<String>), String> {
    let (mut sslmode, mut sslrootcert) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value).ok_or_else(|| format!("{key} has invalid percent-encoding"))?;
        match key {
            "sslmode" => {
                let mode = value.parse::<super::TlsMode>().map_err(|_| {
                    format!(
                        "sslmode={value:?}: expected disable, allow, prefer, require, \
                         verify-ca or verify-full"
                    )
                })?;
                sslmode = Some(mode);
            }
            "sslrootcert" => sslrootcert = Some(value),
            other => {
                return Err(format!(
                    "the connection parameter {other:?} is not supported (only sslmode and \
                     sslrootcert); percent-encode any '?' in the password"
                ))
            }
        }
    }
    Ok((sslmode, sslrootcert))
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let Some((v6, after)) = bracketed.split_once(']') else {
            return Err("an IPv6 host is missing its closing ']'".to_owned());
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("[{v6}] is not an IPv6 address"));
        }
        match after {
            "" => (v6, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (v6, Some(port)),
                None => return Err(format!("unexpected {after:?} after the IPv6 host")),
            },
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            Some(_) => return Err("write IPv6 hosts in brackets, e.g. [::1]:5432".to_owned()),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("the URL has no host; write {URL_SHAPE}"));
    }
    if host.contains(',') {
        return Err(
            "several hosts in one URL are not supported; give replicas with --replica".into(),
        );
    }
    let host_ok = host.contains(':')
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !host_ok {
        return Err(format!("{host:?} is not a valid host name"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not an integer 1-65535"))?,
    };
    Ok((host.to_owned(), port))
}

/// Percent-decoding as in RFC 3986 (`+` stays `+`); `None` for a broken
/// escape or a result that is not UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Config {
    /// The configuration sidecar mode runs with: one database named after
    /// the primary URL's dbname, one user (scram-sha-256 with the URL's
    /// password), replicas from `--replica`, defaults for everything else.
    pub fn from_sidecar(args: &SidecarArgs) -> Result<Config, ConfigError> {
        let primary = PgUrl::parse_for("--primary", &args.primary)?;
        let Some(password) = primary.password.clone() else {
            return Err(ConfigError::flag(
                "--primary",
                format!(
                    "the URL has no password; pglittle needs it to verify clients and to log in \
                     to PostgreSQL ({URL_SHAPE})"
                ),
            ));
        };
        let replicas = replicas_of(args, &primary, &password)?;
        if args.pool_size == Some(PoolSize::Fixed(0)) {
            return Err(ConfigError::flag(
                "--pool-size",
                "must be at least 1, got 0",
            ));
        }

        let defaults = PoolerSettings::default();
        let pooler = PoolerSettings {
            listen: args.listen.unwrap_or(defaults.listen),
            pool_mode: args.pool_mode.unwrap_or(defaults.pool_mode),
            pool_size: args.pool_size.unwrap_or(defaults.pool_size),
            max_db_connections: args
                .max_db_connections
                .unwrap_or(defaults.max_db_connections),
            metrics_listen: args.metrics,
            fleet: super::fleet::from_flags(args.fleet.clone(), args.fleet_instance.clone())?,
            admin_users: if args.admin_users.is_empty() {
                vec![primary.user.clone()]
            } else {
                args.admin_users.clone()
            },
            client_tls: client_tls_of(args)?,
            server_tls: super::ServerTls {
                mode: primary.sslmode.unwrap_or_default(),
                ca_file: primary.sslrootcert.clone().map(Into::into),
                ..Default::default()
            },
            ..defaults
        };
        let database = DatabaseConfig {
            host: primary.host,
            port: primary.port,
            dbname: primary.dbname.clone(),
            pool_size: None,
            min_pool_size: None,
            max_db_connections: None,
            pool_mode: None,
            replicas,
            routing: Routing {
                read_your_writes: args.read_your_writes.unwrap_or_default(),
                ..Routing::default()
            },
        };
        let user = UserConfig {
            password: Some(password),
            scram_secret: None,
            md5_secret: None,
            auth: AuthMethod::ScramSha256,
            server_password: None,
            pool_size: None,
        };
        let config = Config {
            pooler,
            databases: BTreeMap::from([(primary.dbname, database)]),
            users: BTreeMap::from([(primary.user, user)]),
        };
        config.validate()?;
        Ok(config)
    }
}

/// `--client-tls-cert` and `--client-tls-key`, both or neither: TLS offered
/// to clients that ask.
fn client_tls_of(args: &SidecarArgs) -> Result<super::ClientTls, ConfigError> {
    match (&args.client_tls_cert, &args.client_tls_key) {
        (None, None) => Ok(super::ClientTls::default()),
        (Some(cert), Some(key)) => Ok(super::ClientTls {
            mode: super::TlsMode::Prefer,
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            ca_file: None,
        }),
        (Some(_), None) => Err(ConfigError::flag(
            "--client-tls-key",
            "required with --client-tls-cert (the certificate's PEM private key)",
        )),
        (None, Some(_)) => Err(ConfigError::flag(
            "--client-tls-cert",
            "required with --client-tls-key (the PEM certificate chain)",
        )),
    }
}

/// The `--replica` URLs as hosts; each must name the primary's user,
/// database and password (or none).
fn replicas_of(
    args: &SidecarArgs,
    primary: &PgUrl,
    password: &str,
) -> Result<Vec<HostConfig>, ConfigError> {
    let mut replicas = Vec::with_capacity(args.replicas.len());
    for (index, url) in args.replicas.iter().enumerate() {
        let flag = if args.replicas.len() == 1 {
            "--replica".to_owned()
        } else {
            format!("--replica #{}", index + 1)
        };
        let replica = PgUrl::parse_for(&flag, url)?;
        let mismatch = if replica.user != primary.user {
            Some(format!(
                "user {:?} differs from --primary's {:?}",
                replica.user, primary.user
            ))
        } else if replica.dbname != primary.dbname {
            Some(format!(
                "database {:?} differs from --primary's {:?}",
                replica.dbname, primary.dbname
            ))
        } else if replica.password.as_ref().is_some_and(|p| *p != password) {
            Some("the password differs from --primary's".to_owned())
        } else if replica.sslmode.is_some_and(|m| Some(m) != primary.sslmode)
            || replica
                .sslrootcert
                .as_ref()
                .is_some_and(|c| Some(c) != primary.sslrootcert.as_ref())
        {
            Some("its sslmode or sslrootcert differs from --primary's (one TLS setting for all hosts)".to_owned())
        } else {
            None
        };
        if let Some(why) = mismatch {
            return Err(ConfigError::flag(
                flag,
                format!("{why}; replicas are reached with the primary's user and database"),
            ));
        }
        replicas.push(HostConfig {
            host: replica.host,
            port: replica.port,
            weight: 1,
        });
    }
    Ok(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> PgUrl {
        PgUrl::parse(s).unwrap()
    }

    fn url_err(s: &str) -> String {
        PgUrl::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_full_url() {
        let u = url("postgres://app:secret@db.internal:5433/appdb");
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "db.internal");
        assert_eq!(u.port, 5433);
        assert_eq!(u.dbname, "appdb");
        assert_eq!(
            url("postgresql://app:secret@db/appdb"),
            PgUrl {
                host: "db".into(),
                port: 5432,
                ..u.clone()
            }
        );
        assert_eq!(url("POSTGRES://app:secret@db.internal:5433/appdb"), u);
    }

    #[test]
    fn defaults_port_dbname_and_password() {
        let u = url("postgres://app@localhost");
        assert_eq!((u.port, u.dbname.as_str(), u.password), (5432, "app", None));
        assert_eq!(url("postgres://app:@localhost/").password, None);
        assert_eq!(url("postgres://app:pw@localhost/").dbname, "app");
    }

    #[test]
    fn percent_decoding() {
        let u = url("postgres://my%20user:p%40ss%2Fw%3Ard+x@h/my%2Ddb%C3%A9");
        assert_eq!(u.user, "my user");
        assert_eq!(u.password.as_deref(), Some("p@ss/w:rd+x"));
        assert_eq!(u.dbname, "my-dbé");
        for bad in [
            "postgres://a:%zz@h/d",
            "postgres://a:%4@h/d",
            "postgres://a:%ff@h/d",
        ] {
            let e = url_err(bad);
            assert!(e.contains("password has invalid percent-encoding"), "{e}");
            assert!(
                !e.contains("%zz") && !e.contains("%4") && !e.contains("%ff"),
                "{e}"
            );
        }
        assert!(url_err("postgres://a%g:p@h/d").contains("user name"));
        assert!(url_err("postgres://a:p@h/d%").contains("database name"));
    }

    #[test]
    fn ipv6_hosts() {
        let u = url("postgres://app:pw@[::1]:6543/db");
        assert_eq!((u.host.as_str(), u.port), ("::1", 6543));
        assert_eq!(url("postgres://app:pw@[fe80::1]/db").port, 5432);
        assert!(url_err("postgres://app:pw@::1/db").contains("brackets"));
        assert!(url_err("postgres://app:pw@[::1/db").contains("closing"));
        assert!(url_err("postgres://app:pw@[nope]/db").contains("not an IPv6 address"));
        assert!(url_err("postgres://app:pw@[::1]x/db").contains("unexpected"));
        assert_eq!(u.to_string(), "postgres://app:<redacted>@[::1]:6543/db");
    }

    #[test]
    fn rejects_bad_urls_naming_the_flag() {
        let cases = [
            (
                "mysql://app:pw@h/db",
                r#"--primary: unsupported URL scheme "mysql""#,
            ),
            ("app:pw@h/db", "--primary: expected a URL like"),
            ("postgres://app:pw@/db", "--primary: the URL has no host"),
            (
                "postgres://app:pw@:5432/db",
                "--primary: the URL has no host",
            ),
            ("postgres://h/db", "--primary: the URL has no user name"),
            (
                "postgres://app:pw@h:0/db",
                r#"--primary: port "0" is not an integer 1-65535"#,
            ),
            ("postgres://app:pw@h:99999/db", "is not an integer 1-65535"),
            ("postgres://app:pw@h:x/db", "is not an integer 1-65535"),
            (
                "postgres://app:pw@h/db?application_name=x",
                "connection parameter \"application_name\" is not supported",
            ),
            (
                "postgres://app:pw@h/db?sslmode=sometimes",
                "sslmode=\"sometimes\"",
            ),
            ("postgres://app:pw@h1,h2/db", "several hosts"),
            ("postgres://app:pw@h%2Fx/db", "is not a valid host name"),
        ];
        for (input, expected) in cases {
            let e = url_err(input);
            assert!(e.contains(expected), "{input}: {e}");
            assert!(!e.contains("pw"), "{input}: password leaked: {e}");
        }
        let e = url_err("s3cr3t:stuff://x");
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let u = url("postgres://app:hunter2@h/db");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(format!("{u:?}").contains(REDACTED));
        assert!(!u.to_string().contains("hunter2"));
        let args = SidecarArgs {
            primary: "postgres://app:hunter2@h/db".into(),
            replicas: vec!["postgres://app:hunter2@r/db".into(), "hunter2".into()],
            ..SidecarArgs::default()
        };
        let debug = format!("{args:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("postgres://app:<redacted>@h:5432/db"),
            "{debug}"
        );
    }

    fn args(primary: &str, replicas: &[&str]) -> SidecarArgs {
        SidecarArgs {
            primary: primary.to_owned(),
            replicas: replicas.iter().map(|r| (*r).to_owned()).collect(),
            ..SidecarArgs::default()
        }
    }

    #[test]
    fn replicas_split_reads_with_lsn_read_your_writes_by_default() {
        let a = args("postgres://app:pw@p/db", &["postgres://app:pw@r/db"]);
        let c = Config::from_sidecar(&a).unwrap();
        let r = &c.databases["db"].routing;
        assert_eq!(
            (r.split, r.read_your_writes),
            (super::super::Switch::On, ReadYourWrites::Lsn)
        );
        let a = SidecarArgs {
            read_your_writes: Some(ReadYourWrites::Time),
            ..a
        };
        let c = Config::from_sidecar(&a).unwrap();
        assert_eq!(
            c.databases["db"].routing.read_your_writes,
            ReadYourWrites::Time
        );
        assert_eq!("off".parse::<ReadYourWrites>(), Ok(ReadYourWrites::Off));
    }

    #[test]
    fn pool_size_auto_and_a_connection_budget_from_flags() {
        let mut a = args("postgres://app:pw@db/appdb", &[]);
        a.pool_size = Some("auto".parse().unwrap());
        a.max_db_connections = Some(40);
        let c = Config::from_sidecar(&a).unwrap();
        assert_eq!(c.pool_size_for("appdb", "app"), PoolSize::Auto);
        assert_eq!(c.max_db_connections_for("appdb"), 40);
        c.validate().unwrap();
    }

    #[test]
    fn a_fleet_from_flags() {
        let mut a = args("postgres://app:pw@db/appdb", &[]);
        a.fleet = Some("orders".into());
        a.fleet_instance = Some("pod-7".into());
        let f = Config::from_sidecar(&a).unwrap().pooler.fleet.unwrap();
        assert_eq!((f.name.as_str(), f.instance.as_str()), ("orders", "pod-7"));
        a.fleet = Some("orders:eu".into());
        let e = Config::from_sidecar(&a).unwrap_err().to_string();
        assert!(e.contains("--fleet") && e.contains("':'"), "{e}");
        a.fleet = None;
        let e = Config::from_sidecar(&a).unwrap_err().to_string();
        assert!(
            e.contains("--fleet-instance") && e.contains("needs --fleet"),
            "{e}"
        );
    }

    #[test]
    fn builds_a_config_from_flags() {
        let mut a = args(
            "postgres://app:pw@db:5433/appdb",
            &[
                "postgres://app@r1/appdb",
                "postgres://app:pw@[::1]:6000/appdb",
            ],
        );
        a.listen = Some("0.0.0.0:7000".parse().unwrap());
        a.pool_mode = Some(PoolMode::Session);
        a.pool_size = Some(PoolSize::Fixed(7));
        let c = Config::from_sidecar(&a).unwrap();
        assert_eq!(c.pooler.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(c.pool_mode_for("appdb"), PoolMode::Session);
        assert_eq!(c.pool_size_for("appdb", "app"), PoolSize::Fixed(7));
        let db = &c.databases["appdb"];
        assert_eq!(
            (db.host.as_str(), db.port, db.dbname.as_str()),
            ("db", 5433, "appdb")
        );
        assert_eq!(
            db.replicas,
            vec![
                HostConfig {
                    host: "r1".into(),
                    port: 5432,
                    weight: 1
                },
                HostConfig {
                    host: "::1".into(),
                    port: 6000,
                    weight: 1
                },
            ]
        );
        let user = &c.users["app"];
        assert_eq!(user.password.as_deref(), Some("pw"));
        assert_eq!(user.auth, AuthMethod::ScramSha256);
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.databases.len(), 1);
    }

    #[test]
    fn sidecar_defaults() {
        let c = Config::from_sidecar(&args("postgres://app:pw@db", &[])).unwrap();
        let defaults = PoolerSettings {
            admin_users: vec!["app".to_string()],
            ..PoolerSettings::default()
        };
        assert_eq!(c.pooler, defaults);
        assert!(c.databases["app"].replicas.is_empty());
    }

    #[test]
    fn sidecar_errors() {
        let err = |a: &SidecarArgs| Config::from_sidecar(a).unwrap_err().to_string();
        assert!(err(&args("postgres://app@db/x", &[]))
            .starts_with("--primary: the URL has no password"));
        assert!(err(&args("http://app:pw@db/x", &[])).starts_with("--primary: unsupported"));
        let e = err(&args(
            "postgres://app:pw@db/x",
            &["postgres://other:pw@r/x"],
        ));
        assert!(e.starts_with(r#"--replica: user "other" differs"#), "{e}");
        let e = err(&args(
            "postgres://app:pw@db/x",
            &["postgres://app:pw@r/x", "postgres://app:pw@r/y"],
        ));
        assert!(
            e.starts_with(r#"--replica #2: database "y" differs"#),
            "{e}"
        );
        let e = err(&args(
            "postgres://app:pw@db/x",
            &["postgres://app:other@r/x"],
        ));
        assert!(
            e.starts_with("--replica: the password differs") && !e.contains("other"),
            "{e}"
        );
        assert!(err(&args("postgres://app:pw@db/x", &["ftp://r"]))
            .starts_with("--replica: unsupported"));
        let mut a = args("postgres://app:pw@db/x", &[]);
        a.pool_size = Some(PoolSize::Fixed(0));
        assert_eq!(err(&a), "--pool-size: must be at least 1, got 0");
    }

    #[test]
    fn tls_from_the_url_and_the_client_tls_flags() {
        let u = url("postgres://app:pw@db/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(u.sslmode, Some(crate::config::TlsMode::VerifyFull));
        assert_eq!(u.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        let args = SidecarArgs {
            primary: "postgres://app:pw@db/app?sslmode=verify-ca&sslrootcert=/ca.pem".into(),
            client_tls_cert: Some("c.pem".into()),
            client_tls_key: Some("k.pem".into()),
            ..SidecarArgs::default()
        };
        let c = Config::from_sidecar(&args).unwrap();
        assert_eq!(c.pooler.server_tls.mode, crate::config::TlsMode::VerifyCa);
        assert_eq!(
            c.pooler.server_tls.ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(c.pooler.client_tls.mode, crate::config::TlsMode::Prefer);
        // verify-* without a CA is refused, naming the key it maps to.
        let args = SidecarArgs {
            primary: "postgres://app:pw@db/app?sslmode=verify-full".into(),
            ..SidecarArgs::default()
        };
        let e = Config::from_sidecar(&args).unwrap_err().to_string();
        assert!(e.contains("server_tls_ca_file"), "{e}");
        // A certificate without its key, and a replica with another sslmode.
        let args = SidecarArgs {
            primary: "postgres://app:pw@db/app".into(),
            client_tls_cert: Some("c.pem".into()),
            ..SidecarArgs::default()
        };
        let e = Config::from_sidecar(&args).unwrap_err().to_string();
        assert!(e.contains("--client-tls-key"), "{e}");
        let args = SidecarArgs {
            primary: "postgres://app:pw@db/app?sslmode=require".into(),
            replicas: vec!["postgres://app:pw@r/app?sslmode=disable".into()],
            ..SidecarArgs::default()
        };
        let e = Config::from_sidecar(&args).unwrap_err().to_string();
        assert!(e.contains("sslmode"), "{e}");
        // Debug shows every field, and never the password.
        let shown = format!("{args:?}");
        assert!(
            shown.contains("read_your_writes") && !shown.contains(":pw@"),
            "{shown}"
        );
    }
}
