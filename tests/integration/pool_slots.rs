//! Pool places that must come back (issue 12): a janitor whose connects
//! fail during an outage, and clients that give up while a server is being
//! opened for them. A switchable forwarder stands between pglittle and the
//! real primary; while it is down it hangs up on every connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use pgcluster::{MD5_PASSWORD, MD5_USER};

use crate::common::*;

/// A forwarder to the primary. While down it closes every new connection
/// at once (a login fails with EOF) and cuts the ones it was relaying, as
/// a restarting server does; while up it relays.
struct Forwarder {
    port: u16,
    up: tokio::sync::watch::Sender<bool>,
    /// Connections being relayed now.
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl Forwarder {
    async fn start(up: bool) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = cluster().primary.port;
        let (tx, rx) = tokio::sync::watch::channel(up);
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = live.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut rx = rx.clone();
                let live = counted.clone();
                live.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        live.fetch_sub(1, Ordering::SeqCst);
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                    drop((inbound, outbound));
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Forwarder { port, up: tx, live }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

fn app_pool(p: &Pooler) -> Arc<pglittle::pool::Pool> {
    p.running
        .shared
        .pools
        .all()
        .into_iter()
        .find(|pool| pool.database == "app")
        .expect("the app pool exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_janitor_refills_the_whole_minimum() {
    let fwd = Forwarder::start(false).await;
    let port = fwd.port;
    let mut cfg = config();
    cfg.pooler.pool_size = 3.into();
    cfg.pooler.min_pool_size = 3;
    cfg.databases.get_mut("app").unwrap().port = port;
    let p = pooler(cfg).await;
    // A client during the outage is refused (and makes the pool).
    let refused = p.connect_as(MD5_USER, MD5_PASSWORD).await;
    assert!(refused.is_err(), "logged in with the server down");
    let pool = app_pool(&p);
    // The janitor tries to fill the minimum, pass after pass, and fails.
    let tried = eventually(Duration::from_secs(10), || async {
        pool.counters.connect_errors.load(Ordering::Relaxed) >= 4
    })
    .await;
    assert!(tried, "the janitor did not try during the outage");
    // The outage ends: with no client asking, the pool is back at its
    // minimum (before the fix, the places of the connects a failed pass
    // never made stayed counted, and the pool ran on one connection).
    fwd.set(true);
    let refilled = eventually(Duration::from_secs(10), || async {
        let st = pool.status();
        st.idle == 3 && st.connecting == 0
    })
    .await;
    assert!(refilled, "after the outage: {:?}", pool.status());
    // And all three places serve clients at once.
    let mut open = Vec::new();
    for _ in 0..3 {
        let c = p.connect_md5().await;
        c.batch_execute("begin; select 1").await.unwrap();
        open.push(c);
    }
    assert_eq!(pool.status().active, 3);
}

// Issue 12, fault battery: a primary restart cost every client that asked
// during it an error (08006, 57P03), and a server killed moments after use
// was lent again dead. Now a server that worked and is restarting is
// waited for (within server_connect_timeout), and a dead idle server is
// noticed before it is lent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_server_restart_costs_a_client_a_wait_not_an_error() {
    let fwd = Forwarder::start(true).await;
    let mut cfg = config();
    cfg.pooler.pool_size = 2.into();
    cfg.databases.get_mut("app").unwrap().port = fwd.port;
    let p = pooler(cfg).await;
    let c = p.connect_md5().await;
    assert_eq!(scalar(&c, "select 1").await, "1");
    let pool = app_pool(&p);
    // The server goes away, with the connection pglittle keeps idle.
    fwd.set(false);
    let cut = eventually(Duration::from_secs(10), || async {
        fwd.live.load(Ordering::SeqCst) == 0
    })
    .await;
    assert!(cut, "the forwarder kept relaying");
    let errors = pool.counters.connect_errors.load(Ordering::Relaxed);
    let asked = tokio::spawn(async move { c.simple_query("select 2").await.map(|_| c) });
    let retried = eventually(Duration::from_secs(10), || async {
        pool.counters.connect_errors.load(Ordering::Relaxed) >= errors + 2
    })
    .await;
    assert!(retried, "pglittle did not try to reconnect");
    // The server is back: the client's query runs, with no error.
    fwd.set(true);
    let c = asked
        .await
        .unwrap()
        .expect("the query failed during the restart");
    assert_eq!(scalar(&c, "select 3").await, "3");
}

/// A forwarder to the primary whose replies can be held: while held, what
/// the server sends is kept back, and the next bytes from pglittle release
/// it and then cut both sides, as a server does that was told to shut
/// down just as pglittle lent it (its FATAL crosses the request).
struct Crossing {
    port: u16,
    hold: Arc<std::sync::atomic::AtomicBool>,
    /// New connections are accepted and then never answered.
    silent: Arc<std::sync::atomic::AtomicBool>,
    /// Server bytes kept back while held.
    kept: Arc<std::sync::atomic::AtomicUsize>,
    /// The next bytes from pglittle are dropped and both sides cut with no
    /// word, as when a server is killed (or the network cut) as it is lent.
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Crossing {
    async fn start() -> Crossing {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let kept = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, k, q, x) = (hold.clone(), kept.clone(), silent.clone(), cut.clone());
        tokio::spawn(async move {
            let mut hung = Vec::new();
            while let Ok((inbound, _)) = listener.accept().await {
                if q.load(Ordering::SeqCst) {
                    hung.push(inbound);
                    continue;
                }
                tokio::spawn(Crossing::relay(inbound, h.clone(), k.clone(), x.clone()));
            }
        });
        Crossing {
            port,
            hold,
            silent,
            kept,
            cut,
        }
    }

    /// The one server of a pool of one, idle in the pool after `client`'s
    /// query, is terminated by `admin`; its FATAL is kept back until
    /// pglittle sends it something. Returns its pid.
    async fn terminate_idle_server_of(
        &self,
        client: &tokio_postgres::Client,
        admin: &tokio_postgres::Client,
    ) -> String {
        let pid = pid_of(
            &client
                .simple_query("select pg_backend_pid()")
                .await
                .unwrap(),
        );
        self.kept.store(0, Ordering::SeqCst);
        self.hold.store(true, Ordering::SeqCst);
        admin
            .simple_query(&format!("select pg_terminate_backend({pid})"))
            .await
            .unwrap();
        let said = eventually(Duration::from_secs(10), || async {
            self.kept.load(Ordering::SeqCst) > 0
        })
        .await;
        assert!(said, "the terminated server said nothing");
        self.hold.store(false, Ordering::SeqCst);
        pid
    }

    async fn relay(
        inbound: TcpStream,
        hold: Arc<std::sync::atomic::AtomicBool>,
        kept: Arc<std::sync::atomic::AtomicUsize>,
        cut: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = cluster().primary.port;
        let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
            return;
        };
        let (mut pr, pw) = inbound.into_split();
        let (mut sr, mut sw) = outbound.into_split();
        let pw = Arc::new(tokio::sync::Mutex::new(pw));
        let back = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let (to_pooler, held) = (pw.clone(), back.clone());
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n @ 1..) = sr.read(&mut buf).await {
                if hold.load(Ordering::SeqCst) {
                    held.lock().await.extend_from_slice(&buf[..n]);
                    kept.fetch_add(n, Ordering::SeqCst);
                } else if to_pooler.lock().await.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = vec![0u8; 65536];
        while let Ok(n @ 1..) = pr.read(&mut buf).await {
            let last_words = std::mem::take(&mut *back.lock().await);
            if !last_words.is_empty() {
                // The request crosses the server's last words: they reach
                // pglittle, the request never reaches the server, and both
                // sides are cut.
                let _ = pw.lock().await.write_all(&last_words).await;
                break;
            }
            if cut.swap(false, Ordering::SeqCst) {
                break;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        down.abort();
    }
}

fn pid_of(rows: &[tokio_postgres::SimpleQueryMessage]) -> String {
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
            _ => None,
        })
        .expect("a row")
}

// Issue 12, fault battery: a server told to shut down while idle in the
// pool, whose FATAL had not arrived when it was lent, cost the client its
// request (08006) although the server never ran it. A lone BEGIN, or a
// read answered first by the FATAL, now moves to another server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_as_it_is_lent_costs_a_begin_or_a_read_nothing() {
    let fwd = Crossing::start().await;
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.databases.get_mut("app").unwrap().port = fwd.port;
    let p = pooler(cfg).await;
    let c = p.connect_md5().await;
    let admin = superuser().await;
    for (sql, moves) in [("BEGIN", true), ("SELECT 1", true), ("COMMIT", false)] {
        let pid = fwd.terminate_idle_server_of(&c, &admin).await;
        let got = c.simple_query(sql).await;
        if moves {
            got.unwrap_or_else(|e| panic!("{sql} on a server that died as it was lent: {e}"));
        } else {
            // Not provably unrun (here nothing to commit, but pglittle
            // cannot know): the client is told, and its session ends.
            assert!(got.is_err(), "{sql} moved");
            break;
        }
        let again = pid_of(&c.simple_query("select pg_backend_pid()").await.unwrap());
        assert_ne!(again, pid, "still on the dead server");
        c.simple_query("rollback").await.unwrap();
    }
}

