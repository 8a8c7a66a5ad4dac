//! The relay over `tokio::io::duplex` pipes and a scripted server: what the
//! server is sent and what the client sees, without sockets or PostgreSQL.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::meter::Meter;
use super::{pump, ClientSide, Outcome, RelayLimits, ServerSide, TxRecord};
use crate::metrics::PoolMetrics;
use crate::pool::params::Params;
use crate::prepared::client::ClientStatements;
use crate::prepared::server::ServerStatements;
use crate::protocol::frontend::{peek_message, FrontendMessage};
use crate::protocol::test_wire::{bind, execute, msg, one_param, parse, sync, tags, NO_PARAMS};

/// One frame as (tag, body).
type Frame = (u8, Vec<u8>);

/// A scripted server: answers what PostgreSQL would for a trivial
/// database, fails a Parse whose SQL contains "fail" (then skips to Sync),
/// and returns every frame it was sent.
async fn scripted_server(mut io: DuplexStream) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let mut skipping = false;
    let mut status = b'I';
    loop {
        while let Ok(Some((m, len))) = peek_message(&buf, 1 << 30) {
            let tag = buf[0];
            let body = buf[5..len].to_vec();
            let mut out = Vec::new();
            match m {
                FrontendMessage::Sync => {
                    skipping = false;
                    out.extend(msg(b'Z', &[status]));
                }
                _ if skipping => {}
                FrontendMessage::Query { sql } => {
                    if sql.eq_ignore_ascii_case(b"begin") {
                        status = b'T';
                    }
                    out.extend(msg(b'C', b"SELECT 1\0"));
                    out.extend(msg(b'Z', &[status]));
                }
                FrontendMessage::Parse { sql, .. }
                    if memchr::memmem::find(sql, b"fail").is_some() =>
                {
                    skipping = true;
                    out.extend(msg(b'E', b"SERROR\0C42601\0Msyntax\0\0"));
                }
                FrontendMessage::Parse { .. } => out.extend(msg(b'1', b"")),
                FrontendMessage::Bind { .. } => out.extend(msg(b'2', b"")),
                FrontendMessage::Describe(_) => out.extend(msg(b'n', b"")),
                FrontendMessage::Execute => out.extend(msg(b'C', b"SELECT 1\0")),
                FrontendMessage::Close(_) => out.extend(msg(b'3', b"")),
                _ => {}
            }
            seen.push((tag, body));
            buf.advance(len);
            if io.write_all(&out).await.is_err() {
                return seen;
            }
        }
        buf.reserve(64 * 1024);
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(_) => {}
        }
    }
}

/// Runs the relay with `first` buffered, over the relay's ends of the two
/// pipes (dropped when it ends, which closes them); returns the outcome
/// and the largest the client buffer grew.
async fn run_pump(
    relay_client: DuplexStream,
    relay_server: DuplexStream,
    stmts: &mut ClientStatements,
    server: &mut ServerStatements,
    first: Vec<u8>,
) -> (Outcome, usize) {
    run_pump_with(
        relay_client,
        relay_server,
        stmts,
        server,
        first,
        TxRecord::new(),
    )
    .await
}

/// `run_pump` with a record of the caller's (`lsn_probe` set, say).
async fn run_pump_with(
    relay_client: DuplexStream,
    relay_server: DuplexStream,
    stmts: &mut ClientStatements,
    server: &mut ServerStatements,
    first: Vec<u8>,
    mut record: TxRecord,
) -> (Outcome, usize) {
    let mut cbuf = BytesMut::from(&first[..]);
    let (mut params, defaults) = (Params::new(), Params::new());
    let (mut sbuf, mut sparams) = (BytesMut::new(), Params::new());
    let metrics = PoolMetrics::default();
    let meter = Meter::new(&metrics);
    let limits = RelayLimits {
        max_message: 1 << 30,
        rewrite_statements: true,
        idle_transaction_timeout: std::time::Duration::ZERO,
        batch_timeout: std::time::Duration::ZERO,
    };
    let client = ClientSide {
        buf: &mut cbuf,
        params: &mut params,
        statements: stmts,
        defaults: &defaults,
    };
    let server_side = ServerSide {
        buf: &mut sbuf,
        bufs: &mut Default::default(),
        params: &mut sparams,
        statements: server,
    };
    let ends = (
        tokio::io::split(relay_client),
        tokio::io::split(relay_server),
    );
    let outcome = pump(
        ends.0,
        ends.1,
        client,
        server_side,
        &mut record,
        &limits,
        &meter,
    )
    .await;
    (outcome, cbuf.capacity())
}

