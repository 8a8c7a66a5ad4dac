//! Core proxy behaviour: pooling, session state, cancel, faults, COPY.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pglittle::config::PoolMode;
use tokio_postgres::NoTls;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_through_the_pooler() {
    let p = pooler(config()).await;
    let c = p.connect().await;
    assert_eq!(scalar(&c, "select 1 + 1").await, "2");
    let md5 = p.connect_md5().await;
    assert_eq!(scalar(&md5, "select current_user").await, "app_md5");
    // Extended protocol with an unnamed statement, in transaction mode.
    let rows = c
        .query_typed(
            "select $1::int4 * 2",
            &[(&21i32, tokio_postgres::types::Type::INT4)],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_share_ten_servers() {
    let _heavy = HEAVY.lock().await;
    let mut cfg = config();
    cfg.pooler.pool_size = 10.into();
    let pw = own_role(&mut cfg, "thousand").await;
    let p = Arc::new(pooler(cfg).await);
    let admin = superuser().await;
    let peak = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = scalar(
                    &admin,
                    "select count(*) from pg_stat_activity where usename = 'thousand'",
                )
                .await
                .parse()
                .unwrap();
                peak.fetch_max(n, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..1000i64 {
        let (p, pw) = (p.clone(), pw.clone());
        tasks.push(tokio::spawn(async move {
            let c = p.connect_as("thousand", &pw).await.unwrap();
            for j in 0..3i64 {
                let got = scalar(&c, &format!("begin; select {i} * 1000 + {j}; commit")).await;
                assert_eq!(got, (i * 1000 + j).to_string());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    monitor.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        (1..=10).contains(&peak),
        "PostgreSQL saw {peak} connections from a pool of 10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_never_leaks_between_clients() {
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into(); // both clients must share the one server
    let p = pooler(cfg).await;
    let a = p.connect().await;
    let b = p.connect().await;
    let b_tz = scalar(&b, "show timezone").await;
    a.batch_execute("set application_name = 'alpha'; set timezone = 'Asia/Tokyo'; set search_path = alpha_schema; set statement_timeout = '7s'")
        .await
        .unwrap();
    assert_eq!(scalar(&b, "show application_name").await, "");
    assert_eq!(scalar(&b, "show timezone").await, b_tz);
    assert_eq!(scalar(&b, "show search_path").await, "\"$user\", public");
    assert_eq!(scalar(&b, "show statement_timeout").await, "0");
    // Tracked parameters follow their client onto the shared server.
    assert_eq!(scalar(&a, "show application_name").await, "alpha");
    assert_eq!(scalar(&a, "show timezone").await, "Asia/Tokyo");
    assert_eq!(scalar(&a, "show search_path").await, "alpha_schema");
    // An open transaction keeps its server: the other client waits for it.
    a.batch_execute("begin").await.unwrap();
    let pid = scalar(&a, "select pg_backend_pid()").await;
    a.batch_execute("set local work_mem = '2MB'").await.unwrap();
    assert_eq!(scalar(&a, "select pg_backend_pid()").await, pid);
    assert_eq!(scalar(&a, "show work_mem").await, "2MB");
    a.batch_execute("commit").await.unwrap();
    assert_eq!(scalar(&b, "show work_mem").await, "4MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_and_application_name_apply() {
    let p = pooler(config()).await;
    let url = format!(
        "{} application_name=fromstartup options='-c search_path=opt_schema -c statement_timeout=3s'",
        p.url("app", "app-secret")
    );
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(scalar(&c, "show search_path").await, "opt_schema");
    assert_eq!(scalar(&c, "show statement_timeout").await, "3s");
    assert_eq!(scalar(&c, "show application_name").await, "fromstartup");
    let other = p.connect().await;
    assert_eq!(scalar(&other, "show statement_timeout").await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query() {
    let p = pooler(config()).await;
    let c = p.connect().await;
    let token = c.cancel_token();
    let q = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await });
    let admin = superuser().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            scalar(&admin, "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'").await == "1"
        })
        .await
    );
    token.cancel_query(NoTls).await.unwrap();
    let err = q.await.unwrap().unwrap_err();
    assert_eq!(code(&err), "57014");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_transaction_leaves_no_lock() {
    let p = pooler(config()).await;
    let admin = superuser().await;
    admin.batch_execute("create table if not exists killed_tx (id int primary key); insert into killed_tx values (1) on conflict do nothing").await.unwrap();
    admin
        .batch_execute("grant all on killed_tx to app")
        .await
        .unwrap();
    let (c, conn) = tokio_postgres::connect(&p.url("app", "app-secret"), NoTls)
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    c.batch_execute("begin; select * from killed_tx where id = 1 for update")
        .await
        .unwrap();
    conn_task.abort(); // the socket closes with the transaction open
    drop(c);
    let other = p.connect().await;
    // The row lock is released: another client can take it without waiting.
    other
        .batch_execute("set lock_timeout = '5s'")
        .await
        .unwrap();
    other
        .batch_execute("begin; select * from killed_tx where id = 1 for update; commit")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            scalar(&admin, "select count(*) from pg_stat_activity where usename = 'app' and state like 'idle in transaction%'").await == "0"
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_replaced_or_reported() {
    // A role of its own, so killing its backends cannot touch other tests.
    let admin = superuser().await;
    let mut cfg = config();
    cfg.pooler.pool_size = 2.into();
    cfg.pooler.server_check_delay = Duration::ZERO;
    own_role(&mut cfg, "victim").await;
    let p = pooler(cfg).await;
    let c = p.connect_as("victim", "victim-pw").await.unwrap();
    assert_eq!(scalar(&c, "select 1").await, "1");
    // An idle pooled server killed behind pglittle's back: the next query still works.
    admin.batch_execute("select pg_terminate_backend(pid, 10000) from pg_stat_activity where usename = 'victim'").await.unwrap();
    assert_eq!(scalar(&c, "select 2").await, "2");
    // A server killed mid-query: the client gets an error, not a hang.
    let q = tokio::spawn(async move { c.simple_query("select pg_sleep(20)").await });
    assert!(
        eventually(Duration::from_secs(10), || async {
            scalar(&admin, "select count(*) from pg_stat_activity where usename = 'victim' and query like 'select pg_sleep(20)%' and state = 'active'").await == "1"
        })
        .await
    );
    admin.batch_execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = 'victim' and state = 'active'").await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), q)
        .await
        .expect("client hung")
        .unwrap();
    let err = res.expect_err("a killed backend must surface as an error");
    assert_eq!(err.code().map(|c| c.code()), Some("57P01"), "{err:?}");
    let fresh = p.connect_as("victim", "victim-pw").await.unwrap();
    assert_eq!(scalar(&fresh, "select 3").await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_of_100k_rows() {
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.pooler.query_wait_timeout = Duration::from_secs(5);
    let p = pooler(cfg).await;
    let c = p.connect().await;
    let other = p.connect().await;
    c.batch_execute("drop table if exists copy_t; create table copy_t (id int, v text)")
        .await
        .unwrap();
    let sink = c
        .copy_in("copy copy_t from stdin (format text)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for i in 0..100_000 {
        chunk.push_str(&format!("{i}\tvalue-{i}\n"));
        if chunk.len() > 64 * 1024 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(bytes::Bytes::from(chunk)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 100_000);
    assert_eq!(
        scalar(&c, "select count(*) || ':' || sum(id) from copy_t").await,
        "100000:4999950000"
    );
    let out = c
        .copy_out("copy (select id, v from copy_t order by id) to stdout")
        .await
        .unwrap();
    futures_util::pin_mut!(out);
    let mut bytes = Vec::new();
    while let Some(b) = out.next().await {
        bytes.extend_from_slice(&b.unwrap());
    }
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100_000);
    assert_eq!(lines[99_999], "99999\tvalue-99999");
    // The connection is still usable after COPY...
    assert_eq!(scalar(&c, "select 'after copy'").await, "after copy");
    // ...and the one server went back to the pool: COPY IN over the extended
    // protocol answers one Sync fewer than the client sent.
    assert_eq!(scalar(&other, "select 'served'").await, "served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_logins_get_their_sqlstate() {
    let p = pooler(config()).await;
    let e = p.connect_as("app", "wrong").await.unwrap_err();
    assert_eq!(code(&e), "28P01");
    let e = p.connect_as("nobody", "x").await.unwrap_err();
    assert_eq!(code(&e), "28P01");
    let url = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname=nosuchdb",
        p.port
    );
    let e = match tokio_postgres::connect(&url, NoTls).await {
        Ok(_) => panic!("connected to a database that does not exist"),
        Err(e) => e,
    };
    assert_eq!(code(&e), "3D000");
    // Garbage where a startup packet belongs.
    assert_eq!(
        raw_error_code(p.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "08P01"
    );
    // A startup length field of 2 GiB.
    assert_eq!(
        raw_error_code(p.port, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]).await,
        "08P01"
    );
    // Protocol 2.0 is not spoken.
    let mut v2 = startup_packet(&[("user", "app")]);
    v2[4..8].copy_from_slice(&(2u32 << 16).to_be_bytes());
    assert_eq!(raw_error_code(p.port, &v2).await, "0A000");
    // No user name.
    assert_eq!(
        raw_error_code(p.port, &startup_packet(&[("database", "app")])).await,
        "28000"
    );
    // The pooler still serves everyone else.
    assert_eq!(
        scalar(&p.connect().await, "select 'still fine'").await,
        "still fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_after_login_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.users.get_mut("app").unwrap().auth = pglittle::config::AuthMethod::Trust;
    cfg.pooler.max_message_size = 64 * 1024;
    let p = pooler(cfg).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    s.write_all(&startup_packet(&[("user", "app"), ("database", "app")]))
        .await
        .unwrap();
    // A Query claiming 1 GiB.
    s.write_all(&[b'Q', 0x40, 0, 0, 0]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert_eq!(
        error_code_in(&buf[..]).as_deref().filter(|c| *c != "00000"),
        Some("08P01"),
        "{buf:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_times_out_with_53300() {
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.pooler.query_wait_timeout = Duration::from_millis(300);
    let p = pooler(cfg).await;
    let holder = p.connect().await;
    let waiter = p.connect().await;
    holder.batch_execute("begin; select 1").await.unwrap();
    let e = waiter.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e), "53300");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("query_wait_timeout"),
        "{e:?}"
    );
    // Extended protocol too, and the client stays usable afterwards.
    let e = waiter.query_typed("select 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "53300");
    holder.batch_execute("commit").await.unwrap();
    assert_eq!(scalar(&waiter, "select 'served'").await, "served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_53300_but_not_the_console() {
    let mut cfg = crate::console::console_config();
    cfg.pooler.max_client_conn = 2;
    let p = pooler(cfg).await;
    let _a = p.connect().await;
    let _b = p.connect().await;
    let e = p.connect_as("app", "app-secret").await.unwrap_err();
    assert_eq!(code(&e), "53300");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("max_client_conn"),
        "{e:?}"
    );
    // Issue 12: a flood of clients must not lock the operator out.
    let admin = crate::console::console(p.port, crate::console::ADMIN)
        .await
        .expect("the console is reachable over the cap");
    assert!(!admin.simple_query("SHOW POOLS").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_client_conn_a_silent_socket_is_dropped_at_once() {
    // Issue 12: a connection over the cap must not keep a task for the whole
    // client_login_timeout (here a minute) by saying nothing.
    let mut cfg = config();
    cfg.pooler.max_client_conn = 1;
    cfg.pooler.client_login_timeout = Duration::from_secs(60);
    let p = pooler(cfg).await;
    let _a = p.connect().await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        while let Ok(n) = silent.read(&mut byte).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the silent connection over the cap was kept open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_server_per_client() {
    let mut cfg = config();
    cfg.pooler.pool_mode = PoolMode::Session;
    cfg.pooler.pool_size = 2.into();
    let p = pooler(cfg).await;
    let a = p.connect().await;
    let pid = scalar(&a, "select pg_backend_pid()").await;
    a.batch_execute("set statement_timeout = '9s'")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(scalar(&a, "select pg_backend_pid()").await, pid);
    }
    assert_eq!(scalar(&a, "show statement_timeout").await, "9s");
    // Named prepared statements work untouched in session mode.
    let stmt = a.prepare("select $1::text").await.unwrap();
    let row = a.query_one(&stmt, &[&"prepared"]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "prepared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_open_transactions_finish() {
    let p = pooler(config()).await;
    let busy = p.connect().await;
    let idle = p.connect().await;
    busy.batch_execute("begin; select 1").await.unwrap();
    p.running.shutdown().advance(pglittle::Phase::Draining);
    // The open transaction still commits...
    busy.batch_execute("select 2; commit").await.unwrap();
    // ...then its client is told pglittle is going away.
    let e = busy.simple_query("select 3").await.unwrap_err();
    assert!(
        e.is_closed() || e.code().map(|c| c.code()) == Some("57P01"),
        "{e:?}"
    );
    assert!(eventually(Duration::from_secs(5), || async { idle.is_closed() }).await);
    // New connections are refused.
    assert!(p.connect_as("app", "app-secret").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_the_pool_size_without_dropping_clients() {
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    let p = pooler(cfg.clone()).await;
    let a = p.connect().await;
    assert_eq!(scalar(&a, "select 1").await, "1");
    cfg.pooler.pool_size = 3.into();
    p.running.reload(cfg);
    let pool = p.running.shared.pools.all().pop().unwrap();
    assert_eq!(pool.status().size, 3);
    assert_eq!(scalar(&a, "select 'kept'").await, "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_at_client_login_timeout() {
    use tokio::io::AsyncReadExt;
    let mut cfg = config();
    cfg.pooler.client_login_timeout = Duration::from_millis(200);
    let p = pooler(cfg).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    let mut buf = Vec::new();
    // Say nothing: pglittle must give up on us, not wait forever.
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("pglittle kept a silent client")
        .unwrap();
    assert_eq!(error_code_in(&buf).as_deref(), Some("08006"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_clients_are_cut_off_and_rolled_back() {
    let mut cfg = config();
    cfg.pooler.idle_transaction_timeout = Duration::from_millis(300);
    cfg.pooler.pool_size = 1.into();
    let p = pooler(cfg).await;
    let admin = superuser().await;
    admin
        .batch_execute(
            "create table if not exists idle_tx (id int primary key); grant all on idle_tx to app",
        )
        .await
        .unwrap();
    let a = p.connect().await;
    a.batch_execute("begin; insert into idle_tx values (42) on conflict do nothing")
        .await
        .unwrap();
    // Sitting idle in the transaction ends it: the client is told why...
    assert!(eventually(Duration::from_secs(10), || async { a.is_closed() }).await);
    // ...the insert is rolled back, and the one server serves others again.
    let b = p.connect().await;
    assert_eq!(
        scalar(&b, "select count(*) from idle_tx where id = 42").await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_dropped_at_client_idle_timeout() {
    let mut cfg = config();
    cfg.pooler.client_idle_timeout = Duration::from_millis(300);
    let p = pooler(cfg).await;
    let a = p.connect().await;
    assert_eq!(scalar(&a, "select 1").await, "1");
    assert!(eventually(Duration::from_secs(10), || async { a.is_closed() }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_are_closed_after_server_idle_timeout() {
    let mut cfg = config();
    cfg.pooler.server_idle_timeout = Duration::from_millis(500);
    cfg.pooler.pool_size = 3.into();
    own_role(&mut cfg, "idler").await;
    let p = pooler(cfg).await;
    let c = p.connect_as("idler", "idler-pw").await.unwrap();
    assert_eq!(scalar(&c, "select 1").await, "1");
    let admin = superuser().await;
    let count = || async {
        scalar(
            &admin,
            "select count(*) from pg_stat_activity where usename = 'idler'",
        )
        .await
    };
    assert_eq!(count().await, "1");
    // The janitor closes the idle server; the client keeps its session.
    assert!(eventually(Duration::from_secs(10), || async { count().await == "0" }).await);
    assert_eq!(scalar(&c, "select 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_notices_mid_transaction_stay_with_their_client() {
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    let p = pooler(cfg).await;
    let a = p.connect().await;
    let b = p.connect().await;
    a.batch_execute("begin").await.unwrap();
    let e = a.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(code(&e), "22012");
    // The transaction is aborted, and still this client's.
    let e = a.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    a.batch_execute("rollback").await.unwrap();
    // Notices pass through and the shared server is clean for the next client.
    a.batch_execute("do $$ begin raise notice 'hello from plpgsql'; end $$")
        .await
        .unwrap();
    assert_eq!(scalar(&b, "select 'clean'").await, "clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_servers_are_replaced_after_server_lifetime() {
    let mut cfg = config();
    cfg.pooler.server_lifetime = Duration::from_millis(300);
    cfg.pooler.pool_size = 1.into();
    own_role(&mut cfg, "aging").await;
    let p = pooler(cfg).await;
    let c = p.connect_as("aging", "aging-pw").await.unwrap();
    let first = scalar(&c, "select pg_backend_pid()").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            scalar(&c, "select pg_backend_pid()").await != first
        })
        .await,
        "the server was never replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_silent_server_gets_a_clear_error() {
    // Nothing listens on this port: connection refused.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config();
    cfg.databases.get_mut("app").unwrap().port = dead_port;
    let p = pooler(cfg).await;
    let e = p.connect_as("app", "app-secret").await.unwrap_err();
    assert_eq!(code(&e), "08006", "{e:?}");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("could not connect"),
        "{e:?}"
    );

    // A fake backend that accepts and then says nothing: server_connect_timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut cfg = config();
    cfg.databases.get_mut("app").unwrap().port = silent_port;
    cfg.pooler.server_connect_timeout = Duration::from_millis(300);
    let p = pooler(cfg).await;
    let e = p.connect_as("app", "app-secret").await.unwrap_err();
    assert_eq!(code(&e), "08006", "{e:?}");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("server_connect_timeout"),
        "{e:?}"
    );
}

/// Waits until `n` clients are queued for the test's only pool.
async fn queued(p: &Pooler, n: usize) -> bool {
    eventually(Duration::from_secs(10), || async { p.waiting() == n }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_with_53300() {
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.pooler.max_queue = 1;
    let p = pooler(cfg).await;
    let holder = p.connect().await;
    holder.batch_execute("begin; select 1").await.unwrap();
    let waiter = p.connect().await;
    let waiting =
        tokio::spawn(async move { scalar(&waiter, "select 'served after the wait'").await });
    assert!(queued(&p, 1).await, "the second client never queued");
    let refused = p.connect().await;
    let e = refused.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e), "53300");
    assert!(
        e.as_db_error().unwrap().message().contains("max_queue"),
        "{e:?}"
    );
    holder.batch_execute("commit").await.unwrap();
    assert_eq!(waiting.await.unwrap(), "served after the wait");
    let shed: u64 = p
        .running
        .shared
        .pools
        .all()
        .iter()
        .map(|p| p.counters.shed.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(shed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_would_time_out_is_refused_up_front() {
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.pooler.query_wait_timeout = Duration::from_millis(1400);
    let p = std::sync::Arc::new(pooler(cfg).await);
    // Evidence first (nobody is refused on a prediction before 20 leases
    // completed while a queue stood): three clients share the one server
    // for 30 transactions of 100 ms, so the pool serves about 10 a second.
    let mut teachers = Vec::new();
    for _ in 0..3 {
        let p = p.clone();
        teachers.push(tokio::spawn(async move {
            let c = p.connect().await;
            for _ in 0..10 {
                c.batch_execute("select pg_sleep(0.1)").await.unwrap();
            }
        }));
    }
    for t in teachers {
        t.await.unwrap();
    }
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(p.connect().await);
    }
    let holder = p.connect().await;
    holder.batch_execute("begin; select 1").await.unwrap();
    // Twenty requests at once behind the held server. At about 10 a second,
    // with the 25% margin, those beyond the 11th in line would wait past
    // 1.4 s: they are refused at once, saying why, not at the timeout.
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in clients {
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = c.simple_query("select 1").await.map(|_| ());
            if let Err(e) = &r {
                let predicted = e
                    .as_db_error()
                    .is_some_and(|d| d.message().contains("predicted wait"));
                if predicted {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            (started.elapsed(), r)
        }));
    }
    // Every request is either queued or refused before the server is freed.
    let settled = eventually(Duration::from_secs(10), || async {
        let waiting: usize = p
            .running
            .shared
            .pools
            .all()
            .iter()
            .map(|x| x.status().waiting)
            .sum();
        waiting + refused.load(std::sync::atomic::Ordering::Relaxed) == 20
    })
    .await;
    holder.batch_execute("commit").await.unwrap();
    assert!(settled, "requests neither queued nor refused");
    let mut up_front = 0;
    for t in tasks {
        let (took, r) = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("a request hung")
            .unwrap();
        if let Err(e) = r {
            let db = e.as_db_error().expect("an ErrorResponse");
            assert_eq!(db.code().code(), "53300", "{db:?}");
            if db.message().contains("predicted wait") {
                assert!(db.message().contains("saturated"), "{}", db.message());
                assert!(took < Duration::from_secs(1), "refused only after {took:?}");
                up_front += 1;
            }
        }
    }
    assert!(up_front >= 1, "no request was refused up front");
    assert!(
        up_front <= 12,
        "{up_front} refused: the head of the queue should wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_gets_a_scram_exchange_like_a_known_one() {
    // Issue 12: refusing an unknown user before any exchange tells an
    // attacker which names exist. Both must be offered SCRAM, with a salt
    // that does not change between attempts, and fail the same way.
    let p = pooler(config()).await;
    async fn first_reply(port: u16, user: &str) -> (u8, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(&startup_packet(&[("user", user), ("database", "app")]))
            .await
            .unwrap();
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.unwrap();
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.unwrap();
        (head[0], body)
    }
    let known = first_reply(p.port, "app").await;
    let unknown = first_reply(p.port, "no_such_user").await;
    assert_eq!(known.0, b'R', "{known:?}");
    assert_eq!(
        unknown, known,
        "an unknown user is told apart before any exchange"
    );
    let e = p.connect_as("no_such_user", "guess").await.unwrap_err();
    let known_bad = p.connect_as("app", "guess").await.unwrap_err();
    assert_eq!(code(&e), "28P01", "{e:?}");
    assert_eq!(code(&known_bad), "28P01", "{known_bad:?}");
}

// Issue 12, defect 3: a Parse/Bind/Execute with no Sync kept the lent
// server for ever. Now the batch loses its server after client_batch_timeout,
// with an error that says why, and what it began is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_left_open_loses_its_server_with_a_clear_error() {
    let p = pool_of_one("batch_open", |c| {
        c.pooler.client_batch_timeout = Duration::from_millis(500);
    })
    .await;
    let admin = superuser().await;
    admin
        .batch_execute(
            "create table if not exists batch_open (id int primary key); \
             grant all on batch_open to batch_open",
        )
        .await
        .unwrap();
    let mut a = crate::raw::Raw::connect(p.port, "batch_open", &[]).await;
    // An insert that ran, a Flush so its reply comes, and then no Sync.
    a.send(
        &[
            crate::raw::parse(
                "",
                "insert into batch_open values (7) on conflict do nothing",
            ),
            crate::raw::bind("", "", &[]),
            crate::raw::execute(),
            b"H\0\0\0\x04".to_vec(),
        ]
        .concat(),
    )
    .await;
    let mut seen = Vec::new();
    while let Some(m) = a.next_within(Duration::from_secs(10)).await {
        let done = m.tag == b'E';
        seen.push(m);
        if done {
            break;
        }
    }
    let tags: Vec<u8> = seen.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"12CE", "{seen:?}");
    let error = crate::raw::first_error(&seen);
    assert_eq!(error.as_deref(), Some("08P01"));
    let text = String::from_utf8_lossy(&seen[3].body).into_owned();
    assert!(text.contains("client_batch_timeout"), "{text}");
    // The one server serves the next client, and the insert never happened.
    let b = p.connect_trust("batch_open", "").await;
    assert_eq!(
        scalar(&b, "select count(*) from batch_open where id = 7").await,
        "0"
    );
}

// Issue 12, defect 7: failed logins were neither delayed nor limited. Each
// failure from an address is now answered later than the last; loopback
// (a sidecar's every client) is delayed but never locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_answered_ever_later() {
    let p = pooler(config()).await;
    let mut waited = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let e = p.connect_as("app", "wrong").await.unwrap_err();
        assert_eq!(code(&e), "28P01", "{e:?}");
        waited.push(started.elapsed());
    }
    // The third failure in the window waits at least 300 ms.
    assert!(
        waited[2] >= Duration::from_millis(300),
        "failures answered after {waited:?}"
    );
    // The right password still gets in from loopback.
    let c = p.connect().await;
    assert_eq!(scalar(&c, "select 1").await, "1");
}
