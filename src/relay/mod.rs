//! Relays one transaction (or, in session mode, one batch) between a client
//! and the server lent to it, forwarding bytes untouched.
//!
//! Two pumps run in the same task: client -> server and server -> client.
//! Neither ever blocks the other, so a client that pipelines more than the
//! socket buffers hold cannot deadlock against a server writing results.
//! The transaction is over when the server says ReadyForQuery('I') and every
//! Query/Sync the client sent has been answered, with no extended-protocol
//! message waiting for its Sync.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pool::params::Params;
use crate::pool::ServerConn;
use crate::prepared::server::ServerStatements;
use crate::protocol::frontend::{peek_message, peek_stream_head, FrontendMessage};
use crate::protocol::scan::{BackendEvent, BackendKind, BackendScanner, Segment};
use crate::protocol::ProtocolError;

pub use flight::Flight;

mod flight;
pub mod meter;
#[cfg(test)]
mod tests;
use crate::prepared::client::ClientStatements;
use crate::prepared::{Books, Fate};

const READ_CHUNK: usize = 16 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum Outcome {
    /// The server is idle and clean; the client may go on.
    Idle,
    /// The server is idle and clean, and the client sent Terminate or hung up.
    IdleThenGone,
    /// The client hung up or sent Terminate with work in flight.
    ClientGone,
    /// The client broke the protocol.
    ClientProtocol(ProtocolError),
    /// The client sat in an open transaction past idle_transaction_timeout.
    IdleInTransaction,
    /// The server connection failed; `told` when a FATAL already reached the client.
    ServerGone { told: bool },
}

/// What the relay needs to know about the client's limits.
pub struct RelayLimits {
    pub max_message: usize,
    /// Transaction mode: keep named prepared statements working across servers.
    pub rewrite_statements: bool,
    pub idle_transaction_timeout: Duration,
}

enum ClientEnd {
    Stopped,
    Gone,
    Terminated,
    Protocol(ProtocolError),
    IdleInTransaction,
    ServerWrite,
}

enum ServerEnd {
    Done,
    ClientWrite,
    Gone { told: bool },
}

/// A reply that does not stop a retry elsewhere: a notice (say, the
/// WARNING a dying server sends), or what a batch answers before its first
/// row or completion (held back, and dropped if the primary answers instead).
fn holdable(kind: BackendKind) -> bool {
    use BackendKind as K;
    matches!(
        kind,
        K::Async
            | K::ParseComplete
            | K::BindComplete
            | K::CloseComplete
            | K::ParameterDescription
            | K::RowDescription
            | K::NoData
    )
}

/// The client's side of a relay: its unhandled bytes and what pglittle
/// keeps of its session.
pub struct ClientSide<'a> {
    /// Client bytes not yet forwarded (at least one complete message, or
    /// the head of a streamed one, on entry).
    pub buf: &'a mut BytesMut,
    pub params: &'a mut Params,
    pub statements: &'a mut ClientStatements,
    pub defaults: &'a Params,
}

/// The server's side: its read buffer and pglittle's model of its session.
pub struct ServerSide<'a> {
    pub buf: &'a mut BytesMut,
    pub params: &'a mut Params,
    pub statements: &'a mut ServerStatements,
}

/// Runs until the transaction ends, over the client's and server's sockets.
#[allow(clippy::too_many_arguments)]
pub async fn transaction(
    client: &mut TcpStream,
    cbuf: &mut BytesMut,
    server: &mut ServerConn,
    client_params: &mut Params,
    statements: &mut ClientStatements,
    defaults: &Params,
    flight: &Flight,
    limits: &RelayLimits,
    meter: &meter::Meter<'_>,
) -> Outcome {
    let (cr, cw) = client.split();
    let (sr, sw) = server.stream.split();
    let client = ClientSide {
        buf: cbuf,
        params: client_params,
        statements,
        defaults,
    };
    let server = ServerSide {
        buf: &mut server.buf,
        params: &mut server.params,
        statements: &mut server.statements,
    };
    pump((cr, cw), (sr, sw), client, server, flight, limits, meter).await
}

