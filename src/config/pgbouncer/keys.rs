//! The tables behind the translation of `[pgbouncer]` keys: those pglittle
//! has (and how each converts), and why the others are not carried over.

/// How a `[pgbouncer]` key with a pglittle counterpart is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A whole number; `true`: a zero is not carried over, as it means
    /// something else in pglittle (the reason is `reason("0 KEY")`).
    Count(bool),
    /// Seconds, written as a duration; the flag as for `Count`.
    Time(bool),
    Text,
    /// A comma-separated list, written as an array.
    List,
    Tls,
    Mode,
}

const SAME: Kind = Kind::Count(false);
const TIME: Kind = Kind::Time(false);
const TIME0: Kind = Kind::Time(true);
const COUNT0: Kind = Kind::Count(true);

/// `[pgbouncer]` keys pglittle has: PgBouncer's name, pglittle's, the kind.
pub(super) const MAPPED: &[(&str, &str, Kind)] = &[
    ("pool_mode", "pool_mode", Kind::Mode),
    ("default_pool_size", "pool_size", COUNT0),
    ("min_pool_size", "min_pool_size", SAME),
    ("reserve_pool_size", "reserve_pool_size", SAME),
    ("max_client_conn", "max_client_conn", SAME),
    ("max_db_connections", "max_db_connections", COUNT0),
    ("max_prepared_statements", "max_prepared_statements", COUNT0),
    ("reserve_pool_timeout", "reserve_pool_timeout", TIME0),
    ("query_wait_timeout", "query_wait_timeout", TIME),
    ("server_connect_timeout", "server_connect_timeout", TIME0),
    ("server_idle_timeout", "server_idle_timeout", TIME),
    ("server_lifetime", "server_lifetime", TIME0),
    ("server_check_delay", "server_check_delay", TIME),
    ("client_idle_timeout", "client_idle_timeout", TIME),
    ("client_login_timeout", "client_login_timeout", TIME0),
    ("idle_transaction_timeout", "idle_transaction_timeout", TIME),
    ("auth_file", "auth_file", Kind::Text),
    ("auth_user", "auth_user", Kind::Text),
    ("auth_query", "auth_query", Kind::Text),
    ("auth_dbname", "auth_dbname", Kind::Text),
    ("admin_users", "admin_users", Kind::List),
    ("stats_users", "stats_users", Kind::List),
    ("client_tls_sslmode", "client_tls_mode", Kind::Tls),
    ("client_tls_cert_file", "client_tls_cert_file", Kind::Text),
    ("client_tls_key_file", "client_tls_key_file", Kind::Text),
    ("client_tls_ca_file", "client_tls_ca_file", Kind::Text),
    ("server_tls_sslmode", "server_tls_mode", Kind::Tls),
    ("server_tls_ca_file", "server_tls_ca_file", Kind::Text),
    ("server_tls_cert_file", "server_tls_cert_file", Kind::Text),
    ("server_tls_key_file", "server_tls_key_file", Kind::Text),
];

