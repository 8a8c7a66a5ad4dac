//! Relays one transaction (or, in session mode, one batch) between a client
//! and the server lent to it, forwarding bytes untouched.
//!
//! Two pumps run in the same task: client -> server and server -> client.
//! Neither ever blocks the other, so a client that pipelines more than the
//! socket buffers hold cannot deadlock against a server writing results.
//! The transaction is over when the server says ReadyForQuery('I') and every
//! Query/Sync the client sent has been answered, with no extended-protocol
//! message waiting for its Sync.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::pool::params::Params;
use crate::pool::ServerConn;
use crate::prepared::client::ClientStatements;
use crate::prepared::client::LimitError;
use crate::prepared::server::ServerStatements;
use crate::prepared::Rewriter;
use crate::protocol::frontend::{peek_message, peek_stream_head, FrontendMessage};
use crate::protocol::scan::{BackendEvent, BackendScanner, Segment};
use crate::protocol::ProtocolError;

use meter::Meter;
use state::State;
pub use tx_record::{Replay, TxRecord};

pub mod meter;
mod state;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;
mod tx_record;

const READ_CHUNK: usize = 16 * 1024;

/// Replies held back while a replica request may still move to the primary
/// are sent on (and the request stays) past this many bytes.
const MAX_HELD: usize = 256 * 1024;

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
    /// The client went past a memory cap (too many prepared statements).
    ClientOverLimit(LimitError),
    /// The client sat in an open transaction past idle_transaction_timeout.
    IdleInTransaction,
    /// The client left an extended-protocol batch open past client_batch_timeout.
    BatchLeftOpen,
    /// The server connection failed; `told` when a FATAL already reached the client.
    ServerGone { told: bool },
}

/// What the relay needs to know about the client's limits.
pub struct RelayLimits {
    pub max_message: usize,
    /// Transaction mode: keep named prepared statements working across servers.
    pub rewrite_statements: bool,
    pub idle_transaction_timeout: Duration,
    /// An extended-protocol batch left open with no reply due (`State::batch_left_open`).
    pub batch_timeout: Duration,
}

enum ClientEnd {
    Stopped,
    Gone,
    Terminated,
    Protocol(ProtocolError),
    OverLimit(LimitError),
    IdleInTransaction,
    BatchLeftOpen,
    ServerWrite,
}

enum ServerEnd {
    Done,
    ClientWrite,
    Gone { told: bool },
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
    record: &mut TxRecord,
    limits: &RelayLimits,
    meter: &Meter<'_>,
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
    pump((cr, cw), (sr, sw), client, server, record, limits, meter).await
}

/// Wakes one pump from the other (what they share is in `State`).
#[derive(Default)]
struct Wake {
    stop: Notify,
    /// A ReadyForQuery changed the transaction status: the client pump
    /// re-arms its idle-in-transaction timer.
    status_changed: Notify,
    /// A made-up reply is due now: the server pump emits it.
    synth_due: Notify,
    /// A stale cached plan: the client pump replays the batch.
    resend_due: Notify,
}

