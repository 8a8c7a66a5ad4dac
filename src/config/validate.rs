//! Rules that a well-typed configuration must still satisfy. They run on the
//! typed [`Config`] (not on TOML) so that configurations built from sidecar
//! flags or by hand in tests are held to the same rules as files.

use std::collections::BTreeSet;

use super::units::format_size;
use super::{child_key, AuthMethod, Config, ConfigError, UserConfig};

const MIN_MESSAGE_SIZE: usize = 1024;
const MAX_MESSAGE_SIZE: usize = 1024 * 1024 * 1024;

/// Every problem found, in a stable order (pooler, databases, users).
pub(super) fn problems(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    check_pooler(config, &mut errors);
    check_databases(config, &mut errors);
    check_users(config, &mut errors);
    check_cert_users(config, &mut errors);
    check_auth_user(config, &mut errors);
    errors
}

fn check_pooler(config: &Config, errors: &mut Vec<ConfigError>) {
    let p = &config.pooler;
    if let Some(size) = p.pool_size.fixed() {
        at_least_one("pooler.pool_size", size, errors);
    }
    if p.max_pool_size > 0 && p.min_pool_size > p.max_pool_size {
        errors.push(ConfigError::invalid(
            "pooler.min_pool_size",
            format!(
                "{} is larger than pooler.max_pool_size ({}); the auto-sizing controller needs min <= max",
                p.min_pool_size, p.max_pool_size
            ),
        ));
    }
    at_least_one("pooler.max_client_conn", p.max_client_conn, errors);
    check_client_tls(&p.client_tls, errors);
    check_server_tls(&p.server_tls, errors);
    if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&p.max_message_size) {
        errors.push(ConfigError::invalid(
            "pooler.max_message_size",
            format!(
                "must be between 1KiB and 1GiB, got {}",
                format_size(p.max_message_size)
            ),
        ));
    }
}

/// TLS needs its files: a certificate and key to offer it, a CA to verify
/// clients' certificates. (Whether they can be read and parsed is checked
/// when they are loaded, at start and at RELOAD.)
fn check_client_tls(t: &super::ClientTls, errors: &mut Vec<ConfigError>) {
    if t.mode.offered() {
        for (key, file) in [
            ("pooler.client_tls_cert_file", &t.cert_file),
            ("pooler.client_tls_key_file", &t.key_file),
        ] {
            if file.is_none() {
                errors.push(ConfigError::invalid(
                    key,
                    format!(
                        "required when client_tls_mode = \"{}\" (a PEM file)",
                        t.mode
                    ),
                ));
            }
        }
    }
    if t.mode.verifies_peer() && t.ca_file.is_none() {
        errors.push(ConfigError::invalid(
            "pooler.client_tls_ca_file",
            format!(
                "required when client_tls_mode = \"{}\": the CA that client certificates must chain to",
                t.mode
            ),
        ));
    }
}

/// Verifying a server needs the CA; a client certificate needs its key.
fn check_server_tls(t: &super::ServerTls, errors: &mut Vec<ConfigError>) {
    if t.mode.verifies_peer() && t.ca_file.is_none() {
        errors.push(ConfigError::invalid(
            "pooler.server_tls_ca_file",
            format!(
                "required when server_tls_mode = \"{}\": the CA that servers' certificates must chain to",
                t.mode
            ),
        ));
    }
    if t.cert_file.is_some() != t.key_file.is_some() {
        errors.push(ConfigError::invalid(
            "pooler.server_tls_key_file",
            "server_tls_cert_file and server_tls_key_file go together (a client certificate and its key)",
        ));
    }
}

