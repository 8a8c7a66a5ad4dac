use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[databases.app]
host = "127.0.0.1"

[users.app]
password = "app-secret"
"#;

fn parse(s: &str) -> Config {
    match Config::from_toml_str(s) {
        Ok(c) => c,
        Err(e) => panic!("config should parse: {e}\n---\n{s}"),
    }
}

fn parse_err(s: &str) -> String {
    match Config::from_toml_str(s) {
        Ok(c) => panic!("config should be rejected: {c:?}\n---\n{s}"),
        Err(e) => e.to_string(),
    }
}

/// MINIMAL with `extra` added to the table named `table` (created if absent).
fn with(table: &str, extra: &str) -> String {
    let header = format!("[{table}]\n");
    if MINIMAL.contains(&header) {
        MINIMAL.replace(&header, &format!("{header}{extra}\n"))
    } else {
        format!("{header}{extra}\n{MINIMAL}")
    }
}

#[test]
fn example_file_parses_and_validates() {
    let c = parse(include_str!("../../pooler.example.toml"));
    assert_eq!(
        c.pooler,
        PoolerSettings::default(),
        "the example documents the defaults"
    );
    let db = &c.databases["app"];
    assert_eq!(
        (db.host.as_str(), db.port, db.dbname.as_str()),
        ("127.0.0.1", 5432, "app")
    );
    assert_eq!(c.users["app"].password.as_deref(), Some("app-secret"));
    assert_eq!(c.users["app"].auth, AuthMethod::ScramSha256);
}

#[test]
fn example_replicas_block_parses_when_uncommented() {
    let text = include_str!("../../pooler.example.toml")
        .replace("# [[databases.app.replicas]]", "[[databases.app.replicas]]")
        .replace("# host = \"10.0.0.1", "host = \"10.0.0.1")
        .replace("# port = 5432\n# weight", "port = 5432\nweight")
        .replace("# weight = 2", "weight = 2");
    let c = parse(&text);
    assert_eq!(
        c.databases["app"].replicas,
        vec![
            HostConfig {
                host: "10.0.0.12".into(),
                port: 5432,
                weight: 1
            },
            HostConfig {
                host: "10.0.0.13".into(),
                port: 5432,
                weight: 2
            },
        ]
    );
}

