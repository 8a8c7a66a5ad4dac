//! Client -> server: the client's complete messages, rewritten where
//! prepared statements need it, forwarded as they arrive; the client's
//! timers (idle in transaction, a batch left open).

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::meter::Meter;
use super::state::State;
use super::{lock, Ctx, RelayLimits};
use crate::prepared::client::LimitError;
use crate::protocol::frontend::{peek_message, peek_stream_head, FrontendMessage};
use crate::protocol::ProtocolError;

/// Client reads grow the buffer by this much.
const READ_CHUNK: usize = 16 * 1024;

pub(super) enum ClientEnd {
    Stopped,
    Gone,
    Terminated,
    Protocol(ProtocolError),
    OverLimit(LimitError),
    IdleInTransaction,
    BatchLeftOpen,
    ServerWrite,
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
pub(super) async fn client_pump<CR, SW>(
    mut cr: CR,
    mut sw: SW,
    (cbuf, out): (&mut BytesMut, &mut BytesMut),
    ctx: Ctx<'_, '_, '_>,
) -> ClientEnd
where
    CR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let Ctx {
        state,
        wake,
        limits,
        meter,
    } = ctx;
    out.clear();
    // Bytes of a large message still to pass through untouched.
    let mut stream_left = 0usize;
    loop {
        let taken = {
            let mut st = lock(state);
            st.client_parked = false;
            if st.stopping {
                return ClientEnd::Stopped;
            }
            match take_client(&mut st, cbuf, &mut stream_left, out, limits, meter) {
                Ok(t) => t,
                Err(Refusal::Protocol(e)) => return ClientEnd::Protocol(e),
                Err(Refusal::Limit(e)) => return ClientEnd::OverLimit(e),
            }
        };
        if taken.synth {
            wake.synth_due.raise();
        }
        cbuf.advance(taken.n);
        if taken.n > 0 {
            meter.client_bytes(taken.n);
        }
        if !out.is_empty() {
            if sw.write_all(out).await.is_err() {
                return ClientEnd::ServerWrite;
            }
            out.clear();
        }
        if taken.terminated {
            return ClientEnd::Terminated;
        }
        let Some(timer) = park(state, limits) else {
            return ClientEnd::Stopped;
        };
        let armed = timer.is_some();
        let (timeout, timed_out) = timer.unwrap_or((Duration::ZERO, ClientEnd::Stopped));
        // Not at 1 KiB: the session's first read of a request is 1 KiB, and
        // growing that buffer for every transaction would cost a copy each.
        if cbuf.capacity() - cbuf.len() < 256 {
            cbuf.reserve(READ_CHUNK);
        }
        let read = tokio::io::AsyncReadExt::read_buf(&mut cr, cbuf);
        // The timer is made only when polled (select! builds every branch's
        // future, armed or not): no clock read or timer entry otherwise.
        let expired = async { tokio::time::sleep(timeout).await };
        tokio::select! {
            biased;
            // Stopping, a new status, or a replay: read again at the top.
            _ = wake.client.wait() => {}
            r = read, if !taken.backlogged => match r {
                Ok(0) | Err(_) => return ClientEnd::Gone,
                Ok(_) => {}
            },
            _ = expired, if armed => return timed_out,
        }
    }
}

/// Marks the pump parked in its wait (until the top of its loop: the relay
/// may drop it there when the transaction ends), and says which timer
/// runs meanwhile. `None`: the relay is stopping.
fn park(
    state: &std::sync::Mutex<State<'_>>,
    limits: &RelayLimits,
) -> Option<Option<(Duration, ClientEnd)>> {
    let mut st = lock(state);
    if st.stopping {
        return None;
    }
    st.client_parked = true;
    Some(client_timer(&st, limits))
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
                st.more_buffered = cbuf.len() > t.n + len;
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
