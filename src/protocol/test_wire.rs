//! Wire messages for the session's unit tests (relay and books).

use bytes::BytesMut;

use crate::protocol::frame::peek_header;
use crate::protocol::frontend;

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::encode_parse(&mut b, name.as_bytes(), sql.as_bytes(), b"\0\0");
    b.to_vec()
}

/// Bind of `statement` to the unnamed portal; `rest` is what follows the
/// names (formats, values, result formats).
pub fn bind(statement: &str, rest: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    frontend::encode_bind(&mut b, b"", statement.as_bytes(), rest);
    b.to_vec()
}

/// Bind's rest for no parameters and text results.
pub const NO_PARAMS: &[u8] = &[0, 0, 0, 0, 0, 0];

/// Bind's rest for one text parameter of `len` bytes.
pub fn one_param(len: usize) -> Vec<u8> {
    let mut r = vec![0, 0, 0, 1];
    r.extend_from_slice(&(len as i32).to_be_bytes());
    r.extend(std::iter::repeat_n(b'x', len));
    r.extend_from_slice(&[0, 0]);
    r
}

pub fn execute() -> Vec<u8> {
    msg(b'E', b"\0\0\0\0\0")
}

pub fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

/// The tags of the complete messages in `bytes` (either direction).
pub fn tags(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((tag, len))) = peek_header(&bytes[at..], 1 << 30) {
        if bytes.len() < at + len {
            break;
        }
        out.push(tag);
        at += len;
    }
    out
}
