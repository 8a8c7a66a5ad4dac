//! auth_query (issue 14): users pglittle does not list log in with the
//! secret the database holds for them, and pglittle logs in to the server
//! for them by SCRAM (or md5) pass-through, knowing no password.

use pgcluster::MD5_USER;
use pglittle::config::{Config, DEFAULT_AUTH_QUERY};
use tokio::sync::OnceCell;

use crate::common::*;

const AUTH_USER: &str = "pglittle_auth";
const AUTH_PASSWORD: &str = "pglittle-auth-pw";
/// A SECURITY DEFINER function: auth_user needs no superuser rights.
const LOOKUP_QUERY: &str = "SELECT * FROM pglittle_lookup($1)";

static SETUP: OnceCell<()> = OnceCell::const_new();

/// The lookup role and its function, once per test run.
async fn setup() {
    SETUP
        .get_or_init(|| async {
            superuser()
                .await
                .batch_execute(&format!(
                    "do $$ begin if not exists (select from pg_roles where rolname = '{AUTH_USER}') \
                     then create role {AUTH_USER} login password '{AUTH_PASSWORD}'; end if; end $$;
                     CREATE OR REPLACE FUNCTION pglittle_lookup(u text) \
                       RETURNS TABLE(usename name, passwd text) LANGUAGE sql SECURITY DEFINER \
                       SET search_path = pg_catalog \
                       AS $f$ SELECT usename, passwd FROM pg_shadow WHERE usename = u $f$;
                     REVOKE ALL ON FUNCTION pglittle_lookup(text) FROM public;
                     GRANT EXECUTE ON FUNCTION pglittle_lookup(text) TO {AUTH_USER};"
                ))
                .await
                .unwrap();
        })
        .await;
}

/// A role pglittle does not list, with a SCRAM secret (the cluster's
/// password_encryption), (re)set to `password`.
async fn unlisted_role(name: &str, password: &str) {
    superuser()
        .await
        .batch_execute(&format!(
            "do $$ begin if not exists (select from pg_roles where rolname = '{name}') then \
             create role {name} login; end if; end $$;
             SET password_encryption = 'scram-sha-256';
             ALTER ROLE {name} PASSWORD '{password}';"
        ))
        .await
        .unwrap();
}

/// A pooler with one server connection per pool and auth_query on.
async fn lookup_pooler(tweak: impl FnOnce(&mut Config)) -> Pooler {
    setup().await;
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.users.insert(
        AUTH_USER.into(),
        user(AUTH_PASSWORD, pglittle::config::AuthMethod::ScramSha256),
    );
    cfg.pooler.auth_lookup.user = Some(AUTH_USER.into());
    cfg.pooler.auth_lookup.query = LOOKUP_QUERY.into();
    tweak(&mut cfg);
    pooler(cfg).await
}

