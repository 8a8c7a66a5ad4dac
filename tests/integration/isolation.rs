//! Session isolation in transaction pooling, each test on a pool of ONE
//! server connection: client A does a thing, client B (or A again, after B
//! had the server) checks what it sees. Each test is the regression test of
//! one defect of issue 11; the comment says which.

use std::time::Duration;

use crate::common::*;
use crate::raw::{self, first_error, first_value, Raw};

/// What a direct connection to PostgreSQL says `SHOW name` is after
/// `SET name TO value_sql`.
async fn direct_show(name: &str, value_sql: &str) -> String {
    let su = superuser().await;
    su.batch_execute(&format!("SET {name} TO {value_sql}"))
        .await
        .unwrap();
    scalar(&su, &format!("SHOW {name}")).await
}

// Defect 1: a re-applied search_path was wrapped in one quoted name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_awkward_values_round_trip_through_another_client() {
    let p = pool_of_one("iso_paths", |_| {}).await;
    let a = p.connect_trust("iso_paths", "").await;
    let b = p.connect_trust("iso_paths", "").await;
    let cases: &[(&str, &str)] = &[
        ("search_path", "\"$user\", public"),
        ("search_path", "pg_catalog, public"),
        ("search_path", "\"My Schema\", public"),
        ("search_path", "\"a,b\", \"it's\""),
        ("search_path", "\"back\\slash\", \"ünï\""),
        ("search_path", "''"),
        ("application_name", "'it''s, $user \\ ünï'"),
        ("application_name", "''"),
        ("application_name", "' spaced '"),
        ("work_mem", "'7MB'"),
        ("statement_timeout", "'1min'"),
        ("DateStyle", "'SQL, DMY'"),
        ("TimeZone", "'America/New_York'"),
        ("extra_float_digits", "2"),
    ];
    for (name, value) in cases {
        let want = direct_show(name, value).await;
        a.batch_execute(&format!("SET {name} TO {value}"))
            .await
            .unwrap();
        // B takes the only server; then A gets it back and must see its value.
        scalar(&b, "select 1").await;
        assert_eq!(
            scalar(&a, &format!("SHOW {name}")).await,
            want,
            "SET {name} TO {value}"
        );
        // Twice, so a value that grows with every re-apply is caught.
        scalar(&b, "select 1").await;
        assert_eq!(scalar(&a, &format!("SHOW {name}")).await, want);
    }
    // A path of pg_catalog and public really is two schemas.
    a.batch_execute("SET search_path TO pg_catalog, public")
        .await
        .unwrap();
    scalar(&b, "select 1").await;
    assert_eq!(
        scalar(&a, "select current_schemas(false)::text").await,
        "{pg_catalog,public}"
    );
    // And B never saw any of A's values.
    assert_eq!(scalar(&b, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
}

// Defect 1: a list-valued startup option was applied as one quoted name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_valued_startup_option_is_a_list() {
    let p = pool_of_one("iso_startup_path", |_| {}).await;
    let a = p
        .connect_trust(
            "iso_startup_path",
            "options='-c search_path=pg_catalog,public'",
        )
        .await;
    let b = p.connect_trust("iso_startup_path", "").await;
    scalar(&b, "select 1").await;
    assert_eq!(
        scalar(&a, "select current_schemas(false)::text").await,
        "{pg_catalog,public}"
    );
}

