//! Messages a client sends after startup. Decoded only as far as the pooler
//! needs: what kind of message it is, and the SQL text where there is one.

use super::{frame::Frame, read_cstr, read_i32, ProtocolError};

/// What the session needs to know about one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    /// Simple query; produces exactly one ReadyForQuery.
    Query {
        sql: &'a [u8],
    },
    /// Extended protocol Parse. `types` is the raw parameter-type section
    /// (count and OIDs), kept whole so the statement can be re-encoded.
    Parse {
        name: &'a [u8],
        sql: &'a [u8],
        types: &'a [u8],
    },
    /// Bind: the statement it binds, and everything after the statement
    /// name (formats, values, result formats), kept whole for re-encoding.
    Bind {
        portal: &'a [u8],
        statement: &'a [u8],
        rest: &'a [u8],
    },
    Describe(Target<'a>),
    Execute,
    Close(Target<'a>),
    /// Ends an extended-protocol batch; produces exactly one ReadyForQuery.
    Sync,
    Flush,
    /// Fastpath function call; produces exactly one ReadyForQuery.
    FunctionCall,
    CopyData,
    CopyDone,
    CopyFail,
    Terminate,
    /// Password, SASLInitialResponse or SASLResponse (context decides which).
    Password,
}

impl<'a> FrontendMessage<'a> {
    pub fn parse(frame: &'a Frame) -> Result<Self, ProtocolError> {
        Self::parse_parts(frame.tag, frame.body())
    }

    /// Parses a message given its tag and body (the bytes after the header).
    pub fn parse_parts(tag: u8, body: &'a [u8]) -> Result<Self, ProtocolError> {
        Ok(match tag {
            b'Q' => {
                let (sql, _) =
                    read_cstr(body, 0).ok_or(ProtocolError::Malformed { what: "Query" })?;
                FrontendMessage::Query { sql }
            }
            b'P' => {
                let bad = || ProtocolError::Malformed { what: "Parse" };
                let (name, pos) = read_cstr(body, 0).ok_or_else(bad)?;
                let (sql, pos) = read_cstr(body, pos).ok_or_else(bad)?;
                FrontendMessage::Parse {
                    name,
                    sql,
                    types: &body[pos..],
                }
            }
            b'B' => {
                let bad = || ProtocolError::Malformed { what: "Bind" };
                let (portal, pos) = read_cstr(body, 0).ok_or_else(bad)?;
                let (statement, pos) = read_cstr(body, pos).ok_or_else(bad)?;
                FrontendMessage::Bind {
                    portal,
                    statement,
                    rest: &body[pos..],
                }
            }
            b'D' => FrontendMessage::Describe(Target::parse(body, "Describe")?),
            b'E' => FrontendMessage::Execute,
            b'C' => FrontendMessage::Close(Target::parse(body, "Close")?),
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'F' => FrontendMessage::FunctionCall,
            b'd' => FrontendMessage::CopyData,
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail,
            b'X' => FrontendMessage::Terminate,
            b'p' => FrontendMessage::Password,
            other => return Err(ProtocolError::Unexpected(other as char, "from a client")),
        })
    }

    /// True for messages after which the server sends one ReadyForQuery.
    pub fn ends_batch(&self) -> bool {
        matches!(
            self,
            FrontendMessage::Query { .. } | FrontendMessage::Sync | FrontendMessage::FunctionCall
        )
    }

    /// True for messages that belong to the extended-query protocol, whose
    /// errors make the server skip ahead to the next Sync.
    pub fn is_extended(&self) -> bool {
        matches!(
            self,
            FrontendMessage::Parse { .. }
                | FrontendMessage::Bind { .. }
                | FrontendMessage::Describe(_)
                | FrontendMessage::Execute
                | FrontendMessage::Close(_)
                | FrontendMessage::Flush
        )
    }
}

/// What a Describe or Close names: a prepared statement or a portal.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Target<'a> {
    Statement(&'a [u8]),
    Portal(&'a [u8]),
}

impl<'a> Target<'a> {
    fn parse(body: &'a [u8], what: &'static str) -> Result<Self, ProtocolError> {
        let (name, _) = read_cstr(body, 1).ok_or(ProtocolError::Malformed { what })?;
        match body.first() {
            Some(b'S') => Ok(Target::Statement(name)),
            Some(b'P') => Ok(Target::Portal(name)),
            _ => Err(ProtocolError::Malformed { what }),
        }
    }
}

/// Appends a message: tag, length, then the parts in order.
fn put_message(out: &mut bytes::BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&(len as i32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Parse of `sql` under `name`, with the raw parameter-type section.
pub fn encode_parse(out: &mut bytes::BytesMut, name: &[u8], sql: &[u8], types: &[u8]) {
    put_message(out, b'P', &[name, b"\0", sql, b"\0", types]);
}

/// Bind with the statement name replaced.
pub fn encode_bind(out: &mut bytes::BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    put_message(out, b'B', &[portal, b"\0", statement, b"\0", rest]);
}

/// Describe of a prepared statement.
pub fn encode_describe_statement(out: &mut bytes::BytesMut, name: &[u8]) {
    put_message(out, b'D', &[b"S", name, b"\0"]);
}

/// Close of a prepared statement.
pub fn encode_close_statement(out: &mut bytes::BytesMut, name: &[u8]) {
    put_message(out, b'C', &[b"S", name, b"\0"]);
}

/// The first complete message in `buf`, without consuming it, and its length.
pub fn peek_message(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(FrontendMessage<'_>, usize)>, ProtocolError> {
    let Some((tag, total)) = super::frame::peek_header(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let msg = FrontendMessage::parse_parts(tag, &buf[super::frame::HEADER_LEN..total])?;
    Ok(Some((msg, total)))
}

/// Messages at least this large that may pass through in pieces (see
/// `peek_stream_head`) are never buffered whole.
pub const STREAM_MIN: usize = 256 * 1024;

/// The head of a large message that is relayed in pieces: what the pooler
/// must read of it, then `total - head_len` bytes passed on untouched.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamHead<'a> {
    /// What the message is, with an empty `rest` for a Bind.
    pub msg: FrontendMessage<'a>,
    /// Bytes of the message the head covers (header and names).
    pub head_len: usize,
    /// The whole message's length, header included.
    pub total: usize,
}

/// For an incomplete message of at least `STREAM_MIN` bytes at the start of
/// `buf` whose kind can stream (Bind, whose parameters are opaque after its
/// two names; CopyData; FunctionCall), its head once that much is buffered.
/// Query and Parse are never streamed: their SQL is inspected.
pub fn peek_stream_head(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<StreamHead<'_>>, ProtocolError> {
    let Some((tag, total)) = super::frame::peek_header(buf, max_len)? else {
        return Ok(None);
    };
    if total < STREAM_MIN || buf.len() >= total {
        return Ok(None);
    }
    let body = &buf[super::frame::HEADER_LEN..];
    let (msg, head_len) = match tag {
        b'B' => {
            let Some((portal, pos)) = read_cstr(body, 0) else {
                return Ok(None);
            };
            let Some((statement, pos)) = read_cstr(body, pos) else {
                return Ok(None);
            };
            let msg = FrontendMessage::Bind {
                portal,
                statement,
                rest: &[],
            };
            (msg, super::frame::HEADER_LEN + pos)
        }
        b'd' => (FrontendMessage::CopyData, super::frame::HEADER_LEN),
        b'F' => (FrontendMessage::FunctionCall, super::frame::HEADER_LEN),
        _ => return Ok(None),
    };
    Ok(Some(StreamHead {
        msg,
        head_len,
        total,
    }))
}

/// Bind's header and names for a Bind whose `rest_len` bytes of
/// parameters follow untouched (a streamed Bind, see `peek_stream_head`).
pub fn encode_bind_head(
    out: &mut bytes::BytesMut,
    portal: &[u8],
    statement: &[u8],
    rest_len: usize,
) {
    let len = 4 + portal.len() + 1 + statement.len() + 1 + rest_len;
    out.extend_from_slice(b"B");
    out.extend_from_slice(&(len as i32).to_be_bytes());
    out.extend_from_slice(portal);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(statement);
    out.extend_from_slice(&[0]);
}

/// The tag of a password-family message, for the auth exchange.
pub const PASSWORD_TAG: u8 = b'p';

/// SASLInitialResponse: mechanism name, then the client-first-message.
pub fn parse_sasl_initial(frame: &Frame) -> Result<(&[u8], &[u8]), ProtocolError> {
    let bad = || ProtocolError::Malformed {
        what: "SASLInitialResponse",
    };
    if frame.tag != PASSWORD_TAG {
        return Err(ProtocolError::Unexpected(
            frame.tag as char,
            "during authentication",
        ));
    }
    let body = frame.body();
    let (mech, pos) = read_cstr(body, 0).ok_or_else(bad)?;
    let (len, pos) = read_i32(body, pos).ok_or_else(bad)?;
    let data = if len < 0 {
        &[][..]
    } else {
        body.get(pos..pos + len as usize).ok_or_else(bad)?
    };
    Ok((mech, data))
}

/// SASLResponse: the whole body is the mechanism's data.
pub fn parse_sasl_response(frame: &Frame) -> Result<&[u8], ProtocolError> {
    if frame.tag != PASSWORD_TAG {
        return Err(ProtocolError::Unexpected(
            frame.tag as char,
            "during authentication",
        ));
    }
    Ok(frame.body())
}

/// PasswordMessage: one NUL-terminated string (cleartext or md5 response).
pub fn parse_password(frame: &Frame) -> Result<&[u8], ProtocolError> {
    if frame.tag != PASSWORD_TAG {
        return Err(ProtocolError::Unexpected(
            frame.tag as char,
            "during authentication",
        ));
    }
    read_cstr(frame.body(), 0)
        .map(|(p, _)| p)
        .ok_or(ProtocolError::Malformed {
            what: "PasswordMessage",
        })
}

/// A Terminate message, to close a server connection politely.
pub fn terminate() -> &'static [u8] {
    b"X\0\0\0\x04"
}

/// Builds a simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    query_bytes(sql.as_bytes())
}

/// Builds a simple Query message from text in the client's encoding.
pub fn query_bytes(sql: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 6);
    out.push(b'Q');
    out.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    out.extend_from_slice(sql);
    out.push(0);
    out
}

/// A CancelRequest packet for a server's backend key.
pub fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16i32.to_be_bytes());
    out[4..8].copy_from_slice(&80_877_102i32.to_be_bytes());
    out[8..12].copy_from_slice(&pid.to_be_bytes());
    out[12..].copy_from_slice(&secret.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};

    fn frame(bytes: &[u8]) -> Frame {
        crate::protocol::decode_frame(&mut BytesMut::from(bytes), 1 << 20)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn large_binds_stream_after_their_names() {
        let mut full = BytesMut::new();
        let params = vec![7u8; STREAM_MIN];
        encode_bind(&mut full, b"p", b"stmt", &params);
        // Only the first few KiB arrived: the head is known.
        let head = peek_stream_head(&full[..4096], 1 << 30).unwrap().unwrap();
        assert_eq!(head.head_len, 5 + 2 + 5);
        assert_eq!(head.total, full.len());
        assert_eq!(
            head.msg,
            FrontendMessage::Bind {
                portal: b"p",
                statement: b"stmt",
                rest: &[]
            }
        );
        // Re-encoding the head with another name keeps the rest valid.
        let mut re = BytesMut::new();
        encode_bind_head(&mut re, b"p", b"other", params.len());
        re.extend_from_slice(&full[head.head_len..]);
        assert_eq!(
            peek_message(&re, 1 << 30).unwrap().map(|(m, _)| m),
            Some(FrontendMessage::Bind {
                portal: b"p",
                statement: b"other",
                rest: &params
            })
        );
        // Complete, small, not yet named, or not streamable: no head.
        assert_eq!(peek_stream_head(&full, 1 << 30).unwrap(), None);
        assert_eq!(peek_stream_head(&full[..7], 1 << 30).unwrap(), None);
        let mut q = BytesMut::from(&query("x")[..]);
        q[1..5].copy_from_slice(&(STREAM_MIN as i32 * 2).to_be_bytes());
        assert_eq!(peek_stream_head(&q, 1 << 30).unwrap(), None);
        // Over max_message_size is still an error.
        assert!(peek_stream_head(&full[..4096], 1024).is_err());
    }

    #[test]
    fn classifies_query_and_parse() {
        let q = Frame {
            tag: b'Q',
            bytes: Bytes::from(query("select 1")),
        };
        assert_eq!(
            FrontendMessage::parse(&q).unwrap(),
            FrontendMessage::Query { sql: b"select 1" }
        );
        let p = frame(b"P\0\0\0\x10s1\0select\0\0\0");
        assert_eq!(
            FrontendMessage::parse(&p).unwrap(),
            FrontendMessage::Parse {
                name: b"s1",
                sql: b"select",
                types: b"\0\0"
            }
        );
        assert!(FrontendMessage::parse(&frame(b"S\0\0\0\x04"))
            .unwrap()
            .ends_batch());
    }

    #[test]
    fn rejects_unknown_tags_and_truncated_bodies() {
        assert!(FrontendMessage::parse(&frame(b"Z\0\0\0\x04")).is_err());
        assert!(FrontendMessage::parse(&frame(b"Q\0\0\0\x05a")).is_err());
        assert!(FrontendMessage::parse(&frame(b"P\0\0\0\x06s1")).is_err());
        assert!(FrontendMessage::parse(&frame(b"D\0\0\0\x06Xa\0")).is_err());
        assert!(FrontendMessage::parse(&frame(b"B\0\0\0\x06p\0")).is_err());
    }

    #[test]
    fn re_encoded_messages_parse_back() {
        let mut out = bytes::BytesMut::new();
        encode_parse(&mut out, b"pgl_1", b"select $1", b"\0\x01\0\0\0\x17");
        encode_bind(&mut out, b"", b"pgl_1", b"\0\0\0\0\0\0");
        encode_describe_statement(&mut out, b"pgl_1");
        encode_close_statement(&mut out, b"pgl_1");
        let mut buf = BytesMut::from(&out[..]);
        let f = |b: &mut BytesMut| crate::protocol::decode_frame(b, 1 << 20).unwrap().unwrap();
        let p = f(&mut buf);
        assert_eq!(
            FrontendMessage::parse(&p).unwrap(),
            FrontendMessage::Parse {
                name: b"pgl_1",
                sql: b"select $1",
                types: b"\0\x01\0\0\0\x17"
            }
        );
        let b = f(&mut buf);
        assert_eq!(
            FrontendMessage::parse(&b).unwrap(),
            FrontendMessage::Bind {
                portal: b"",
                statement: b"pgl_1",
                rest: b"\0\0\0\0\0\0"
            }
        );
        let d = f(&mut buf);
        assert_eq!(
            FrontendMessage::parse(&d).unwrap(),
            FrontendMessage::Describe(Target::Statement(b"pgl_1"))
        );
        let c = f(&mut buf);
        assert_eq!(
            FrontendMessage::parse(&c).unwrap(),
            FrontendMessage::Close(Target::Statement(b"pgl_1"))
        );
    }

    #[test]
    fn parses_sasl_initial_response() {
        let f = frame(b"p\0\0\0\x1aSCRAM-SHA-256\0\0\0\0\x04abcd");
        let (m, d) = parse_sasl_initial(&f).unwrap();
        assert_eq!(m, b"SCRAM-SHA-256");
        assert_eq!(d, b"abcd");
        let f = frame(b"p\0\0\0\x1aSCRAM-SHA-256\0\0\0\0\x09abcd");
        assert!(parse_sasl_initial(&f).is_err());
    }
}
