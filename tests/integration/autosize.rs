//! `pool_size = "auto"` and load shedding against the real primary.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pglittle::config::PoolSize;
use pglittle::sizing::WINDOWS;
use tokio_postgres::SimpleQueryMessage;

use crate::common::*;

/// The pool of `user` (the test's own role), once it exists.
fn pool_of(p: &Pooler, user: &str) -> Option<Arc<pglittle::pool::Pool>> {
    p.running
        .shared
        .pools
        .all()
        .into_iter()
        .find(|pool| pool.user == user)
}

async fn backends(user: &str) -> i64 {
    superuser()
        .await
        .query_one(
            "select count(*) from pg_stat_activity where usename = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_pool_grows_to_littles_law_and_shrinks_back() {
    let mut cfg = config();
    let user = "auto_grow";
    let password = own_role(&mut cfg, user).await;
    cfg.pooler.pool_size = PoolSize::Auto;
    let p = pooler(cfg).await;

    // Eight clients back to back, each transaction 50 ms: L = 8 busy servers.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let client = p.connect_as(user, &password).await.unwrap();
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                client.batch_execute("select pg_sleep(0.05)").await.unwrap();
            }
        }));
    }
    let pool = pool_of(&p, user).expect("the pool exists after the logins");
    let started = Instant::now();
    let mut seen = Vec::new();
    let grown = eventually(Duration::from_secs(10), || {
        let size = pool.status().size;
        let l = pool
            .stats
            .figures(Instant::now(), Duration::from_secs(2))
            .offered_load;
        seen.push((size, (l * 10.0).round() / 10.0));
        async move { l >= 7.0 && size.abs_diff(l.round() as usize) <= 2 }
    })
    .await;
    assert!(
        grown,
        "not within 2 of L after {:?}: (size, L) {:?}",
        started.elapsed(),
        seen.iter().step_by(25).collect::<Vec<_>>()
    );
    assert_eq!(seen[0].0, 2, "an auto pool starts at 2");
    // The server never saw more connections than the pool's size.
    assert!(backends(user).await as usize <= pool.status().size + 1);

    stop.store(true, Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let shrunk = eventually(Duration::from_secs(40), || {
        let size = pool.status().size;
        async move { size <= 2 && backends(user).await <= 2 }
    })
    .await;
    assert!(
        shrunk,
        "still {:?} with {} server connections",
        pool.status(),
        backends(user).await
    );
}

enum Outcome {
    Done(u32),
    Shed(String),
    Other(String, String),
}

/// What an open-loop run saw: ids of committed transactions, shedding
/// messages, and any other error.
#[derive(Default)]
struct Run {
    done: BTreeSet<u32>,
    shed: Vec<String>,
    other: Vec<String>,
}

/// (requests per second, seconds, the SQL for request id N).
type Phase = (u32, u32, fn(u32) -> String);