#[test]
fn defaults() {
    let c = parse(MINIMAL);
    let p = &c.pooler;
    assert_eq!(p.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(p.max_client_conn, 10_000);
    assert_eq!(p.pool_mode, PoolMode::Transaction);
    assert_eq!((p.pool_size, p.min_pool_size), (PoolSize::Fixed(20), 0));
    assert_eq!(p.query_wait_timeout, Duration::from_secs(120));
    assert_eq!(p.server_connect_timeout, Duration::from_secs(15));
    assert_eq!(p.server_idle_timeout, Duration::from_secs(600));
    assert_eq!(p.server_lifetime, Duration::from_secs(3600));
    assert_eq!(p.client_idle_timeout, Duration::ZERO);
    assert_eq!(p.client_login_timeout, Duration::from_secs(60));
    assert_eq!(p.idle_transaction_timeout, Duration::ZERO);
    assert_eq!(p.max_message_size, 1 << 30);
    assert_eq!(p.server_reset, crate::config::ServerReset::Detect);
    assert!(!p.pin_on_session_state);
    assert_eq!(p.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(p.log_format, LogFormat::Text);
    let db = &c.databases["app"];
    assert_eq!(db.port, 5432);
    assert_eq!(db.dbname, "app");
    assert_eq!(
        (db.pool_size, db.min_pool_size, db.pool_mode),
        (None, None, None)
    );
    assert!(db.replicas.is_empty());
    let u = &c.users["app"];
    assert_eq!(u.auth, AuthMethod::ScramSha256);
    assert_eq!(
        (&u.scram_secret, &u.server_password, u.pool_size),
        (&None, &None, None)
    );
}

#[test]
fn every_pooler_key_is_read() {
    let c = parse(&with(
        "pooler",
        r#"listen = "[::1]:7000"
max_client_conn = 5
pool_mode = "session"
pool_size = 3
min_pool_size = 1
query_wait_timeout = 0
server_connect_timeout = "500ms"
server_idle_timeout = "5m"
server_lifetime = "2h"
client_idle_timeout = "10s"
client_login_timeout = "1s"
idle_transaction_timeout = "30s"
max_message_size = 4096
shutdown_timeout = "1m"
log_format = "json""#,
    ));
    let p = &c.pooler;
    assert_eq!(p.listen.to_string(), "[::1]:7000");
    assert_eq!(
        (p.max_client_conn, p.pool_mode, p.pool_size, p.min_pool_size),
        (5, PoolMode::Session, PoolSize::Fixed(3), 1)
    );
    assert_eq!(p.query_wait_timeout, Duration::ZERO);
    assert_eq!(p.server_connect_timeout, Duration::from_millis(500));
    assert_eq!(p.server_idle_timeout, Duration::from_secs(300));
    assert_eq!(p.server_lifetime, Duration::from_secs(7200));
    assert_eq!(p.client_idle_timeout, Duration::from_secs(10));
    assert_eq!(p.client_login_timeout, Duration::from_secs(1));
    assert_eq!(p.idle_transaction_timeout, Duration::from_secs(30));
    assert_eq!(p.max_message_size, 4096);
    assert_eq!(p.shutdown_timeout, Duration::from_secs(60));
    assert_eq!(p.log_format, LogFormat::Json);
}

#[test]
fn override_chain() {
    let c = parse(
        r#"
[pooler]
pool_size = 10
min_pool_size = 1
pool_mode = "session"

[databases.plain]
host = "h"

[databases.tuned]
host = "h"
pool_size = 30
min_pool_size = 2
pool_mode = "transaction"

[users.alice]
password = "a"

[users.bob]
password = "b"
pool_size = 5
"#,
    );
    assert_eq!(c.pool_size_for("plain", "alice"), PoolSize::Fixed(10));
    assert_eq!(c.pool_size_for("tuned", "alice"), PoolSize::Fixed(30));
    assert_eq!(c.pool_size_for("plain", "bob"), PoolSize::Fixed(5));
    assert_eq!(c.pool_size_for("tuned", "bob"), PoolSize::Fixed(5));
    assert_eq!(
        c.pool_size_for("nosuchdb", "nosuchuser"),
        PoolSize::Fixed(10)
    );
    assert_eq!(c.min_pool_size_for("plain"), 1);
    assert_eq!(c.min_pool_size_for("tuned"), 2);
    assert_eq!(c.min_pool_size_for("nosuchdb"), 1);
    assert_eq!(c.pool_mode_for("plain"), PoolMode::Session);
    assert_eq!(c.pool_mode_for("tuned"), PoolMode::Transaction);
    assert_eq!(c.pool_mode_for("nosuchdb"), PoolMode::Session);
}

#[test]
fn type_errors_name_the_key() {
    let cases = [
        (
            with("databases.app", "port = \"abc\""),
            r#"databases.app.port: expected an integer 1-65535, got "abc""#,
        ),
        (
            with("databases.app", "port = 70000"),
            "databases.app.port: expected an integer 1-65535, got 70000",
        ),
        (
            with("databases.app", "port = 0"),
            "databases.app.port: expected an integer 1-65535, got 0",
        ),
        (
            with("pooler", "query_wait_timeout = \"30\""),
            r#"pooler.query_wait_timeout: "30" has no unit; write e.g. "30s""#,
        ),
        (
            with("pooler", "query_wait_timeout = 30"),
            r#"pooler.query_wait_timeout: "30" has no unit; write e.g. "30s""#,
        ),
        (
            with("pooler", "server_lifetime = \"-1s\""),
            "pooler.server_lifetime: \"-1s\" is negative",
        ),
        (
            with("pooler", "server_lifetime = \"1d\""),
            r#"pooler.server_lifetime: "1d" has an unknown unit "d""#,
        ),
        (
            with("pooler", "server_lifetime = 1.5"),
            "pooler.server_lifetime: expected a duration such as \"30s\", got 1.5",
        ),
        (
            with("pooler", "max_message_size = \"64MB\""),
            r#"pooler.max_message_size: "64MB" has an unknown unit "MB""#,
        ),
        (
            with("pooler", "max_message_size = -1"),
            "pooler.max_message_size: \"-1\" is negative",
        ),
        (
            with("pooler", "pool_size = -1"),
            "pooler.pool_size: expected a non-negative integer or \"auto\", got -1",
        ),
        (
            with("pooler", "pool_size = 2.0"),
            "pooler.pool_size: expected a non-negative integer or \"auto\", got 2.0",
        ),
        (
            with("pooler", "pool_mode = \"txn\""),
            r#"pooler.pool_mode: expected "transaction" or "session", got "txn""#,
        ),
        (
            with("pooler", "pool_mode = 1"),
            r#"pooler.pool_mode: expected "transaction" or "session", got 1"#,
        ),
        (
            with("pooler", "log_format = \"xml\""),
            r#"pooler.log_format: expected "text" or "json", got "xml""#,
        ),
        (
            with("pooler", "listen = \"localhost:6432\""),
            r#"pooler.listen: expected an IP address and port"#,
        ),
        (
            with("users.app", "auth = \"plain\""),
            r#"users.app.auth: expected "scram-sha-256", "md5", "trust" or "cert", got "plain""#,
        ),
        (
            with("databases.app", "dbname = 5"),
            "databases.app.dbname: expected a string, got 5",
        ),
        (
            with("databases.app", "replicas = 5"),
            "databases.app.replicas: expected an array of tables [[databases.app.replicas]], got 5",
        ),
        (
            with("databases.app", "replicas = [5]"),
            "databases.app.replicas[0]: expected a table",
        ),
        (
            with("databases.app", "replicas = [{ port = 1 }]"),
            "databases.app.replicas[0].host: missing",
        ),
        (
            with(
                "databases.app",
                "replicas = [{ host = \"r\", weight = -1 }]",
            ),
            "databases.app.replicas[0].weight: expected an integer 0-4294967295, got -1",
        ),
        (
            "pooler = 5\n".to_owned() + MINIMAL,
            "pooler: expected a table [pooler], got 5",
        ),
        (
            "databases = 5\n".to_owned()
                + MINIMAL
                    .replace("[databases.app]\nhost = \"127.0.0.1\"\n", "")
                    .as_str(),
            "databases: expected a table",
        ),
        (
            MINIMAL.replace("[databases.app]", "databases.x = 1\n[databases.app]"),
            "databases.x: expected a table [databases.x], got 1",
        ),
        (
            MINIMAL.replace("host = \"127.0.0.1\"", ""),
            "databases.app.host: missing; set it to",
        ),
        (
            MINIMAL.replace("[databases.app]", "[databases.\"my.db\"]"),
            "",
        ),
    ];
    for (text, expected) in cases {
        if expected.is_empty() {
            // Quoted names are fine; the case documents that.
            parse(&text);
            continue;
        }
        let e = parse_err(&text);
        assert!(
            e.starts_with(expected),
            "expected {expected:?}\n     got {e:?}"
        );
    }
}

#[test]
fn quoted_names_are_quoted_in_paths() {
    let text = MINIMAL.replace(
        "[databases.app]\nhost = \"127.0.0.1\"",
        "[databases.\"my.db\"]\nhost = \"h\"\nport = \"x\"",
    );
    assert!(parse_err(&text).starts_with(r#"databases."my.db".port: expected"#));
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let cases = [
        (
            with("pooler", "pool_szie = 3"),
            r#"pooler.pool_szie: unknown key (did you mean "pool_size"?)"#,
        ),
        (
            with("pooler", "frobnicate = 3"),
            "pooler.frobnicate: unknown key; expected one of listen, ",
        ),
        (
            with("databases.app", "prot = 5"),
            r#"databases.app.prot: unknown key (did you mean "port"?)"#,
        ),
        (
            with("databases.app", "replicas = [{ host = \"r\", wieght = 2 }]"),
            r#"databases.app.replicas[0].wieght: unknown key (did you mean "weight"?)"#,
        ),
        (
            with("users.app", "passwd = \"x\""),
            r#"users.app.passwd: unknown key (did you mean "password"?)"#,
        ),
        (
            MINIMAL.replace("[users.app]", "[user.app]"),
            r#"user: unknown key (did you mean "users"?)"#,
        ),
        (
            "[poolr]\n".to_owned() + MINIMAL,
            r#"poolr: unknown key (did you mean "pooler"?)"#,
        ),
    ];
    for (text, expected) in cases {
        let e = parse_err(&text);
        assert!(
            e.starts_with(expected),
            "expected {expected:?}\n     got {e:?}"
        );
    }
}

#[test]
fn toml_syntax_errors_carry_the_line() {
    let e = parse_err("[pooler]\npool_size = \n");
    assert!(e.starts_with("invalid TOML at line 2, column 13: "), "{e}");
    // No snippet of the offending line: it may be a password.
    let e = parse_err("[users.app]\nauth = \"md5\"\npassword = hunter2\n");
    assert!(e.starts_with("invalid TOML at line 3, column 12: "), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let e = parse_err("[users.app]\npassword = \"héllo\n");
    assert!(e.contains("line 2") && !e.contains("héllo"), "{e}");
    let e = parse_err("[pooler]\npool_size = 1\npool_size = 2\n");
    assert!(e.contains("line 3") && e.contains("duplicate key"), "{e}");
}

#[test]
fn validation_errors_name_the_key() {
    let scram =
        "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$c3RvcmVka2V5c3RvcmVka2V5c3RvcmVka2V5c3Q=:c2VydmVya2V5";
    let cases = [
        (String::from("[users.app]\npassword = \"x\""), "databases: no database configured"),
        (String::from("[databases.app]\nhost = \"h\""), "users: no user configured"),
        (with("pooler", "pool_size = 0"), "pooler.pool_size: must be at least 1, got 0"),
        (with("pooler", "max_client_conn = 0"), "pooler.max_client_conn: must be at least 1, got 0"),
        (with("pooler", "max_message_size = \"512B\""), "pooler.max_message_size: must be between 1KiB and 1GiB, got 512B"),
        (with("pooler", "max_message_size = \"2GiB\""), "pooler.max_message_size: must be between 1KiB and 1GiB, got 2GiB"),
        (with("pooler", "min_pool_size = 21"), "pooler.min_pool_size: 21 is larger than the pool size 20 set by pooler.pool_size"),
        (with("databases.app", "min_pool_size = 5\npool_size = 4"), "databases.app.min_pool_size: 5 is larger than the pool size 4 set by databases.app.pool_size"),
        (format!("[pooler]\nmin_pool_size = 3\n{}", with("users.app", "pool_size = 2")), "pooler.min_pool_size: 3 is larger than the pool size 2 set by users.app.pool_size"),
        (with("databases.app", "pool_size = 0"), "databases.app.pool_size: must be at least 1, got 0"),
        (with("users.app", "pool_size = 0"), "users.app.pool_size: must be at least 1, got 0"),
        (MINIMAL.replace("\"127.0.0.1\"", "\" \""), "databases.app.host: must not be empty"),
        (with("databases.app", "dbname = \"\""), "databases.app.dbname: must not be empty"),
        (with("databases.app", "replicas = [{ host = \"\" }]"), "databases.app.replicas[0].host: must not be empty"),
        (with("databases.app", "replicas = [{ host = \"r\", weight = 0 }]"), "databases.app.replicas[0].weight: must be at least 1, got 0"),
        (MINIMAL.replace("password = \"app-secret\"", ""), "users.app.password: missing; auth = \"scram-sha-256\" needs password or scram_secret"),
        (MINIMAL.replace("password = \"app-secret\"", &format!("auth = \"md5\"\nscram_secret = \"{scram}\"")), "users.app.password: missing; auth = \"md5\" needs password or md5_secret"),
        (with("users.app", "md5_secret = \"md5xyz\""), "users.app.md5_secret: does not look like an md5 secret"),
        (with("pooler", "auth_user = \"nobody\""), "pooler.auth_user: user \"nobody\" is not in [users]"),
        (with("pooler", "auth_user = \"app\"\nauth_query = \"SELECT 1\""), "pooler.auth_query: must take the user name as $1"),
        (with("pooler", "auth_file = \"/nonexistent/userlist.txt\""), "pooler.auth_file: cannot read /nonexistent/userlist.txt"),
        (MINIMAL.replace("app-secret", ""), "users.app.password: must not be empty"),
        (with("users.app", "server_password = \"\""), "users.app.server_password: must not be empty"),
        (with("users.app", "scram_secret = \"SCRAM-SHA-256$4096:abc\""), "users.app.scram_secret: does not look like a SCRAM secret"),
        (MINIMAL.replace("[databases.app]", "[databases.\"\"]"), r#"databases."": the database name must not be empty"#),
        (MINIMAL.replace("[users.app]", "[users.\"\"]"), r#"users."": the user name must not be empty"#),
    ];
    for (text, expected) in cases {
        let e = parse_err(&text);
        assert!(
            e.starts_with(expected),
            "expected {expected:?}\n     got {e:?}"
        );
        assert_eq!(e.lines().count(), 1, "one problem expected: {e}");
    }
}

#[test]
fn users_that_need_no_password() {
    let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
    let c = parse(&MINIMAL.replace("password = \"app-secret\"", "auth = \"trust\""));
    assert_eq!(c.users["app"].auth, AuthMethod::Trust);
    // scram_secret alone: clients are verified, the server login is passed through.
    let c = parse(&MINIMAL.replace(
        "password = \"app-secret\"",
        &format!("scram_secret = \"{scram}\""),
    ));
    assert_eq!(c.users["app"].scram_secret.as_deref(), Some(scram));
    let c = parse(&with(
        "users.app",
        "server_password = \"other\"\nauth = \"md5\"",
    ));
    assert_eq!(c.users["app"].server_password.as_deref(), Some("other"));
}

#[test]
fn scram_secret_shape() {
    use super::validate::looks_like_scram_secret as ok;
    assert!(ok("SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"));
    assert!(!ok("SCRAM-SHA-1$4096:c2FsdA==$c3RvcmVk:c2VydmVy"));
    assert!(!ok("SCRAM-SHA-256$0:c2FsdA==$c3RvcmVk:c2VydmVy"));
    assert!(!ok("SCRAM-SHA-256$+5:c2FsdA==$c3RvcmVk:c2VydmVy"));
    assert!(!ok("SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk"));
    assert!(!ok("SCRAM-SHA-256$4096:c2FsdA==:c3RvcmVk:c2VydmVy"));
    assert!(!ok("SCRAM-SHA-256$4096:c2F*dA==$c3RvcmVk:c2VydmVy"));
    assert!(!ok("SCRAM-SHA-256$4096:c2FsdA=$c3RvcmVk:c2VydmVy"));
    assert!(!ok("SCRAM-SHA-256$4096:$c3RvcmVk:c2VydmVy"));
    assert!(!ok("md5abcdef"));
}

#[test]
fn all_problems_are_reported_together() {
    let e = parse_err(
        &with("pooler", "pool_size = 0\nmax_client_conn = 0")
            .replace("password = \"app-secret\"", ""),
    );
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(lines[0].starts_with("pooler.pool_size:"));
    assert!(lines[1].starts_with("pooler.max_client_conn:"));
    assert!(lines[2].starts_with("users.app.password:"));
}

#[test]
fn secrets_never_reach_messages_or_debug() {
    let e = parse_err(&with(
        "users.app",
        "scram_secret = \"SCRAM-SHA-256$hunter2\"",
    ));
    assert!(!e.contains("hunter2"), "{e}");
    let e = parse_err(&MINIMAL.replace("\"app-secret\"", "[\"hunter2\"]"));
    assert_eq!(e, "users.app.password: expected a string, got array");
    let c = parse(&with("users.app", "server_password = \"hunter3\""));
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("app-secret") && !debug.contains("hunter3"),
        "{debug}"
    );
    assert!(debug.contains(REDACTED));
}

#[test]
fn load_mentions_the_path() {
    let dir = std::env::temp_dir().join(format!("pglittle-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pooler.toml");
    std::fs::write(&path, with("databases.app", "port = \"abc\"")).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: databases.app.port:", path.display())),
        "{e}"
    );
    std::fs::write(&path, MINIMAL).unwrap();
    assert_eq!(Config::load(&path).unwrap(), parse(MINIMAL));
    let missing = dir.join("missing.toml");
    let e = Config::load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("cannot read {}:", missing.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const FULL: &str = r#"
[pooler]
listen = "0.0.0.0:7432"
max_client_conn = 100
pool_mode = "session"
pool_size = 8
min_pool_size = 1
query_wait_timeout = "0"
server_connect_timeout = "1500ms"
server_idle_timeout = "90s"
server_lifetime = "1h"
client_idle_timeout = "10m"
client_login_timeout = "5s"
idle_transaction_timeout = "30s"
max_message_size = "8KiB"
shutdown_timeout = "45s"
log_format = "json"

[databases.app]
host = "db.internal"
port = 5433
dbname = "app_production"
pool_size = 12
min_pool_size = 2
pool_mode = "transaction"

[[databases.app.replicas]]
host = "::1"
port = 6000
weight = 3

[[databases.app.replicas]]
host = "r2"

[databases."odd name"]
host = "h"

[users.trusted]
auth = "trust"

[users."x y"]
auth = "md5"
password = "pw"
server_password = "spw"
pool_size = 4
"#;

#[test]
fn render_effective_round_trips() {
    let original = parse(FULL);
    let rendered = original.render_effective();
    let reparsed = parse(&rendered);
    let mut expected = original.clone();
    let user = expected.users.get_mut("x y").unwrap();
    user.password = Some(REDACTED.to_owned());
    user.server_password = Some(REDACTED.to_owned());
    assert_eq!(reparsed, expected, "rendered:\n{rendered}");
    // Rendering is a fixed point.
    assert_eq!(reparsed.render_effective(), rendered);
    // Defaults are written out, and durations/sizes canonically.
    let minimal = parse(MINIMAL).render_effective();
    for line in [
        "query_wait_timeout = \"2m\"",
        "server_lifetime = \"1h\"",
        "client_idle_timeout = \"0\"",
        "max_message_size = \"1GiB\"",
        "server_reset = \"detect\"",
        "pin_on_session_state = false",
        "server_allow_cleartext = false",
        "port = 5432",
        "dbname = \"app\"",
        "replicas = []",
        "auth = \"scram-sha-256\"",
        "# pool_size = 20  (not set; pooler.pool_size applies)",
    ] {
        assert!(
            minimal.lines().any(|l| l == line),
            "missing {line:?} in\n{minimal}"
        );
    }
    assert!(rendered.contains("server_connect_timeout = \"1500ms\""));
    assert!(rendered.contains("[databases.\"odd name\"]"));
}

#[test]
fn pool_size_auto_parses_and_renders_back() {
    let c = parse(&format!(
        "{MINIMAL}\n[pooler]\npool_size = \"auto\"\nmax_pool_size = 50\nmax_db_connections = 80\n\
         reserve_pool_size = 2\nreserve_pool_timeout = \"3s\"\n"
    ));
    assert_eq!(c.pooler.pool_size, PoolSize::Auto);
    assert_eq!(
        (c.pooler.max_pool_size, c.pooler.max_db_connections),
        (50, 80)
    );
    assert_eq!(c.pooler.reserve_pool_timeout, Duration::from_secs(3));
    let rendered = c.render_effective();
    assert!(rendered.contains("pool_size = \"auto\""), "{rendered}");
    let reparsed = parse(&rendered);
    assert_eq!(reparsed.pooler, c.pooler);
}

#[test]
fn render_effective_redacts_secrets() {
    let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
    let text = with(
        "users.app",
        &format!("scram_secret = \"{scram}\"\nserver_password = \"srv-secret\""),
    );
    let rendered = parse(&text).render_effective();
    for secret in ["app-secret", "srv-secret", "c3RvcmVk", "c2VydmVy"] {
        assert!(!rendered.contains(secret), "{secret} leaked:\n{rendered}");
    }
    assert_eq!(
        rendered.matches("= \"<redacted>\"").count(),
        3,
        "{rendered}"
    );
    // The output is still TOML with the same shape.
    let table: toml::Table = rendered.parse().unwrap();
    let user = table["users"]["app"].as_table().unwrap();
    assert_eq!(user["scram_secret"].as_str(), Some(REDACTED));
    let reparsed = super::parse::config_from_table(&table).unwrap();
    assert_eq!(reparsed.pooler, PoolerSettings::default());
}

#[test]
fn keywords_parse_and_display() {
    assert_eq!("session".parse::<PoolMode>(), Ok(PoolMode::Session));
    assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
    assert_eq!(
        "scram-sha-256".parse::<AuthMethod>(),
        Ok(AuthMethod::ScramSha256)
    );
    assert_eq!(AuthMethod::Md5.to_string(), "md5");
    assert_eq!(PoolMode::Transaction.as_str(), "transaction");
    assert_eq!(
        "Session".parse::<PoolMode>(),
        Err(r#"expected "transaction" or "session", got "Session""#.to_owned())
    );
}

#[test]
fn console_metrics_and_sizing_keys() {
    let c = parse(&with(
        "pooler",
        "admin_users = [\"ops\"]\nstats_users = [\"grafana\", \"exporter\"]\n\
         metrics_listen = \"127.0.0.1:9187\"\nsizing_wait_target = \"25ms\"\n\
         sizing_headroom_percent = 50",
    ));
    assert_eq!(c.pooler.admin_users, vec!["ops".to_string()]);
    assert_eq!(
        c.pooler.stats_users,
        vec!["grafana".to_string(), "exporter".to_string()]
    );
    assert_eq!(
        c.pooler.metrics_listen,
        Some("127.0.0.1:9187".parse().unwrap())
    );
    assert_eq!(c.pooler.sizing_wait_target, Duration::from_millis(25));
    assert_eq!(c.pooler.sizing_headroom_percent, 50);
    // They survive check-config's rendering.
    assert_eq!(parse(&c.render_effective()).pooler, c.pooler);
    let e = parse_err(&with("pooler", "admin_users = \"ops\""));
    assert!(
        e.contains("pooler.admin_users: expected an array of strings"),
        "{e}"
    );
    let e = parse_err(&with("pooler", "stats_users = [1]"));
    assert!(e.contains("pooler.stats_users"), "{e}");
    let e = parse_err(&with("pooler", "metrics_listen = \"localhost\""));
    assert!(e.contains("pooler.metrics_listen"), "{e}");
    let e = parse_err(&with("pooler", "sizing_wait_target = \"10\""));
    assert!(e.contains("pooler.sizing_wait_target"), "{e}");
    let e = parse_err(&with("pooler", "sizing_headroom_percent = -5"));
    assert!(
        e.contains("pooler.sizing_headroom_percent: expected an integer 0-1000"),
        "{e}"
    );
}

#[test]
fn routing_keys_are_read_and_checked() {
    let c = parse(&with(
        "databases.app",
        r#"read_write_split = "off"
read_your_writes = "time"
max_replica_lag = "5s"
max_replica_lag_bytes = "16MiB"
causal_wait = "200ms"
pin_after_write = "2s"
primary_reads = "always"
writer_functions = ["audit*"]"#,
    ));
    let r = &c.databases["app"].routing;
    assert_eq!(r.split, Switch::Off);
    assert_eq!(r.read_your_writes, ReadYourWrites::Time);
    assert_eq!(r.max_replica_lag, Some(Duration::from_secs(5)));
    assert_eq!(r.max_replica_lag_bytes, Some(16 << 20));
    assert_eq!(r.causal_wait, Duration::from_millis(200));
    assert_eq!(r.pin_after_write, Duration::from_secs(2));
    assert_eq!(r.primary_reads, PrimaryReads::Always);
    assert_eq!(r.writer_functions, vec!["audit*".to_string()]);
    let d = &parse(MINIMAL).databases["app"].routing;
    assert_eq!(
        (d.split, d.read_your_writes),
        (Switch::On, ReadYourWrites::Lsn)
    );
    assert!(d.writer_functions.iter().any(|w| w == "nextval"));
    let p = parse(&with(
        "pooler",
        "health_check_period = \"100ms\"\nban_after = 3\nunban_after = 4",
    ))
    .pooler;
    assert_eq!(
        (p.health_check_period, p.ban_after, p.unban_after),
        (Duration::from_millis(100), 3, 4)
    );
    assert_eq!(
        parse_err(&with("databases.app", "read_your_writes = \"sometimes\"")),
        r#"databases.app.read_your_writes: expected "lsn", "time" or "off", got "sometimes""#
    );
    assert!(parse_err(&with("databases.app", "causal_wait = \"soon\""))
        .starts_with("databases.app.causal_wait: "));
}

#[test]
fn a_hosts_list_discovers_roles() {
    let text = MINIMAL.replace(
        "host = \"127.0.0.1\"",
        "hosts = [\"db1:5432\", \"db2:5433\", \"[::1]:5434\"]",
    );
    let db = &parse(&text).databases["app"];
    assert_eq!((db.host.as_str(), db.port), ("db1", 5432));
    let replicas: Vec<_> = db
        .replicas
        .iter()
        .map(|r| (r.host.as_str(), r.port))
        .collect();
    assert_eq!(replicas, [("db2", 5433), ("::1", 5434)]);
    assert_eq!(db.routing.role, RoleMode::Auto);
    let fixed = text.replace("hosts = ", "role = \"fixed\"\nhosts = ");
    assert_eq!(parse(&fixed).databases["app"].routing.role, RoleMode::Fixed);
    assert_eq!(
        parse(MINIMAL).databases["app"].routing.role,
        RoleMode::Fixed
    );
    for bad in [
        "hosts = [\"db1\"]",
        "hosts = [\"db1:x\", \"db2:1\"]",
        "hosts = [\"db1:1\"]",
    ] {
        let e = parse_err(&MINIMAL.replace("host = \"127.0.0.1\"", bad));
        assert!(e.starts_with("databases.app.hosts: "), "{e}");
    }
    let both = MINIMAL.replace(
        "host = \"127.0.0.1\"",
        "host = \"x\"\nhosts = [\"a:1\", \"b:2\"]",
    );
    assert!(parse_err(&both).starts_with("databases.app.hosts: "));
}

#[test]
fn server_reset_and_pinning_parse_and_name_their_key() {
    let c = parse(&with(
        "pooler",
        "server_reset = \"always\"\npin_on_session_state = true",
    ));
    assert_eq!(c.pooler.server_reset, crate::config::ServerReset::Always);
    assert!(c.pooler.pin_on_session_state);
    let e = parse_err(&with("pooler", "server_reset = \"sometimes\""));
    assert!(e.starts_with("pooler.server_reset:"), "{e}");
    let e = parse_err(&with("pooler", "pin_on_session_state = \"yes\""));
    assert!(e.starts_with("pooler.pin_on_session_state:"), "{e}");
}

#[test]
fn client_tls_needs_its_files_and_names_the_key() {
    let e = parse_err(&with("pooler", "client_tls_mode = \"require\""));
    assert!(e.contains("pooler.client_tls_cert_file"), "{e}");
    assert!(e.contains("pooler.client_tls_key_file"), "{e}");
    let e = parse_err(&with(
        "pooler",
        "client_tls_mode = \"verify-ca\"\nclient_tls_cert_file = \"c\"\nclient_tls_key_file = \"k\"",
    ));
    assert!(e.contains("pooler.client_tls_ca_file"), "{e}");
    assert!(!e.contains("client_tls_cert_file"), "{e}");
    let e = parse_err(&with("pooler", "client_tls_mode = \"sometimes\""));
    assert!(e.contains("client_tls_mode"), "{e}");
    let c = parse(&with(
        "pooler",
        "client_tls_mode = \"verify-full\"\nclient_tls_cert_file = \"c.pem\"\n\
         client_tls_key_file = \"k.pem\"\nclient_tls_ca_file = \"ca.pem\"",
    ));
    let t = &c.pooler.client_tls;
    assert_eq!(t.mode, TlsMode::VerifyFull);
    assert!(t.mode.required() && t.mode.verifies_peer() && t.mode.offered());
    assert_eq!(t.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
    assert!(!TlsMode::Prefer.required() && TlsMode::Prefer.offered());
    assert!(!TlsMode::Disable.offered());
    // The effective config shows it, and reads back the same.
    let again = parse(&c.render_effective());
    assert_eq!(again.pooler.client_tls, c.pooler.client_tls);
}

#[test]
fn server_tls_needs_a_ca_to_verify_and_a_key_with_its_certificate() {
    let e = parse_err(&with("pooler", "server_tls_mode = \"verify-full\""));
    assert!(e.contains("pooler.server_tls_ca_file"), "{e}");
    let e = parse_err(&with("pooler", "server_tls_cert_file = \"c.pem\""));
    assert!(e.contains("pooler.server_tls_key_file"), "{e}");
    let c = parse(&with("pooler", "server_tls_mode = \"require\""));
    assert_eq!(c.pooler.server_tls.mode, TlsMode::Require);
    let again = parse(&c.render_effective());
    assert_eq!(again.pooler.server_tls, c.pooler.server_tls);
}

#[test]
fn a_fleet_is_named_and_its_names_are_checked_against_their_keys() {
    let c = parse(&with(
        "pooler",
        "fleet = \"orders\"\nfleet_instance = \"web-1\"\nfleet_sync_period = \"250ms\"",
    ));
    let f = c.pooler.fleet.expect("a fleet");
    assert_eq!((f.name.as_str(), f.instance.as_str()), ("orders", "web-1"));
    assert_eq!(f.sync_period, Duration::from_millis(250));
    // No instance id: one is made, and it is a valid one.
    let c = parse(&with("pooler", "fleet = \"orders\""));
    let f = c.pooler.fleet.expect("a fleet");
    assert!(
        super::fleet::check_instance(&f.instance).is_ok(),
        "{}",
        f.instance
    );
    assert_eq!(f.sync_period, super::fleet::DEFAULT_SYNC_PERIOD);
    let e = parse_err(&with("pooler", "fleet = \"Orders\""));
    assert!(e.starts_with("pooler.fleet:") && e.contains("'O'"), "{e}");
    let e = parse_err(&with(
        "pooler",
        "fleet = \"o\"\nfleet_instance = \"a-very-long-instance\"",
    ));
    assert!(
        e.starts_with("pooler.fleet_instance:") && e.contains("at most 15"),
        "{e}"
    );
    let e = parse_err(&with("pooler", "fleet_instance = \"web-1\""));
    assert!(
        e.starts_with("pooler.fleet:") && e.contains("need a fleet name"),
        "{e}"
    );
    let e = parse_err(&with("pooler", "fleet = \"o\"\nfleet_sync_period = 0"));
    assert!(e.starts_with("pooler.fleet_sync_period:"), "{e}");
}