fn lock<'m, 'a>(state: &'m Mutex<State<'a>>) -> MutexGuard<'m, State<'a>> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The relay itself, over any stream halves (sockets in production,
/// `tokio::io::duplex` in tests).
pub async fn pump<CR, CW, SR, SW>(
    (cr, cw): (CR, CW),
    (sr, sw): (SR, SW),
    client: ClientSide<'_>,
    server: ServerSide<'_>,
    record: &mut TxRecord,
    limits: &RelayLimits,
    meter: &Meter<'_>,
) -> Outcome
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let rewriter = Rewriter::new(
        client.statements,
        server.statements,
        limits.rewrite_statements,
    );
    let state = Mutex::new(State::new(record, rewriter));
    let wake = Wake::default();
    let params = ParamsSide {
        client: client.params,
        server: server.params,
        defaults: client.defaults,
    };
    let c2s = client_pump(cr, sw, client.buf, &state, &wake, limits, meter);
    let s2c = server_pump(sr, cw, server.buf, params, &state, &wake, meter);
    tokio::pin!(c2s, s2c);
    let client_end = |end| match end {
        ClientEnd::Stopped => Outcome::Idle,
        ClientEnd::Gone | ClientEnd::Terminated => Outcome::ClientGone,
        ClientEnd::Protocol(e) => Outcome::ClientProtocol(e),
        ClientEnd::OverLimit(e) => Outcome::ClientOverLimit(e),
        ClientEnd::IdleInTransaction => Outcome::IdleInTransaction,
        ClientEnd::BatchLeftOpen => Outcome::BatchLeftOpen,
        ClientEnd::ServerWrite => Outcome::ServerGone { told: false },
    };
    tokio::select! {
        end = &mut s2c => match end {
            ServerEnd::Done => {
                lock(&state).stopping = true;
                wake.stop.notify_one();
                match c2s.await {
                    ClientEnd::Gone | ClientEnd::Terminated => Outcome::IdleThenGone,
                    end => client_end(end),
                }
            }
            ServerEnd::ClientWrite => Outcome::ClientGone,
            ServerEnd::Gone { told } => Outcome::ServerGone { told },
        },
        end = &mut c2s => client_end(end),
    }
}

/// What one pass over the client's buffer took.
#[derive(Default)]
struct Taken {
    /// Bytes of the buffer consumed.
    n: usize,
    terminated: bool,
    /// A made-up reply may be due now.
    synth: bool,
    /// The reply queue is full: read nothing until it drains.
    backlogged: bool,
}

/// Why the client pump stops taking the client's messages.
enum Refusal {
    Protocol(ProtocolError),
    Limit(LimitError),
}

impl From<ProtocolError> for Refusal {
    fn from(e: ProtocolError) -> Refusal {
        Refusal::Protocol(e)
    }
}

/// Client -> server: forwards every complete message buffered (rewritten
/// where prepared statements need it), then reads more.
async fn client_pump<CR, SW>(
    mut cr: CR,
    mut sw: SW,
    cbuf: &mut BytesMut,
    state: &Mutex<State<'_>>,
    wake: &Wake,
    limits: &RelayLimits,
    meter: &Meter<'_>,
) -> ClientEnd
where
    CR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    // Bytes of a large message still to pass through untouched.
    let mut stream_left = 0usize;
    loop {
        let taken = {
            let mut st = lock(state);
            if st.stopping {
                return ClientEnd::Stopped;
            }
            match take_client(&mut st, cbuf, &mut stream_left, &mut out, limits, meter) {
                Ok(t) => t,
                Err(Refusal::Protocol(e)) => return ClientEnd::Protocol(e),
                Err(Refusal::Limit(e)) => return ClientEnd::OverLimit(e),
            }
        };
        if taken.synth {
            wake.synth_due.notify_one();
        }
        cbuf.advance(taken.n);
        if taken.n > 0 {
            meter.client_bytes(taken.n);
        }
        if !out.is_empty() {
            if sw.write_all(&out).await.is_err() {
                return ClientEnd::ServerWrite;
            }
            out.clear();
        }
        if taken.terminated {
            return ClientEnd::Terminated;
        }
        let timer = {
            let st = lock(state);
            if st.stopping {
                return ClientEnd::Stopped;
            }
            client_timer(&st, limits)
        };
        let armed = timer.is_some();
        let (timeout, timed_out) = timer.unwrap_or((Duration::ZERO, ClientEnd::Stopped));
        if cbuf.capacity() - cbuf.len() < 1024 {
            cbuf.reserve(READ_CHUNK);
        }
        let read = tokio::io::AsyncReadExt::read_buf(&mut cr, cbuf);
        tokio::select! {
            biased;
            _ = wake.stop.notified() => return ClientEnd::Stopped,
            _ = wake.status_changed.notified() => {}
            _ = wake.resend_due.notified() => {}
            r = read, if !taken.backlogged => match r {
                Ok(0) | Err(_) => return ClientEnd::Gone,
                Ok(_) => {}
            },
            _ = tokio::time::sleep(timeout), if armed => return timed_out,
        }
    }
}

