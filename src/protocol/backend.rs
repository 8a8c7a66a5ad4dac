//! Encoders for the messages pglittle itself sends to clients (auth
//! requests, parameter status, errors, and the rows of its own answers).

use bytes::{BufMut, BytesMut};

/// Writes `tag`, a length placeholder, the body produced by `f`, then patches the length.
fn message(out: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    f(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

pub fn auth_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(0));
}

pub fn auth_cleartext(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(3));
}

pub fn auth_md5(out: &mut BytesMut, salt: [u8; 4]) {
    message(out, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

pub fn auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    message(out, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |b| {
        cstr(b, name.as_bytes());
        cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: super::TxStatus) {
    message(out, b'Z', |b| b.put_u8(status.byte()));
}

/// NegotiateProtocolVersion: we speak 3.0 and list the `_pq_.` options we ignored.
pub fn negotiate_protocol_version(out: &mut BytesMut, unrecognized: &[String]) {
    message(out, b'v', |b| {
        b.put_i32(3 << 16);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            cstr(b, o.as_bytes());
        }
    });
}

/// Severity of an error or notice pglittle itself raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

/// ErrorResponse with the fields a driver shows: severity, SQLSTATE, message, and an optional hint.
pub fn error_response(
    out: &mut BytesMut,
    severity: Severity,
    code: &str,
    msg: &str,
    hint: Option<&str>,
) {
    let sev = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    message(out, b'E', |b| {
        b.put_u8(b'S');
        cstr(b, sev.as_bytes());
        b.put_u8(b'V');
        cstr(b, sev.as_bytes());
        b.put_u8(b'C');
        cstr(b, code.as_bytes());
        b.put_u8(b'M');
        cstr(b, msg.as_bytes());
        if let Some(h) = hint {
            b.put_u8(b'H');
            cstr(b, h.as_bytes());
        }
        b.put_u8(0);
    });
}

/// RowDescription for text columns; `oids` gives each column's type.
pub fn row_description(out: &mut BytesMut, columns: &[(&str, u32)]) {
    message(out, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (name, oid) in columns {
            cstr(b, name.as_bytes());
            b.put_i32(0);
            b.put_i16(0);
            b.put_u32(*oid);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
    });
}

pub fn data_row(out: &mut BytesMut, values: &[Option<&str>]) {
    message(out, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(s) => {
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', |b| cstr(b, tag.as_bytes()));
}

pub fn empty_query_response(out: &mut BytesMut) {
    message(out, b'I', |_| {});
}

/// The single byte answering SSLRequest / GSSENCRequest: not supported (yet).
pub const SSL_NOT_SUPPORTED: u8 = b'N';

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::backend::Message;

    #[test]
    fn encoded_messages_parse_with_postgres_protocol() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "53300", "too many", Some("wait"));
        ready_for_query(&mut b, crate::protocol::TxStatus::Idle);
        parameter_status(&mut b, "TimeZone", "UTC");
        backend_key_data(&mut b, 7, 8);
        match Message::parse(&mut b).unwrap().unwrap() {
            Message::ErrorResponse(e) => {
                use fallible_iterator_shim::collect_codes;
                assert_eq!(collect_codes(e), vec![("C", "53300".to_string())]);
            }
            _ => panic!("not an error"),
        }
        assert!(matches!(
            Message::parse(&mut b).unwrap().unwrap(),
            Message::ReadyForQuery(_)
        ));
        match Message::parse(&mut b).unwrap().unwrap() {
            Message::ParameterStatus(p) => {
                assert_eq!(p.name().unwrap(), "TimeZone");
                assert_eq!(p.value().unwrap(), "UTC");
            }
            _ => panic!("not a ParameterStatus"),
        }
        match Message::parse(&mut b).unwrap().unwrap() {
            Message::BackendKeyData(k) => assert_eq!((k.process_id(), k.secret_key()), (7, 8)),
            _ => panic!("not a BackendKeyData"),
        }
    }

    mod fallible_iterator_shim {
        use fallible_iterator::FallibleIterator;
        use postgres_protocol::message::backend::ErrorResponseBody;
        pub fn collect_codes(e: ErrorResponseBody) -> Vec<(&'static str, String)> {
            let mut out = Vec::new();
            let mut it = e.fields();
            while let Ok(Some(f)) = it.next() {
                if f.type_() == b'C' {
                    out.push(("C", String::from_utf8_lossy(f.value_bytes()).into_owned()));
                }
            }
            out
        }
    }
}
