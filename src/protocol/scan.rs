//! Incremental scanner over the server -> client byte stream.
//!
//! The relay forwards server bytes as soon as they arrive, without
//! re-framing. The scanner walks frame boundaries and says how many of the
//! buffered bytes may be forwarded now; it holds back only the few message
//! kinds the pooler must read whole (ReadyForQuery, ParameterStatus,
//! ErrorResponse), so a large DataRow or COPY stream passes through in chunks.

use super::{frame::peek_header, read_cstr, ProtocolError};

/// What the session learns from the server stream.
#[derive(Debug, PartialEq, Eq)]
pub enum BackendEvent {
    /// End of a query cycle, with the transaction status: b'I', b'T' or b'E'.
    ReadyForQuery(u8),
    ParameterStatus {
        name: String,
        value: String,
    },
    /// An ErrorResponse; `fatal` when the server will close the connection.
    Error {
        code: [u8; 5],
        fatal: bool,
    },
}

#[derive(Debug, Default)]
pub struct BackendScanner {
    /// Bytes of the current pass-through frame not yet seen.
    skip: usize,
}

/// Frames larger than this are never held back for inspection.
const MAX_INSPECTED: usize = 16 << 20;

impl BackendScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the scanner sits on a frame boundary (nothing half-forwarded).
    pub fn at_boundary(&self) -> bool {
        self.skip == 0
    }

    /// Scans `buf` (bytes not yet forwarded); returns how many leading bytes
    /// can be forwarded now and appends what it learned to `events`.
    pub fn scan(
        &mut self,
        buf: &[u8],
        events: &mut Vec<BackendEvent>,
    ) -> Result<usize, ProtocolError> {
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() - pos);
                pos += n;
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(pos);
                }
            }
            let rest = &buf[pos..];
            let Some((tag, total)) = peek_header(rest, usize::MAX)? else {
                return Ok(pos);
            };
            if !matches!(tag, b'Z' | b'S' | b'E') || total > MAX_INSPECTED {
                self.skip = total;
                continue;
            }
            if rest.len() < total {
                return Ok(pos);
            }
            events.push(inspect(tag, &rest[5..total])?);
            pos += total;
        }
    }
}

fn inspect(tag: u8, body: &[u8]) -> Result<BackendEvent, ProtocolError> {
    match tag {
        b'Z' => {
            let status = *body.first().ok_or(ProtocolError::Malformed {
                what: "ReadyForQuery",
            })?;
            Ok(BackendEvent::ReadyForQuery(status))
        }
        b'S' => {
            let bad = ProtocolError::Malformed {
                what: "ParameterStatus",
            };
            let (name, pos) = read_cstr(body, 0).ok_or(bad)?;
            let (value, _) = read_cstr(body, pos).ok_or(ProtocolError::Malformed {
                what: "ParameterStatus",
            })?;
            Ok(BackendEvent::ParameterStatus {
                name: String::from_utf8_lossy(name).into_owned(),
                value: String::from_utf8_lossy(value).into_owned(),
            })
        }
        _ => Ok(error_fields(body)),
    }
}

/// Reads the SQLSTATE and severity out of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> BackendEvent {
    let mut code = *b"XX000";
    let mut fatal = false;
    let mut pos = 0;
    while let Some(&field) = body.get(pos) {
        if field == 0 {
            break;
        }
        let Some((value, next)) = read_cstr(body, pos + 1) else {
            break;
        };
        match field {
            b'C' if value.len() == 5 => code.copy_from_slice(value),
            b'V' => fatal = value == b"FATAL" || value == b"PANIC",
            _ => {}
        }
        pos = next;
    }
    BackendEvent::Error { code, fatal }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend;
    use bytes::BytesMut;

    fn stream() -> Vec<u8> {
        let mut b = BytesMut::new();
        backend::row_description(&mut b, &[("a", 25)]);
        backend::data_row(&mut b, &[Some(&"x".repeat(1000))]);
        backend::command_complete(&mut b, "SELECT 1");
        backend::parameter_status(&mut b, "TimeZone", "UTC");
        backend::error_response(&mut b, backend::Severity::Fatal, "57P01", "bye", None);
        backend::ready_for_query(&mut b, b'T');
        b.to_vec()
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        let all = stream();
        let mut whole = Vec::new();
        let n = BackendScanner::new().scan(&all, &mut whole).unwrap();
        assert_eq!(n, all.len());
        assert_eq!(
            whole,
            vec![
                BackendEvent::ParameterStatus {
                    name: "TimeZone".into(),
                    value: "UTC".into()
                },
                BackendEvent::Error {
                    code: *b"57P01",
                    fatal: true
                },
                BackendEvent::ReadyForQuery(b'T'),
            ]
        );
        // Feed one byte at a time, forwarding what the scanner allows.
        let mut sc = BackendScanner::new();
        let mut events = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut forwarded = 0;
        for &byte in &all {
            pending.push(byte);
            let n = sc.scan(&pending, &mut events).unwrap();
            forwarded += n;
            pending.drain(..n);
        }
        assert_eq!(forwarded, all.len());
        assert_eq!(events, whole);
        assert!(sc.at_boundary());
    }

    #[test]
    fn large_rows_pass_through_before_they_are_complete() {
        let all = stream();
        let mut sc = BackendScanner::new();
        let mut ev = Vec::new();
        // RowDescription + first 100 bytes of the DataRow: all forwardable.
        let n = sc.scan(&all[..120], &mut ev).unwrap();
        assert_eq!(n, 120);
        assert!(!sc.at_boundary());
    }

    #[test]
    fn garbage_length_is_an_error_not_a_panic() {
        let mut ev = Vec::new();
        assert!(BackendScanner::new()
            .scan(b"Z\0\0\0\x01I", &mut ev)
            .is_err());
        assert!(matches!(
            BackendScanner::new().scan(b"Z\0\0\0\x04", &mut ev),
            Err(ProtocolError::Malformed { .. })
        ));
    }
}