struct Relayed {
    outcome: Outcome,
    /// What the client was sent.
    client_saw: Vec<u8>,
    /// What the server was sent.
    server_saw: Vec<Frame>,
    /// The largest the relay's client buffer grew.
    cbuf_capacity: usize,
}

/// Relays `first` (already buffered) then `later` (written by the client
/// as the relay runs) against a scripted server with `server` statements.
async fn relay(
    stmts: &mut ClientStatements,
    server: &mut ServerStatements,
    first: Vec<u8>,
    later: Vec<u8>,
) -> Relayed {
    relay_then(stmts, server, first, later, false).await
}

/// `relay`, with the client hanging up after writing `later` if `hang_up`.
async fn relay_then(
    stmts: &mut ClientStatements,
    server: &mut ServerStatements,
    first: Vec<u8>,
    later: Vec<u8>,
    hang_up: bool,
) -> Relayed {
    let (client_app, relay_client) = tokio::io::duplex(64 * 1024);
    let (relay_server, server_io) = tokio::io::duplex(64 * 1024);
    let fake = tokio::spawn(scripted_server(server_io));
    let (mut app_read, mut app_write) = tokio::io::split(client_app);
    let writer = tokio::spawn(async move {
        app_write.write_all(&later).await.unwrap();
        if hang_up {
            // The other half keeps the pipe: shut the write side down.
            app_write.shutdown().await.unwrap();
        }
        app_write
    });
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = app_read.read_to_end(&mut all).await;
        all
    });
    let (outcome, cbuf_capacity) = run_pump(relay_client, relay_server, stmts, server, first).await;
    drop(writer.await.unwrap());
    Relayed {
        outcome,
        client_saw: reader.await.unwrap(),
        server_saw: fake.await.unwrap(),
        cbuf_capacity,
    }
}