fn check_databases(config: &Config, errors: &mut Vec<ConfigError>) {
    if config.databases.is_empty() {
        errors.push(ConfigError::invalid(
            "databases",
            "no database configured; add at least one [databases.NAME] table",
        ));
    }
    // Pools exist per (database, user); a user's override can shrink one
    // below the database's minimum. Report each offending pair of keys once.
    let mut reported = BTreeSet::new();
    for (name, db) in &config.databases {
        let path = child_key("databases", name);
        if name.is_empty() {
            errors.push(ConfigError::invalid(
                &path,
                "the database name must not be empty",
            ));
        }
        not_blank(&child_key(&path, "host"), &db.host, errors);
        // An empty NAME also empties the default dbname: one problem, reported once.
        if !name.is_empty() || db.dbname != *name {
            not_blank(&child_key(&path, "dbname"), &db.dbname, errors);
        }
        port_not_zero(&child_key(&path, "port"), db.port, errors);
        if let Some(size) = db.pool_size.and_then(|s| s.fixed()) {
            at_least_one(&child_key(&path, "pool_size"), size, errors);
        }
        for (index, replica) in db.replicas.iter().enumerate() {
            let replica_path = format!("{}[{index}]", child_key(&path, "replicas"));
            not_blank(&child_key(&replica_path, "host"), &replica.host, errors);
            port_not_zero(&child_key(&replica_path, "port"), replica.port, errors);
            if replica.weight == 0 {
                errors.push(ConfigError::invalid(
                    child_key(&replica_path, "weight"),
                    "must be at least 1, got 0",
                ));
            }
        }

        let min = config.min_pool_size_for(name);
        let min_key = match db.min_pool_size {
            Some(_) => child_key(&path, "min_pool_size"),
            None => "pooler.min_pool_size".to_owned(),
        };
        let db_size_key = match db.pool_size {
            Some(_) => child_key(&path, "pool_size"),
            None => "pooler.pool_size".to_owned(),
        };
        let mut sizes = Vec::new();
        if let Some(size) = db.pool_size.unwrap_or(config.pooler.pool_size).fixed() {
            sizes.push((size, db_size_key));
        }
        for (user_name, user) in &config.users {
            if let Some(size) = user.pool_size.and_then(|s| s.fixed()) {
                sizes.push((size, child_key(&child_key("users", user_name), "pool_size")));
            }
        }
        for (size, size_key) in sizes {
            // A zero size is reported as such above; it is no second problem here.
            if size > 0 && min > size && reported.insert((min_key.clone(), size_key.clone())) {
                errors.push(ConfigError::invalid(
                    &min_key,
                    format!(
                        "{min} is larger than the pool size {size} set by {size_key}; \
                         min_pool_size must not exceed pool_size"
                    ),
                ));
            }
        }
    }
}

fn check_users(config: &Config, errors: &mut Vec<ConfigError>) {
    if config.users.is_empty() && !config.pooler.auth_lookup.enabled() {
        errors.push(ConfigError::invalid(
            "users",
            "no user configured; add at least one [users.NAME] table",
        ));
    }
    for (name, user) in &config.users {
        let path = child_key("users", name);
        if name.is_empty() {
            errors.push(ConfigError::invalid(
                &path,
                "the user name must not be empty",
            ));
        }
        check_user(&path, user, errors);
    }
}

fn check_user(path: &str, user: &UserConfig, errors: &mut Vec<ConfigError>) {
    let key = |k: &str| child_key(path, k);
    for (name, value) in [
        ("password", &user.password),
        ("server_password", &user.server_password),
    ] {
        if value.as_deref() == Some("") {
            errors.push(ConfigError::invalid(
                key(name),
                "must not be empty; remove the key to have no password",
            ));
        }
    }
    if let Some(secret) = &user.scram_secret {
        if !looks_like_scram_secret(secret) {
            // The value itself is never echoed: it is a credential.
            errors.push(ConfigError::invalid(
                key("scram_secret"),
                "does not look like a SCRAM secret; expected \
                 \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\" \
                 as stored in pg_authid.rolpassword",
            ));
        }
    }
    if let Some(secret) = &user.md5_secret {
        if !crate::protocol::auth::md5::is_md5_secret(secret) {
            errors.push(ConfigError::invalid(
                key("md5_secret"),
                "does not look like an md5 secret; expected \"md5\" and 32 lowercase hex \
                 digits, as stored in pg_authid.rolpassword",
            ));
        }
    }
    if let Some(size) = user.pool_size.and_then(|s| s.fixed()) {
        at_least_one(&key("pool_size"), size, errors);
    }
    // A user without any password can still log in to the server: through
    // trust, or by passing the client's SCRAM proof through when only a
    // scram_secret is known. So only client verification is checked here.
    match user.auth {
        AuthMethod::Trust => {}
        AuthMethod::ScramSha256 if user.password.is_none() && user.scram_secret.is_none() => {
            errors.push(ConfigError::invalid(
                key("password"),
                "missing; auth = \"scram-sha-256\" needs password or scram_secret to verify clients",
            ));
        }
        AuthMethod::ScramSha256 => {}
        AuthMethod::Md5 if user.password.is_none() && user.md5_secret.is_none() => {
            errors.push(ConfigError::invalid(
                key("password"),
                "missing; auth = \"md5\" needs password or md5_secret to verify clients",
            ));
        }
        AuthMethod::Md5 => {}
        AuthMethod::Cert if user.password.is_none() && user.server_password.is_none() => {
            errors.push(ConfigError::invalid(
                key("server_password"),
                "missing; auth = \"cert\" asks the client for no password, so pglittle needs \
                 password or server_password to log in to the server",
            ));
        }
        AuthMethod::Cert => {}
    }
}