/// Why something is not carried over as it is, by topic: a `[pgbouncer]`
/// key, `db KEY` and `users KEY` for connection-string keys, `0 KEY` for a
/// zero that means something else, `~ KEY` for an approximation. `|`
/// separates topics with the same reason; a trailing `*` matches any rest.
/// The first match wins.
const REASONS: &[(&str, &str)] = &[
    ("%include", "unsupported: not followed; translate the included file too and merge the tables"),
    ("[peers]", "unsupported: pglittle has no peering; a cancel request must reach the instance that served the query"),
    ("[*", "unsupported: not a PgBouncer section; skipped"),
    ("logfile|syslog*", "not needed: pglittle logs to stderr (log_format text or json) for the service manager to collect"),
    ("log_*|verbose", "unsupported: pglittle's log detail is chosen with the RUST_LOG environment variable"),
    ("stats_period", "not needed: SHOW STATS averages over 60s; rates are on the /metrics endpoint (metrics_listen)"),
    ("pidfile|user", "not needed: pglittle runs in the foreground under a service manager"),
    ("conffile", "not needed: the configuration file is given on the command line"),
    ("service_name|job_name", "not needed: a Windows service setting"),
    ("unix_socket_*", "unsupported: pglittle listens on TCP only"),
    ("auth_hba_file|auth_ident_file", "unsupported: pglittle has no HBA file"),
    ("max_user_connections|users max_user_connections", "unsupported: pglittle has no per-user server cap; size pools with pool_size"),
    ("max_*_client_connections", "unsupported: pglittle has no per-user or per-database client cap; see max_client_conn and max_queue"),
    ("server_round_robin", "not needed: pglittle lends idle servers in its own order"),
    ("server_check_query", "not needed: pglittle checks an idle server with a non-blocking read (server_check_delay), not a query"),
    ("server_login_retry", "not needed: pglittle retries a failed connect with backoff within server_connect_timeout"),
    ("server_reset_query", "approximated: pglittle picks its own reset: server_reset = \"detect\" (only a server whose client left session state) or \"always\""),
    ("track_extra_parameters", "not needed: pglittle follows the settings a client changes itself"),
    ("ignore_startup_parameters", "not needed: pglittle does not refuse unknown startup parameters"),
    ("peer_id", "unsupported: pglittle has no peering"),
    ("autodb_idle_timeout", "unsupported: pglittle has no \"*\" fallback database"),
    ("dns_*|resolv_conf", "not needed: host names are resolved by the system at each connect"),
    ("client_tls*|server_tls*", "not needed: pglittle uses rustls (TLS 1.2 and 1.3, rustls's cipher suites and key exchange groups)"),
    ("query_timeout", "unsupported: use PostgreSQL's statement_timeout"),
    ("suspend_timeout", "unsupported: pglittle has no SUSPEND or online restart"),
    ("pkt_buf", "not needed: buffers are sized per message"),
    ("sbuf_loopcnt", "not needed: each connection is its own task"),
    ("listen_backlog|so_reuseport|tcp_*", "unsupported: network tuning is not configurable"),
    ("auth_type plain", "unsupported: pglittle never asks a client for a cleartext password; users get scram-sha-256 or md5"),
    ("auth_type any", "unsupported: pglittle logs in to the server as the client's user; every user needs credentials"),
    ("auth_type trust", "unsupported as a global setting: pglittle sets auth per user; write auth = \"trust\" in a [users.NAME] table for each user"),
    ("auth_type cert", "unsupported as a global setting: pglittle sets auth per user; write auth = \"cert\" in a [users.NAME] table for each user"),
    ("auth_type md5|auth_type scram-sha-256", "approximated: pglittle picks the method per user from the secret auth_file holds (md5 for an md5 secret, else scram-sha-256); [users.NAME] auth overrides"),
    ("auth_type*", "unsupported: pglittle verifies clients with scram-sha-256, md5, trust or cert, set per user"),
    ("0 default_pool_size|0 pool_size", "unsupported: a pglittle pool needs at least 1 server connection; left out"),
    ("0 max_db_connections", "not needed: 0 (no cap) is left out"),
    ("0 max_prepared_statements", "not needed: 0 turns PgBouncer's prepared statement support off; pglittle always keeps named statements working"),
    ("0 reserve_pool_timeout", "approximated: 0 turns PgBouncer's reserve pool off; written as reserve_pool_size = 0"),
    ("0 server_connect_timeout", "unsupported: 0 means no limit in PgBouncer; pglittle needs one (its default, 15s, applies)"),
    ("0 server_lifetime", "unsupported: 0 makes PgBouncer use each server connection once, in pglittle it means unlimited (its default, 3600s, applies)"),
    ("0 client_login_timeout", "unsupported: 0 means no limit in PgBouncer; pglittle needs one (its default, 60s, applies)"),
    ("~ max_db_connections", "approximated: in pglittle it bounds only pools with pool_size = \"auto\", not fixed-size ones"),
    ("~ statement", "approximated: pglittle has no statement pooling; written as \"transaction\" (transactions of several statements are then allowed)"),
    ("~ max_packet_size", "approximated: pglittle's max_message_size lies between 1KiB and 1GiB; the nearest bound is written"),
    ("~ min_pool_size", "approximated: larger than the pool size, which PgBouncer caps it at; written as the pool size"),
    ("~ host list", "approximated: PgBouncer spreads connections over the host list; pglittle uses the first host (add others as [[databases.NAME.replicas]] if they are read replicas)"),
    ("~ port list", "approximated: pglittle uses the first port"),
    ("~ socket", "approximated: a Unix socket (PgBouncer's default); pglittle connects over TCP, written as 127.0.0.1"),
    ("~ listen list", "approximated: pglittle listens on one address; the first is written"),
    ("~ listen name", "approximated: pglittle listens on an IP address, not a host name; written as 127.0.0.1"),
    ("~ listen unset", "approximated: not set, so PgBouncer listened on its Unix socket only; pglittle listens on TCP 127.0.0.1"),
    ("~ users pool_size", "approximated: written commented out; a [users.NAME] table replaces the user's auth_file entry, so it needs the user's secret too"),
    ("no auth_file", "not set: add a [users.NAME] table (password or scram_secret) for every user clients log in as"),
    ("no auth_user password", "needs its password: add a [users.NAME] table for it (PgBouncer took it from auth_file)"),
    ("db fallback", "unsupported: pglittle has no fallback database; add a [databases.NAME] table for each database clients use"),
    ("db console", "unsupported: the name of pglittle's admin console"),
    ("db user", "unsupported: pglittle logs in to the server as the client's own user (one pool per user); there is no forced user"),
    ("db password", "unsupported: goes with user=; pglittle takes server passwords from [users.NAME] or auth_file"),
    ("db auth_*", "unsupported per database: pglittle has [pooler] auth_user, auth_query and auth_dbname only"),
    ("db reserve_pool*", "unsupported per database: pglittle has [pooler] reserve_pool_size only"),
    ("db server_lifetime", "unsupported per database: pglittle has [pooler] server_lifetime only"),
    ("db connect_query", "unsupported: no equivalent; for settings use ALTER DATABASE ... SET on the server"),
    ("db client_encoding|db datestyle|db timezone|db application_name", "unsupported: set it on the server with ALTER DATABASE or ALTER ROLE ... SET"),
    ("db max_db_client_connections", "unsupported: pglittle has no per-database client cap; see max_client_conn and max_queue"),
    ("users pool_mode", "unsupported: pglittle sets pool_mode per database and globally, not per user"),
    ("users max_user_client_connections", "unsupported: pglittle has no per-user client cap; see max_client_conn and max_queue"),
];

