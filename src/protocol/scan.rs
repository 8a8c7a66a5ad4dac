//! Incremental scanner over the server -> client byte stream.
//!
//! The relay forwards server bytes as they arrive, without re-framing. The
//! scanner walks frame boundaries and asks the caller, once per frame, what
//! to do with it: forward it, or drop it (a response to a message pglittle
//! itself injected), optionally after inserting messages of its own (a
//! ParseComplete for a Parse it answered locally). Only the few message kinds
//! the pooler must read whole (ReadyForQuery, ParameterStatus, ErrorResponse)
//! are held back until complete, so a large DataRow or COPY stream passes
//! through in chunks.

use super::{frame::peek_header, read_cstr, Lsn, ProtocolError, TxStatus};

/// The kind of one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    ParseComplete,
    BindComplete,
    CloseComplete,
    ParameterDescription,
    RowDescription,
    NoData,
    DataRow,
    CommandComplete,
    EmptyQuery,
    PortalSuspended,
    ReadyForQuery,
    Error,
    /// NoticeResponse, ParameterStatus, NotificationResponse: may arrive at
    /// any time and answer no particular request.
    Async,
    CopyData,
    /// CopyInResponse: the server now reads COPY data and ignores Sync.
    CopyIn,
    Other,
}

fn classify(tag: u8) -> BackendKind {
    match tag {
        b'1' => BackendKind::ParseComplete,
        b'2' => BackendKind::BindComplete,
        b'3' => BackendKind::CloseComplete,
        b't' => BackendKind::ParameterDescription,
        b'T' => BackendKind::RowDescription,
        b'n' => BackendKind::NoData,
        b'D' => BackendKind::DataRow,
        b'C' => BackendKind::CommandComplete,
        b'I' => BackendKind::EmptyQuery,
        b's' => BackendKind::PortalSuspended,
        b'Z' => BackendKind::ReadyForQuery,
        b'E' => BackendKind::Error,
        b'N' | b'S' | b'A' => BackendKind::Async,
        b'd' => BackendKind::CopyData,
        b'G' => BackendKind::CopyIn,
        _ => BackendKind::Other,
    }
}

/// What the pooler learns from a message it reads whole.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum BackendEvent {
    /// End of a query cycle, with the transaction status: b'I', b'T' or b'E'.
    ReadyForQuery(TxStatus),
    ParameterStatus {
        name: String,
        value: String,
    },
    /// An ErrorResponse; `fatal` when the server will close the connection.
    Error {
        code: [u8; 5],
        fatal: bool,
    },
    /// A DataRow of one column holding a WAL position as text; only while
    /// [`BackendScanner::read_lsn_rows`] is set.
    LsnRow(Lsn),
}

/// One frame as the caller sees it.
#[derive(Debug)]
pub struct FrameHead {
    pub kind: BackendKind,
    pub event: Option<BackendEvent>,
}

/// A piece of the bytes to send on to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// `buf[start..end]` of the scanned buffer.
    Range(usize, usize),
    /// A message pglittle makes up (see the constants below).
    Static(&'static [u8]),
}

/// ParseComplete, for a Parse pglittle answered itself.
pub const PARSE_COMPLETE: &[u8] = b"1\0\0\0\x04";
/// CloseComplete, for a Close pglittle answered itself.
pub const CLOSE_COMPLETE: &[u8] = b"3\0\0\0\x04";

#[derive(Debug, Default)]
pub struct BackendScanner {
    /// Bytes of the current pass-through frame not yet seen.
    skip: usize,
    /// Whether that frame is being forwarded or dropped.
    skip_forward: bool,
    /// Read small DataRows whole too, for [`BackendEvent::LsnRow`].
    pub read_lsn_rows: bool,
}

/// Frames larger than this are never held back for inspection.
const MAX_INSPECTED: usize = 16 << 20;
/// A DataRow of one WAL position: the header, the column count and length,
/// and at most 17 bytes of text.
const MAX_LSN_ROW: usize = 5 + 2 + 4 + 17;

fn push_range(out: &mut Vec<Segment>, start: usize, end: usize) {
    if let Some(Segment::Range(_, e)) = out.last_mut() {
        if *e == start {
            *e = end;
            return;
        }
    }
    out.push(Segment::Range(start, end));
}

impl BackendScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the scanner sits on a frame boundary (nothing half-forwarded).
    pub fn at_boundary(&self) -> bool {
        self.skip == 0
    }

    /// Scans `buf` (bytes not yet handled). For each new frame, `decide`
    /// may append segments of its own to `out` and returns whether the
    /// frame is forwarded. Returns how many bytes of `buf` were consumed;
    /// `out` then describes what to send on.
    pub fn scan(
        &mut self,
        buf: &[u8],
        out: &mut Vec<Segment>,
        mut decide: impl FnMut(FrameHead, &mut Vec<Segment>) -> bool,
    ) -> Result<usize, ProtocolError> {
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() - pos);
                if self.skip_forward && n > 0 {
                    push_range(out, pos, pos + n);
                }
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
            let inspect = matches!(tag, b'Z' | b'S' | b'E') && total <= MAX_INSPECTED;
            let row = self.read_lsn_rows && tag == b'D' && total <= MAX_LSN_ROW;
            if (inspect || row) && rest.len() < total {
                return Ok(pos);
            }
            let event = if inspect {
                Some(inspect_body(tag, &rest[5..total])?)
            } else if row {
                lsn_row(&rest[5..total]).map(BackendEvent::LsnRow)
            } else {
                None
            };
            let forward = decide(
                FrameHead {
                    kind: classify(tag),
                    event,
                },
                out,
            );
            self.skip = total;
            self.skip_forward = forward;
        }
    }
}

