//! Relays one transaction (or, in session mode, one batch) between a client
//! and the server lent to it, forwarding bytes untouched.
//!
//! Two pumps run in the same task: client -> server and server -> client.
//! Neither ever blocks the other, so a client that pipelines more than the
//! socket buffers hold cannot deadlock against a server writing results.
//! The transaction is over when the server says ReadyForQuery('I') and every
//! Query/Sync the client sent has been answered, with no extended-protocol
//! message waiting for its Sync.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::pool::params::Params;
use crate::pool::ServerConn;
use crate::protocol::frontend::{peek_message, FrontendMessage};
use crate::protocol::scan::{BackendEvent, BackendScanner};
use crate::protocol::ProtocolError;
use crate::router::{inspect, SqlEffects};

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

/// Shared between the two pumps (same task; atomics only to stay `Send`).
#[derive(Default)]
pub struct Flight {
    /// Query/Sync/FunctionCall messages sent and not yet answered.
    outstanding: AtomicUsize,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: AtomicBool,
    /// Transaction status from the last ReadyForQuery.
    status: AtomicU8,
    search_path: AtomicBool,
    needs_reset: AtomicBool,
    stopping: AtomicBool,
    stop: Notify,
    /// Wakes the client pump to re-arm its idle-in-transaction timer when a
    /// ReadyForQuery changes the transaction status.
    status_changed: Notify,
}

impl Flight {
    pub fn new() -> Flight {
        let f = Flight::default();
        f.status.store(b'I', Relaxed);
        f
    }

    /// True when nothing is in flight: safe to roll back or release.
    pub fn quiet(&self) -> bool {
        self.outstanding.load(Relaxed) == 0 && !self.unsynced.load(Relaxed)
    }

    pub fn status(&self) -> u8 {
        self.status.load(Relaxed)
    }

    pub fn effects(&self) -> SqlEffects {
        SqlEffects {
            search_path: self.search_path.load(Relaxed),
            needs_reset: self.needs_reset.load(Relaxed),
        }
    }

    fn note(&self, msg: &FrontendMessage<'_>) {
        if let FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } = msg {
            let fx = inspect(sql);
            if fx.search_path {
                self.search_path.store(true, Relaxed);
            }
            if fx.needs_reset {
                self.needs_reset.store(true, Relaxed);
            }
        }
        if msg.ends_batch() {
            self.outstanding.fetch_add(1, Relaxed);
            self.unsynced.store(false, Relaxed);
        } else if msg.is_extended() {
            self.unsynced.store(true, Relaxed);
        }
    }
}

/// What the relay needs to know about the client's limits.
pub struct RelayLimits {
    pub max_message: usize,
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

#[allow(clippy::too_many_arguments)]
/// Runs until the transaction ends. `cbuf` holds client bytes not yet
/// forwarded (at least one complete message on entry).
pub async fn transaction(
    client: &mut TcpStream,
    cbuf: &mut BytesMut,
    server: &mut ServerConn,
    client_params: &mut Params,
    defaults: &Params,
    flight: &Flight,
    limits: &RelayLimits,
    meter: &super::meter::Meter<'_>,
) -> Outcome {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.stream.split();
    let sbuf = &mut server.buf;
    let server_params = &mut server.params;

    let c2s = async {
        loop {
            if flight.stopping.load(Relaxed) {
                return ClientEnd::Stopped;
            }
            let mut n = 0;
            let mut terminated = false;
            loop {
                match peek_message(&cbuf[n..], limits.max_message) {
                    Ok(Some((FrontendMessage::Terminate, _))) => {
                        terminated = true;
                        break;
                    }
                    Ok(Some((msg, len))) => {
                        flight.note(&msg);
                        meter.client_message(&msg);
                        n += len;
                    }
                    Ok(None) => break,
                    Err(e) => return ClientEnd::Protocol(e),
                }
            }
            if n > 0 {
                meter.client_bytes(n);
                if sw.write_all(&cbuf[..n]).await.is_err() {
                    return ClientEnd::ServerWrite;
                }
                cbuf.advance(n);
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
        let mut events = Vec::new();
        let mut told = false;
        loop {
            if !sbuf.is_empty() {
                let n = match scanner.scan(sbuf, &mut events) {
                    Ok(n) => n,
                    Err(_) => return ServerEnd::Gone { told },
                };
                for ev in events.drain(..) {
                    meter.server_event(&ev);
                    match ev {
                        BackendEvent::ReadyForQuery(s) => {
                            flight.status.store(s, Relaxed);
                            let o = flight.outstanding.load(Relaxed);
                            flight.outstanding.store(o.saturating_sub(1), Relaxed);
                            flight.status_changed.notify_one();
                        }
                        BackendEvent::ParameterStatus { name, value } => {
                            client_params.set_override(defaults, &name, &value);
                            server_params.set(&name, &value);
                        }
                        BackendEvent::Error { fatal, .. } => told |= fatal,
                    }
                }
                if n > 0 {
                    meter.server_bytes(n);
                    if cw.write_all(&sbuf[..n]).await.is_err() {
                        return ServerEnd::ClientWrite;
                    }
                    sbuf.advance(n);
                }
                if flight.status() == b'I' && flight.quiet() && scanner.at_boundary() {
                    return ServerEnd::Done;
                }
            }
            if sbuf.capacity() - sbuf.len() < 1024 {
                sbuf.reserve(READ_CHUNK);
            }
            match tokio::io::AsyncReadExt::read_buf(&mut sr, sbuf).await {
                Ok(0) | Err(_) => return ServerEnd::Gone { told },
                Ok(_) => {}
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