// Issue 12, fault battery: a server that hung up with no word as it was
// lent (killed, or the network cut, while idle in the pool) cost the client
// its autocommit read (08006), although nothing had reached the client and
// running a read again changes nothing. A read whose calls are all known to
// change nothing now runs on another server; a call pglittle does not know
// (it may have written) still gets the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_server_that_hangs_up_as_it_is_lent_runs_on_another() {
    let fwd = Crossing::start().await;
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.databases.get_mut("app").unwrap().port = fwd.port;
    let p = pooler(cfg).await;
    let c = p.connect_md5().await;
    for sql in [
        "SELECT 1",
        "SELECT count(*) FROM pg_class WHERE relname IN ('pg_class')",
    ] {
        let pid = cut_next_request(&c, &fwd).await;
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on a server that hung up as it was lent: {e}"));
        assert_moved(&c, &fwd, &pid).await;
    }
    // The extended protocol, unnamed statement (Parse/Bind/Describe/
    // Execute/Sync in one batch): the same.
    let pid = cut_next_request(&c, &fwd).await;
    let rows = c
        .query_typed(
            "SELECT $1::int + 1",
            &[(&41i32, tokio_postgres::types::Type::INT4)],
        )
        .await
        .unwrap_or_else(|e| panic!("an extended read on a server that hung up: {e}"));
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    assert_moved(&c, &fwd, &pid).await;
    // A statement the client prepared before (a named statement, bound
    // again: Bind/Execute/Sync): the same.
    let stmt = c.prepare("SELECT $1::int * 2").await.unwrap();
    assert_eq!(
        c.query_one(&stmt, &[&2i32]).await.unwrap().get::<_, i32>(0),
        4
    );
    let pid = cut_next_request(&c, &fwd).await;
    let row = c
        .query_one(&stmt, &[&21i32])
        .await
        .unwrap_or_else(|e| panic!("a prepared read on a server that hung up: {e}"));
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_moved(&c, &fwd, &pid).await;
    // A function pglittle does not know may have run and written: told.
    fwd.cut.store(true, Ordering::SeqCst);
    let e = c
        .simple_query("SELECT pg_catalog.lower('X'), my_audit(1)")
        .await
        .expect_err("a call that may have written moved");
    assert_eq!(code(&e), "08006", "{e}");
    // Another client is served: the pool lost nothing.
    let d = p.connect_md5().await;
    assert_eq!(scalar(&d, "select 4").await, "4");
}