fn inspect_body(tag: u8, body: &[u8]) -> Result<BackendEvent, ProtocolError> {
    match tag {
        b'Z' => {
            let status = body.first().and_then(|&b| TxStatus::from_byte(b));
            let status = status.ok_or(ProtocolError::Malformed {
                what: "ReadyForQuery",
            })?;
            Ok(BackendEvent::ReadyForQuery(status))
        }
        b'S' => {
            let bad = || ProtocolError::Malformed {
                what: "ParameterStatus",
            };
            let (name, pos) = read_cstr(body, 0).ok_or_else(bad)?;
            let (value, _) = read_cstr(body, pos).ok_or_else(bad)?;
            Ok(BackendEvent::ParameterStatus {
                name: String::from_utf8_lossy(name).into_owned(),
                value: String::from_utf8_lossy(value).into_owned(),
            })
        }
        _ => Ok(error_fields(body)),
    }
}

/// The WAL position in a DataRow body of one non-null text column.
fn lsn_row(body: &[u8]) -> Option<Lsn> {
    let (count, rest) = body.split_first_chunk::<2>()?;
    let (len, text) = rest.split_first_chunk::<4>()?;
    let ok = i16::from_be_bytes(*count) == 1 && i32::from_be_bytes(*len) == text.len() as i32;
    ok.then(|| Lsn::from_text(text)).flatten()
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
        backend::ready_for_query(&mut b, TxStatus::InBlock);
        b.to_vec()
    }

    /// Scans `input` in chunks of `step`, forwarding everything; returns the
    /// frames seen and the bytes forwarded.
    fn run(input: &[u8], step: usize, drop: Option<BackendKind>) -> (Vec<FrameHeadLite>, Vec<u8>) {
        let mut sc = BackendScanner::new();
        let mut heads = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut sent = Vec::new();
        for chunk in input.chunks(step) {
            pending.extend_from_slice(chunk);
            let mut out = Vec::new();
            let n = sc
                .scan(&pending, &mut out, |h, _| {
                    let keep = Some(h.kind) != drop;
                    heads.push((h.kind, h.event));
                    keep
                })
                .unwrap();
            for seg in out {
                match seg {
                    Segment::Range(a, b) => sent.extend_from_slice(&pending[a..b]),
                    Segment::Static(s) => sent.extend_from_slice(s),
                }
            }
            pending.drain(..n);
        }
        assert!(sc.at_boundary());
        (heads, sent)
    }

    type FrameHeadLite = (BackendKind, Option<BackendEvent>);

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        let all = stream();
        let (whole, sent) = run(&all, all.len(), None);
        assert_eq!(sent, all);
        assert_eq!(whole.len(), 6);
        assert_eq!(
            whole[3].1,
            Some(BackendEvent::ParameterStatus {
                name: "TimeZone".into(),
                value: "UTC".into()
            })
        );
        assert_eq!(
            whole[4].1,
            Some(BackendEvent::Error {
                code: *b"57P01",
                fatal: true
            })
        );
        assert_eq!(
            whole[5].1,
            Some(BackendEvent::ReadyForQuery(TxStatus::InBlock))
        );
        let (bytewise, sent) = run(&all, 1, None);
        assert_eq!(sent, all);
        assert_eq!(bytewise, whole);
    }

    #[test]
    fn dropped_frames_vanish_even_when_split() {
        let all = stream();
        let (_, sent) = run(&all, 7, Some(BackendKind::DataRow));
        assert_eq!(sent.len(), all.len() - (1000 + 4 + 2 + 5));
        assert_eq!(sent[0], b'T');
    }

    #[test]
    fn large_rows_pass_through_before_they_are_complete() {
        let all = stream();
        let mut sc = BackendScanner::new();
        let mut out = Vec::new();
        let n = sc.scan(&all[..120], &mut out, |_, _| true).unwrap();
        assert_eq!(n, 120);
        assert_eq!(out, vec![Segment::Range(0, 120)]);
        assert!(!sc.at_boundary());
    }

    #[test]
    fn garbage_length_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(BackendScanner::new()
            .scan(b"Z\0\0\0\x01I", &mut out, |_, _| true)
            .is_err());
        assert!(matches!(
            BackendScanner::new().scan(b"Z\0\0\0\x04", &mut out, |_, _| true),
            Err(ProtocolError::Malformed { .. })
        ));
    }
    #[test]
    fn wal_position_rows_are_read_only_when_asked() {
        let mut b = BytesMut::new();
        backend::data_row(&mut b, &[Some("16/B374D848")]);
        backend::data_row(&mut b, &[Some("16/B374D848"), Some("x")]);
        backend::data_row(&mut b, &[Some("hello")]);
        backend::data_row(&mut b, &[None]);
        backend::ready_for_query(&mut b, TxStatus::Idle);
        let events = |sc: &mut BackendScanner, input: &[u8]| {
            let mut evs = Vec::new();
            let n = sc
                .scan(input, &mut Vec::new(), |h, _| {
                    evs.push(h.event);
                    true
                })
                .unwrap();
            (n, evs)
        };
        let mut plain = BackendScanner::new();
        let (_, evs) = events(&mut plain, &b);
        assert!(evs[..4].iter().all(Option::is_none), "{evs:?}");
        let mut asked = BackendScanner::new();
        asked.read_lsn_rows = true;
        // Half a row is waited for, not passed through.
        let (n, evs) = events(&mut asked, &b[..10]);
        assert_eq!((n, evs.len()), (0, 0));
        let (_, evs) = events(&mut asked, &b);
        let lsn = "16/B374D848".parse().unwrap();
        assert_eq!(evs[0], Some(BackendEvent::LsnRow(lsn)));
        assert!(evs[1..4].iter().all(Option::is_none), "{evs:?}");
    }
}
