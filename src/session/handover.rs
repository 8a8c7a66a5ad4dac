//! Rolling restart, the session's part: an idle client of the old process
//! is written out (its socket and what pglittle keeps of its session), and
//! the new process rebuilds the session from it and goes on serving the
//! same socket. The client sees nothing.
//!
//! Only a client that holds no server and has no bytes half read can move,
//! over plain TCP or TLS 1.3 (its record keys move with it and the new
//! process goes on with `tls::records`); the others (a held server, TLS
//! 1.2) stay on the old process until they leave or the drain times out
//! (`Session::leave_at_drain`). What moves: the database and user, the
//! application_name, the session's parameters (startup and current) and
//! the server defaults they are kept against, its cancel key, its prepared statements (protocol and SQL level, and the
//! unnamed one), its read-your-writes floor and route override, and its TLS
//! keys.

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};

use super::{PoolClient, Session, Shared};
use crate::pool::params::Params;
use crate::prepared::client::{ClientStatements, Exported};
use crate::protocol::Lsn;
use crate::sql::local::RouteOverride;
use crate::tls::ClientStream;

/// A session as data. Encoded with [`Carried::encode`]; the format is
/// private to two processes of the same build.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carried {
    pub database: String,
    pub user: String,
    pub application_name: String,
    pub startup: Vec<(String, String)>,
    pub overrides: Vec<(String, String)>,
    /// The server's defaults as the old process's pool learned them: the
    /// new one resumes the session without waiting for a server.
    pub defaults: Vec<(String, String)>,
    pub cancel: (i32, i32),
    pub floor: u64,
    pub announced: u64,
    pub route: u8,
    pub statements: Exported,
    /// The TLS session's record keys (`tls::records`); empty for plain TCP.
    pub tls: Vec<u8>,
}

/// The first bytes of every encoding: a build that reads another's
/// format fails clearly instead of misreading it.
const MAGIC: &[u8; 8] = b"pglho-03";

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

