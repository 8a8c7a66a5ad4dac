//! The effective configuration written back as TOML for `check-config`.
//!
//! Written by hand rather than serialized so the output can say, in
//! comments, where an unset override gets its value from, and so secrets are
//! replaced before any text exists. The output parses back to the same
//! `Config`, apart from the redacted secrets.

use std::fmt::Display;

use super::units::{format_duration, format_size};
use super::{child_key, toml_string, Config, DatabaseConfig, PoolSize, UserConfig, REDACTED};

/// A pool size as TOML: a bare number, or the string "auto".
fn size_value(size: PoolSize) -> String {
    match size {
        PoolSize::Fixed(n) => n.to_string(),
        PoolSize::Auto => toml_string("auto"),
    }
}

pub(super) fn render(config: &Config) -> String {
    let mut out = String::from(
        "# Effective pglittle configuration: every key with the value in force,\n\
         # defaults filled in. Secrets are shown as \"<redacted>\".\n",
    );
    render_pooler(config, &mut out);
    for (name, db) in &config.databases {
        render_database(config, name, db, &mut out);
    }
    for (name, user) in &config.users {
        render_user(config, name, user, &mut out);
    }
    out
}

fn render_pooler(config: &Config, out: &mut String) {
    let p = &config.pooler;
    let duration = |d| toml_string(&format_duration(d));
    out.push_str("\n[pooler]\n");
    line(out, "listen", toml_string(&p.listen.to_string()));
    line(out, "max_client_conn", p.max_client_conn);
    line(out, "pool_mode", toml_string(p.pool_mode.as_str()));
    line(out, "pool_size", size_value(p.pool_size));
    line(out, "min_pool_size", p.min_pool_size);
    line(out, "max_pool_size", p.max_pool_size);
    line(out, "max_db_connections", p.max_db_connections);
    line(out, "reserve_pool_size", p.reserve_pool_size);
    line(
        out,
        "reserve_pool_timeout",
        duration(p.reserve_pool_timeout),
    );
    line(out, "query_wait_timeout", duration(p.query_wait_timeout));
    line(
        out,
        "server_connect_timeout",
        duration(p.server_connect_timeout),
    );
    line(out, "server_idle_timeout", duration(p.server_idle_timeout));
    line(out, "server_lifetime", duration(p.server_lifetime));
    line(out, "client_idle_timeout", duration(p.client_idle_timeout));
    line(
        out,
        "client_login_timeout",
        duration(p.client_login_timeout),
    );
    line(
        out,
        "idle_transaction_timeout",
        duration(p.idle_transaction_timeout),
    );
    line(
        out,
        "client_batch_timeout",
        duration(p.client_batch_timeout),
    );
    line(out, "server_reset", toml_string(p.server_reset.as_str()));
    line(out, "pin_on_session_state", p.pin_on_session_state);
    line(out, "server_allow_cleartext", p.server_allow_cleartext);
    render_auth(out, p);
    render_client_tls(out, &p.client_tls);
    render_server_tls(out, &p.server_tls);
    line(
        out,
        "max_message_size",
        toml_string(&format_size(p.max_message_size)),
    );
    line(out, "shutdown_timeout", duration(p.shutdown_timeout));
    line(out, "max_prepared_statements", p.max_prepared_statements);
    line(out, "max_client_statements", p.max_client_statements);
    line(out, "server_check_delay", duration(p.server_check_delay));
    line(out, "max_queue", p.max_queue);
    line(out, "shed_on_predicted_wait", p.shed_on_predicted_wait);
    line(out, "log_format", toml_string(p.log_format.as_str()));
    let list = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|s| toml_string(s)).collect();
        format!("[{}]", items.join(", "))
    };
    line(out, "admin_users", list(&p.admin_users));
    line(out, "stats_users", list(&p.stats_users));
    match p.metrics_listen {
        Some(a) => line(out, "metrics_listen", toml_string(&a.to_string())),
        None => out.push_str("# metrics_listen is unset: no /metrics endpoint\n"),
    }
    line(out, "sizing_wait_target", duration(p.sizing_wait_target));
    line(out, "sizing_headroom_percent", p.sizing_headroom_percent);
    line(out, "health_check_period", duration(p.health_check_period));
    line(out, "ban_after", p.ban_after);
    line(out, "unban_after", p.unban_after);
    render_fleet(p, out);
}

fn render_fleet(p: &super::PoolerSettings, out: &mut String) {
    let duration = |d| toml_string(&format_duration(d));
    match &p.fleet {
        Some(f) => {
            line(out, "fleet", toml_string(&f.name));
            line(out, "fleet_instance", toml_string(&f.instance));
            line(out, "fleet_sync_period", duration(f.sync_period));
        }
        None => out.push_str("# fleet is unset: this instance sizes its pools alone\n"),
    }
}

