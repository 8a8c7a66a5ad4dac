//! Framing: `tag:u8 | len:i32 (includes itself) | body`. The same in both directions.

use bytes::{Bytes, BytesMut};

use super::ProtocolError;

/// Header size: one tag byte and a four-byte length.
pub const HEADER_LEN: usize = 5;

/// One complete message, holding the exact wire bytes (header included) so
/// that relaying it is a slice copy, never a re-encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// Parses the header at the start of `buf`: returns the tag and the total
/// frame length (header included), or `None` when fewer than five bytes are there.
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::BadLength(len.into()));
    }
    let total = len as usize + 1;
    if total > max_len {
        return Err(ProtocolError::TooLarge {
            len: total,
            max: max_len,
        });
    }
    Ok(Some((buf[0], total)))
}

/// Splits one complete frame off the front of `buf`. `Ok(None)` means "not
/// complete yet; read more". The size check runs on the header alone, so an
/// oversized message is refused before its body is ever buffered.
pub fn decode_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ProtocolError> {
    let Some((tag, total)) = peek_header(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        tag,
        bytes: buf.split_to(total).freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_frames_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x09abcd\0S\0\0"[..]);
        let f = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(f.body(), b"abcd\0");
        assert!(decode_frame(&mut buf, 1024).unwrap().is_none());
        buf.extend_from_slice(b"\0\x04");
        let f = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag, b'S');
        assert!(f.body().is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_oversized_and_negative_lengths_from_the_header_alone() {
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            decode_frame(&mut buf, 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(matches!(
            decode_frame(&mut buf, 1 << 20),
            Err(ProtocolError::BadLength(-1))
        ));
        let mut buf = BytesMut::from(&b"Q\0\0\0\x02"[..]);
        assert!(decode_frame(&mut buf, 1 << 20).is_err());
    }
}