/// The reason for a topic of [`REASONS`]; anything else has no equivalent.
pub(super) fn reason(topic: &str) -> &'static str {
    let matches = |p: &str| {
        p.split_once('*').map_or(topic == p, |(a, b)| {
            topic.len() >= a.len() + b.len() && topic.starts_with(a) && topic.ends_with(b)
        })
    };
    REASONS
        .iter()
        .find(|(p, _)| p.split('|').any(matches))
        .map_or("unsupported: no equivalent in pglittle", |r| r.1)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ok, typed};
    use super::*;

    #[test]
    fn every_mapped_key_is_one_pglittle_parses() {
        let mut ini =
            String::from("[databases]\na = host=h\n[pgbouncer]\nmax_packet_size = 4096\n");
        ini.push_str("server_reset_query_always = 1\nlisten_port = 7000\n");
        for (key, _, kind) in MAPPED {
            let value = match kind {
                Kind::Count(_) | Kind::Time(_) => "2",
                Kind::Tls => "disable",
                Kind::Mode => "session",
                Kind::Text | Kind::List => "x",
            };
            ini.push_str(&format!("{key} = {value}\n"));
        }
        let out = ok(&ini);
        let c = typed(&out.toml);
        assert_eq!(c.pooler.max_message_size, 4096);
        assert_eq!(c.pooler.auth_lookup.dbname.as_deref(), Some("x"));
        assert_eq!(c.pooler.server_tls.key_file, Some("x".into()));
        let written = out
            .toml
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(" = "))
            .count();
        assert_eq!(
            written,
            MAPPED.len() + 4,
            "each once, and max_message_size, server_reset, listen, host: {}",
            out.toml
        );
    }

    #[test]
    fn reasons_match_alternatives_and_prefixes_first_match_first() {
        let logs = reason("logfile");
        assert_eq!(reason("syslog_ident"), logs, "an alternative with a *");
        assert!(logs.contains("stderr"), "{logs}");
        assert_eq!(reason("db timezone"), reason("db datestyle"));
        assert!(reason("auth_type trust").contains("auth = \"trust\""));
        assert!(
            reason("auth_type ldap").contains("set per user"),
            "auth_type* after the exact ones"
        );
        assert!(reason("[fun]").contains("skipped"));
        assert!(reason("[peers]").contains("peering"), "[peers] before [*");
        assert_eq!(
            reason("no_such_key"),
            "unsupported: no equivalent in pglittle"
        );
        assert_ne!(reason("server_tls_ciphers"), reason("no_such_key"));
        assert_eq!(reason("tcp_keepalive"), reason("so_reuseport"));
    }
}
