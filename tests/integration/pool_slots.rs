//! Pool places that must come back (issue 12): a janitor whose connects
//! fail during an outage, and clients that give up while a server is being
//! opened for them. A switchable forwarder stands between pglittle and the
//! real primary; while it is down it hangs up on every connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use pglittle::cluster::{MD5_PASSWORD, MD5_USER};

use crate::common::*;

/// A forwarder to the primary: while `up` is false it closes every
/// connection at once (a login fails with EOF), while true it relays.
async fn switchable_forwarder(up: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = cluster().primary.port;
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if !up.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    port
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
    let up = Arc::new(AtomicBool::new(false));
    let port = switchable_forwarder(up.clone()).await;
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
    up.store(true, Ordering::SeqCst);
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
