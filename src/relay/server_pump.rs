//! Server -> client: the server's replies, scanned, forwarded in their
//! turn with pglittle's made-up ones, held back while the request may
//! still move to the primary, until the transaction is over.

use std::sync::Mutex;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::state::State;
use super::{lock, Ctx};
use crate::pool::params::Params;
use crate::protocol::scan::{BackendEvent, BackendScanner, Segment};

/// Server reads grow the buffer by this much.
const READ_CHUNK: usize = 16 * 1024;

/// Replies held back while a replica request may still move to the primary
/// are sent on (and the request stays) past this many bytes.
const MAX_HELD: usize = 256 * 1024;

pub(super) enum ServerEnd {
    Done,
    ClientWrite,
    Gone { told: bool },
}

/// Both sides' parameters, which a ParameterStatus updates.
pub(super) struct ParamsSide<'a> {
    pub client: &'a mut Params,
    pub server: &'a mut Params,
    pub defaults: &'a Params,
}

/// Server -> client: forwards replies (made-up ones in their turn, held
/// back while the request may still move), until the transaction is over.
pub(super) async fn server_pump<SR, CW>(
    mut sr: SR,
    mut cw: CW,
    bufs: ServerBufs<'_>,
    params: ParamsSide<'_>,
    ctx: Ctx<'_, '_, '_>,
) -> ServerEnd
where
    SR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
{
    let ServerBufs {
        sbuf,
        segs,
        mut out,
    } = bufs;
    let Ctx {
        state, wake, meter, ..
    } = ctx;
    let mut params = params;
    let mut scanner = BackendScanner::new();
    out.held.clear();
    out.gather.clear();
    loop {
        segs.clear();
        let Ok((n, what, wake_client)) = scan_once(&mut scanner, sbuf, segs, &mut params, ctx)
        else {
            return ServerEnd::Gone {
                told: lock(state).told(),
            };
        };
        let sent = send_on(&mut cw, &mut out, sbuf, segs, what, state).await;
        if sent.is_err() {
            return ServerEnd::ClientWrite;
        }
        sbuf.advance(n);
        if n > 0 {
            meter.server_bytes(n);
            if lock(state).done(scanner.at_boundary()) {
                // The relay stops the client pump itself.
                return ServerEnd::Done;
            }
        }
        if wake_client {
            wake.client.raise();
        }
        if sbuf.capacity() - sbuf.len() < 1024 {
            sbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            r = tokio::io::AsyncReadExt::read_buf(&mut sr, sbuf) => match r {
                Ok(0) | Err(_) => return ServerEnd::Gone { told: lock(state).told() },
                Ok(_) => {}
            },
            _ = wake.synth_due.wait() => {}
        }
    }
}

/// Scans what the server sent so far: the bytes it covers, what to do with
/// them (`segs` names them), and whether the client pump must look at the
/// state again (woken once the bytes are sent, unless the transaction is
/// over by then). `Err`: the server broke the protocol.
fn scan_once(
    scanner: &mut BackendScanner,
    sbuf: &[u8],
    segs: &mut Vec<Segment>,
    params: &mut ParamsSide<'_>,
    ctx: Ctx<'_, '_, '_>,
) -> Result<(usize, Send, bool), ()> {
    let Ctx { state, meter, .. } = ctx;
    let mut st = lock(state);
    scanner.read_lsn_rows = st.reads_lsn_rows();
    let mut wake_client = st.emit_due(segs);
    let scanned = scanner.scan(sbuf, segs, |head, segs| {
        if let Some(ev) = &head.event {
            meter.server_event(ev);
        }
        if let Some(BackendEvent::ParameterStatus { name, value }) = &head.event {
            params.client.set_override(params.defaults, name, value);
            params.server.set(name, value);
        }
        let step = st.server_message(head.kind, head.event.as_ref(), segs);
        wake_client |= step.status_changed || step.resend;
        step.forward
    });
    let n = scanned.map_err(|_| ())?;
    let what = if st.retry_primary() {
        Send::Drop
    } else if st.hold_back() {
        Send::Hold
    } else {
        Send::Now
    };
    Ok((n, what, wake_client))
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
pub(super) struct Outgoing<'b> {
    pub held: &'b mut BytesMut,
    pub gather: &'b mut BytesMut,
}

/// The server pump's buffers: the server's bytes, what one scan forwards,
/// and what is held back or gathered.
pub(super) struct ServerBufs<'b> {
    pub sbuf: &'b mut BytesMut,
    pub segs: &'b mut Vec<Segment>,
    pub out: Outgoing<'b>,
}

/// Sends (or holds, or drops) the bytes `segs` name, out of `sbuf`.
async fn send_on<CW: AsyncWrite + Unpin>(
    cw: &mut CW,
    out: &mut Outgoing<'_>,
    sbuf: &[u8],
    segs: &[Segment],
    what: Send,
    state: &Mutex<State<'_>>,
) -> std::io::Result<()> {
    let held = &mut *out.held;
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
                gather_into(out.gather, sbuf, segs);
                cw.write_all(out.gather).await
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