fn render_database(config: &Config, name: &str, db: &DatabaseConfig, out: &mut String) {
    let path = child_key("databases", name);
    out.push_str(&format!("\n[{path}]\n"));
    line(out, "host", toml_string(&db.host));
    line(out, "port", db.port);
    line(out, "dbname", toml_string(&db.dbname));
    // Unset overrides stay unset (so the output parses back to the same
    // config) but show the inherited value as a comment.
    match db.pool_size {
        Some(n) => line(out, "pool_size", size_value(n)),
        None => inherited(
            out,
            "pool_size",
            size_value(config.pooler.pool_size),
            "pooler.pool_size",
        ),
    }
    match db.max_db_connections {
        Some(n) => line(out, "max_db_connections", n),
        None => inherited(
            out,
            "max_db_connections",
            config.pooler.max_db_connections,
            "pooler.max_db_connections",
        ),
    }
    match db.min_pool_size {
        Some(n) => line(out, "min_pool_size", n),
        None => inherited(
            out,
            "min_pool_size",
            config.pooler.min_pool_size,
            "pooler.min_pool_size",
        ),
    }
    match db.pool_mode {
        Some(mode) => line(out, "pool_mode", toml_string(mode.as_str())),
        None => inherited(
            out,
            "pool_mode",
            toml_string(config.pooler.pool_mode.as_str()),
            "pooler.pool_mode",
        ),
    }
    let r = &db.routing;
    let duration = |d| toml_string(&format_duration(d));
    line(out, "read_write_split", toml_string(r.split.as_str()));
    line(
        out,
        "read_your_writes",
        toml_string(r.read_your_writes.as_str()),
    );
    if let Some(lag) = r.max_replica_lag {
        line(out, "max_replica_lag", duration(lag));
    }
    if let Some(bytes) = r.max_replica_lag_bytes {
        line(out, "max_replica_lag_bytes", bytes);
    }
    line(out, "causal_wait", duration(r.causal_wait));
    line(out, "pin_after_write", duration(r.pin_after_write));
    line(out, "primary_reads", toml_string(r.primary_reads.as_str()));
    line(out, "role", toml_string(r.role.as_str()));
    let writers: Vec<String> = r.writer_functions.iter().map(|w| toml_string(w)).collect();
    line(out, "writer_functions", format!("[{}]", writers.join(", ")));
    if db.replicas.is_empty() {
        line(out, "replicas", "[]");
    }
    for replica in &db.replicas {
        out.push_str(&format!("\n[[{}]]\n", child_key(&path, "replicas")));
        line(out, "host", toml_string(&replica.host));
        line(out, "port", replica.port);
        line(out, "weight", replica.weight);
    }
}

fn render_user(config: &Config, name: &str, user: &UserConfig, out: &mut String) {
    out.push_str(&format!("\n[{}]\n", child_key("users", name)));
    line(out, "auth", toml_string(user.auth.as_str()));
    let secret = |out: &mut String, key: &str, value: &Option<String>, unset: &str| match value {
        Some(_) => line(out, key, toml_string(REDACTED)),
        None => out.push_str(&format!("# {key}: not set{unset}\n")),
    };
    secret(out, "password", &user.password, "");
    secret(out, "scram_secret", &user.scram_secret, "");
    secret(out, "md5_secret", &user.md5_secret, "");
    let server_unset = if user.password.is_some() {
        " (password is used to log in to PostgreSQL)"
    } else if user.scram_secret.is_some() {
        " (the client's SCRAM proof is passed through to PostgreSQL)"
    } else if user.md5_secret.is_some() {
        " (md5_secret answers PostgreSQL's md5 challenge)"
    } else {
        " (logs in to PostgreSQL without a password)"
    };
    secret(out, "server_password", &user.server_password, server_unset);
    match user.pool_size {
        Some(n) => line(out, "pool_size", size_value(n)),
        None => out.push_str(&format!(
            "# pool_size: not set; each database's pool_size applies (pooler.pool_size = {})\n",
            config.pooler.pool_size
        )),
    }
}

fn line(out: &mut String, key: &str, value: impl Display) {
    out.push_str(&format!("{key} = {value}\n"));
}

fn inherited(out: &mut String, key: &str, value: impl Display, from: &str) {
    out.push_str(&format!("# {key} = {value}  (not set; {from} applies)\n"));
}

/// `auth_file` and the `auth_query` keys (unset ones are left out).
fn render_auth(out: &mut String, p: &super::PoolerSettings) {
    if let Some(f) = &p.auth_file {
        line(out, "auth_file", toml_string(&f.display().to_string()));
    }
    let a = &p.auth_lookup;
    match &a.user {
        Some(u) => line(out, "auth_user", toml_string(u)),
        None => out.push_str("# auth_user: not set; only listed users may log in\n"),
    }
    line(out, "auth_query", toml_string(&a.query));
    line(out, "auth_query_ttl", toml_string(&format_duration(a.ttl)));
    if let Some(d) = &a.dbname {
        line(out, "auth_dbname", toml_string(d));
    }
}

/// `client_tls_mode` and the files it uses (unset files are left out).
fn render_client_tls(out: &mut String, t: &super::ClientTls) {
    line(out, "client_tls_mode", toml_string(t.mode.as_str()));
    for (key, file) in [
        ("client_tls_cert_file", &t.cert_file),
        ("client_tls_key_file", &t.key_file),
        ("client_tls_ca_file", &t.ca_file),
    ] {
        if let Some(f) = file {
            line(out, key, toml_string(&f.display().to_string()));
        }
    }
}

/// `server_tls_mode` and the files it uses (unset files are left out).
fn render_server_tls(out: &mut String, t: &super::ServerTls) {
    line(out, "server_tls_mode", toml_string(t.mode.as_str()));
    for (key, file) in [
        ("server_tls_ca_file", &t.ca_file),
        ("server_tls_cert_file", &t.cert_file),
        ("server_tls_key_file", &t.key_file),
    ] {
        if let Some(f) = file {
            line(out, key, toml_string(&f.display().to_string()));
        }
    }
}