/// Drives `phases` of (requests per second, seconds, SQL for an id) at a
/// fixed arrival rate, whatever the answers, over `clients` connections.
/// The SQL must return the id in its first column.
async fn open_loop(
    p: &Pooler,
    user: &str,
    password: &str,
    clients: usize,
    phases: &[Phase],
) -> Run {
    let (free_tx, free_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..clients {
        free_tx
            .send(Arc::new(p.connect_as(user, password).await.unwrap()))
            .unwrap();
    }
    let free_rx = Arc::new(tokio::sync::Mutex::new(free_rx));
    let mut tasks = Vec::new();
    let mut next_id = 0;
    for &(rate, secs, sql) in phases {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        for _ in 0..rate * secs {
            tick.tick().await;
            next_id += 1;
            let sql = sql(next_id);
            let (free_rx, free_tx) = (free_rx.clone(), free_tx.clone());
            tasks.push(tokio::spawn(async move {
                let client = free_rx.lock().await.recv().await.unwrap();
                // One statement, simple protocol: one server lease each.
                let r = client.simple_query(&sql).await;
                free_tx.send(client).unwrap();
                match r {
                    Ok(messages) => {
                        let row = messages.iter().find_map(|m| match m {
                            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
                            _ => None,
                        });
                        match row {
                            Some(id) => Outcome::Done(id),
                            None => Outcome::Other("no row".into(), String::new()),
                        }
                    }
                    Err(e) => {
                        let msg = e.as_db_error().map(|d| d.message().to_string());
                        match (code(&e).as_str(), msg) {
                            ("53300", Some(m)) if m.contains("refusing now") => Outcome::Shed(m),
                            (c, m) => Outcome::Other(c.to_string(), m.unwrap_or_default()),
                        }
                    }
                }
            }));
        }
    }
    let mut run = Run::default();
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Done(id) => {
                run.done.insert(id);
            }
            Outcome::Shed(m) => run.shed.push(m),
            Outcome::Other(c, m) => run.other.push(format!("{c}: {m}")),
        }
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_sustainable_rate_is_shed_with_53300_and_nothing_times_out() {
    let _heavy = HEAVY.lock().await;
    let mut cfg = config();
    let user = "overload";
    let password = own_role(&mut cfg, user).await;
    let admin = superuser().await;
    admin
        .batch_execute(
            "drop table if exists overload_log; create table overload_log (id int primary key);
             grant insert, select on overload_log to overload",
        )
        .await
        .unwrap();
    // Four servers, 40 ms transactions: about 100 per second at most.
    cfg.pooler.pool_size = 4.into();
    cfg.pooler.query_wait_timeout = Duration::from_millis(800);
    let p = pooler(cfg).await;
    let insert: fn(u32) -> String =
        |id| format!("insert into overload_log select {id} from pg_sleep(0.04) returning id");
    // Warm-up at half the capacity (the pool learns W), then 2x for 4 s.
    let Run { done, shed, other } = open_loop(
        &p,
        user,
        &password,
        120,
        &[(50, 2, insert), (200, 4, insert)],
    )
    .await;
    assert!(
        other.is_empty(),
        "errors other than shedding: {:?}",
        &other[..other.len().min(3)]
    );
    assert!(!shed.is_empty(), "twice the capacity shed nothing");
    assert!(
        shed[0].contains("saturated") && shed[0].contains("predicted wait"),
        "{}",
        shed[0]
    );
    assert!(done.len() > 300, "only {} admitted", done.len());
    // Every admitted transaction is there, and nothing else.
    let rows: BTreeSet<u32> = admin
        .query("select id from overload_log", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect();
    assert_eq!(rows, done);
    let pool = pool_of(&p, user).unwrap();
    assert_eq!(pool.counters.wait_timeouts.load(Relaxed), 0);
    assert_eq!(pool.counters.shed.load(Relaxed), shed.len() as u64);
    // No admitted request timed out (above); the p99 estimate may pass the
    // deadline by a scheduling hiccup on a loaded machine (0.81 s was seen
    // with the whole suite and other work on 2 cores), not by a queue.
    let wait_p99 = pool.stats.figures(Instant::now(), WINDOWS[0]).wait_p99;
    assert!(wait_p99 < 1.0, "admitted p99 wait {wait_p99}s");
    // Still up.
    let fresh = p.connect_as(user, &password).await.unwrap();
    assert_eq!(scalar(&fresh, "select 'up'").await, "up");
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_connection_serves_a_client_that_waited_reserve_pool_timeout() {
    let mut cfg = config();
    let user = "reserve";
    let password = own_role(&mut cfg, user).await;
    cfg.pooler.pool_size = 1.into();
    cfg.pooler.reserve_pool_size = 1;
    cfg.pooler.reserve_pool_timeout = Duration::from_millis(200);
    let p = pooler(cfg).await;
    let holder = p.connect_as(user, &password).await.unwrap();
    holder.batch_execute("begin; select 1").await.unwrap();
    let waiter = p.connect_as(user, &password).await.unwrap();
    let started = Instant::now();
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        scalar(&waiter, "select 'from the reserve'"),
    )
    .await
    .expect("the waiter was not served while the only server was held");
    assert_eq!(served, "from the reserve");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "no wait first"
    );
    let pool = pool_of(&p, user).unwrap();
    assert_eq!(pool.counters.reserve_opens.load(Relaxed), 1);
    // Nobody waits any more: the reserve connection is closed on return.
    assert!(
        eventually(Duration::from_secs(5), || async {
            backends(user).await == 1
        })
        .await
    );
    holder.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pools_of_a_database_share_max_db_connections_fairly() {
    let mut cfg = config();
    let users = ["budget_a", "budget_b"];
    let mut passwords = Vec::new();
    for u in users {
        passwords.push(own_role(&mut cfg, u).await);
    }
    cfg.pooler.pool_size = PoolSize::Auto;
    cfg.databases.get_mut("app").unwrap().max_db_connections = Some(6);
    let p = pooler(cfg).await;
    // Each role offers 8 busy servers' worth of load; together they get 6.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (u, pw) in users.iter().zip(&passwords) {
        for _ in 0..8 {
            let client = p.connect_as(u, pw).await.unwrap();
            let stop = stop.clone();
            load.push(tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    client.batch_execute("select pg_sleep(0.05)").await.unwrap();
                }
            }));
        }
    }
    let pools: Vec<_> = users.iter().map(|u| pool_of(&p, u).unwrap()).collect();
    let worst = std::cell::Cell::new(0);
    let fair = eventually(Duration::from_secs(15), || {
        let sizes: Vec<usize> = pools.iter().map(|p| p.status().size).collect();
        let worst = &worst;
        async move {
            let on_server = backends(users[0]).await + backends(users[1]).await;
            worst.set(worst.get().max(on_server));
            sizes == [3, 3]
        }
    })
    .await;
    let worst = worst.get();
    let sizes: Vec<_> = pools.iter().map(|p| p.status()).collect();
    stop.store(true, Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(fair, "not shared 3 + 3: {sizes:?}");
    assert!(worst <= 6, "{worst} server connections for a budget of 6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowing_database_is_met_with_growth_to_the_budget_then_shedding_not_thrash() {
    let _heavy = HEAVY.lock().await;
    let mut cfg = config();
    let user = "slowdep";
    let password = own_role(&mut cfg, user).await;
    cfg.pooler.pool_size = PoolSize::Auto;
    cfg.pooler.query_wait_timeout = Duration::from_secs(1);
    cfg.databases.get_mut("app").unwrap().max_db_connections = Some(6);
    let p = pooler(cfg).await;
    // A monitor records every size the pool takes.
    let sizes = Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (sizes, stop) = (sizes.clone(), stop.clone());
        let pools = p.running.shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.load(Relaxed) {
                tick.tick().await;
                if let Some(pool) = pools.pools.all().into_iter().find(|p| p.user == "slowdep") {
                    sizes.lock().unwrap().push(pool.status().size);
                }
            }
        })
    };
    // 100 requests a second of 20 ms (L = 2), then the database slows
    // down: every other request takes 150 ms (L = 8.5 > the budget of 6,
    // which serves about 70 a second).
    let fast: fn(u32) -> String = |id| format!("select {id} from pg_sleep(0.02)");
    let slow: fn(u32) -> String = |id| {
        let secs = if id % 2 == 0 { 0.15 } else { 0.02 };
        format!("select {id} from pg_sleep({secs})")
    };
    let run = open_loop(&p, user, &password, 150, &[(100, 4, fast), (100, 8, slow)]).await;
    stop.store(true, Relaxed);
    monitor.await.unwrap();
    let sizes = sizes.lock().unwrap().clone();
    assert!(
        run.other.is_empty(),
        "errors other than shedding: {:?}",
        &run.other[..run.other.len().min(3)]
    );
    assert!(!run.shed.is_empty(), "the excess was not shed");
    assert!(run.done.len() > 600, "only {} served", run.done.len());
    assert!(sizes.iter().all(|s| *s <= 6), "above the budget: {sizes:?}");
    assert!(sizes.contains(&6), "never grew to the budget: {sizes:?}");
    let changes = sizes.windows(2).filter(|w| w[0] != w[1]).count();
    eprintln!(
        "slow dependency: {} served, {} shed, {changes} size changes, sizes {:?}",
        run.done.len(),
        run.shed.len(),
        sizes.iter().step_by(10).collect::<Vec<_>>()
    );
    assert!(changes <= 8, "thrashing: {changes} changes {sizes:?}");
    let pool = pool_of(&p, user).unwrap();
    assert_eq!(pool.counters.wait_timeouts.load(Relaxed), 0);
    let wait_p99 = pool.stats.figures(Instant::now(), WINDOWS[0]).wait_p99;
    assert!(wait_p99 <= 1.0, "admitted p99 wait {wait_p99}s");
}

