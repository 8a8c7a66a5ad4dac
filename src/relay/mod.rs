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

use crate::tls::{ClientStream, ServerStream};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::pool::params::Params;
use crate::pool::server::RelayBuffers;
use crate::pool::ServerConn;
use crate::prepared::client::ClientStatements;
use crate::prepared::client::LimitError;
use crate::prepared::server::ServerStatements;
use crate::prepared::Rewriter;
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

mod client_pump;
mod server_pump;
mod signal;

use client_pump::{client_pump, ClientEnd};
use server_pump::{server_pump, Outgoing, ParamsSide, ServerBufs, ServerEnd};

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
    /// The client has every answer it asked for; the server failed before
    /// it answered pglittle's own query behind them (`TxRecord::lsn_probe`).
    AnsweredThenServerGone,
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
    /// The relay's working buffers, kept with the connection.
    pub bufs: &'a mut RelayBuffers,
    pub params: &'a mut Params,
    pub statements: &'a mut ServerStatements,
}

/// Runs until the transaction ends, over the client's and server's sockets.
/// A plain socket splits without a lock; a TLS stream is split with
/// tokio's (its two directions share one rustls session).
pub async fn transaction(
    client: &mut ClientStream,
    side: ClientSide<'_>,
    server: &mut ServerConn,
    record: &mut TxRecord,
    limits: &RelayLimits,
    meter: &Meter<'_>,
) -> Outcome {
    let ServerConn {
        stream,
        buf,
        relay,
        params,
        statements,
        ..
    } = server;
    let server = ServerSide {
        buf,
        bufs: relay,
        params,
        statements,
    };
    match (client, stream) {
        (ClientStream::Plain(c), ServerStream::Plain(s)) => {
            let (c, s) = (c.split(), s.split());
            pump(c, s, side, server, record, limits, meter).await
        }
        (ClientStream::Plain(c), s) => {
            let (c, s) = (c.split(), tokio::io::split(s));
            pump(c, s, side, server, record, limits, meter).await
        }
        (c, ServerStream::Plain(s)) => {
            let (c, s) = (tokio::io::split(c), s.split());
            pump(c, s, side, server, record, limits, meter).await
        }
        (c, s) => {
            let (c, s) = (tokio::io::split(c), tokio::io::split(s));
            pump(c, s, side, server, record, limits, meter).await
        }
    }
}

/// Wakes one pump from the other. What happened is in `State`, which a
/// woken pump reads again: one wake-up per pump (registering a waiter is
/// the cost of a wait, so each pump waits on one).
#[derive(Default)]
struct Wake {
    /// The client pump: the relay is stopping; or a ReadyForQuery changed
    /// the transaction status (re-arm the idle-in-transaction timer); or
    /// a stale cached plan must be replayed.
    client: signal::Signal,
    /// The server pump: a made-up reply is due now.
    synth_due: signal::Signal,
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
    let bufs = server.bufs;
    record.lend_replay_room(&mut bufs.replay);
    let rewriter = Rewriter::new(
        client.statements,
        server.statements,
        limits.rewrite_statements,
    );
    let state = Mutex::new(State::new(record, rewriter));
    let wake = Wake::default();
    let ctx = Ctx {
        state: &state,
        wake: &wake,
        limits,
        meter,
    };
    let to_server = (client.buf, &mut bufs.to_server);
    let to_client = ServerBufs {
        sbuf: server.buf,
        segs: &mut bufs.segs,
        out: Outgoing {
            held: &mut bufs.held,
            gather: &mut bufs.gather,
        },
    };
    let params = ParamsSide {
        client: client.params,
        server: server.params,
        defaults: client.defaults,
    };
    let c2s = client_pump(cr, sw, to_server, ctx);
    let s2c = server_pump(sr, cw, to_client, params, ctx);
    let outcome = run_pumps(c2s, s2c, ctx).await;
    drop(state);
    record.return_replay_room(&mut bufs.replay);
    bufs.segs.clear();
    outcome
}

/// What both pumps share: the state, the wake-ups, the limits, the meter.
#[derive(Clone, Copy)]
struct Ctx<'s, 'a, 'm> {
    state: &'s Mutex<State<'a>>,
    wake: &'s Wake,
    limits: &'s RelayLimits,
    meter: &'s Meter<'m>,
}

/// Runs both pumps until the transaction is over, and says how it ended.
async fn run_pumps(
    c2s: impl std::future::Future<Output = ClientEnd>,
    s2c: impl std::future::Future<Output = ServerEnd>,
    ctx: Ctx<'_, '_, '_>,
) -> Outcome {
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
        biased;
        end = &mut s2c => match end {
            ServerEnd::Done => {
                let parked = {
                    let mut st = lock(ctx.state);
                    st.stopping = true;
                    st.client_parked
                };
                if parked {
                    // The client pump waits for the client and holds
                    // nothing half done: dropped as it is, no wake-up.
                    return Outcome::Idle;
                }
                ctx.wake.client.raise();
                match c2s.await {
                    ClientEnd::Gone | ClientEnd::Terminated => Outcome::IdleThenGone,
                    end => client_end(end),
                }
            }
            ServerEnd::ClientWrite => Outcome::ClientGone,
            ServerEnd::Gone { .. } if lock(ctx.state).only_probe_left() => {
                Outcome::AnsweredThenServerGone
            }
            ServerEnd::Gone { told } => Outcome::ServerGone { told },
        },
        end = &mut c2s => match end {
            // Gone with every answer it asked for: the probe behind them
            // finishes, and the server goes back to the pool.
            ClientEnd::Gone | ClientEnd::Terminated if lock(ctx.state).only_probe_left() => {
                match s2c.await {
                    ServerEnd::Done => Outcome::IdleThenGone,
                    ServerEnd::ClientWrite => Outcome::ClientGone,
                    ServerEnd::Gone { .. } => Outcome::AnsweredThenServerGone,
                }
            }
            end => client_end(end),
        },
    }
}