// Defect 2: a Bind of the unnamed statement ran whichever unnamed statement
// the lent server held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_stays_with_its_client() {
    let p = pool_of_one("iso_unnamed", |_| {}).await;
    let mut a = Raw::connect(p.port, "iso_unnamed", &[]).await;
    let mut b = Raw::connect(p.port, "iso_unnamed", &[]).await;
    // A prepares the unnamed statement in one round trip...
    a.send(
        &[
            raw::parse("", "select 'A:' || $1::text"),
            raw::describe_statement(""),
            raw::sync(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(first_error(&a.until_ready().await), None);
    // ...B prepares its own on the same server...
    b.send(&[raw::parse("", "select 'B:' || $1::text"), raw::sync()].concat())
        .await;
    assert_eq!(first_error(&b.until_ready().await), None);
    // ...and A's Bind in the next round trip runs A's statement.
    a.send(&[raw::bind("", "", &[b"x"]), raw::execute(), raw::sync()].concat())
        .await;
    assert_eq!(first_value(&a.until_ready().await).as_deref(), Some("A:x"));
    // A simple query destroys the unnamed statement, as on PostgreSQL.
    a.simple("select 1").await;
    b.send(&[raw::parse("", "select 'B2:' || $1::text"), raw::sync()].concat())
        .await;
    b.until_ready().await;
    a.send(&[raw::bind("", "", &[b"x"]), raw::execute(), raw::sync()].concat())
        .await;
    assert_eq!(
        first_error(&a.until_ready().await).as_deref(),
        Some("26000")
    );
}

// Defect 2: a client that never prepared the unnamed statement gets 26000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_an_unnamed_statement_never_prepared_is_26000() {
    let p = pool_of_one("iso_unnamed_none", |_| {}).await;
    let mut a = Raw::connect(p.port, "iso_unnamed_none", &[]).await;
    let mut b = Raw::connect(p.port, "iso_unnamed_none", &[]).await;
    a.send(&[raw::parse("", "select 'A secret'"), raw::sync()].concat())
        .await;
    a.until_ready().await;
    b.send(
        &[
            raw::describe_statement(""),
            raw::bind("", "", &[]),
            raw::execute(),
            raw::sync(),
        ]
        .concat(),
    )
    .await;
    let msgs = b.until_ready().await;
    assert_eq!(first_error(&msgs).as_deref(), Some("26000"), "{msgs:?}");
    assert_eq!(first_value(&msgs), None);
}

// Defect 3: EXECUTE of a name this client never prepared ran another
// client's statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_belongs_to_its_client() {
    let p = pool_of_one("iso_sqlprep", |_| {}).await;
    let a = p.connect_trust("iso_sqlprep", "").await;
    let b = p.connect_trust("iso_sqlprep", "").await;
    a.batch_execute("PREPARE secret AS SELECT 'A only'")
        .await
        .unwrap();
    let e = b.simple_query("EXECUTE secret").await.unwrap_err();
    assert_eq!(code(&e), "26000");
    // A still has it.
    assert_eq!(scalar(&a, "EXECUTE secret").await, "A only");
    // A failed PREPARE leaves nothing behind: B prepares the name, A's
    // EXECUTE of its own failed name is 26000, not B's statement.
    assert!(a.batch_execute("PREPARE bad AS SELEC 1").await.is_err());
    b.batch_execute("PREPARE bad AS SELECT 'B''s'")
        .await
        .unwrap();
    let e = a.simple_query("EXECUTE bad").await.unwrap_err();
    assert_eq!(code(&e), "26000");
    assert_eq!(scalar(&b, "EXECUTE bad").await, "B's");
    // A query that fails at run time after a PREPARE keeps it (PREPARE is
    // not transactional); the PREPAREs after the failure never ran.
    assert!(a
        .batch_execute("PREPARE good AS SELECT 'g'; SELECT 1/0; PREPARE worse AS SELECT 2")
        .await
        .is_err());
    scalar(&b, "select 1").await;
    assert_eq!(scalar(&a, "EXECUTE good").await, "g");
    let e = a.simple_query("EXECUTE worse").await.unwrap_err();
    assert_eq!(code(&e), "26000");
    // A syntax error anywhere runs nothing of the query.
    assert!(a
        .batch_execute("PREPARE none1 AS SELECT 1; PREPARE none2 AS SELEC 2")
        .await
        .is_err());
    scalar(&b, "select 1").await;
    let e = a.simple_query("EXECUTE none1").await.unwrap_err();
    assert_eq!(code(&e), "26000");
}

// Defect 3: EXPLAIN EXECUTE and CREATE TABLE AS EXECUTE need the statement too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_execute_and_create_as_execute_find_the_statement() {
    let p = pool_of_one("iso_explain", |_| {}).await;
    let a = p.connect_trust("iso_explain", "").await;
    let b = p.connect_trust("iso_explain", "").await;
    a.batch_execute("PREPARE q (int) AS SELECT $1 + 1 AS v")
        .await
        .unwrap();
    // B empties the server of statements.
    b.batch_execute("DEALLOCATE ALL").await.unwrap();
    let plan = a
        .simple_query("EXPLAIN (COSTS OFF) EXECUTE q(1)")
        .await
        .unwrap();
    assert!(!plan.is_empty());
    b.batch_execute("DEALLOCATE ALL").await.unwrap();
    a.batch_execute("BEGIN; CREATE TEMP TABLE t_ctas AS EXECUTE q(41); COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
}