/// The timer that runs while the client owes the next move, and how the
/// relay ends when it fires: idle in an open transaction, or an
/// extended-protocol batch left open with no reply due.
fn client_timer(st: &State<'_>, limits: &RelayLimits) -> Option<(Duration, ClientEnd)> {
    let (timeout, end) = if st.idle_in_transaction() {
        (
            limits.idle_transaction_timeout,
            ClientEnd::IdleInTransaction,
        )
    } else if st.batch_left_open() {
        (limits.batch_timeout, ClientEnd::BatchLeftOpen)
    } else {
        return None;
    };
    (!timeout.is_zero()).then_some((timeout, end))
}

/// Takes every complete client message in `cbuf` (and the head of a
/// streamed one) into `out`, as the server must see them.
fn take_client(
    st: &mut State<'_>,
    cbuf: &[u8],
    stream_left: &mut usize,
    out: &mut BytesMut,
    limits: &RelayLimits,
    meter: &Meter<'_>,
) -> Result<Taken, Refusal> {
    let mut t = Taken::default();
    if let Some(replay) = st.take_resend() {
        out.extend_from_slice(&replay);
    }
    loop {
        if *stream_left > 0 {
            let k = (*stream_left).min(cbuf.len() - t.n);
            out.extend_from_slice(&cbuf[t.n..t.n + k]);
            t.n += k;
            *stream_left -= k;
            if *stream_left > 0 {
                break;
            }
            continue;
        }
        if st.batch_full() {
            break;
        }
        if st.backlogged() {
            // Too many replies queued that the client has not read: read
            // no more until the server pump has sent some (backpressure).
            t.backlogged = true;
            break;
        }
        match peek_message(&cbuf[t.n..], limits.max_message)? {
            Some((FrontendMessage::Terminate, _)) => {
                t.terminated = true;
                break;
            }
            Some((msg, len)) => {
                meter.client_message(&msg);
                t.synth |= st
                    .client_message(&msg, &cbuf[t.n..t.n + len], out)
                    .map_err(Refusal::Limit)?;
                t.n += len;
            }
            // A large Bind, CopyData or FunctionCall: its head now, the
            // rest as it arrives, never held whole.
            None => match peek_stream_head(&cbuf[t.n..], limits.max_message)? {
                Some(head) => {
                    meter.client_message(&head.msg);
                    let rest = head.total - head.head_len;
                    let raw = &cbuf[t.n..t.n + head.head_len];
                    t.synth |= st.client_stream_head(&head.msg, raw, rest, out);
                    t.n += head.head_len;
                    *stream_left = rest;
                }
                None => break,
            },
        }
    }
    st.client_bytes(&cbuf[..t.n]);
    Ok(t)
}

/// Both sides' parameters, which a ParameterStatus updates.
struct ParamsSide<'a> {
    client: &'a mut Params,
    server: &'a mut Params,
    defaults: &'a Params,
}

