//! The untagged packets a client may open a connection with:
//! StartupMessage, SSLRequest, GSSENCRequest and CancelRequest.

use bytes::{Buf, BytesMut};

use super::{read_cstr, ProtocolError};

/// PostgreSQL refuses startup packets longer than this; so do we.
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        /// Minor protocol version the client asked for (major is always 3).
        minor: u16,
        /// Parameters in the order sent. `_pq_.` protocol options included.
        params: Vec<(String, String)>,
    },
}

/// What the first packet of a connection is, from its first 8 bytes
/// (`None`: fewer are buffered), without consuming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    SslRequest,
    GssEncRequest,
    Cancel,
    /// A StartupMessage, or anything else (`decode_startup` judges it).
    Other,
}

pub fn peek_opening(buf: &[u8]) -> Option<Opening> {
    let head = buf.get(..8)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    Some(match (len, code) {
        (8, SSL_REQUEST) => Opening::SslRequest,
        (8, GSSENC_REQUEST) => Opening::GssEncRequest,
        (_, CANCEL_REQUEST) => Opening::Cancel,
        _ => Opening::Other,
    })
}

/// The first byte of a TLS handshake record: a connection that opens with
/// it is PostgreSQL 17's direct TLS (no SSLRequest first).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Splits one startup-phase packet off `buf`; `Ok(None)` means read more.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(ProtocolError::BadLength(len.into()));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_u32();
    let packet = parse_body(code, &packet)?;
    Ok(Some(packet))
}

fn parse_body(code: u32, body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            // Protocol 3.2 allows longer keys; we only ever issue 4-byte secrets.
            if body.len() < 8 {
                return Err(ProtocolError::Malformed {
                    what: "CancelRequest",
                });
            }
            let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            Ok(StartupPacket::Cancel { pid, secret })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedVersion { major, minor });
            }
            Ok(StartupPacket::Startup {
                minor,
                params: parse_params(body)?,
            })
        }
    }
}

fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let bad = || ProtocolError::Malformed {
        what: "StartupMessage",
    };
    let mut params = Vec::new();
    let mut pos = 0;
    loop {
        let (name, next) = read_cstr(body, pos).ok_or_else(bad)?;
        if name.is_empty() {
            return Ok(params);
        }
        let (value, next) = read_cstr(body, next).ok_or_else(bad)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
        let value = String::from_utf8(value.to_vec()).map_err(|_| bad())?;
        params.push((name, value));
        pos = next;
    }
}

/// Splits a libpq `options` value into `-c name=value` / `--name=value`
/// settings. Backslash escapes a space, as in PostgreSQL.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
                .ok_or_else(|| "\"-c\" without a setting".to_string())?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_string()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_string()
        } else {
            return Err(format!("unsupported startup option \"{w}\""));
        };
        let (k, v) = setting
            .split_once('=')
            .ok_or_else(|| format!("option \"{setting}\" has no value"))?;
        out.push((k.replace('-', "_").to_ascii_lowercase(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_packet_is_told_from_its_first_eight_bytes() {
        let head = |len: u32, code: u32| [len.to_be_bytes(), code.to_be_bytes()].concat();
        assert_eq!(
            peek_opening(&head(8, SSL_REQUEST)),
            Some(Opening::SslRequest)
        );
        assert_eq!(
            peek_opening(&head(8, GSSENC_REQUEST)),
            Some(Opening::GssEncRequest)
        );
        assert_eq!(
            peek_opening(&head(16, CANCEL_REQUEST)),
            Some(Opening::Cancel)
        );
        assert_eq!(peek_opening(&head(40, 196_608)), Some(Opening::Other));
        // An SSLRequest code in a longer packet is not an SSLRequest.
        assert_eq!(peek_opening(&head(12, SSL_REQUEST)), Some(Opening::Other));
        assert_eq!(peek_opening(&head(8, SSL_REQUEST)[..7]), None);
    }
    use bytes::BufMut;

    fn packet(code: u32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(8 + body.len() as i32);
        b.put_u32(code);
        b.put_slice(body);
        b
    }

    #[test]
    fn decodes_startup_with_params() {
        let mut b = packet(196_608, b"user\0app\0database\0db\0\0");
        let p = decode_startup(&mut b).unwrap().unwrap();
        assert_eq!(
            p,
            StartupPacket::Startup {
                minor: 0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ]
            }
        );
    }

    #[test]
    fn decodes_ssl_and_cancel() {
        assert_eq!(
            decode_startup(&mut packet(SSL_REQUEST, b"")).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        let c = decode_startup(&mut packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9]))
            .unwrap()
            .unwrap();
        assert_eq!(c, StartupPacket::Cancel { pid: 7, secret: 9 });
    }

    #[test]
    fn rejects_bad_versions_lengths_and_garbage() {
        assert!(matches!(
            decode_startup(&mut packet(2 << 16, b"")),
            Err(ProtocolError::UnsupportedVersion { major: 2, .. })
        ));
        let mut huge = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0][..]);
        assert!(decode_startup(&mut huge).is_err());
        assert!(decode_startup(&mut packet(196_608, b"user\0app")).is_err());
        let mut partial = BytesMut::from(&[0, 0, 0, 20, 0, 3][..]);
        assert_eq!(decode_startup(&mut partial).unwrap(), None);
    }

    #[test]
    fn parses_libpq_options() {
        let o = parse_options("-c search_path=a,b --statement-timeout=5s -cwork_mem=1MB").unwrap();
        assert_eq!(
            o,
            vec![
                ("search_path".into(), "a,b".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "1MB".into())
            ]
        );
        assert_eq!(
            parse_options(r"-c application_name=a\ b").unwrap(),
            vec![("application_name".into(), "a b".into())]
        );
        assert!(parse_options("-x").is_err());
    }
}
