//! The client's side of the connection, outside a relay: waiting for the
//! next complete message (holding no buffer while idle, passing on what a
//! held server says by itself), skipping messages, and answering a request
//! that could not get a server.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::Session;
use crate::error::SessionError;
use crate::protocol::backend::{self, Severity};
use crate::protocol::frame::peek_header;
use crate::protocol::frontend::{peek_message, peek_stream_head, FrontendMessage};
use crate::shutdown::Phase;
use crate::tls::ClientStream;

/// The buffer a client's request is first read into (`wait_for_message`).
const FIRST_READ: usize = 1024;

/// What waiting for the client gave.
enum Arrived {
    /// The TCP socket is readable (nothing read yet: no buffer was needed).
    Readable,
    /// Bytes were read into the buffer (TLS: rustls may hold decrypted
    /// bytes the socket no longer shows, so it is read, not watched); 0 is
    /// the end of the stream.
    Read(usize),
}

/// Waits for the client: readiness of a plain socket, or a read of a TLS
/// stream into `buf`.
async fn wait_client(client: &mut ClientStream, buf: &mut BytesMut) -> std::io::Result<Arrived> {
    match client {
        ClientStream::Plain(tcp) => {
            tcp.readable().await?;
            Ok(Arrived::Readable)
        }
        ClientStream::Tls(..) | ClientStream::Records(_) => {
            // As for plain text below: a request's first read is small (the
            // allocator's per-thread cache serves it), more only when needed.
            if buf.capacity() == 0 {
                buf.reserve(FIRST_READ);
            } else if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8 * 1024);
            }
            let n = tokio::io::AsyncReadExt::read_buf(client, buf).await?;
            Ok(Arrived::Read(n))
        }
    }
}

/// Ready when the shutdown phase moved. The waker is left in the client
/// registry, which the app wakes when the phase moves
/// (`app::wake_idle_clients`); parked before the look, so a move in
/// between is seen by one or the other.
async fn phase_moved(
    entry: &crate::shared::clients::ClientEntry,
    shutdown: &tokio::sync::watch::Receiver<Phase>,
) {
    std::future::poll_fn(|cx| {
        entry.park_idle(cx.waker());
        match shutdown.has_changed() {
            Ok(true) => std::task::Poll::Ready(()),
            _ => std::task::Poll::Pending,
        }
    })
    .await
}