/// Issue 12: 1,000 clients log in to a fresh pglittle (a pool of 10,
/// defaults otherwise) and then all query at once, by the simple and the
/// extended protocol. The pool serves thousands a second, so nobody may be
/// refused; before the fix hundreds were ("predicted wait 96.9s (305
/// queued ahead, 10 servers busy, serving 3/s)"; 259 in this test). The
/// clients run on a runtime (and threads) of their own, as pgbench would
/// in its own process: on the pooler's runtime they could only send as
/// fast as it lets them, and no burst would form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_of_a_thousand_clients_is_served_without_a_refusal() {
    let _heavy = HEAVY.lock().await;
    let mut cfg = config();
    let user = "coldstart";
    let password = own_role(&mut cfg, user).await;
    cfg.pooler.pool_size = 10.into();
    cfg.pooler.query_wait_timeout = pglittle::config::PoolerSettings::default().query_wait_timeout;
    let p = pooler(cfg).await;
    let url = p.url(user, &password);
    let clients = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the clients' runtime")
            .block_on(cold_start_clients(url, 1000))
    });
    let errors = tokio::task::spawn_blocking(move || clients.join())
        .await
        .unwrap()
        .expect("the clients' thread");
    let pool = pool_of(&p, user).unwrap();
    let shed = pool.counters.shed.load(Relaxed);
    let refused = errors.iter().filter(|e| e.contains("saturated")).count();
    eprintln!(
        "cold start: 1000 clients, {} errors ({refused} refusals), shed counter {shed}, {:?}",
        errors.len(),
        pool.stats.figures(Instant::now(), WINDOWS[0])
    );
    let first = &errors[..errors.len().min(3)];
    assert_eq!(shed, 0, "shed {shed}; first errors {first:?}");
    assert!(
        errors.is_empty(),
        "{} errors, first {first:?}",
        errors.len()
    );
    assert_eq!(pool.counters.wait_timeouts.load(Relaxed), 0);
}

