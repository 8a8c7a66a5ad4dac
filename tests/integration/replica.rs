//! Read/write splitting against a real primary + streaming replica:
//! reads reach the replica, a client always reads its own writes (by LSN,
//! on the same connection and through the causal token on another), the
//! control without read-your-writes does read stale data, and a replica
//! that dies mid-load costs autocommit reads nothing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pgcluster::{Cluster, ClusterOptions, APP_DB};
use pglittle::config::{Config, HostConfig, ReadYourWrites};
use tokio_postgres::Client;

use crate::common::{self, eventually, scalar, Pooler};
use crate::console;

/// A cluster whose replica replays commits 300 ms late, so a read that
/// goes to it right after a write is reliably stale.
fn delayed() -> &'static Cluster {
    static DELAYED: OnceLock<Cluster> = OnceLock::new();
    DELAYED.get_or_init(|| {
        Cluster::start(ClusterOptions {
            max_connections: 100,
            extra_conf: vec!["recovery_min_apply_delay = '300ms'".into()],
            ..ClusterOptions::default()
        })
        .unwrap_or_else(|e| panic!("cannot start the delayed cluster: {e}"))
    })
}

/// Database `app` on `c`'s primary with its replica, probed every 100 ms.
fn split_config(c: &Cluster, ryw: ReadYourWrites) -> Config {
    let mut config = common::config();
    let replica = c.replica.as_ref().expect("a replica");
    let db = config.databases.get_mut(APP_DB).expect("app");
    db.host = c.primary.host.clone();
    db.port = c.primary.port;
    db.replicas = vec![HostConfig {
        host: replica.host.clone(),
        port: replica.port,
        weight: 1,
    }];
    db.routing.read_your_writes = ryw;
    config.pooler.health_check_period = Duration::from_millis(100);
    config
}

async fn on_replica(client: &Client, sql: &str) -> bool {
    scalar(client, sql).await == "t"
}

/// Creates a fresh table through pglittle (DDL goes to the primary) and
/// waits until the replica has it.
async fn table(p: &Pooler, name: &str) -> Client {
    let c = p.connect().await;
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int PRIMARY KEY)"
    ))
    .await
    .unwrap();
    let sql = format!("SELECT to_regclass('{name}') IS NOT NULL");
    assert!(
        eventually(Duration::from_secs(20), || async {
            matches!(
                c.query_one(&sql, &[]).await.map(|r| r.get::<_, bool>(0)),
                Ok(true)
            )
        })
        .await,
        "the replica never saw table {name}"
    );
    c
}