/// `auth_user` must be a listed user that can log in to the server with a
/// password of its own (it runs the query before any client proved anything).
fn check_auth_user(config: &Config, errors: &mut Vec<ConfigError>) {
    let lookup = &config.pooler.auth_lookup;
    let Some(name) = &lookup.user else {
        return;
    };
    let key = "pooler.auth_user";
    match config.users.get(name) {
        None => errors.push(ConfigError::invalid(
            key,
            format!("user {name:?} is not in [users] (or auth_file); add it with its password"),
        )),
        Some(u)
            if u.password.is_none() && u.server_password.is_none() && u.md5_secret.is_none() =>
        {
            errors.push(ConfigError::invalid(
                key,
                format!(
                    "user {name:?} needs password, server_password or md5_secret: it logs in \
                     to PostgreSQL to run auth_query before any client has proved a password"
                ),
            ))
        }
        Some(_) => {}
    }
    if !lookup.query.contains("$1") {
        errors.push(ConfigError::invalid(
            "pooler.auth_query",
            "must take the user name as $1",
        ));
    }
}

/// `auth = "cert"` trusts a certificate only if pglittle verified it.
fn check_cert_users(config: &Config, errors: &mut Vec<ConfigError>) {
    if config.pooler.client_tls.mode.verifies_peer() {
        return;
    }
    for (name, user) in &config.users {
        if user.auth == AuthMethod::Cert {
            errors.push(ConfigError::invalid(
                child_key(&child_key("users", name), "auth"),
                format!(
                    "\"cert\" needs client certificates verified: set pooler.client_tls_mode to \
                     \"verify-ca\" or \"verify-full\" (it is \"{}\")",
                    config.pooler.client_tls.mode
                ),
            ));
        }
    }
}

/// Structural check only: the prefix, a positive iteration count and three
/// base64 fields. Decoding and key lengths are the SCRAM module's business.
pub(super) fn looks_like_scram_secret(secret: &str) -> bool {
    let Some(rest) = secret.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((iterations_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let (Some((iterations, salt)), Some((stored_key, server_key))) =
        (iterations_salt.split_once(':'), keys.split_once(':'))
    else {
        return false;
    };
    iterations.bytes().all(|b| b.is_ascii_digit())
        && iterations.parse::<u32>().is_ok_and(|n| n > 0)
        && [salt, stored_key, server_key]
            .into_iter()
            .all(looks_like_base64)
}

fn looks_like_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !s.is_empty()
        && s.len() % 4 == 0
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn at_least_one(key: &str, value: usize, errors: &mut Vec<ConfigError>) {
    if value == 0 {
        errors.push(ConfigError::invalid(key, "must be at least 1, got 0"));
    }
}

fn not_blank(key: &str, value: &str, errors: &mut Vec<ConfigError>) {
    if value.trim().is_empty() {
        errors.push(ConfigError::invalid(key, "must not be empty"));
    }
}

/// The parser already refuses port 0; this catches hand-built configs.
fn port_not_zero(key: &str, port: u16, errors: &mut Vec<ConfigError>) {
    if port == 0 {
        errors.push(ConfigError::invalid(
            key,
            "expected an integer 1-65535, got 0",
        ));
    }
}