// Defect 3: replays went through lossy UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latin1_prepare_replays_byte_for_byte() {
    let p = pool_of_one("iso_latin1", |_| {}).await;
    let mut a = Raw::connect(p.port, "iso_latin1", &[("client_encoding", "LATIN1")]).await;
    let b = p.connect_trust("iso_latin1", "").await;
    let mut sql = b"PREPARE caf AS SELECT 'caf".to_vec();
    sql.extend_from_slice(&[0xe9, b'\'']);
    a.send(&raw::query(&sql)).await;
    assert_eq!(first_error(&a.until_ready().await), None);
    b.batch_execute("DEALLOCATE ALL").await.unwrap();
    a.send(&raw::query(b"EXECUTE caf")).await;
    let msgs = a.until_ready().await;
    let value = msgs.iter().find_map(raw::Msg::first_column);
    assert_eq!(value.as_deref(), Some(&b"caf\xe9"[..]), "{msgs:?}");
}

// Defect 4: state changed where the lexer does not look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_session_changes_do_not_reach_the_next_client() {
    let p = pool_of_one("iso_hidden", |_| {}).await;
    let mut a = Raw::connect(p.port, "iso_hidden", &[]).await;
    let b = p.connect_trust("iso_hidden", "").await;
    // A comment ended by a carriage return hides a SET from a lexer that
    // only ends comments at a newline.
    assert_eq!(
        first_error(&a.simple("-- x\rSET work_mem = '77MB'").await),
        None
    );
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
    // A temp table made without the TEMP keyword.
    assert_eq!(
        first_error(&a.simple("CREATE TABLE pg_temp.hidden_t (a int)").await),
        None
    );
    assert_eq!(
        scalar(
            &b,
            "select count(*) from pg_class where relname = 'hidden_t'"
        )
        .await,
        "0"
    );
    // A fastpath call of set_config (OID 2078).
    a.send(&raw::function_call(2078, &[b"work_mem", b"78MB", b"false"]))
        .await;
    assert_eq!(first_error(&a.until_ready().await), None);
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
    // standard_conforming_strings = off: the backslash escapes the quote,
    // so the SET below is outside any string for the server.
    a.simple("SET standard_conforming_strings = off").await;
    let msgs = a
        .simple("SELECT 'x\\'; SET work_mem = ''79MB''; SELECT '")
        .await;
    assert_eq!(first_error(&msgs), None, "{msgs:?}");
    a.simple("SET standard_conforming_strings = on").await;
    // Whatever the server ran, B sees the defaults.
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(scalar(&b, "SHOW standard_conforming_strings").await, "on");
}

// Defect 4: `server_reset = "always"` cleans what no lexer can see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reset_always_cleans_what_no_lexer_sees() {
    let p = pool_of_one("iso_always", |c| {
        c.pooler.server_reset = pglittle::config::ServerReset::Always;
    })
    .await;
    let a = p.connect_trust("iso_always", "").await;
    let b = p.connect_trust("iso_always", "").await;
    let s = a.prepare("select $1::int4 + 1").await.unwrap();
    a.batch_execute(
        "DO $$ BEGIN PERFORM set_config('work_mem', '77MB', false); \
         PERFORM pg_advisory_lock(7); \
         EXECUTE 'CREATE TEMP TABLE do_t (a int)'; \
         EXECUTE 'LISTEN do_channel'; END $$",
    )
    .await
    .unwrap();
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(
        scalar(
            &b,
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
        )
        .await,
        "0"
    );
    assert_eq!(
        scalar(&b, "select count(*) from pg_listening_channels()").await,
        "0"
    );
    assert_eq!(
        scalar(&b, "select count(*) from pg_class where relname = 'do_t'").await,
        "0"
    );
    // pglittle's own prepared statements survive the reset.
    let v: i32 = a.query_one(&s, &[&41i32]).await.unwrap().get(0);
    assert_eq!(v, 42);
    // The multi-tenant pattern: a function that calls set_config, called
    // with a statement the driver prepared once.
    superuser()
        .await
        .batch_execute(
            "CREATE OR REPLACE FUNCTION iso_set_tenant(t text) RETURNS void \
             LANGUAGE sql AS $$ SELECT set_config('myapp.tenant', t, false) $$",
        )
        .await
        .unwrap();
    let set = a.prepare("SELECT iso_set_tenant($1)").await.unwrap();
    let tenant = "select coalesce(current_setting('myapp.tenant', true), '')";
    for t in ["acme", "globex"] {
        a.query(&set, &[&t]).await.unwrap();
        assert_eq!(scalar(&b, tenant).await, "");
    }
}

