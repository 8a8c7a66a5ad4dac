//! Server login checks (issue 12), against a scripted fake server: a real
//! PostgreSQL never skips a step of its own login, which is the point.
//! pglittle must not take a server as logged in until it has sent
//! AuthenticationOk and, for SCRAM, proved that it knows the password; and
//! it must not send a password in cleartext unless configured to.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn auth(code: i32, rest: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(rest);
    message(b'R', &body)
}

/// What a session tail looks like once a server has let a client in.
fn logged_in_tail() -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in [("server_version", "15.0"), ("client_encoding", "UTF8")] {
        let mut body = k.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
        out.extend(message(b'S', &body));
    }
    let mut key = 7i32.to_be_bytes().to_vec();
    key.extend_from_slice(&9i32.to_be_bytes());
    out.extend(message(b'K', &key));
    out.extend(message(b'Z', b"I"));
    out
}

/// Reads one frontend message after the startup packet: (tag, body).
async fn read_message(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.ok()?;
    let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}

/// A fake server that answers each login with `script(first reply)`,
/// then records the tags of every message it is sent.
async fn fake_server(opening: Vec<u8>, after_first: Vec<u8>) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tags = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (opening, after_first, tags) = (opening.clone(), after_first.clone(), tags.clone());
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut startup = vec![0u8; i32::from_be_bytes(len) as usize - 4];
                if s.read_exact(&mut startup).await.is_err() || s.write_all(&opening).await.is_err()
                {
                    return;
                }
                let mut first = true;
                while let Some((tag, _)) = read_message(&mut s).await {
                    tags.lock().unwrap().push(tag);
                    if std::mem::take(&mut first) && s.write_all(&after_first).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

async fn login_error(
    server_port: u16,
    tweak: impl FnOnce(&mut pglittle::config::Config),
) -> tokio_postgres::Error {
    let mut cfg = config();
    cfg.databases.get_mut("app").unwrap().port = server_port;
    tweak(&mut cfg);
    let p = pooler(cfg).await;
    let attempt = async {
        match p.connect_as("app", "app-secret").await {
            Ok(c) => c.simple_query("select 1").await.map(|_| ()),
            Err(e) => Err(e),
        }
    };
    // Taken as logged in, pglittle would wait for the fake server's answer.
    match tokio::time::timeout(std::time::Duration::from_secs(10), attempt).await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("the fake server answered a query"),
        Err(_) => panic!("pglittle took the fake server as logged in and sent it a query"),
    }
}

fn message_of(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_skips_the_end_of_scram_is_refused() {
    // SASL offered; after the client's first message the "server" says
    // AuthenticationOk at once, never proving it knows the password.
    let opening = auth(10, b"SCRAM-SHA-256\0\0");
    let mut after = auth(0, b"");
    after.extend(logged_in_tail());
    let (port, seen) = fake_server(opening, after).await;
    let e = login_error(port, |_| {}).await;
    assert!(message_of(&e).contains("without finishing SCRAM"), "{e:?}");
    assert!(
        !seen.lock().unwrap().contains(&b'Q'),
        "a query reached the fake server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_says_authentication_ok_is_refused() {
    let (port, seen) = fake_server(logged_in_tail(), Vec::new()).await;
    let e = login_error(port, |_| {}).await;
    assert!(message_of(&e).contains("before AuthenticationOk"), "{e:?}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_password_is_sent_only_when_allowed() {
    let mut after = auth(0, b"");
    after.extend(logged_in_tail());
    let (port, seen) = fake_server(auth(3, b""), after.clone()).await;
    let e = login_error(port, |_| {}).await;
    assert_eq!(code(&e), "28000", "{e:?}");
    assert!(message_of(&e).contains("server_allow_cleartext"), "{e:?}");
    assert!(
        !seen.lock().unwrap().contains(&b'p'),
        "the password was sent"
    );

    // Allowed: the password goes, and the login completes.
    let (port, seen) = fake_server(auth(3, b""), after).await;
    let mut cfg = config();
    cfg.databases.get_mut("app").unwrap().port = port;
    cfg.pooler.server_allow_cleartext = true;
    let p = pooler(cfg).await;
    let logged_in = p.connect_as("app", "app-secret").await;
    assert!(seen.lock().unwrap().contains(&b'p'), "{logged_in:?}");
}
