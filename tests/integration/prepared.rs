//! Named prepared statements in transaction mode: protocol-level (drivers)
//! and SQL-level, across whatever server each transaction is lent.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_reuse_their_statements_on_a_pool_of_five() {
    let mut cfg = config();
    cfg.pooler.pool_size = 5.into();
    let pw = own_role(&mut cfg, "prep500").await;
    let p = Arc::new(pooler(cfg).await);
    let mut tasks = Vec::new();
    for i in 0..500i32 {
        let (p, pw) = (p.clone(), pw.clone());
        tasks.push(tokio::spawn(async move {
            let c = p.connect_as("prep500", &pw).await.unwrap();
            // Every client's first statement is named s0 by tokio-postgres,
            // but half of them mean a different query by it.
            let (first, expect): (_, Box<dyn Fn(i32) -> i32 + Send>) = if i % 2 == 0 {
                (
                    c.prepare("select $1::int4 * 2").await.unwrap(),
                    Box::new(|x| x * 2),
                )
            } else {
                (
                    c.prepare("select $1::int4 + 1000").await.unwrap(),
                    Box::new(|x| x + 1000),
                )
            };
            let own = c.prepare(&format!("select $1::int4 - {i}")).await.unwrap();
            for j in 0..50 {
                let x = i * 100 + j;
                let a: i32 = c.query_one(&first, &[&x]).await.unwrap().get(0);
                assert_eq!(a, expect(x), "client {i} iteration {j}");
                let b: i32 = c.query_one(&own, &[&x]).await.unwrap().get(0);
                assert_eq!(b, x - i);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_survive_server_switches_and_close() {
    let mut cfg = config();
    cfg.pooler.pool_size = 2.into();
    cfg.pooler.max_prepared_statements = 2; // force evictions
    let p = pooler(cfg).await;
    let mut a = p.connect().await;
    let b = p.connect().await;
    let stmts = [
        a.prepare("select 1::int4").await.unwrap(),
        a.prepare("select 2::int4").await.unwrap(),
        a.prepare("select 3::int4").await.unwrap(),
    ];
    // b holds a transaction open so a's statements run on the other server too.
    b.batch_execute("begin").await.unwrap();
    for round in 0..3 {
        for (i, s) in stmts.iter().enumerate() {
            let v: i32 = a.query_one(s, &[]).await.unwrap().get(0);
            assert_eq!(v, i as i32 + 1, "round {round}");
        }
        b.batch_execute("commit; begin").await.unwrap();
    }
    b.batch_execute("commit").await.unwrap();
    // Inside an explicit transaction, too.
    let tx = a.transaction().await.unwrap();
    let v: i32 = tx.query_one(&stmts[2], &[]).await.unwrap().get(0);
    assert_eq!(v, 3);
    tx.commit().await.unwrap();
    // Closing a statement is answered without error; others keep working.
    let s0 = stmts[0].clone();
    drop(stmts);
    assert_eq!(a.query_one(&s0, &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_execute_deallocate_follow_the_client() {
    let mut cfg = config();
    cfg.pooler.pool_size = 2.into();
    let p = pooler(cfg).await;
    let a = p.connect().await;
    let b = p.connect().await;
    let c = p.connect().await;
    a.batch_execute("prepare double(int) as select $1 * 2")
        .await
        .unwrap();
    // Another client prepares the same name with another meaning.
    b.batch_execute("prepare double(int) as select $1 * 3")
        .await
        .unwrap();
    for i in 0..6 {
        // c keeps one server busy now and then, so a and b move around.
        if i % 2 == 0 {
            c.batch_execute("begin; select 1").await.unwrap();
        }
        assert_eq!(
            scalar(&a, &format!("execute double({i})")).await,
            (i * 2).to_string()
        );
        assert_eq!(
            scalar(&b, &format!("execute double({i})")).await,
            (i * 3).to_string()
        );
        if i % 2 == 0 {
            c.batch_execute("commit").await.unwrap();
        }
    }
    a.batch_execute("deallocate double").await.unwrap();
    let e = a.simple_query("execute double(1)").await.unwrap_err();
    assert_eq!(code(&e), "26000", "{e:?}");
    assert_eq!(scalar(&b, "execute double(5)").await, "15");
    // DISCARD ALL forgets everything; the name can be reused at once.
    b.batch_execute("discard all").await.unwrap();
    b.batch_execute("prepare double(int) as select $1 * 4")
        .await
        .unwrap();
    assert_eq!(scalar(&b, "execute double(5)").await, "20");
    b.batch_execute("deallocate all").await.unwrap();
    b.batch_execute("prepare double(int) as select $1 * 5")
        .await
        .unwrap();
    assert_eq!(scalar(&b, "execute double(5)").await, "25");
}

/// A raw protocol client, to compare message sequences byte for byte.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn login(port: u16, user: &str, password: &str) -> Raw {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        use postgres_protocol::message::{backend::Message, frontend};
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = bytes::BytesMut::new();
        frontend::startup_message([("user", user), ("database", "app")], &mut out).unwrap();
        s.write_all(&out).await.unwrap();
        let mut buf = bytes::BytesMut::new();
        let mut scram = None;
        loop {
            let msg = loop {
                if let Some(m) = Message::parse(&mut buf).unwrap() {
                    break m;
                }
                assert!(
                    s.read_buf(&mut buf).await.unwrap() > 0,
                    "closed during login"
                );
            };
            out.clear();
            match msg {
                Message::AuthenticationSasl(_) => {
                    let sc = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", sc.message(), &mut out)
                        .unwrap();
                    scram = Some(sc);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let sc = scram.as_mut().unwrap();
                    sc.update(b.data()).unwrap();
                    frontend::sasl_response(sc.message(), &mut out).unwrap();
                }
                Message::AuthenticationSaslFinal(b) => {
                    scram.as_mut().unwrap().finish(b.data()).unwrap()
                }
                Message::ReadyForQuery(_) => {
                    return Raw {
                        s,
                        buf: buf.to_vec(),
                    }
                }
                Message::ErrorResponse(_) => panic!("login refused"),
                _ => {}
            }
            if !out.is_empty() {
                s.write_all(&out).await.unwrap();
            }
        }
    }

    /// Sends `bytes`, then reads messages up to `rfqs` ReadyForQuery;
    /// returns each as (tag, body) with error bodies reduced to the SQLSTATE.
    async fn exchange(&mut self, bytes: &[u8], rfqs: usize) -> Vec<(char, Vec<u8>)> {
        self.s.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        let mut seen = 0;
        loop {
            while self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() < len + 1 {
                    break;
                }
                let tag = self.buf[0] as char;
                let body = self.buf[5..len + 1].to_vec();
                self.buf.drain(..len + 1);
                match tag {
                    'N' | 'S' => continue,
                    'E' => got.push((
                        tag,
                        error_code_in(&[b"E", &((len) as u32).to_be_bytes()[..], &body].concat())
                            .unwrap()
                            .into_bytes(),
                    )),
                    _ => got.push((tag, body)),
                }
                if tag == 'Z' {
                    seen += 1;
                    if seen == rfqs {
                        return got;
                    }
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(20), self.s.read(&mut chunk))
                .await
                .expect("no reply")
                .unwrap();
            assert!(n > 0, "connection closed; got so far: {got:?}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn pipeline_with_a_failure() -> Vec<u8> {
    use postgres_protocol::message::frontend;
    let mut out = bytes::BytesMut::new();
    frontend::parse("div", "select 100 / $1::int4", [23u32], &mut out).unwrap();
    for i in 0..100i32 {
        let v = if i == 50 { 0 } else { i + 1 };
        let text = v.to_string();
        frontend::bind(
            "",
            "div",
            [0i16],
            [text.as_bytes()],
            |b: &[u8], buf: &mut bytes::BytesMut| -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                buf.extend_from_slice(b);
                Ok(postgres_protocol::IsNull::No)
            },
            [0i16],
            &mut out,
        )
        .map_err(|_| "bind")
        .unwrap();
        frontend::execute("", 0, &mut out).unwrap();
    }
    frontend::sync(&mut out);
    // A second batch after the failure must be answered normally.
    frontend::describe(b'S', "div", &mut out).unwrap();
    frontend::sync(&mut out);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_with_an_error_looks_exactly_as_it_does_direct() {
    use pgcluster::{APP_PASSWORD, APP_USER};
    let batch = pipeline_with_a_failure();
    let mut direct = Raw::login(cluster().primary.port, APP_USER, APP_PASSWORD).await;
    let want = direct.exchange(&batch, 2).await;
    assert_eq!(want.iter().filter(|(t, _)| *t == 'D').count(), 50);
    assert!(want.iter().any(|(t, b)| *t == 'E' && b == b"22012"));

    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    let p = pooler(cfg).await;
    // First client: the server lacks the statement (renamed Parse).
    let mut first = Raw::login(p.port, APP_USER, APP_PASSWORD).await;
    assert_eq!(first.exchange(&batch, 2).await, want);
    // Second client on the same server: the Parse is answered by pglittle.
    let mut second = Raw::login(p.port, APP_USER, APP_PASSWORD).await;
    assert_eq!(second.exchange(&batch, 2).await, want);
}

/// Bind + Describe(portal) + Execute + Sync of statement `name`, as libpq's
/// PQexecPrepared sends it (re-describing, so a new result shape is fine).
fn exec_prepared(name: &str) -> Vec<u8> {
    use postgres_protocol::message::frontend;
    let mut out = bytes::BytesMut::new();
    frontend::bind(
        "",
        name,
        std::iter::empty::<i16>(),
        std::iter::empty::<&[u8]>(),
        |_: &[u8],
         _: &mut bytes::BytesMut|
         -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
            Ok(postgres_protocol::IsNull::No)
        },
        std::iter::empty::<i16>(),
        &mut out,
    )
    .map_err(|_| "bind")
    .unwrap();
    frontend::describe(b'P', "", &mut out).unwrap();
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    out.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_after_ddl_is_prepared_again_transparently() {
    use pgcluster::{APP_PASSWORD, APP_USER};
    use postgres_protocol::message::frontend;
    let admin = superuser().await;
    admin
        .batch_execute("drop table if exists ddl_t; create table ddl_t (id int); insert into ddl_t values (7); grant all on ddl_t to app")
        .await
        .unwrap();
    let mut parse = bytes::BytesMut::new();
    frontend::parse(
        "star",
        "select * from ddl_t",
        std::iter::empty::<u32>(),
        &mut parse,
    )
    .unwrap();
    frontend::sync(&mut parse);
    let p = pooler(config()).await;
    let mut direct = Raw::login(cluster().primary.port, APP_USER, APP_PASSWORD).await;
    let mut pooled = Raw::login(p.port, APP_USER, APP_PASSWORD).await;
    for c in [&mut direct, &mut pooled] {
        c.exchange(&parse, 1).await;
        let first = c.exchange(&exec_prepared("star"), 1).await;
        assert!(first.iter().any(|(t, _)| *t == 'D'), "{first:?}");
    }
    admin
        .batch_execute("alter table ddl_t add column extra text default 'x'")
        .await
        .unwrap();
    // Control: straight to PostgreSQL, the second execution fails.
    let got = direct.exchange(&exec_prepared("star"), 1).await;
    assert!(
        got.iter().any(|(t, b)| *t == 'E' && b == b"0A000"),
        "control: {got:?}"
    );
    // Through pglittle the statement is prepared again and the query runs.
    let got = pooled.exchange(&exec_prepared("star"), 1).await;
    let tags: String = got.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, "2TDCZ", "{got:?}");
    let row = &got.iter().find(|(t, _)| *t == 'D').unwrap().1;
    assert_eq!(&row[..2], &2u16.to_be_bytes(), "the new column is there");
    let retries = |p: &Pooler| {
        p.running
            .shared
            .pools
            .all()
            .iter()
            .map(|p| {
                p.counters
                    .plan_retries
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum::<u64>()
    };
    assert_eq!(retries(&p), 1);
    // Inside a transaction it is not safe to retry: the error passes through.
    admin
        .batch_execute("alter table ddl_t add column extra2 int")
        .await
        .unwrap();
    let mut begin = bytes::BytesMut::new();
    frontend::query("begin", &mut begin).unwrap();
    pooled.exchange(&begin, 1).await;
    let got = pooled.exchange(&exec_prepared("star"), 1).await;
    assert!(
        got.iter().any(|(t, b)| *t == 'E' && b == b"0A000"),
        "{got:?}"
    );
    assert_eq!(retries(&p), 1);
}

// Issue 12, defect 5: a client's named statements had no cap, so a driver
// that never closes what it prepares grew pglittle's memory for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_max_client_statements_is_told_and_others_go_on() {
    let p = pool_of_one("stmt_cap", |c| c.pooler.max_client_statements = 3).await;
    let a = p.connect_trust("stmt_cap", "").await;
    // Held (tokio-postgres closes a statement when it is dropped, and a
    // closed one no longer counts).
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(a.prepare(&format!("select {i}")).await.unwrap());
    }
    held.pop();
    held.push(a.prepare("select 'after a close'").await.unwrap());
    let err = a.prepare("select 3").await.unwrap_err();
    assert_eq!(code(&err), "54000", "{err:?}");
    let text = format!("{:?}", err.as_db_error());
    assert!(text.contains("max_client_statements"), "{text}");
    assert!(eventually(Duration::from_secs(10), || async { a.is_closed() }).await);
    // The one server was not kept, and serves the next client.
    let b = p.connect_trust("stmt_cap", "").await;
    assert_eq!(scalar(&b, "select 42").await, "42");
}