// Defect 7: a FATAL the server sends on its own (an administrator's
// pg_terminate_backend) reached an idle session-mode client only when it
// next sent something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_passes_a_fatal_to_an_idle_client_at_once() {
    let p = pool_of_one("iso_fatal_session", |c| {
        c.pooler.pool_mode = pglittle::config::PoolMode::Session;
    })
    .await;
    let mut a = Raw::connect(p.port, "iso_fatal_session", &[]).await;
    let pid = first_value(&a.simple("select pg_backend_pid()").await).unwrap();
    superuser()
        .await
        .batch_execute(&format!("select pg_terminate_backend({pid})"))
        .await
        .unwrap();
    // Without sending anything, the client hears why its session ended.
    let m = a
        .next_within(Duration::from_secs(20))
        .await
        .expect("the server's FATAL, passed on while the client is idle");
    assert_eq!(m.code().as_deref(), Some("57P01"), "{m:?}");
    // ...and then the connection closes.
    assert!(a.next_within(Duration::from_secs(20)).await.is_none());
}

// Defect 5: RESET ALL / DISCARD ALL desynced pglittle's model of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_returns_to_startup_values_for_every_client() {
    let p = pool_of_one("iso_resetall", |_| {}).await;
    for reset in ["RESET ALL", "DISCARD ALL", "RESET statement_timeout"] {
        let opts = "options='-c statement_timeout=5s'";
        let a = p.connect_trust("iso_resetall", opts).await;
        assert_eq!(scalar(&a, "SHOW statement_timeout").await, "5s");
        a.batch_execute("SET statement_timeout = '9s'")
            .await
            .unwrap();
        a.batch_execute(reset).await.unwrap();
        // On PostgreSQL, RESET returns to the value the session started with.
        assert_eq!(scalar(&a, "SHOW statement_timeout").await, "5s", "{reset}");
        let b = p.connect_trust("iso_resetall", opts).await;
        assert_eq!(scalar(&b, "SHOW statement_timeout").await, "5s", "{reset}");
        let c = p.connect_trust("iso_resetall", "").await;
        assert_eq!(scalar(&c, "SHOW statement_timeout").await, "0", "{reset}");
        assert_eq!(scalar(&a, "SHOW statement_timeout").await, "5s", "{reset}");
    }
}

// Defect 6: an abandoned transaction's session advisory lock survived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_transaction_leaves_no_advisory_lock() {
    let p = pool_of_one("iso_abandon", |c| {
        c.pooler.idle_transaction_timeout = Duration::from_millis(300);
    })
    .await;
    let locks = "select count(*) from pg_locks where locktype = 'advisory' \
                 and pid = pg_backend_pid()";
    // A client that vanishes mid-transaction.
    let mut a = Raw::connect(p.port, "iso_abandon", &[]).await;
    a.simple("BEGIN; SELECT pg_advisory_lock(11)").await;
    drop(a);
    let b = p.connect_trust("iso_abandon", "").await;
    assert_eq!(scalar(&b, locks).await, "0");
    // A client cut off by idle_transaction_timeout.
    let mut a = Raw::connect(p.port, "iso_abandon", &[]).await;
    a.simple("BEGIN; SELECT pg_advisory_lock(12)").await;
    // pglittle ends the session: the FATAL comes, then EOF.
    while a.next_within(Duration::from_secs(20)).await.is_some() {}
    assert_eq!(scalar(&b, locks).await, "0");
}

