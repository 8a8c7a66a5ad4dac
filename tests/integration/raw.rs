//! A wire-protocol client for tests that must send exactly the messages a
//! driver would (unnamed statements split across round trips, fastpath
//! calls, non-UTF-8 text), logging in as a `trust` user.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// One backend message: its tag and body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// The SQLSTATE of an ErrorResponse.
    pub fn code(&self) -> Option<String> {
        (self.tag == b'E')
            .then(|| field(&self.body, b'C'))
            .flatten()
    }

    /// The first column of a DataRow, as bytes.
    pub fn first_column(&self) -> Option<Vec<u8>> {
        if self.tag != b'D' || self.body.len() < 6 {
            return None;
        }
        let len = i32::from_be_bytes(self.body[2..6].try_into().unwrap());
        (len >= 0).then(|| self.body[6..6 + len as usize].to_vec())
    }
}

fn field(body: &[u8], want: u8) -> Option<String> {
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let end = i + 1 + body[i + 1..].iter().position(|&b| b == 0)?;
        if body[i] == want {
            return Some(String::from_utf8_lossy(&body[i + 1..end]).into_owned());
        }
        i = end + 1;
    }
    None
}

pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

pub fn query(sql: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    frame(b'Q', &b)
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name.as_bytes());
    cstr(&mut b, sql.as_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &b)
}

/// Bind with text parameters and text results.
pub fn bind(portal: &str, statement: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal.as_bytes());
    cstr(&mut b, statement.as_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'B', &b)
}

pub fn describe_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name.as_bytes());
    frame(b'D', &b)
}

pub fn execute() -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, b"");
    b.extend_from_slice(&0i32.to_be_bytes());
    frame(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

/// A fastpath FunctionCall with text arguments and a text result.
pub fn function_call(oid: i32, args: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&oid.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(args.len() as i16).to_be_bytes());
    for a in args {
        b.extend_from_slice(&(a.len() as i32).to_be_bytes());
        b.extend_from_slice(a);
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    frame(b'F', &b)
}

impl Raw {
    /// Logs in to pglittle as `user` (a trust user) with extra startup parameters.
    pub async fn connect(port: u16, user: &str, extra: &[(&str, &str)]) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut params = vec![("user", user), ("database", "app")];
        params.extend_from_slice(extra);
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        raw.send(&startup_packet(&params)).await;
        let msgs = raw.until_ready().await;
        assert!(msgs.iter().all(|m| m.tag != b'E'), "login failed: {msgs:?}");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one message (failing the test after 20 s of silence).
    pub async fn next(&mut self) -> Msg {
        self.next_within(Duration::from_secs(20))
            .await
            .expect("a message from pglittle within 20 s")
    }

    /// Reads one message, or `None` if none comes within `limit` (or EOF).
    pub async fn next_within(&mut self, limit: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let body = self.buf[5..1 + len].to_vec();
                    let tag = self.buf[0];
                    self.buf.drain(..1 + len);
                    return Some(Msg { tag, body });
                }
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Sends a simple query and returns its messages up to ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Vec<Msg> {
        self.send(&query(sql.as_bytes())).await;
        self.until_ready().await
    }
}

/// The first column of the first DataRow, as text.
pub fn first_value(msgs: &[Msg]) -> Option<String> {
    msgs.iter()
        .find_map(Msg::first_column)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The SQLSTATE of the first ErrorResponse.
pub fn first_error(msgs: &[Msg]) -> Option<String> {
    msgs.iter().find_map(Msg::code)
}