fn refusal(r: Result<tokio_postgres::Client, tokio_postgres::Error>) -> (String, String) {
    let Err(e) = r else {
        panic!("the login must fail");
    };
    let db = e.as_db_error().expect("an ErrorResponse");
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test]
async fn an_unlisted_user_logs_in_by_scram_pass_through() {
    unlisted_role("aq_alice", "alice-pw").await;
    let p = lookup_pooler(|_| {}).await;
    let a = p.connect_as("aq_alice", "alice-pw").await.expect("login");
    assert_eq!(scalar(&a, "SELECT current_user").await, "aq_alice");
    let pid = scalar(&a, "SELECT pg_backend_pid()").await;
    drop(a);
    // The one server connection (logged in with the key alice proved)
    // serves the next client of that user.
    let b = p
        .connect_as("aq_alice", "alice-pw")
        .await
        .expect("second login");
    assert_eq!(scalar(&b, "SELECT current_user").await, "aq_alice");
    assert_eq!(scalar(&b, "SELECT pg_backend_pid()").await, pid);
    // Listed users are untouched.
    let app = p.connect().await;
    assert_eq!(scalar(&app, "SELECT current_user").await, "app");
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_look_the_same() {
    unlisted_role("aq_bob", "bob-pw").await;
    let p = lookup_pooler(|_| {}).await;
    let (code, wrong) = refusal(p.connect_as("aq_bob", "not-bob-pw").await);
    assert_eq!(code, "28P01");
    let (code2, unknown) = refusal(p.connect_as("aq_nobody", "whatever").await);
    assert_eq!(code2, "28P01");
    assert_eq!(
        wrong.replace("aq_bob", "USER"),
        unknown.replace("aq_nobody", "USER")
    );
    assert_eq!(wrong, "password authentication failed for user \"aq_bob\"");
    // No pool was made for either, and bob still logs in.
    let users: Vec<String> = p
        .running
        .shared
        .pools
        .all()
        .iter()
        .map(|x| x.user.clone())
        .collect();
    assert!(!users.iter().any(|u| u.starts_with("aq_")), "{users:?}");
    let b = p.connect_as("aq_bob", "bob-pw").await.expect("login");
    assert_eq!(scalar(&b, "SELECT current_user").await, "aq_bob");
}

#[tokio::test]
async fn a_password_change_is_picked_up_after_one_failed_login() {
    unlisted_role("aq_carol", "carol-pw-1").await;
    let p = lookup_pooler(|_| {}).await;
    let c = p.connect_as("aq_carol", "carol-pw-1").await.expect("login");
    assert_eq!(scalar(&c, "SELECT 1").await, "1");
    drop(c);
    unlisted_role("aq_carol", "carol-pw-2").await;
    // Within auth_query_ttl the cached secret is the old one: the first
    // login with the new password fails, and makes pglittle ask again.
    let (code, _) = refusal(p.connect_as("aq_carol", "carol-pw-2").await);
    assert_eq!(code, "28P01");
    let c = p
        .connect_as("aq_carol", "carol-pw-2")
        .await
        .expect("new password");
    assert_eq!(scalar(&c, "SELECT current_user").await, "aq_carol");
    drop(c);
    let (code, _) = refusal(p.connect_as("aq_carol", "carol-pw-1").await);
    assert_eq!(code, "28P01", "the old password no longer works");
}

#[tokio::test]
async fn with_no_cache_a_password_change_is_picked_up_at_once() {
    unlisted_role("aq_dave", "dave-pw-1").await;
    let p = lookup_pooler(|c| c.pooler.auth_lookup.ttl = std::time::Duration::ZERO).await;
    drop(p.connect_as("aq_dave", "dave-pw-1").await.expect("login"));
    unlisted_role("aq_dave", "dave-pw-2").await;
    let d = p
        .connect_as("aq_dave", "dave-pw-2")
        .await
        .expect("new password");
    assert_eq!(scalar(&d, "SELECT current_user").await, "aq_dave");
}

#[tokio::test]
async fn an_md5_secret_logs_in_by_md5_pass_through() {
    // app_md5 has an md5 secret and md5 in pg_hba; pglittle lists it not.
    let p = lookup_pooler(|c| {
        c.users.remove(MD5_USER);
    })
    .await;
    let m = p.connect_md5().await;
    assert_eq!(scalar(&m, "SELECT current_user").await, MD5_USER);
    let (code, _) = refusal(p.connect_as(MD5_USER, "wrong").await);
    assert_eq!(code, "28P01");
}

#[tokio::test]
async fn the_default_query_reads_pg_shadow_as_a_superuser() {
    unlisted_role("aq_erin", "erin-pw").await;
    let p = lookup_pooler(|c| {
        c.users.insert(
            pgcluster::SUPERUSER.into(),
            user(
                pgcluster::SUPERUSER_PASSWORD,
                pglittle::config::AuthMethod::ScramSha256,
            ),
        );
        c.pooler.auth_lookup.user = Some(pgcluster::SUPERUSER.into());
        c.pooler.auth_lookup.query = DEFAULT_AUTH_QUERY.into();
    })
    .await;
    let e = p.connect_as("aq_erin", "erin-pw").await.expect("login");
    assert_eq!(scalar(&e, "SELECT current_user").await, "aq_erin");
}

#[tokio::test]
async fn a_failing_auth_query_is_a_clear_error_without_detail() {
    unlisted_role("aq_frank", "frank-pw").await;
    let p = lookup_pooler(|c| {
        c.pooler.auth_lookup.query =
            "SELECT usename, passwd FROM pg_shadow WHERE usename = $1".into();
    })
    .await;
    // pglittle_auth may not read pg_shadow.
    let (code, message) = refusal(p.connect_as("aq_frank", "frank-pw").await);
    assert_eq!(code, "08006");
    assert!(message.contains("auth_query failed"), "{message}");
    assert!(!message.contains("permission denied"), "{message}");
}

#[tokio::test]
async fn a_pgbouncer_userlist_is_read_unchanged() {
    // The secrets exactly as pg_authid holds them, as PgBouncer's docs
    // have users export them.
    let su = superuser().await;
    let mut list = String::from(";; exported from pg_authid\n");
    for row in su
        .query(
            "SELECT rolname::text, rolpassword FROM pg_authid \
             WHERE rolname IN ('app', 'app_md5') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
    {
        let (name, secret): (String, String) = (row.get(0), row.get(1));
        list.push_str(&format!("\"{name}\" \"{secret}\"\n"));
    }
    let file = std::env::temp_dir().join(format!("pglittle-userlist-{}.txt", std::process::id()));
    std::fs::write(&file, list).unwrap();
    let c = cluster();
    let toml = format!(
        "[pooler]\nlisten = \"127.0.0.1:0\"\nauth_file = {file:?}\n\
         [databases.app]\nhost = \"127.0.0.1\"\nport = {}\n",
        c.primary.port
    );
    let cfg = Config::from_toml_str(&toml).expect("a config with only auth_file");
    let _ = std::fs::remove_file(&file);
    let p = pooler(cfg).await;
    // SCRAM secret: SCRAM to the client, its proof passed through.
    let a = p.connect().await;
    assert_eq!(scalar(&a, "SELECT current_user").await, "app");
    // md5 secret: md5 to the client, the secret answers the server.
    let m = p.connect_md5().await;
    assert_eq!(scalar(&m, "SELECT current_user").await, MD5_USER);
    let (code, _) = refusal(p.connect_as("app", "wrong").await);
    assert_eq!(code, "28P01");
}