// Defect 6: in session mode, "ROLLBACK; DISCARD ALL" as one query always failed,
// so every abandoned server was closed instead of reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_reuses_an_abandoned_server_cleanly() {
    let p = pool_of_one("iso_session_abandon", |c| {
        c.pooler.pool_mode = pglittle::config::PoolMode::Session;
    })
    .await;
    let mut a = Raw::connect(p.port, "iso_session_abandon", &[]).await;
    let pid = first_value(&a.simple("select pg_backend_pid()").await).unwrap();
    a.simple("BEGIN; SET work_mem = '70MB'; SELECT pg_advisory_lock(13)")
        .await;
    drop(a);
    let b = p.connect_trust("iso_session_abandon", "").await;
    assert_eq!(scalar(&b, "select pg_backend_pid()").await, pid);
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(
        scalar(
            &b,
            "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
        )
        .await,
        "0"
    );
}

/// Waits for a NotificationResponse on `client`, skipping other messages.
async fn notification(client: &mut Raw) -> Option<String> {
    while let Some(m) = client.next_within(Duration::from_secs(20)).await {
        if m.tag == b'A' {
            // pid, channel, payload
            let rest = &m.body[4..];
            let end = rest.iter().position(|&b| b == 0).unwrap();
            let payload = &rest[end + 1..rest.len() - 1];
            return Some(String::from_utf8_lossy(payload).into_owned());
        }
    }
    None
}

// Defect 7: notifications for an idle session-mode client were never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_delivers_notifications_while_idle() {
    let p = pool_of_one("iso_listen_session", |c| {
        c.pooler.pool_mode = pglittle::config::PoolMode::Session;
    })
    .await;
    let mut a = Raw::connect(p.port, "iso_listen_session", &[]).await;
    assert_eq!(first_error(&a.simple("LISTEN chan_s").await), None);
    superuser()
        .await
        .batch_execute("NOTIFY chan_s, 'hello'")
        .await
        .unwrap();
    assert_eq!(notification(&mut a).await.as_deref(), Some("hello"));
}

// LISTEN in transaction mode: the listening client keeps its server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_delivers_notifications_while_idle() {
    let mut cfg = config();
    cfg.pooler.pool_size = 2.into();
    trust_role(&mut cfg, "iso_listen_tx").await;
    let p = pooler(cfg).await;
    let mut a = Raw::connect(p.port, "iso_listen_tx", &[]).await;
    assert_eq!(first_error(&a.simple("LISTEN chan_t").await), None);
    // Other clients keep working on the other server meanwhile.
    let b = p.connect_trust("iso_listen_tx", "").await;
    for _ in 0..3 {
        scalar(&b, "select 1").await;
    }
    superuser()
        .await
        .batch_execute("NOTIFY chan_t, 'one'")
        .await
        .unwrap();
    assert_eq!(notification(&mut a).await.as_deref(), Some("one"));
    // After UNLISTEN the server goes back to the pool: two other clients
    // can hold both servers at once.
    a.simple("UNLISTEN *").await;
    let c = p.connect_trust("iso_listen_tx", "").await;
    b.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        scalar(&b, "select count(*) from pg_listening_channels()").await,
        "0"
    );
    assert_eq!(
        scalar(&c, "select count(*) from pg_listening_channels()").await,
        "0"
    );
}

// Beyond the fixes: an untracked SET follows its client instead of vanishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_settings_follow_their_client() {
    let p = pool_of_one("iso_follow", |_| {}).await;
    let a = p.connect_trust("iso_follow", "").await;
    let b = p.connect_trust("iso_follow", "").await;
    a.batch_execute("SET work_mem = '77MB'; SET myapp.tenant = 'acme'")
        .await
        .unwrap();
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(
        scalar(
            &b,
            "select coalesce(current_setting('myapp.tenant', true), '')"
        )
        .await,
        ""
    );
    assert_eq!(scalar(&a, "SHOW work_mem").await, "77MB");
    assert_eq!(scalar(&a, "SHOW myapp.tenant").await, "acme");
    // set_config with a literal name is followed the same way.
    a.batch_execute("SELECT set_config('myapp.tenant', 'globex', false)")
        .await
        .unwrap();
    assert_eq!(
        scalar(
            &b,
            "select coalesce(current_setting('myapp.tenant', true), '')"
        )
        .await,
        ""
    );
    assert_eq!(scalar(&a, "SHOW myapp.tenant").await, "globex");
    // A SET inside a rolled-back transaction does not stick.
    a.batch_execute("BEGIN; SET work_mem = '99MB'; ROLLBACK")
        .await
        .unwrap();
    scalar(&b, "select 1").await;
    assert_eq!(scalar(&a, "SHOW work_mem").await, "77MB");
}