/// The client's server pid, with the forwarder set to cut the next request
/// (dropped, both sides closed, no word).
async fn cut_next_request(c: &tokio_postgres::Client, fwd: &Crossing) -> String {
    let pid = pid_of(&c.simple_query("select pg_backend_pid()").await.unwrap());
    fwd.cut.store(true, Ordering::SeqCst);
    pid
}

/// The cut happened, and the client is now on another server than `pid`.
async fn assert_moved(c: &tokio_postgres::Client, fwd: &Crossing, pid: &str) {
    assert!(!fwd.cut.load(Ordering::SeqCst), "the cut did not happen");
    let again = pid_of(&c.simple_query("select pg_backend_pid()").await.unwrap());
    assert_ne!(again, pid, "still on the dead server");
}

// Issue 12, fault battery: a server that accepts new connections and then
// says nothing cost each client that asked for a new connection an error
// (08006 after server_connect_timeout), although the pool's other servers
// worked. Such a client now waits for one of them (within its
// query_wait_timeout), as PgBouncer's clients do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_hangs_costs_a_wait_when_other_servers_work() {
    let fwd = Crossing::start().await;
    let mut cfg = config();
    cfg.pooler.pool_size = 2.into();
    cfg.pooler.server_connect_timeout = Duration::from_millis(500);
    cfg.databases.get_mut("app").unwrap().port = fwd.port;
    let p = pooler(cfg).await;
    // One server works, and a client holds it in a transaction.
    let a = p.connect_md5().await;
    a.batch_execute("begin; select 1").await.unwrap();
    // From now on a new server connection hangs at login.
    fwd.silent.store(true, Ordering::SeqCst);
    let b = p.connect_md5().await;
    let asked = tokio::spawn(async move { b.simple_query("select 2").await.map(|_| b) });
    // B's connect times out (the pool counts it), and B keeps waiting.
    let pool = app_pool(&p);
    let failed = eventually(Duration::from_secs(10), || async {
        pool.counters.connect_errors.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(failed, "the hanging connect did not time out");
    assert!(
        !asked.is_finished(),
        "B was answered before a server was free"
    );
    // A's transaction ends: its server goes to B, with no error.
    a.batch_execute("commit").await.unwrap();
    let b = asked
        .await
        .unwrap()
        .expect("a client whose connect hung got an error while a server worked");
    assert_eq!(scalar(&b, "select 3").await, "3");
}

// Issue 12, fault battery (kill_idle): a server killed while idle in the
// pool, whose FATAL had not arrived when it was lent, failed the parameter
// sync pglittle sends before the client's request, and the client got
// 08006 ("server connection lost") for a request the server never saw.
// The dead server is now closed and another one lent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_before_the_parameter_sync_costs_the_client_nothing() {
    let fwd = Crossing::start().await;
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.databases.get_mut("app").unwrap().port = fwd.port;
    let p = pooler(cfg).await;
    let connect = |app: &'static str| {
        let url = format!("{} application_name={app}", p.url(MD5_USER, MD5_PASSWORD));
        async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c
        }
    };
    let a = connect("a").await;
    let admin = superuser().await;
    let pid = fwd.terminate_idle_server_of(&a, &admin).await;
    // B's application_name differs, so pglittle syncs it first: that is
    // what meets the dead server. A write, which no server died before.
    let b = connect("b").await;
    let got = b.simple_query("select txid_current() > 0").await;
    let rows = got.expect("a request the dead server never saw failed");
    assert_ne!(pid_of(&rows), "");
    let again = pid_of(&b.simple_query("select pg_backend_pid()").await.unwrap());
    assert_ne!(again, pid, "still on the dead server");
}