/// Server -> client: forwards replies (made-up ones in their turn, held
/// back while the request may still move), until the transaction is over.
async fn server_pump<SR, CW>(
    mut sr: SR,
    mut cw: CW,
    sbuf: &mut BytesMut,
    params: ParamsSide<'_>,
    state: &Mutex<State<'_>>,
    wake: &Wake,
    meter: &Meter<'_>,
) -> ServerEnd
where
    SR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
{
    let ParamsSide {
        client: client_params,
        server: server_params,
        defaults,
    } = params;
    let mut scanner = BackendScanner::new();
    let mut segs: Vec<Segment> = Vec::new();
    let mut out = Outgoing::default();
    loop {
        segs.clear();
        let (n, retry_primary, hold) = {
            let mut st = lock(state);
            if st.emit_due(&mut segs) {
                wake.status_changed.notify_one();
            }
            let scanned = scanner.scan(sbuf, &mut segs, |head, segs| {
                if let Some(ev) = &head.event {
                    meter.server_event(ev);
                }
                if let Some(BackendEvent::ParameterStatus { name, value }) = &head.event {
                    client_params.set_override(defaults, name, value);
                    server_params.set(name, value);
                }
                let step = st.server_message(head.kind, head.event.as_ref(), segs);
                if step.status_changed {
                    wake.status_changed.notify_one();
                }
                if step.resend {
                    wake.resend_due.notify_one();
                }
                step.forward
            });
            let Ok(n) = scanned else {
                return ServerEnd::Gone { told: st.told() };
            };
            (n, st.retry_primary(), st.hold_back())
        };
        let what = if retry_primary {
            Send::Drop
        } else if hold {
            Send::Hold
        } else {
            Send::Now
        };
        let sent = send_on(&mut cw, &mut out, sbuf, &segs, what, state).await;
        if sent.is_err() {
            return ServerEnd::ClientWrite;
        }
        sbuf.advance(n);
        if n > 0 {
            meter.server_bytes(n);
            if lock(state).done(scanner.at_boundary()) {
                return ServerEnd::Done;
            }
        }
        if sbuf.capacity() - sbuf.len() < 1024 {
            sbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            r = tokio::io::AsyncReadExt::read_buf(&mut sr, sbuf) => match r {
                Ok(0) | Err(_) => return ServerEnd::Gone { told: lock(state).told() },
                Ok(_) => {}
            },
            _ = wake.synth_due.notified() => {}
        }
    }
}

/// What the server pump does with the bytes of one scan.
enum Send {
    /// The replica refused: nothing of this reply reaches the client.
    Drop,
    /// The request may still move to the primary: keep them back.
    Hold,
    Now,
}

/// The server pump's two buffers: replies held back, and a gather buffer
/// for a scan whose bytes are not one range of the read buffer.
#[derive(Default)]
struct Outgoing {
    held: BytesMut,
    gather: BytesMut,
}

/// Sends (or holds, or drops) the bytes `segs` name, out of `sbuf`.
async fn send_on<CW: AsyncWrite + Unpin>(
    cw: &mut CW,
    out: &mut Outgoing,
    sbuf: &[u8],
    segs: &[Segment],
    what: Send,
    state: &Mutex<State<'_>>,
) -> std::io::Result<()> {
    let held = &mut out.held;
    match what {
        Send::Drop => {
            held.clear();
            Ok(())
        }
        Send::Hold => {
            // Until the reply is whole (a ReadyForQuery, or an error that
            // answers it), it could still be replaced by the primary's:
            // hold it back, up to MAX_HELD.
            gather_into(held, sbuf, segs);
            if held.len() <= MAX_HELD {
                return Ok(());
            }
            // Too much to keep for a move: the request stays here.
            lock(state).stay();
            let r = cw.write_all(held).await;
            held.clear();
            r
        }
        Send::Now if !held.is_empty() => {
            gather_into(held, sbuf, segs);
            let r = cw.write_all(held).await;
            held.clear();
            r
        }
        Send::Now => match segs {
            [] => Ok(()),
            [Segment::Range(0, end)] => cw.write_all(&sbuf[..*end]).await,
            _ => {
                out.gather.clear();
                gather_into(&mut out.gather, sbuf, segs);
                cw.write_all(&out.gather).await
            }
        },
    }
}

/// Appends the bytes `segs` name (ranges of `buf`, or made-up replies).
fn gather_into(dst: &mut BytesMut, buf: &[u8], segs: &[Segment]) {
    for seg in segs {
        match *seg {
            Segment::Range(a, b) => dst.extend_from_slice(&buf[a..b]),
            Segment::Static(bytes) => dst.extend_from_slice(bytes),
        }
    }
}