async fn found(c: &Client, t: &str, id: i32) -> bool {
    c.query_opt(&format!("SELECT id FROM {t} WHERE id = $1"), &[&id])
        .await
        .unwrap_or_else(|e| panic!("read {id}: {e:?}"))
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_reads_from_a_client_that_has_not_written_go_to_the_replica() {
    let mut config = split_config(common::cluster(), ReadYourWrites::Lsn);
    config.users.insert(
        console::ADMIN.into(),
        common::user("unused", pglittle::config::AuthMethod::Trust),
    );
    config.pooler.admin_users = vec![console::ADMIN.into()];
    let p = common::pooler(config).await;
    let c = p.connect().await;
    for _ in 0..20 {
        assert!(on_replica(&c, "SELECT pg_is_in_recovery()").await);
        let row = c
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap();
        assert!(
            row.get::<_, bool>(0),
            "extended-protocol read on the primary"
        );
    }
    // Hints, the session override and read-only transactions.
    assert!(!on_replica(&c, "/* pglittle:primary */ SELECT pg_is_in_recovery()").await);
    c.batch_execute("SET pglittle.route = primary")
        .await
        .unwrap();
    assert_eq!(scalar(&c, "SHOW pglittle.route").await, "primary");
    assert!(!on_replica(&c, "SELECT pg_is_in_recovery()").await);
    assert!(on_replica(&c, "/* pglittle:replica */ SELECT pg_is_in_recovery()").await);
    c.batch_execute("RESET pglittle.route").await.unwrap();
    assert!(on_replica(&c, "SELECT pg_is_in_recovery()").await);
    assert!(on_replica(&c, "BEGIN READ ONLY; SELECT pg_is_in_recovery(); COMMIT").await);
    // Per-host counts, as the console shows them: the replica served the
    // reads, the primary only the hinted and overridden ones.
    let admin = console::console(p.port, console::ADMIN).await.unwrap();
    let hosts = console::rows(&admin, "SHOW REPLICAS").await;
    let served = |role: &str| -> u64 {
        let row = hosts
            .iter()
            .find(|r| console::cell(r, "role") == role)
            .unwrap();
        console::cell(row, "reads_served").parse().unwrap()
    };
    assert!(served("replica") >= 42, "{hosts:?}");
    assert_eq!(served("primary"), 2, "{hosts:?}");
    let replica = hosts
        .iter()
        .find(|r| console::cell(r, "role") == "replica")
        .unwrap();
    assert_eq!(console::cell(replica, "healthy"), "yes");
    // A writing function sent to the replica by a hint is retried on the
    // primary: the client never sees 25006.
    assert_eq!(
        scalar(&c, "/* pglittle:replica */ SELECT txid_current() > 0").await,
        "t"
    );
    assert!(p.running.shared.ryw.retried.load(Relaxed) >= 1);
    // Row locks are writes. A write raises the client's floor, so its next
    // reads go to the primary until the replica has replayed it.
    assert!(!on_replica(&c, "SELECT pg_is_in_recovery() FOR UPDATE").await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            on_replica(&c, "SELECT pg_is_in_recovery()").await
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_always_reads_its_own_writes() {
    let p = common::pooler(split_config(delayed(), ReadYourWrites::Lsn)).await;
    let c = table(&p, "ryw_same").await;
    for id in 0..1000 {
        c.simple_query(&format!("INSERT INTO ryw_same VALUES ({id})"))
            .await
            .unwrap();
        assert!(found(&c, "ryw_same", id).await, "stale read of row {id}");
    }
    let token = scalar(&c, "SHOW pglittle.lsn").await;
    assert!(token.contains('/'), "{token}");
    // Reads of old rows still go to the replica once it has caught up.
    let fresh = p.connect().await;
    assert!(on_replica(&fresh, "SELECT pg_is_in_recovery()").await);
    let ryw = &p.running.shared.ryw;
    assert!(ryw.primary_floor.load(Relaxed) >= 1000, "{ryw:?}");
}

/// For each id: `writer` inserts it into `t`, its causal token is set on
/// `reader` (as an app would carry it), and `reader` must find the row.
async fn write_then_read_with_token(
    writer: &Client,
    reader: &Client,
    t: &str,
    ids: std::ops::Range<i32>,
) {
    for id in ids {
        writer
            .simple_query(&format!("INSERT INTO {t} VALUES ({id})"))
            .await
            .unwrap();
        let token = scalar(writer, "SHOW pglittle.lsn").await;
        reader
            .batch_execute(&format!("SET pglittle.min_lsn = '{token}'"))
            .await
            .unwrap();
        assert!(found(reader, t, id).await, "stale read of row {id} in {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_causal_token_carries_read_your_writes_to_another_connection() {
    let p = common::pooler(split_config(delayed(), ReadYourWrites::Lsn)).await;
    let writer = table(&p, "ryw_token").await;
    let reader = p.connect().await;
    write_then_read_with_token(&writer, &reader, "ryw_token", 0..1000).await;
    // And through a startup parameter, on a new connection.
    let token = scalar(&writer, "SHOW pglittle.lsn").await;
    let url = format!(
        "{} options='-c pglittle.min_lsn={token}'",
        p.url("app", pgcluster::APP_PASSWORD)
    );
    let (late, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(scalar(&late, "SHOW pglittle.min_lsn").await, token);
    assert!(found(&late, "ryw_token", 999).await);
}

// Issue 16: the causal token crosses pglittle instances. A write through
// instance 1, its token carried (as an app would, in a cookie or a header)
// to a read through instance 2, which has seen no write of this client; the
// replica replays 300 ms late. Without the token instance 2 reads stale
// (shown first, so the test cannot pass for want of a lagging replica);
// with it, never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_causal_token_carries_read_your_writes_across_instances() {
    let one = common::pooler(split_config(delayed(), ReadYourWrites::Lsn)).await;
    let two = common::pooler(split_config(delayed(), ReadYourWrites::Lsn)).await;
    let writer = table(&one, "ryw_fleet").await;
    let reader = two.connect().await;
    // The table's creation must have replayed on the replica first.
    let sql = "SELECT to_regclass('ryw_fleet') IS NOT NULL";
    let replayed = eventually(Duration::from_secs(20), || async {
        on_replica(&reader, "SELECT pg_is_in_recovery()").await && scalar(&reader, sql).await == "t"
    })
    .await;
    assert!(replayed, "the replica never saw the table");
    let mut stale_without = 0;
    for id in 0..20 {
        writer
            .simple_query(&format!("INSERT INTO ryw_fleet VALUES ({id})"))
            .await
            .unwrap();
        if !found(&reader, "ryw_fleet", id).await {
            stale_without += 1;
        }
    }
    assert!(
        stale_without > 0,
        "instance 2 never read stale without the token"
    );
    write_then_read_with_token(&writer, &reader, "ryw_fleet", 20..520).await;
    // The reads did not all just go to the primary: instance 2 served some
    // from the replica once it had caught up, or waited for it.
    let ryw = &two.running.shared.ryw;
    assert!(
        ryw.primary_floor.load(Relaxed) + ryw.replica.load(Relaxed) >= 500,
        "{ryw:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_read_your_writes_the_stale_read_does_occur() {
    let p = common::pooler(split_config(delayed(), ReadYourWrites::Off)).await;
    let c = table(&p, "ryw_off").await;
    let mut stale = 0;
    for id in 0..50 {
        c.simple_query(&format!("INSERT INTO ryw_off VALUES ({id})"))
            .await
            .unwrap();
        if !found(&c, "ryw_off", id).await {
            stale += 1;
        }
    }
    assert!(
        stale > 0,
        "the replica is delayed: some read must have been stale"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_mid_load_costs_autocommit_reads_nothing() {
    let cluster = Cluster::start(ClusterOptions {
        max_connections: 60,
        ..ClusterOptions::default()
    })
    .expect("private cluster");
    let p = Arc::new(common::pooler(split_config(&cluster, ReadYourWrites::Lsn)).await);
    let errors = Arc::new(AtomicU64::new(0));
    let on_replica_count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for n in 0..6 {
        let (p, errors, hits, stop) = (
            p.clone(),
            errors.clone(),
            on_replica_count.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = p.connect().await;
            while !stop.load(Relaxed) {
                let r = if n % 2 == 0 {
                    c.query_one("SELECT pg_is_in_recovery()", &[]).await.map(|r| r.get::<_, bool>(0))
                } else {
                    c.simple_query("SELECT pg_is_in_recovery()").await.map(|m| {
                        m.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t")))
                    })
                };
                match r {
                    Ok(true) => {
                        hits.fetch_add(1, Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        eprintln!("client-visible error: {e:?}");
                        errors.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            on_replica_count.load(Relaxed) > 100
        })
        .await
    );
    let replica = cluster.replica.as_ref().unwrap();
    cluster
        .stop_instance(replica, "immediate")
        .expect("stop the replica");
    let hosts = p.running.shared.topology.get(APP_DB).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !hosts.replicas[0].healthy()
        })
        .await,
        "the replica was never banned"
    );
    let before = on_replica_count.load(Relaxed);
    let served = hosts.primary.served.load(Relaxed);
    let _ = served;
    cluster
        .start_instance(replica)
        .expect("restart the replica");
    assert!(
        eventually(Duration::from_secs(20), || async {
            on_replica_count.load(Relaxed) > before + 100
        })
        .await,
        "reads never came back to the replica"
    );
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(errors.load(Relaxed), 0, "autocommit reads saw errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_failover_with_role_auto() {
    let cluster = Cluster::start(ClusterOptions {
        max_connections: 60,
        ..ClusterOptions::default()
    })
    .expect("private cluster");
    let mut config = split_config(&cluster, ReadYourWrites::Lsn);
    config.databases.get_mut(APP_DB).unwrap().routing.role = pglittle::config::RoleMode::Auto;
    config.pooler.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let p = common::pooler(config).await;
    let c = table(&p, "failover").await;
    c.simple_query("INSERT INTO failover VALUES (1)")
        .await
        .unwrap();
    let replica = cluster.replica.as_ref().unwrap();
    // Replication is asynchronous: row 1 must have reached the replica
    // before it is promoted, or the new primary starts without it (this
    // raced on a loaded CI machine).
    let direct = replica.conninfo(pgcluster::SUPERUSER, pgcluster::SUPERUSER_PASSWORD, APP_DB);
    assert!(
        eventually(Duration::from_secs(20), || {
            let direct = direct.clone();
            async move {
                let Ok((r, conn)) = tokio_postgres::connect(&direct, tokio_postgres::NoTls).await
                else {
                    return false;
                };
                tokio::spawn(conn);
                matches!(
                    r.query_one("SELECT count(*) FROM failover", &[]).await,
                    Ok(row) if row.get::<_, i64>(0) == 1
                )
            }
        })
        .await,
        "row 1 never reached the replica"
    );
    cluster.promote(replica).expect("promote the replica");
    cluster
        .stop_instance(&cluster.primary, "fast")
        .expect("stop the old primary");
    // Clients whose server died with the old primary reconnect, as
    // applications do; writes succeed again once the probe saw the promotion.
    let mut id = 2;
    let url = p.url("app", pgcluster::APP_PASSWORD);
    assert!(
        eventually(Duration::from_secs(40), || {
            id += 1;
            let sql = format!("INSERT INTO failover VALUES ({id})");
            let url = url.clone();
            async move {
                let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return false;
                };
                tokio::spawn(conn);
                c.simple_query(&sql).await.is_ok()
            }
        })
        .await,
        "writes never reached the promoted replica: {}",
        {
            let h = p.running.shared.topology.get(APP_DB).unwrap();
            let show = |x: &pglittle::topology::HostState| {
                format!(
                    "{} healthy={} in_recovery={} lsn={:?}",
                    x.addr(),
                    x.healthy(),
                    x.in_recovery.load(Relaxed),
                    x.lsn()
                )
            };
            format!(
                "writer {}; primary {}; replica {}",
                h.writer().addr(),
                show(&h.primary),
                show(&h.replicas[0])
            )
        }
    );
    let c = p.connect().await;
    let port = scalar(&c, "/* pglittle:primary */ SELECT inet_server_port()").await;
    assert_eq!(
        port,
        replica.port.to_string(),
        "writes go to the new primary"
    );
    assert_eq!(scalar(&c, "SELECT count(*) > 1 FROM failover").await, "t");
    // The old primary, back and read-write (split brain), is never written to.
    cluster
        .start_instance(&cluster.primary)
        .expect("restart the old primary");
    for n in 0..20 {
        c.simple_query(&format!("INSERT INTO failover VALUES ({})", 1000 + n))
            .await
            .unwrap();
        let port = scalar(&c, "/* pglittle:primary */ SELECT inet_server_port()").await;
        assert_eq!(port, replica.port.to_string());
    }
    // Dashboards see the promoted host's writes as a primary's.
    let maddr = p.running.metrics_addr.expect("metrics endpoint");
    let (_, text) = pglittle::metrics::http::get(maddr, "/metrics")
        .await
        .expect("GET /metrics");
    let host = format!("{}:{}", replica.host, replica.port);
    let as_primary = |name: &str| {
        crate::observe::sample(&text, name, &[("host", &host), ("role", "primary")]).unwrap_or(0.0)
    };
    assert!(
        as_primary("pglittle_transactions_total") >= 40.0,
        "the promoted host's writes are not labelled role=\"primary\":\n{text}"
    );
    assert!(
        crate::observe::sample(
            &text,
            "pglittle_queries_routed_total",
            &[("host", &host), ("route", "primary")]
        )
        .is_some_and(|n| n >= 40.0),
        "{text}"
    );
}

/// Reads backend messages until one with `tag` arrives; returns its body.
async fn read_until(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, tag: u8) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    loop {
        while buf.len() >= 5 {
            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() < 1 + len {
                break;
            }
            let msg: Vec<u8> = buf.drain(..1 + len).collect();
            if msg[0] == tag {
                return msg[5..].to_vec();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a reply in time")
            .unwrap();
        assert!(n > 0, "pglittle closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_hands_the_client_its_causal_token_as_parameter_status() {
    use tokio::io::AsyncWriteExt;
    let mut config = split_config(common::cluster(), ReadYourWrites::Lsn);
    config.users.get_mut("app").unwrap().auth = pglittle::config::AuthMethod::Trust;
    let p = common::pooler(config).await;
    table(&p, "ryw_token_ps").await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .unwrap();
    s.write_all(&common::startup_packet(&[
        ("user", "app"),
        ("database", APP_DB),
    ]))
    .await
    .unwrap();
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, b'Z').await;
    let query = |sql: &str| {
        let mut m = vec![b'Q'];
        m.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        m.extend_from_slice(sql.as_bytes());
        m.push(0);
        m
    };
    s.write_all(&query("INSERT INTO ryw_token_ps VALUES (1)"))
        .await
        .unwrap();
    read_until(&mut s, &mut buf, b'Z').await;
    let status = read_until(&mut s, &mut buf, b'S').await;
    let text = String::from_utf8_lossy(&status).to_string();
    let mut parts = text.split('\0');
    assert_eq!(parts.next(), Some("pglittle.lsn"));
    let token = parts.next().unwrap().to_string();
    // The same token SHOW pglittle.lsn reports.
    s.write_all(&query("SHOW pglittle.lsn")).await.unwrap();
    let row = read_until(&mut s, &mut buf, b'D').await;
    assert!(
        String::from_utf8_lossy(&row).ends_with(&token),
        "{token} vs {row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_mode_and_causal_wait_also_read_your_writes() {
    let mut config = split_config(delayed(), ReadYourWrites::Time);
    config
        .databases
        .get_mut(APP_DB)
        .unwrap()
        .routing
        .pin_after_write = Duration::from_secs(2);
    let p = common::pooler(config).await;
    let c = table(&p, "ryw_time").await;
    for id in 0..100 {
        c.simple_query(&format!("INSERT INTO ryw_time VALUES ({id})"))
            .await
            .unwrap();
        assert!(found(&c, "ryw_time", id).await, "stale read of row {id}");
    }
    assert!(p.running.shared.ryw.primary_time.load(Relaxed) >= 100);

    // causal_wait: reads wait for the delayed replica instead of going to the primary.
    let mut config = split_config(delayed(), ReadYourWrites::Lsn);
    config
        .databases
        .get_mut(APP_DB)
        .unwrap()
        .routing
        .causal_wait = Duration::from_secs(3);
    let p = common::pooler(config).await;
    let c = table(&p, "ryw_wait").await;
    for id in 0..20 {
        c.simple_query(&format!("INSERT INTO ryw_wait VALUES ({id})"))
            .await
            .unwrap();
        assert!(found(&c, "ryw_wait", id).await, "stale read of row {id}");
    }
    let ryw = &p.running.shared.ryw;
    assert!(ryw.waited.load(Relaxed) >= 15, "{ryw:?}");
}

/// An extended-protocol read (Parse/Bind/Execute/Sync, as drivers send
/// with parameters) that the replica refuses with 25006 is retried once on
/// the primary, where its statement is prepared afresh: the client gets
/// its rows and never sees the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_read_the_replica_refuses_runs_on_the_primary() {
    let p = common::pooler(split_config(common::cluster(), ReadYourWrites::Lsn)).await;
    let c = table(&p, "ext_retry").await;
    // A function that writes, but that the classifier cannot know writes:
    // `SELECT ext_retry_add($1)` looks like a read and goes to the replica.
    c.batch_execute(
        "CREATE OR REPLACE FUNCTION ext_retry_add(v int) RETURNS int LANGUAGE sql \
         AS 'INSERT INTO ext_retry VALUES (v) RETURNING id'",
    )
    .await
    .unwrap();
    let r = p.connect().await;
    let retried = || p.running.shared.ryw.retried.load(Relaxed);
    // Each retried call wrote on the primary and so raised `r`'s floor:
    // wait until the replica has replayed it, so the next call goes there.
    let replica_ready = || async {
        assert!(
            eventually(Duration::from_secs(20), || async {
                on_replica(&r, "SELECT to_regprocedure('ext_retry_add(int)') IS NOT NULL AND pg_is_in_recovery()").await
            })
            .await,
            "the replica never caught up"
        );
    };
    replica_ready().await;
    let prepared = r.prepare("SELECT ext_retry_add($1) + 0").await.unwrap();
    for id in 0..12 {
        replica_ready().await;
        let before = retried();
        let rows = match id % 3 {
            // A new named statement per call (Parse/Describe/Sync, then Bind/Execute/Sync).
            0 => {
                r.query(&format!("SELECT ext_retry_add($1) + {id} - {id}"), &[&id])
                    .await
            }
            // One statement, prepared once (on the replica), bound again and again.
            1 => r.query(&prepared, &[&id]).await,
            // The unnamed statement: Parse/Bind/Describe/Execute/Sync in one batch.
            _ => {
                r.query_typed(
                    "SELECT ext_retry_add($1)",
                    &[(&id, tokio_postgres::types::Type::INT4)],
                )
                .await
            }
        }
        .unwrap_or_else(|e| panic!("call {id}: the client saw {e:?}"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, i32>(0), id);
        assert_eq!(retried(), before + 1, "call {id} was not retried once");
        // The write happened once, on the primary, and the caller reads it.
        assert!(found(&r, "ext_retry", id).await, "row {id} not found");
    }
    let count = scalar(&c, "/* pglittle:primary */ SELECT count(*) FROM ext_retry").await;
    assert_eq!(count, "12");
    // Other errors on the replica reach the client as they are, not retried.
    replica_ready().await;
    let before = retried();
    let e = r
        .query("SELECT 1 / ($1::int - $1::int)", &[&1i32])
        .await
        .expect_err("division by zero");
    assert_eq!(common::code(&e), "22012");
    assert_eq!(retried(), before);
}

/// A read that missed its floor only because the last probe is old asks the
/// replicas for their replay position at once: with a 60 s probe, a client's
/// reads are back on the (undelayed) replica after each write long before the
/// next probe. The window is 10 s, not less, because replay on a loaded CI
/// machine can itself take a second; it is still a sixth of the probe
/// period, so at most one of the ten writes can be rescued by a regular probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_return_to_the_replica_soon_after_a_write_even_with_a_slow_probe() {
    let mut config = split_config(common::cluster(), ReadYourWrites::Lsn);
    config.pooler.health_check_period = Duration::from_secs(60);
    let p = common::pooler(config).await;
    let c = table(&p, "ryw_eager").await;
    for id in 0..10 {
        c.simple_query(&format!("INSERT INTO ryw_eager VALUES ({id})"))
            .await
            .unwrap();
        assert!(found(&c, "ryw_eager", id).await, "stale read of row {id}");
        assert!(
            eventually(Duration::from_secs(10), || async {
                on_replica(&c, "SELECT pg_is_in_recovery()").await
            })
            .await,
            "10 s after write {id}, reads were still on the primary"
        );
    }
}

/// Issue 12: `/*/ x */ SELECT 1` is a legal comment, then a query. The hint
/// parser used to slice `rest[2..1]` on it and panic, killing the session
/// with no ErrorResponse, on any database with replicas. It gets its row,
/// by either protocol, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_opening_with_slash_star_slash_is_served_and_the_session_lives() {
    let p = common::pooler(split_config(common::cluster(), ReadYourWrites::Lsn)).await;
    let c = p.connect().await;
    assert_eq!(scalar(&c, "/*/ x */ SELECT 1").await, "1");
    assert_eq!(scalar(&c, "SELECT 2").await, "2", "the session died");
    let row = c
        .query_one("/*/ x */ SELECT $1::int", &[&3i32])
        .await
        .expect("extended protocol");
    assert_eq!(row.get::<_, i32>(0), 3);
    // A hint after such a comment still routes.
    assert!(
        eventually(Duration::from_secs(10), || async {
            on_replica(
                &c,
                "/*/ x */ /* pglittle:replica */ SELECT pg_is_in_recovery()",
            )
            .await
        })
        .await
    );
    assert!(
        !on_replica(
            &c,
            "/*/ x */ /* pglittle:primary */ SELECT pg_is_in_recovery()"
        )
        .await
    );
    // Unterminated comments: PostgreSQL's own syntax error, not a panic.
    // (Last: an error on the primary counts as a write and raises the
    // client's read-your-writes floor.)
    for sql in ["/*/", "/*/*/ SELECT 1", "/*/ x */ /*/"] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(common::code(&e), "42601", "{sql}: {e:?}");
    }
    assert_eq!(scalar(&c, "SELECT 'alive'").await, "alive");
}

// Issue 15: in LSN mode the WAL position of an autocommit write (or of a
// COMMIT) is read by a query pipelined behind it in the same write to the
// server, not by a round trip of its own after the transaction. On a pool
// of ONE server: client A writes, client B, on the same server right
// after, sees nothing of the probe (no stray row, error or open block),
// and A's token still carries read-your-writes to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writes_position_is_read_behind_it_on_the_same_server() {
    let mut config = split_config(delayed(), ReadYourWrites::Lsn);
    config.pooler.pool_size = 1.into();
    let p = common::pooler(config).await;
    let mut a = table(&p, "ryw_probe").await;
    let b = p.connect().await;
    // C reads on the primary: the one server A writes through.
    let c = p.connect().await;
    c.batch_execute("SET pglittle.route = 'primary'")
        .await
        .unwrap();
    let ryw = &p.running.shared.ryw;
    let counts = || {
        (
            ryw.position_pipelined.load(Relaxed),
            ryw.position_asked.load(Relaxed),
        )
    };
    // A's session answers SHOW pglittle.lsn itself once its last request
    // is over (the position is learned after the client has its answer):
    // the counts are read after one.
    scalar(&a, "SHOW pglittle.lsn").await;
    let before = counts();
    let mut last = String::new();
    for id in 0..10 {
        a.simple_query(&format!("INSERT INTO ryw_probe VALUES ({id})"))
            .await
            .unwrap();
        let token = scalar(&a, "SHOW pglittle.lsn").await;
        assert_ne!(token, last, "a new position after every write");
        last = token.clone();
        // C is served by the one server A just used: no block left open,
        // nothing of the probe's.
        assert_eq!(
            scalar(&c, "SELECT pg_current_xact_id_if_assigned() IS NULL").await,
            "t"
        );
        assert_eq!(
            scalar(&c, "SELECT count(*) FROM ryw_probe").await,
            (id + 1).to_string()
        );
        b.batch_execute(&format!("SET pglittle.min_lsn = '{token}'"))
            .await
            .unwrap();
        assert!(found(&b, "ryw_probe", id).await, "stale read of row {id}");
    }
    // An explicit block: the position is read behind its COMMIT.
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("INSERT INTO ryw_probe VALUES (100)")
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    scalar(&a, "SHOW pglittle.lsn").await;
    assert_eq!(
        (counts().0 - before.0, counts().1 - before.1),
        (11, 0),
        "every position pipelined, none asked for"
    );
    // A failed write: the client sees its own error, and nothing else.
    let dup = a.simple_query("INSERT INTO ryw_probe VALUES (100)").await;
    assert!(
        dup.is_err_and(|e| e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    );
    assert_eq!(scalar(&a, "SELECT 1").await, "1");
    // An extended-protocol write (Bind, Execute, Sync of a prepared INSERT)
    // is followed by the probe behind its Sync. (tokio-postgres prepares
    // the statement first in a batch of its own, Parse/Describe/Sync, which
    // runs nothing: no floor is learned for it, so nothing is asked.)
    a.execute("INSERT INTO ryw_probe VALUES ($1)", &[&200i32])
        .await
        .unwrap();
    let token = scalar(&a, "SHOW pglittle.lsn").await;
    let (piped, asked) = counts();
    // 10 writes, the block, the failed write (a probe follows whatever the
    // Query's outcome) and the extended one.
    assert_eq!((piped - before.0, asked - before.1), (13, 0));
    // An explicit block through the extended protocol: BEGIN is bound, so
    // no probe follows that batch; its COMMIT's batch is.
    let tx = a.transaction().await.unwrap();
    tx.execute("INSERT INTO ryw_probe VALUES ($1)", &[&300i32])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let token2 = scalar(&a, "SHOW pglittle.lsn").await;
    assert_ne!(token2, token);
    b.batch_execute(&format!("SET pglittle.min_lsn = '{token}'"))
        .await
        .unwrap();
    assert!(found(&b, "ryw_probe", 200).await);
    b.batch_execute(&format!("SET pglittle.min_lsn = '{token2}'"))
        .await
        .unwrap();
    assert!(found(&b, "ryw_probe", 300).await);
}
