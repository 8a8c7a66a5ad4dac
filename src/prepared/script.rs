//! Message sequences for the books, generated from bytes: what the
//! `rewriter` fuzz target and a proptest drive them with.

use super::client::ClientStatements;
use super::server::ServerStatements;
use super::Rewriter;
use crate::protocol::frontend::{self, peek_message, FrontendMessage};
use crate::protocol::scan::BackendKind as K;

const NAMES: [&str; 3] = ["", "a", "b"];
const SQL: [&str; 6] = [
    "select 1",
    "set work_mem = '1MB'",
    "prepare p as select 1",
    "execute p",
    "deallocate all",
    "begin",
];
const REPLIES: [K; 12] = [
    K::ParseComplete,
    K::BindComplete,
    K::CloseComplete,
    K::ParameterDescription,
    K::RowDescription,
    K::NoData,
    K::DataRow,
    K::CommandComplete,
    K::ReadyForQuery,
    K::Error,
    K::CopyIn,
    K::Async,
];

fn client_message(op: u8, arg: u8) -> Vec<u8> {
    let name = NAMES[usize::from(arg) % NAMES.len()];
    let sql = SQL[usize::from(arg / 3) % SQL.len()];
    let mut b = bytes::BytesMut::new();
    match op % 8 {
        0 => frontend::encode_parse(&mut b, name.as_bytes(), sql.as_bytes(), b"\0\0"),
        1 => frontend::encode_bind(&mut b, b"", name.as_bytes(), &[0, 0, 0, 0, 0, 0]),
        2 => frontend::encode_describe_statement(&mut b, name.as_bytes()),
        3 => frontend::encode_close_statement(&mut b, name.as_bytes()),
        4 => return b"E\0\0\0\x09\0\0\0\0\0".to_vec(),
        5 => return b"S\0\0\0\x04".to_vec(),
        6 => return frontend::query(sql),
        _ => return b"c\0\0\0\x04".to_vec(),
    }
    b.to_vec()
}

/// Runs `data` as a script of client messages and server replies (three
/// bytes a step) through fresh books. Panics if the books send anything
/// but whole frames; any other panic is a bug too. Shared by the fuzz
/// target `rewriter` and the proptest in `prepared::tests`.
pub fn run_script(data: &[u8]) {
    let mut client = ClientStatements::capped(4);
    let mut server = ServerStatements::new(2);
    let mut books = Rewriter::new(&mut client, &mut server, true);
    let mut out = bytes::BytesMut::new();
    for step in data.chunks(3) {
        let [kind, op, arg] = *step else {
            return;
        };
        if kind % 2 == 0 {
            let raw = client_message(op, arg);
            let Ok(Some((msg, _))) = peek_message(&raw, 1 << 20) else {
                continue;
            };
            let fx = match msg {
                FrontendMessage::Query { sql } | FrontendMessage::Parse { sql, .. } => {
                    crate::sql::inspect(sql)
                }
                _ => Default::default(),
            };
            out.clear();
            let _ = books.client_message(&msg, &raw, fx, arg % 5 == 0, &mut out);
            // What goes to the server is whole frames.
            let mut at = 0;
            while at < out.len() {
                match peek_message(&out[at..], 1 << 20) {
                    Ok(Some((_, len))) => at += len,
                    other => panic!("the books wrote a broken frame: {other:?}"),
                }
            }
            books.refused = None;
        } else {
            let reply = REPLIES[usize::from(op) % REPLIES.len()];
            let error = [b"42601", b"0A000", b"26000", b"25P02"][usize::from(arg) % 4];
            let mut segs = Vec::new();
            let err = (reply == K::Error).then_some(error);
            let _ = books.server_message(reply, err, arg % 2 == 0, &mut segs);
        }
    }
}