fn names_sent(frames: &[Frame], tag: u8) -> Vec<String> {
    frames
        .iter()
        .filter(|(t, _)| *t == tag)
        .map(|(_, body)| {
            // Parse: name first; Bind: portal, then statement.
            let mut parts = body.split(|&b| b == 0);
            if tag == b'B' {
                parts.next();
            }
            String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_named_statement_is_renamed_and_reused_on_the_same_server() {
    let mut stmts = ClientStatements::new();
    let mut server = ServerStatements::new(10);
    let batch = [
        parse("s1", "select 1"),
        bind("s1", &one_param(1)),
        execute(),
        sync(),
    ]
    .concat();
    let r = relay(&mut stmts, &mut server, batch, Vec::new()).await;
    assert!(matches!(r.outcome, Outcome::Idle), "{:?}", r.outcome);
    assert_eq!(tags(&r.client_saw), b"12CZ");
    let parsed = names_sent(&r.server_saw, b'P');
    assert_eq!(parsed.len(), 1);
    assert!(
        parsed[0].starts_with("pgl_") && parsed[0].len() == 68,
        "{parsed:?}"
    );
    assert_eq!(names_sent(&r.server_saw, b'B'), parsed);
    // The next transaction on the same server binds without a Parse, and a
    // Parse of the same text is answered by pglittle itself.
    let batch = [
        parse("s1", "select 1"),
        bind("s1", &one_param(1)),
        execute(),
        sync(),
    ]
    .concat();
    let r = relay(&mut stmts, &mut server, batch, Vec::new()).await;
    assert_eq!(tags(&r.client_saw), b"12CZ");
    assert!(names_sent(&r.server_saw, b'P').is_empty());
}

#[tokio::test]
async fn the_unnamed_statement_is_parsed_again_on_another_server() {
    let mut stmts = ClientStatements::new();
    let mut first_server = ServerStatements::new(10);
    let batch = [parse("", "select 'mine'"), msg(b'D', b"S\0"), sync()].concat();
    let r = relay(&mut stmts, &mut first_server, batch, Vec::new()).await;
    assert_eq!(tags(&r.client_saw), b"1nZ");
    // Bind in the next round trip, on another server: the client's own
    // statement is prepared there first, and its ParseComplete swallowed.
    let mut other = ServerStatements::new(10);
    let batch = [bind("", &one_param(1)), execute(), sync()].concat();
    let r = relay(&mut stmts, &mut other, batch, Vec::new()).await;
    assert_eq!(tags(&r.client_saw), b"2CZ");
    let sent: Vec<u8> = r.server_saw.iter().map(|(t, _)| *t).collect();
    assert_eq!(sent, b"PBES");
    assert!(r.server_saw[0].1.starts_with(b"\0select 'mine'\0"));
    // Back on the first server, which still holds it: no Parse.
    let batch = [bind("", &one_param(1)), execute(), sync()].concat();
    let r = relay(&mut stmts, &mut first_server, batch, Vec::new()).await;
    let sent: Vec<u8> = r.server_saw.iter().map(|(t, _)| *t).collect();
    assert_eq!(sent, b"BES");
    // A client with no unnamed statement gets the server's closed first.
    let mut stranger = ClientStatements::new();
    let batch = [bind("", &one_param(1)), execute(), sync()].concat();
    let r = relay(&mut stranger, &mut first_server, batch, Vec::new()).await;
    let sent: Vec<u8> = r.server_saw.iter().map(|(t, _)| *t).collect();
    assert_eq!(sent, b"CBES");
}

#[tokio::test]
async fn an_error_mid_pipeline_skips_to_sync_and_forgets_the_statement() {
    let mut stmts = ClientStatements::new();
    let mut server = ServerStatements::new(10);
    let batch = [
        parse("bad", "fail here"),
        bind("bad", &one_param(1)),
        execute(),
        sync(),
        parse("good", "select 2"),
        sync(),
    ]
    .concat();
    let r = relay(&mut stmts, &mut server, batch, Vec::new()).await;
    assert!(matches!(r.outcome, Outcome::Idle), "{:?}", r.outcome);
    assert_eq!(tags(&r.client_saw), b"EZ1Z");
    assert!(stmts.get(b"bad").is_none());
    assert!(stmts.get(b"good").is_some());
}

#[tokio::test]
async fn a_large_bind_streams_through_without_being_held() {
    let mut stmts = ClientStatements::new();
    let mut server = ServerStatements::new(10);
    let r = relay(
        &mut stmts,
        &mut server,
        [parse("big", "select $1"), sync()].concat(),
        Vec::new(),
    )
    .await;
    assert_eq!(tags(&r.client_saw), b"1Z");
    let size = 8 << 20;
    let whole = [bind("big", &one_param(size)), execute(), sync()].concat();
    // The relay starts with only the head; the rest arrives as it runs.
    let (head, rest) = whole.split_at(64 * 1024);
    let r = relay(&mut stmts, &mut server, head.to_vec(), rest.to_vec()).await;
    assert!(matches!(r.outcome, Outcome::Idle), "{:?}", r.outcome);
    assert_eq!(tags(&r.client_saw), b"2CZ");
    let (tag, body) = &r.server_saw[0];
    assert_eq!(*tag, b'B');
    assert_eq!(body.len(), 1 + 69 + 2 + 2 + 4 + size + 2);
    assert!(body[70..].ends_with(b"xx\0\0"));
    assert!(
        r.cbuf_capacity < size / 4,
        "the client buffer grew to {} bytes",
        r.cbuf_capacity
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_transaction_is_reported_gone() {
    let mut stmts = ClientStatements::new();
    let mut server = ServerStatements::new(10);
    let r = relay_then(
        &mut stmts,
        &mut server,
        msg(b'Q', b"begin\0"),
        Vec::new(),
        true,
    )
    .await;
    assert!(matches!(r.outcome, Outcome::ClientGone), "{:?}", r.outcome);
    assert_eq!(r.server_saw.first().map(|(t, _)| *t), Some(b'Q'));
}

#[tokio::test]
async fn an_extended_protocol_copy_in_keeps_its_server_until_done() {
    // tokio-postgres: Bind, Execute, Sync; CopyInResponse; then the data,
    // CopyDone and Sync. The first Sync is ignored by a server in COPY, so
    // no reply is due while the data comes: the relay must not end there.
    let mut stmts = ClientStatements::new();
    let mut server = ServerStatements::new(10);
    let (client_app, relay_client) = tokio::io::duplex(64 * 1024);
    let (relay_server, mut server_io) = tokio::io::duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        // Until the client's CopyDone and the Sync after it.
        while !(got.ends_with(b"cS")) {
            while let Ok(Some((_, len))) = crate::protocol::frame::peek_header(&buf, 1 << 30) {
                if buf.len() < len {
                    break;
                }
                let tag = buf[0];
                buf.advance(len);
                got.push(tag);
                if tag == b'C' {
                    server_io.write_all(&msg(b'3', b"")).await.unwrap();
                }
                if got.ends_with(b"BES") && !got.contains(&b'd') {
                    server_io
                        .write_all(&[msg(b'2', b""), msg(b'G', b"\0\0\0")].concat())
                        .await
                        .unwrap();
                }
            }
            if got.ends_with(b"cS") {
                break;
            }
            buf.reserve(4096);
            assert!(server_io.read_buf(&mut buf).await.unwrap() > 0);
        }
        server_io
            .write_all(&[msg(b'C', b"COPY 1\0"), msg(b'Z', b"I")].concat())
            .await
            .unwrap();
        got
    });
    let (mut app_read, mut app_write) = tokio::io::split(client_app);
    let app = tokio::spawn(async move {
        // The data goes only once the client has seen CopyInResponse.
        let mut seen = BytesMut::new();
        while !tags(&seen).ends_with(b"G") {
            seen.reserve(4096);
            app_read.read_buf(&mut seen).await.unwrap();
        }
        app_write
            .write_all(&[msg(b'd', b"1\n"), msg(b'c', b""), sync()].concat())
            .await
            .unwrap();
        while !tags(&seen).ends_with(b"Z") {
            seen.reserve(4096);
            let n = app_read.read_buf(&mut seen).await.unwrap();
            assert!(n > 0, "the relay ended before the COPY did");
        }
        (tags(&seen), app_read, app_write)
    });
    let first = [bind("", NO_PARAMS), execute(), sync()].concat();
    let relayed = run_pump(relay_client, relay_server, &mut stmts, &mut server, first);
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), relayed)
        .await
        .expect("the relay ends once the COPY is done")
        .0;
    assert!(matches!(outcome, Outcome::Idle), "{outcome:?}");
    let (client_saw, _r, _w) = app.await.unwrap();
    assert_eq!(client_saw, b"2GCZ");
    // The server got the Bind's statement closed first (the client has no
    // unnamed statement), then everything the client sent, in order.
    assert_eq!(fake.await.unwrap(), b"CBESdcS");
}

/// Reads from `io` until `done` holds for what came; returns all of it.
async fn read_until(io: &mut DuplexStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = BytesMut::new();
    while !done(&got) {
        got.reserve(4096);
        let n = io.read_buf(&mut got).await.unwrap();
        assert!(n > 0, "closed early, after {got:?}");
    }
    got.to_vec()
}

#[tokio::test]
async fn a_server_that_dies_with_only_the_probe_out_costs_the_client_nothing() {
    // The client's write is answered in full; the server dies before the
    // read-your-writes probe behind it answers. The client, which has its
    // ReadyForQuery, is sent nothing more: no error after it.
    let (mut app, relay_client) = tokio::io::duplex(64 * 1024);
    let (relay_server, mut pg) = tokio::io::duplex(64 * 1024);
    let (mut stmts, mut server) = (ClientStatements::new(), ServerStatements::new(10));
    let mut record = TxRecord::new();
    record.lsn_probe = true;
    let first = crate::protocol::frontend::query("update t set v = 1");
    let relayed = tokio::spawn(async move {
        run_pump_with(
            relay_client,
            relay_server,
            &mut stmts,
            &mut server,
            first,
            record,
        )
        .await
        .0
    });
    // The write and the probe arrive together.
    let sent = read_until(&mut pg, |b| tags(b) == b"QQ").await;
    assert!(sent.ends_with(super::tx_record::LSN_PROBE));
    pg.write_all(&[msg(b'C', b"UPDATE 1\0"), msg(b'Z', b"I")].concat())
        .await
        .unwrap();
    let saw = read_until(&mut app, |b| tags(b).ends_with(b"Z")).await;
    assert_eq!(tags(&saw), b"CZ");
    drop(pg);
    let outcome = relayed.await.unwrap();
    assert!(
        matches!(outcome, Outcome::AnsweredThenServerGone),
        "{outcome:?}"
    );
    let mut rest = Vec::new();
    app.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty(),
        "the client was sent {rest:?} after its answer"
    );
}
