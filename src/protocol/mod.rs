//! Sans-IO PostgreSQL wire protocol (v3.0).
//!
//! Everything that knows what a tag byte means lives here; the rest of the
//! crate sees typed values. Frames are kept as the exact bytes read from the
//! wire so the relay can forward them untouched, and only the few messages the
//! pooler acts on are decoded.

pub mod auth;
pub mod backend;
pub mod frame;
pub mod frontend;
pub mod lsn;
pub mod scan;
pub mod sqlstate;
pub mod startup;
#[cfg(test)]
pub mod test_wire;
pub mod tx_status;

pub use frame::{decode_frame, Frame};
pub use lsn::Lsn;
pub use tx_status::TxStatus;

/// A violation of the wire protocol by the peer. Always SQLSTATE 08P01.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("message of {len} bytes exceeds the limit of {max} bytes (max_message_size)")]
    TooLarge { len: usize, max: usize },
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("unexpected message type {0:?} {1}")]
    Unexpected(char, &'static str),
}

impl ProtocolError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ProtocolError::UnsupportedVersion { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            _ => sqlstate::PROTOCOL_VIOLATION,
        }
    }
}

/// Reads a NUL-terminated string starting at `pos`; returns it and the index after the NUL.
pub(crate) fn read_cstr(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    // memchr: a Query's whole SQL text is scanned for its terminator, on
    // every message, more than once.
    let end = memchr::memchr(0, rest)?;
    Some((&rest[..end], pos + end + 1))
}

pub(crate) fn read_i32(buf: &[u8], pos: usize) -> Option<(i32, usize)> {
    let b = buf.get(pos..pos + 4)?;
    Some((i32::from_be_bytes([b[0], b[1], b[2], b[3]]), pos + 4))
}