impl Session {
    /// Waits until a complete message is buffered; `None` on Terminate or EOF.
    pub(super) async fn wait_for_message(
        &mut self,
        shutdown: &mut tokio::sync::watch::Receiver<Phase>,
    ) -> Result<Option<Incoming>, SessionError> {
        loop {
            if let Some(first) = classify_first(&self.buf, self.limits.max_message)? {
                if first == Incoming::Terminate {
                    return Ok(None);
                }
                return Ok(Some(first));
            }
            if self.buf.is_empty() && self.lease.is_none() {
                // Idle clients hold no buffer: memory per idle client stays small.
                self.buf = BytesMut::new();
            }
            let phase = *shutdown.borrow_and_update();
            if phase >= Phase::Draining {
                self.leave_at_drain(phase)?;
            }
            // The timer is boxed and made only when the timeout is on: this
            // wait is what every idle client holds, so every byte counts.
            let idle = self.client_idle_timeout;
            let mut timer = (!idle.is_zero() && self.lease.is_none())
                .then(|| Box::pin(tokio::time::sleep(idle)));
            let expired = async {
                match timer.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            let arrived = if self.lease.is_some() {
                // A held server (session mode, a pinned client) may speak
                // first. Boxed: most idle clients hold no server, and this
                // wait is what each of them keeps.
                match Box::pin(self.wait_with_server(shutdown)).await? {
                    Woke::Client(arrived) => arrived,
                    Woke::Other => continue,
                    Woke::ServerGone => return Ok(None),
                }
            } else {
                let phase_moved = phase_moved(&self.entry.entry, shutdown);
                // biased: polled in order, no random start (a thread-local
                // RNG read per poll otherwise).
                tokio::select! {
                    biased;
                    r = wait_client(&mut self.client, &mut self.buf) => r?,
                    _ = phase_moved => continue,
                    _ = expired => return Err(SessionError::ClientIdle),
                }
            };
            let tcp = match arrived {
                Arrived::Read(0) => return Ok(None),
                Arrived::Read(_) => continue,
                Arrived::Readable => match self.client.as_tcp() {
                    Some(tcp) => tcp,
                    None => continue,
                },
            };
            if self.buf.capacity() == 0 {
                // A request's first bytes. Most requests fit, and a buffer
                // of this size comes cheaply from the allocator's per-thread
                // cache (this runs once per transaction, after idle).
                self.buf.reserve(FIRST_READ);
            } else if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(8 * 1024);
            }
            match tcp.try_read_buf(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for the client, or for the server it holds to say something
    /// by itself (passed on at once).
    async fn wait_with_server(
        &mut self,
        shutdown: &mut tokio::sync::watch::Receiver<Phase>,
    ) -> Result<Woke, SessionError> {
        let (client, buf) = (&mut self.client, &mut self.buf);
        let held = self.lease.as_mut().map(|l| l.conn());
        let server_said = async {
            match held {
                Some(conn) => conn.stream.readable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = wait_client(client, buf) => Ok(Woke::Client(r?)),
            r = server_said => {
                r.map_err(|_| SessionError::ServerLost)?;
                if self.relay_server_chatter().await? {
                    Ok(Woke::Other)
                } else {
                    Ok(Woke::ServerGone)
                }
            }
            _ = shutdown.changed() => Ok(Woke::Other),
        }
    }

    /// Answers a request that could not get a server: an error, then (for an
    /// extended-protocol batch) skip to its Sync, then ReadyForQuery.
    pub(super) async fn refuse_request(
        &mut self,
        first: Incoming,
        err: &SessionError,
    ) -> Result<(), SessionError> {
        self.send_error(Severity::Error, err).await?;
        if first == Incoming::Extended {
            self.skip_to_sync().await?;
        } else {
            self.skip_message().await?;
        }
        let mut out = BytesMut::new();
        backend::ready_for_query(&mut out, crate::protocol::TxStatus::Idle);
        self.client.write_all(&out).await?;
        Ok(())
    }

    async fn skip_to_sync(&mut self) -> Result<(), SessionError> {
        while self.skip_message().await? != b'S' {}
        Ok(())
    }

    /// Drops the client's next message, reading (and dropping) as much of
    /// it as has not arrived: a large one is never held whole. Its tag.
    pub(super) async fn skip_message(&mut self) -> Result<u8, SessionError> {
        let (tag, mut left) = loop {
            if let Some(h) = peek_header(&self.buf, self.limits.max_message)? {
                break h;
            }
            self.read_more().await?;
        };
        loop {
            let k = left.min(self.buf.len());
            self.buf.advance(k);
            left -= k;
            if left == 0 {
                return Ok(tag);
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<(), SessionError> {
        self.buf.reserve(8 * 1024);
        if tokio::io::AsyncReadExt::read_buf(&mut self.client, &mut self.buf).await? == 0 {
            return Err(SessionError::ClientIo(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        Ok(())
    }

    pub(super) async fn send_error(
        &mut self,
        severity: Severity,
        err: &SessionError,
    ) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        backend::error_response(
            &mut out,
            severity,
            err.sqlstate(),
            &err.to_string(),
            err.hint(),
        );
        self.client.write_all(&out).await
    }
}

/// What ended a wait with a server held.
enum Woke {
    /// The client: its socket is readable, or bytes were read.
    Client(Arrived),
    /// The server spoke (and was passed on), or shutdown moved: look again.
    Other,
    /// The server ended the session after telling the client why.
    ServerGone,
}

/// The kind of the first buffered message, as far as lending a server goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    Simple,
    Extended,
    LoneSync,
    /// CopyData, CopyDone, CopyFail or Flush with no server held.
    Stray,
    Terminate,
}

fn classify_first(buf: &[u8], max: usize) -> Result<Option<Incoming>, SessionError> {
    let kind = |msg: &FrontendMessage<'_>| match msg {
        FrontendMessage::Terminate => Incoming::Terminate,
        FrontendMessage::Sync => Incoming::LoneSync,
        // Ignored by PostgreSQL outside COPY (or, alone, with nothing to
        // flush): no reason to lend a server.
        FrontendMessage::CopyData
        | FrontendMessage::CopyDone
        | FrontendMessage::CopyFail
        | FrontendMessage::Flush => Incoming::Stray,
        m if m.is_extended() => Incoming::Extended,
        _ => Incoming::Simple,
    };
    if let Some((msg, _)) = peek_message(buf, max)? {
        return Ok(Some(kind(&msg)));
    }
    // A large message is lent a server on its head alone (it streams).
    Ok(peek_stream_head(buf, max)?.map(|h| kind(&h.msg)))
}
