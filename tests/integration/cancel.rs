//! Cancel keys and their delivery (issue 12): every bit of a key is random,
//! and a cancel still on its way never lands on the next client's query.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_postgres::NoTls;

use crate::common::*;

/// Logs in over the wire and returns the process id of the
/// BackendKeyData pglittle sent.
async fn key_pid(port: u16, user: &str) -> i32 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup_packet(&[("user", user), ("database", "app")]))
        .await
        .unwrap();
    let mut buf = Vec::new();
    loop {
        while buf.len() >= 5 {
            let len = i32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() < 1 + len {
                break;
            }
            if buf[0] == b'K' {
                return i32::from_be_bytes(buf[5..9].try_into().unwrap());
            }
            assert_ne!(buf[0], b'E', "login failed");
            buf.drain(..1 + len);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "pglittle hung up before BackendKeyData");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bit_of_a_cancel_key_is_random() {
    // Sequential (or positive-only) process ids leave only 32 bits to
    // guess. Among 64 random ids both signs appear, except with
    // probability 2^-63.
    let p = pool_of_one("cancel_keys", |_| {}).await;
    let mut pids = Vec::new();
    for _ in 0..64 {
        pids.push(key_pid(p.port, "cancel_keys").await);
    }
    assert!(pids.iter().any(|&p| p < 0), "{pids:?}");
    assert!(pids.iter().any(|&p| p > 0), "{pids:?}");
    let sequential = pids.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(sequential < 8, "{pids:?}");
}

/// A TCP proxy in front of PostgreSQL that passes login connections
/// through and holds every CancelRequest until `gate` is opened, telling
/// `arrived` when one comes.
async fn cancel_holding_proxy(arrived: Arc<Notify>, gate: Arc<Semaphore>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = cluster().primary.port;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (arrived, gate) = (arrived.clone(), gate.clone());
            tokio::spawn(async move {
                let mut head = [0u8; 8];
                if client.read_exact(&mut head).await.is_err() {
                    return;
                }
                let code = i32::from_be_bytes(head[4..8].try_into().unwrap());
                if code == 80877102 {
                    arrived.notify_one();
                    let _permit = gate.acquire().await;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_never_reaches_the_next_client() {
    // Pool of ONE: client A's cancel is held on its way to the server while
    // A's query ends by itself; A's server must not go to client B until
    // the cancel is delivered, or the cancel kills B's query.
    let arrived = Arc::new(Notify::new());
    let gate = Arc::new(Semaphore::new(0));
    let proxy = cancel_holding_proxy(arrived.clone(), gate.clone()).await;
    let p = pool_of_one("late_cancel", |c| {
        c.databases.get_mut("app").unwrap().port = proxy;
    })
    .await;
    let a = p.connect_trust("late_cancel", "").await;
    let token = a.cancel_token();
    let admin = superuser().await;
    let a_query =
        tokio::spawn(async move { a.simple_query("select pg_sleep(1)").await.map(|_| ()) });
    assert!(
        eventually(Duration::from_secs(10), || async {
            scalar(&admin, "select count(*) from pg_stat_activity where query = 'select pg_sleep(1)' and state = 'active'").await == "1"
        })
        .await
    );
    let cancel = tokio::spawn(async move { token.cancel_query(NoTls).await });
    arrived.notified().await;
    // The cancel is held: A's query ends normally.
    a_query.await.unwrap().expect("A's query was not cancelled");
    let b = p.connect_trust("late_cancel", "").await;
    let b_query =
        tokio::spawn(async move { b.simple_query("select pg_sleep(0.5)").await.map(|_| ()) });
    // B either waits for A's server (right) or already runs on it (wrong).
    let waiting_or_running = eventually(Duration::from_secs(10), || async {
        p.waiting() == 1
            || scalar(&admin, "select count(*) from pg_stat_activity where query = 'select pg_sleep(0.5)' and state = 'active'").await == "1"
    })
    .await;
    assert!(waiting_or_running);
    gate.add_permits(1);
    let _ = cancel.await;
    b_query
        .await
        .unwrap()
        .expect("B's query must not be cancelled by A's late cancel");
}