fn put_pairs(out: &mut BytesMut, pairs: &[(String, String)]) {
    out.put_u32(pairs.len() as u32);
    for (k, v) in pairs {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

/// Reads what the `put_*` functions wrote; `None` on anything short or
/// malformed.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&mut self) -> Option<u32> {
        (self.0.len() >= 4).then(|| self.0.get_u32())
    }
    fn u64(&mut self) -> Option<u64> {
        (self.0.len() >= 8).then(|| self.0.get_u64())
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        let (b, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(b.to_vec())
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
    fn count(&mut self) -> Option<usize> {
        // Every entry takes at least 4 bytes: a count past that is a lie.
        let n = self.u32()? as usize;
        (n <= self.0.len() / 4).then_some(n)
    }
    fn pairs(&mut self) -> Option<Vec<(String, String)>> {
        (0..self.count()?)
            .map(|_| Some((self.string()?, self.string()?)))
            .collect()
    }
}

impl Carried {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_slice(MAGIC);
        for s in [&self.database, &self.user, &self.application_name] {
            put_bytes(&mut out, s.as_bytes());
        }
        put_pairs(&mut out, &self.startup);
        put_pairs(&mut out, &self.overrides);
        put_pairs(&mut out, &self.defaults);
        out.put_u32(self.cancel.0 as u32);
        out.put_u32(self.cancel.1 as u32);
        out.put_u64(self.floor);
        out.put_u64(self.announced);
        out.put_u32(u32::from(self.route));
        let st = &self.statements;
        out.put_u64(st.token);
        out.put_u32(st.named.len() as u32);
        for (n, sql, types) in &st.named {
            put_bytes(&mut out, n);
            put_bytes(&mut out, sql);
            put_bytes(&mut out, types);
        }
        out.put_u32(st.sql.len() as u32);
        for (n, text) in &st.sql {
            put_bytes(&mut out, n);
            put_bytes(&mut out, text);
        }
        match &st.unnamed {
            Some((sql, types)) => {
                out.put_u32(1);
                put_bytes(&mut out, sql);
                put_bytes(&mut out, types);
            }
            None => out.put_u32(0),
        }
        put_bytes(&mut out, &self.tls);
        out.to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Option<Carried> {
        let mut r = Reader(bytes.strip_prefix(MAGIC.as_slice())?);
        let mut c = Carried {
            database: r.string()?,
            user: r.string()?,
            application_name: r.string()?,
            startup: r.pairs()?,
            overrides: r.pairs()?,
            defaults: r.pairs()?,
            cancel: (r.u32()? as i32, r.u32()? as i32),
            floor: r.u64()?,
            announced: r.u64()?,
            route: u8::try_from(r.u32()?).ok()?,
            statements: Exported::default(),
            tls: Vec::new(),
        };
        c.statements.token = r.u64()?;
        for _ in 0..r.count()? {
            let named = (r.bytes()?, r.bytes()?, r.bytes()?);
            c.statements.named.push(named);
        }
        for _ in 0..r.count()? {
            c.statements.sql.push((r.bytes()?, r.bytes()?));
        }
        if r.u32()? == 1 {
            c.statements.unnamed = Some((r.bytes()?, r.bytes()?));
        }
        c.tls = r.bytes()?;
        r.0.is_empty().then_some(c)
    }
}

fn params_of(list: &[(String, String)]) -> Params {
    let mut p = Params::new();
    for (k, v) in list {
        p.set(k, v);
    }
    p
}

fn pairs(p: &Params) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn route_code(r: RouteOverride) -> u8 {
    match r {
        RouteOverride::Auto => 0,
        RouteOverride::Primary => 1,
        RouteOverride::Replica => 2,
    }
}

impl Session {
    /// Whether this session can move to a new process now: idle, holding
    /// no server, nothing half read, plain TCP or TLS 1.3.
    pub(super) fn can_move(&mut self) -> bool {
        self.lease.is_none() && self.buf.is_empty() && self.client.movable()
    }

    /// At a transaction boundary while draining: a SIGTERM drain closes
    /// the client (`ShuttingDown`); a rolling restart moves it once it is
    /// idle with nothing buffered (`HandedOver`), and serves one that
    /// cannot move (TLS 1.2, a held server) here until it leaves or the
    /// drain times out (`Ok`).
    pub(super) fn leave_at_drain(
        &mut self,
        phase: crate::shutdown::Phase,
    ) -> Result<(), crate::error::SessionError> {
        use crate::error::SessionError;
        let moving = self.shared.handing_over() && phase < crate::shutdown::Phase::Stopping;
        if !moving {
            return Err(SessionError::ShuttingDown);
        }
        if self.can_move() {
            return Err(SessionError::HandedOver);
        }
        Ok(())
    }

    /// The session as data and its socket, for the new process.
    pub(super) fn carry_out(self: Box<Self>) -> Option<(std::net::TcpStream, Vec<u8>)> {
        let login = self.entry.entry.login();
        let carried = Carried {
            database: self.pool.database.clone(),
            user: self.pool.user.clone(),
            application_name: login
                .map(|l| l.application_name.clone())
                .unwrap_or_default(),
            startup: pairs(&self.startup),
            overrides: pairs(&self.overrides),
            defaults: pairs(&self.defaults),
            cancel: (self.cancel.pid, self.cancel.secret),
            floor: self.route.floor.0,
            announced: self.route.announced.0,
            route: route_code(self.route.session),
            statements: self.statements.export(),
            tls: Vec::new(),
        };
        let (tcp, tls) = self.client.carry_out()?;
        let bytes = Carried { tls, ..carried }.encode();
        Some((tcp, bytes))
    }
}

/// Rebuilds a session the old process carried out, around its socket.
/// `None` (the client is then closed) when its pool cannot be had here:
/// the database or user is gone from the config, or the user's server
/// credential was only learned from its login (SCRAM pass-through). No
/// server is needed: the pool takes the carried defaults if it has none
/// yet, so a cold pool that sheds or cannot connect at this moment does
/// not close clients that were only waiting for their next query.
pub async fn resume(
    shared: &Arc<Shared>,
    tcp: tokio::net::TcpStream,
    carried: Carried,
    entry: crate::shared::clients::ClientGuard,
) -> Option<Box<Session>> {
    let config = shared.config();
    let pool = shared.pool_for(&config, &carried.database, &carried.user)?;
    let client = ClientStream::resume(tcp, &carried.tls)?;
    let defaults = match carried.defaults.is_empty() {
        true => pool.defaults().await.ok()?,
        false => pool.adopt_defaults(params_of(&carried.defaults)),
    };
    let params = |list: &[(String, String)]| {
        let mut p = Params::new();
        for (k, v) in list {
            p.set_override(&defaults, k, v);
        }
        p
    };
    let (pid, secret) = carried.cancel;
    let cancel = match shared.cancels.register_key(pool.clone(), pid, secret) {
        Some(c) => c,
        None => {
            tracing::warn!(
                "a handed-over client's cancel key is taken here; it gets a new one it cannot know"
            );
            shared.cancels.register(pool.clone())
        }
    };
    let route = crate::router::RouteState {
        floor: Lsn(carried.floor),
        announced: Lsn(carried.announced),
        session: match carried.route {
            1 => RouteOverride::Primary,
            2 => RouteOverride::Replica,
            _ => RouteOverride::Auto,
        },
        ..Default::default()
    };
    entry.entry.set_login(crate::shared::clients::ClientLogin {
        database: carried.database.clone(),
        user: carried.user.clone(),
        application_name: carried.application_name.clone(),
        admin: false,
    });
    let (overrides, startup) = (params(&carried.overrides), params(&carried.startup));
    let login = PoolClient {
        application_name: carried.application_name,
        pool,
        overrides,
        defaults,
        cancel,
        route,
    };
    let mut session = Session::start(shared, client, BytesMut::new(), login, entry);
    session.startup = startup;
    session.statements =
        ClientStatements::import(config.pooler.max_client_statements, carried.statements);
    Some(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Carried {
        Carried {
            database: "app".into(),
            user: "alice".into(),
            application_name: "web".into(),
            startup: vec![("search_path".into(), "s1".into())],
            overrides: vec![
                ("search_path".into(), "s2".into()),
                ("TimeZone".into(), "UTC".into()),
            ],
            defaults: vec![
                ("search_path".into(), "\"$user\", public".into()),
                ("TimeZone".into(), "Etc/UTC".into()),
            ],
            cancel: (-5, 77),
            floor: 0x1_0000_0010,
            announced: 0x10,
            route: 1,
            statements: Exported {
                named: vec![(
                    b"s1".to_vec(),
                    b"select $1".to_vec(),
                    vec![0, 1, 0, 0, 0, 23],
                )],
                sql: vec![(b"p".to_vec(), b"PREPARE p AS select 1".to_vec())],
                unnamed: Some((b"select 2".to_vec(), vec![0, 0])),
                token: 99,
            },
            tls: vec![1, 16, 7],
        }
    }

    #[test]
    fn a_session_survives_its_encoding() {
        let c = sample();
        assert_eq!(Carried::decode(&c.encode()), Some(c));
        let empty = Carried::default();
        assert_eq!(Carried::decode(&empty.encode()), Some(empty));
    }

    #[test]
    fn short_or_foreign_bytes_are_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert_eq!(Carried::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Carried::decode(&longer), None);
        // The previous builds' formats (no TLS keys, no defaults) are
        // refused, not misread.
        let mut other = bytes;
        other[7] = b'2';
        assert_eq!(Carried::decode(&other), None);
    }
}
