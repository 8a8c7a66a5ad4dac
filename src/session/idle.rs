//! A client that keeps its server between requests (session mode, or a
//! pinned transaction-mode client) still hears what the server says on its
//! own while the client is idle: notifications, notices, parameter
//! changes, and a FATAL such as an administrator's shutdown.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::Session;
use crate::error::SessionError;
use crate::protocol::frame::{peek_header, HEADER_LEN};
use crate::protocol::read_cstr;

/// A message an idle server sends is small; one this large means trouble.
const MAX_CHATTER: usize = 1 << 20;

/// What the held server's bytes while idle amount to.
#[derive(Debug, PartialEq, Eq)]
enum Chatter {
    /// Messages to pass on; the server goes on.
    Forward,
    /// An ErrorResponse (the server is ending the session), passed on.
    Fatal,
    /// Something no idle server sends: the connection cannot be trusted.
    Confused,
}

/// Pure: takes the complete messages off `buf`, appends what the client
/// must see to `out`, and reports ParameterStatus changes to `param`.
fn take_chatter(
    buf: &mut BytesMut,
    out: &mut BytesMut,
    mut param: impl FnMut(&str, &str),
) -> Chatter {
    loop {
        let (tag, total) = match peek_header(buf, MAX_CHATTER) {
            Ok(Some(h)) if buf.len() >= h.1 => h,
            Ok(_) => break,
            Err(_) => return Chatter::Confused,
        };
        let fatal = match tag {
            b'A' | b'N' => false,
            b'E' => true,
            b'S' => {
                let body = &buf[HEADER_LEN..total];
                let name = read_cstr(body, 0);
                let value = name.and_then(|(_, at)| read_cstr(body, at));
                if let (Some((n, _)), Some((v, _))) = (name, value) {
                    param(&String::from_utf8_lossy(n), &String::from_utf8_lossy(v));
                }
                false
            }
            _ => return Chatter::Confused,
        };
        out.extend_from_slice(&buf[..total]);
        buf.advance(total);
        if fatal {
            return Chatter::Fatal;
        }
    }
    Chatter::Forward
}

impl Session {
    /// The held server became readable while the client is idle: passes on
    /// what it said. `Ok(false)` when the server is gone after telling the
    /// client why (the session ends quietly); an error when it vanished
    /// without a word.
    pub(super) async fn relay_server_chatter(&mut self) -> Result<bool, SessionError> {
        let Session {
            lease,
            overrides,
            defaults,
            client,
            ..
        } = self;
        let Some(held) = lease.as_mut() else {
            return Ok(true);
        };
        let conn = held.conn();
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(4096);
        }
        let eof = match conn.stream.try_read_buf(&mut conn.buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(_) => true,
        };
        let mut out = BytesMut::new();
        let server_params = &mut conn.params;
        let chatter = take_chatter(&mut conn.buf, &mut out, |name, value| {
            overrides.set_override(defaults, name, value);
            server_params.set(name, value);
        });
        if !out.is_empty() {
            client.write_all(&out).await?;
        }
        match (chatter, eof) {
            (Chatter::Forward, false) => Ok(true),
            (Chatter::Fatal, _) => {
                self.drop_held_server();
                Ok(false)
            }
            _ => {
                self.drop_held_server();
                Err(SessionError::ServerLost)
            }
        }
    }

    fn drop_held_server(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.release(lease, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn notifications_notices_and_parameters_pass_whole() {
        let notify = msg(b'A', b"\0\0\0\x07chan\0hi\0");
        let status = msg(b'S', b"TimeZone\0UTC\0");
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&notify);
        buf.extend_from_slice(&status);
        buf.extend_from_slice(&notify[..3]); // half a message stays
        let mut out = BytesMut::new();
        let mut seen = Vec::new();
        let c = take_chatter(&mut buf, &mut out, |n, v| {
            seen.push((n.to_string(), v.to_string()))
        });
        assert_eq!(c, Chatter::Forward);
        assert_eq!(out.len(), notify.len() + status.len());
        assert_eq!(buf.len(), 3);
        assert_eq!(seen, vec![("TimeZone".to_string(), "UTC".to_string())]);
    }

    #[test]
    fn a_fatal_ends_and_anything_else_confuses() {
        let mut buf = BytesMut::from(&msg(b'E', b"SFATAL\0C57P01\0\0")[..]);
        let mut out = BytesMut::new();
        assert_eq!(take_chatter(&mut buf, &mut out, |_, _| {}), Chatter::Fatal);
        assert!(!out.is_empty());
        let mut buf = BytesMut::from(&msg(b'D', b"\0\0")[..]);
        assert_eq!(
            take_chatter(&mut buf, &mut BytesMut::new(), |_, _| {}),
            Chatter::Confused
        );
        let mut buf = BytesMut::from(&b"A\xff\xff\xff\xff"[..]);
        assert_eq!(
            take_chatter(&mut buf, &mut BytesMut::new(), |_, _| {}),
            Chatter::Confused
        );
    }
}