/// `n` clients log in, two at a time as pgbench -j 2 does (each of its
/// threads logs its clients in one after another), wait for each other,
/// then each runs two simple queries and two extended-protocol ones.
/// Returns every error.
async fn cold_start_clients(url: String, n: usize) -> Vec<String> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let lanes = Arc::new(tokio::sync::Semaphore::new(2));
    let mut tasks = Vec::new();
    for i in 0..n as i32 {
        let (url, barrier, lanes) = (url.clone(), barrier.clone(), lanes.clone());
        tasks.push(tokio::spawn(async move {
            let login = {
                let _lane = lanes.acquire().await;
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            };
            let (c, conn) = match login {
                Ok(c) => c,
                Err(e) => {
                    barrier.wait().await;
                    return vec![format!("login: {e}")];
                }
            };
            tokio::spawn(conn);
            barrier.wait().await;
            // pgbench's logins take seconds; here they take a fraction of
            // one. The pool sits idle for longer than its 2 s window, as
            // it does at the end of pgbench's logins, then the burst.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let mut errors = Vec::new();
            for j in 0..2 {
                let want = (i * 10 + j).to_string();
                // Simple protocol: one lease each.
                let sql = format!("select {i} * 10 + {j}");
                let r = c.simple_query(&sql).await.map(|m| {
                    m.iter()
                        .find_map(|m| match m {
                            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                            _ => None,
                        })
                        .unwrap_or_default()
                });
                errors.extend(check(r, &want));
                // Extended protocol: a Parse/Describe lease, then a
                // Bind/Execute lease.
                let r = c
                    .query_one("select $1::int * 10 + $2::int", &[&i, &j])
                    .await
                    .map(|row| row.get::<_, i32>(0).to_string());
                errors.extend(check(r, &want));
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(e) => errors.extend(e),
            Err(e) => errors.push(format!("client task: {e}")),
        }
    }
    errors
}

/// An error (with its SQLSTATE) or a wrong answer, if any.
fn check(r: Result<String, tokio_postgres::Error>, want: &str) -> Option<String> {
    match r {
        Ok(got) if got == want => None,
        Ok(got) => Some(format!("wrong answer {got}, not {want}")),
        Err(e) => Some(format!(
            "{}: {}",
            e.code().map(|c| c.code().to_string()).unwrap_or_default(),
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        )),
    }
}