/// The relay itself, over any stream halves (sockets in production,
/// `tokio::io::duplex` in tests).
pub async fn pump<CR, CW, SR, SW>(
    (mut cr, mut cw): (CR, CW),
    (mut sr, mut sw): (SR, SW),
    client: ClientSide<'_>,
    server: ServerSide<'_>,
    flight: &Flight,
    limits: &RelayLimits,
    meter: &meter::Meter<'_>,
) -> Outcome
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let ClientSide {
        buf: cbuf,
        params: client_params,
        statements,
        defaults,
    } = client;
    let sbuf = server.buf;
    let server_params = server.params;
    let books = Mutex::new(Books::new(
        statements,
        server.statements,
        limits.rewrite_statements,
    ));
    let books = &books;
    let lock = || books.lock().unwrap_or_else(|e| e.into_inner());

    let c2s = async {
        let mut out = BytesMut::new();
        // Bytes of a large message still to pass through untouched.
        let mut stream_left = 0usize;
        loop {
            if flight.stopping.load(Relaxed) {
                return ClientEnd::Stopped;
            }
            let mut n = 0;
            let mut terminated = false;
            let mut synth = false;
            {
                let mut b = lock();
                if let Some(replay) = b.resend.take() {
                    out.extend_from_slice(&replay);
                }
                loop {
                    if stream_left > 0 {
                        let k = stream_left.min(cbuf.len() - n);
                        out.extend_from_slice(&cbuf[n..n + k]);
                        n += k;
                        stream_left -= k;
                        if stream_left > 0 {
                            break;
                        }
                        continue;
                    }
                    if flight.batch_sent.load(Relaxed) {
                        break;
                    }
                    match peek_message(&cbuf[n..], limits.max_message) {
                        Ok(Some((FrontendMessage::Terminate, _))) => {
                            terminated = true;
                            break;
                        }
                        Ok(Some((msg, len))) => {
                            let fx = flight.note(&msg);
                            meter.client_message(&msg);
                            b.aborted =
                                flight.status() == b'E' && flight.outstanding.load(Relaxed) == 0;
                            let w = b.client_message(&msg, &cbuf[n..n + len], fx, &mut out);
                            for run in &w.runs {
                                flight.note_bound(run);
                            }
                            if b.skipping() {
                                // Not over until the Sync the server waits for.
                                flight.unsynced.store(true, Relaxed);
                            }
                            flight.outstanding.fetch_add(w.cycles, Relaxed);
                            synth |= w.synth;
                            n += len;
                            if msg.ends_batch() && flight.one_batch.load(Relaxed) {
                                flight.batch_sent.store(true, Relaxed);
                            }
                        }
                        Ok(None) => match peek_stream_head(&cbuf[n..], limits.max_message) {
                            // A large Bind, CopyData or FunctionCall: its head
                            // now, the rest as it arrives, never held whole.
                            Ok(Some(head)) => {
                                flight.note(&head.msg);
                                meter.client_message(&head.msg);
                                let rest = head.total - head.head_len;
                                let raw = &cbuf[n..n + head.head_len];
                                let w = b.client_stream_head(&head.msg, raw, rest, &mut out);
                                flight.outstanding.fetch_add(w.cycles, Relaxed);
                                synth |= w.synth;
                                n += head.head_len;
                                stream_left = rest;
                            }
                            Ok(None) => break,
                            Err(e) => return ClientEnd::Protocol(e),
                        },
                        Err(e) => return ClientEnd::Protocol(e),
                    }
                }
            }
            if synth {
                flight.synth_due.notify_one();
            }
            if n > 0 && flight.may_retry.load(Relaxed) {
                flight.keep_for_replay(&cbuf[..n]);
            }
            cbuf.advance(n);
            if n > 0 {
                meter.client_bytes(n);
            }
            if !out.is_empty() {
                if sw.write_all(&out).await.is_err() {
                    return ClientEnd::ServerWrite;
                }
                out.clear();
            }
            if terminated {
                return ClientEnd::Terminated;
            }
            if flight.stopping.load(Relaxed) {
                return ClientEnd::Stopped;
            }
            if cbuf.capacity() - cbuf.len() < 1024 {
                cbuf.reserve(READ_CHUNK);
            }
            let idle_in_tx = flight.status() != b'I' && flight.quiet();
            let timeout = limits.idle_transaction_timeout;
            let read = tokio::io::AsyncReadExt::read_buf(&mut cr, cbuf);
            tokio::select! {
                biased;
                _ = flight.stop.notified() => return ClientEnd::Stopped,
                _ = flight.status_changed.notified() => {}
                _ = flight.resend_due.notified() => {}
                r = read => match r {
                    Ok(0) | Err(_) => return ClientEnd::Gone,
                    Ok(_) => {}
                },
                _ = tokio::time::sleep(timeout), if idle_in_tx && !timeout.is_zero() => {
                    return ClientEnd::IdleInTransaction;
                }
            }
        }
    };

    let s2c = async {
        let mut scanner = BackendScanner::new();
        let mut segs: Vec<Segment> = Vec::new();
        let mut gather = BytesMut::new();
        let mut held = BytesMut::new();
        let mut told = false;
        loop {
            segs.clear();
            lock().emit_due(&mut segs);
            let n = if sbuf.is_empty() {
                0
            } else {
                let mut b = lock();
                let scanned = scanner.scan(sbuf, &mut segs, |head, segs| {
                    if let Some(ev) = &head.event {
                        meter.server_event(ev);
                    }
                    let mut error = None;
                    match head.event {
                        Some(BackendEvent::ReadyForQuery(s)) => {
                            flight.status.store(s, Relaxed);
                            let o = flight.outstanding.load(Relaxed);
                            flight.outstanding.store(o.saturating_sub(1), Relaxed);
                            flight.status_changed.notify_one();
                        }
                        Some(BackendEvent::ParameterStatus { name, value }) => {
                            client_params.set_override(defaults, &name, &value);
                            server_params.set(&name, &value);
                        }
                        Some(BackendEvent::Error { fatal, code }) => {
                            error = Some(code);
                            let untouched = !flight.forwarded.load(Relaxed);
                            let refused = flight.retry_armed.load(Relaxed)
                                && (&code == b"25006" || &code == b"40001");
                            // A replica shutting down says FATAL and hangs up:
                            // if the client saw nothing yet, the request moves.
                            let dying = fatal && flight.one_batch.load(Relaxed);
                            if untouched && flight.may_retry.load(Relaxed) && (refused || dying) {
                                flight.retry_primary.store(true, Relaxed);
                            } else {
                                told |= fatal;
                            }
                        }
                        None => {}
                    }
                    let in_tx = flight.status() != b'I';
                    let fate = b.server_message(head.kind, error.as_ref(), in_tx, segs);
                    let ignored = std::mem::take(&mut b.ignored_cycles);
                    if ignored > 0 {
                        let o = flight.outstanding.load(Relaxed);
                        flight.outstanding.store(o.saturating_sub(ignored), Relaxed);
                    }
                    if flight.retry_primary.load(Relaxed) {
                        return false;
                    }
                    match fate {
                        Fate::Forward => {
                            if !holdable(head.kind) {
                                flight.forwarded.store(true, Relaxed);
                            }
                            true
                        }
                        Fate::Drop => false,
                        Fate::Retry => {
                            flight.outstanding.fetch_add(1, Relaxed);
                            flight.retries.fetch_add(1, Relaxed);
                            flight.resend_due.notify_one();
                            false
                        }
                    }
                });
                match scanned {
                    Ok(n) => n,
                    Err(_) => return ServerEnd::Gone { told },
                }
            };
            let sent = if flight.retry_primary.load(Relaxed) {
                // The replica refused: nothing of this reply reaches the client.
                held.clear();
                Ok(())
            } else if flight.may_retry.load(Relaxed) && !flight.forwarded.load(Relaxed) {
                // Until a row, a completion or a ReadyForQuery comes, the
                // reply (ParseComplete, BindComplete, a RowDescription, one
                // pglittle made up) could still be replaced by the
                // primary's: hold it back.
                for seg in &segs {
                    match *seg {
                        Segment::Range(a, b) => held.extend_from_slice(&sbuf[a..b]),
                        Segment::Static(bytes) => held.extend_from_slice(bytes),
                    }
                }
                Ok(())
            } else if !held.is_empty() {
                for seg in &segs {
                    match *seg {
                        Segment::Range(a, b) => held.extend_from_slice(&sbuf[a..b]),
                        Segment::Static(bytes) => held.extend_from_slice(bytes),
                    }
                }
                let r = cw.write_all(&held).await;
                held.clear();
                r
            } else {
                match segs.as_slice() {
                    [] => Ok(()),
                    [Segment::Range(0, end)] => cw.write_all(&sbuf[..*end]).await,
                    _ => {
                        gather.clear();
                        for seg in &segs {
                            match *seg {
                                Segment::Range(a, b) => gather.extend_from_slice(&sbuf[a..b]),
                                Segment::Static(bytes) => gather.extend_from_slice(bytes),
                            }
                        }
                        cw.write_all(&gather).await
                    }
                }
            };
            if sent.is_err() {
                return ServerEnd::ClientWrite;
            }
            sbuf.advance(n);
            if n > 0 {
                meter.server_bytes(n);
            }
            if n > 0
                && flight.status() == b'I'
                && flight.quiet()
                && scanner.at_boundary()
                && !lock().in_copy_in()
            {
                return ServerEnd::Done;
            }
            if sbuf.capacity() - sbuf.len() < 1024 {
                sbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                r = tokio::io::AsyncReadExt::read_buf(&mut sr, sbuf) => match r {
                    Ok(0) | Err(_) => return ServerEnd::Gone { told },
                    Ok(_) => {}
                },
                _ = flight.synth_due.notified() => {}
            }
        }
    };

    tokio::pin!(c2s, s2c);
    tokio::select! {
        end = &mut s2c => match end {
            ServerEnd::Done => {
                flight.stopping.store(true, Relaxed);
                flight.stop.notify_one();
                match c2s.await {
                    ClientEnd::Stopped => Outcome::Idle,
                    ClientEnd::Gone | ClientEnd::Terminated => Outcome::IdleThenGone,
                    ClientEnd::Protocol(e) => Outcome::ClientProtocol(e),
                    ClientEnd::IdleInTransaction => Outcome::IdleInTransaction,
                    ClientEnd::ServerWrite => Outcome::ServerGone { told: false },
                }
            }
            ServerEnd::ClientWrite => Outcome::ClientGone,
            ServerEnd::Gone { told } => Outcome::ServerGone { told },
        },
        end = &mut c2s => match end {
            ClientEnd::Stopped => Outcome::Idle,
            ClientEnd::Gone | ClientEnd::Terminated => Outcome::ClientGone,
            ClientEnd::Protocol(e) => Outcome::ClientProtocol(e),
            ClientEnd::IdleInTransaction => Outcome::IdleInTransaction,
            ClientEnd::ServerWrite => Outcome::ServerGone { told: false },
        },
    }
}