// pglittle's own commands inside a multi-statement query get a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglittle_commands_inside_a_multi_statement_query_are_refused_clearly() {
    let p = pool_of_one("iso_own_cmds", |_| {}).await;
    let a = p.connect_trust("iso_own_cmds", "").await;
    let e = a
        .simple_query("SELECT 1; SHOW pglittle.lsn")
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("an ErrorResponse");
    assert!(
        db.message().contains("alone"),
        "message should say to send it alone: {}",
        db.message()
    );
    // Nothing of the query ran: the INSERT's table is still empty.
    let su = superuser().await;
    su.batch_execute(
        "CREATE TABLE IF NOT EXISTS own_cmd_t (a int); GRANT ALL ON own_cmd_t TO iso_own_cmds",
    )
    .await
    .unwrap();
    let e = a
        .simple_query("INSERT INTO own_cmd_t VALUES (1); SET pglittle.route = 'primary'")
        .await
        .unwrap_err();
    assert!(e.as_db_error().is_some(), "{e:?}");
    assert_eq!(scalar(&su, "select count(*) from own_cmd_t").await, "0");
}

// A setting changed by a statement prepared earlier (the multi-tenant
// pattern with a driver's statement cache) follows its client too: every
// later Bind or EXECUTE of it counts, not only its Parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changed_by_a_cached_statement_follow_their_client() {
    let p = pool_of_one("iso_cached_set", |_| {}).await;
    let a = p.connect_trust("iso_cached_set", "").await;
    let b = p.connect_trust("iso_cached_set", "").await;
    let tenant = "select coalesce(current_setting('myapp.tenant', true), '')";
    // Protocol level, named (tokio-postgres prepares once, binds many times).
    let set = a
        .prepare("select set_config('myapp.tenant', $1, false)")
        .await
        .unwrap();
    for t in ["t1", "t2", "t3"] {
        a.query(&set, &[&t]).await.unwrap();
        assert_eq!(scalar(&b, tenant).await, "");
        assert_eq!(scalar(&a, tenant).await, t);
    }
    // SQL level.
    a.batch_execute("PREPARE set_t (text) AS SELECT set_config('myapp.tenant', $1, false)")
        .await
        .unwrap();
    for t in ["s1", "s2"] {
        a.batch_execute(&format!("EXECUTE set_t('{t}')"))
            .await
            .unwrap();
        assert_eq!(scalar(&b, tenant).await, "");
        assert_eq!(scalar(&a, tenant).await, t);
    }
    // The unnamed statement, parsed in one round trip and bound in the next.
    let mut r = Raw::connect(p.port, "iso_cached_set", &[]).await;
    r.send(
        &[
            raw::parse("", "select set_config('myapp.tenant', $1, false)"),
            raw::sync(),
        ]
        .concat(),
    )
    .await;
    r.until_ready().await;
    r.send(&[raw::bind("", "", &[b"u1"]), raw::execute(), raw::sync()].concat())
        .await;
    assert_eq!(first_error(&r.until_ready().await), None);
    assert_eq!(scalar(&b, tenant).await, "");
    assert_eq!(first_value(&r.simple(tenant).await).as_deref(), Some("u1"));
}

// SQL EXECUTE sent through the extended protocol (a driver's
// `query("EXECUTE p")`, found by the differential test) must not run
// another client's statement either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_execute_through_parse_belongs_to_its_client() {
    let p = pool_of_one("iso_exec_parse", |_| {}).await;
    let a = p.connect_trust("iso_exec_parse", "").await;
    let b = p.connect_trust("iso_exec_parse", "").await;
    a.batch_execute("PREPARE theirs AS SELECT 'A only'::text")
        .await
        .unwrap();
    let e = b.query("EXECUTE theirs", &[]).await.unwrap_err();
    assert_eq!(code(&e), "26000");
    // A's own EXECUTE through Parse still runs it.
    let rows = a.query("EXECUTE theirs", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "A only");
}
