//! Differential test of session isolation. Generated scripts of 2-4
//! interleaved clients run twice: once through pglittle, where the clients
//! share the pool's server connections, and once with every client on its
//! own direct connection to PostgreSQL. Every client must observe the same
//! thing both times: rows as text, command tags, SQLSTATEs, and (for
//! wire-level clients) every protocol message but notices and
//! ParameterStatus. After the script, all clients disconnect and fresh
//! clients (one per server of the pool) check that nothing was left behind.
//!
//! A client is either a driver (tokio-postgres: `prepare` and
//! `prepare_typed` make named statements, `query_typed` the unnamed one in
//! one round trip) or a wire client (exact messages: statement names that
//! collide between clients, the unnamed statement parsed in one round trip
//! and bound in the next). Some clients start with a startup parameter.
//!
//! Which config each class of action runs under, so that "identical to
//! direct" is the expected answer (README, "How transaction pooling
//! behaves"):
//! - settings (SET, SET LOCAL, RESET, RESET ALL, DISCARD ALL, set_config,
//!   SHOW), SQL PREPARE/EXECUTE/DEALLOCATE and extended-protocol statements
//!   follow their client in every mode: `detect` (the default) on a pool of
//!   ONE server;
//! - DO blocks calling set_config: on a pool of ONE, under `detect` (a DO
//!   block is followed by DISCARD ALL) and, more of them, under
//!   `server_reset = "always"`. Other clients must never see the value. The
//!   caller itself keeps it on PostgreSQL, but pglittle documents that
//!   state made inside a DO block does not follow it, so after a
//!   session-level set_config in a DO block the caller's own observations
//!   of that setting are not compared until it SETs or RESETs it again
//!   (application_name is exempt: the server reports it, so it follows);
//! - temp tables, session advisory locks, LISTEN and WITH HOLD cursors:
//!   `pin_on_session_state = true` (LISTEN always pins). A pinned client
//!   holds its server, so a pool of one would make the next client wait:
//!   this mode runs on a pool of 4 servers (one per client at most), still
//!   shared by every client that is not pinned, and the epilogue holds all
//!   4 to look at each. No DO blocks here: the DISCARD ALL after one would
//!   drop the caller's temp tables, locks, cursors and LISTENs.
//! - Inside a transaction block, after RESET of a setting the client has a
//!   startup value for (or RESET ALL), that setting is not compared until
//!   the block ends: pglittle documents that the server's own default
//!   shows there (the client's startup value from the next transaction on,
//!   which is compared).
//!
//! Left out, because no mode can make them identical:
//! - `SHOW myapp.x` before the session ever set it: a custom placeholder
//!   stays defined in a backend once anyone set it, even after RESET ALL,
//!   so a fresh client on a used server sees '' where PostgreSQL says
//!   42704. Observed as `coalesce(current_setting('myapp.x', true), '')`.
//! - pg_prepared_statements, and backend pids: they show pglittle's own
//!   statement names and servers.
//! - DO blocks that make temp tables, locks or LISTEN: they vanish at the
//!   end of the transaction in every mode (a DO block is followed by
//!   DISCARD ALL), while PostgreSQL keeps them.
//! - statements whose text depends on search_path (unqualified table names):
//!   a statement pglittle re-prepares on another server resolves names
//!   under the path of that moment, PostgreSQL under the path it was
//!   prepared with. The statement texts here name no tables.
//! - notifications: delivery to another client is asynchronous.
//! - a wire client's Parse of a statement name it already has: pglittle
//!   documents that it replaces the statement instead of answering 42P05,
//!   so wire clients Close a name before they Parse it again.
//! - one name for a SQL PREPARE and a protocol Parse: PostgreSQL has one
//!   namespace for both, pglittle documents two (a Bind of a name only SQL
//!   PREPAREd, or an EXECUTE of one only Parsed, is 26000; a PREPARE of a
//!   name only Parsed, or the reverse, succeeds). Wire names and SQL names
//!   differ here. Nothing crosses clients either way.
//!
//! Failures found are kept below as fixed cases, which run first. Knobs
//! (environment variables):
//! - `PGLITTLE_DIFF_CASES`: generated cases per mode (default 64; the bar
//!   for a release is 10000);
//! - `PGLITTLE_DIFF_FAILURES`: go on after a failure until this many
//!   distinct minimised failures are found (default 1);
//! - `PGLITTLE_DIFF_REPEAT`: run each fixed case this many times, to tell a
//!   flaky failure from a steady one (default 1);
//! - `PGLITTLE_DIFF_FRESH_POOLER`: a new pooler for every case, so that
//!   what one case left on a server cannot fail the next (slower; by
//!   default one pooler serves all cases of a mode, and is replaced only
//!   after a failure);
//! - `PROPTEST_RNG_SEED` and the other `PROPTEST_*` variables, as usual.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use crate::common::*;
use crate::raw;

use self::Act::*;
use self::Kind::*;
use self::Setting::*;

// ---------------------------------------------------------------------------
// The script model

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Setting {
    SearchPath,
    WorkMem,
    StatementTimeout,
    ApplicationName,
    MyappX,
}

const SETTINGS: [Setting; 5] = [
    SearchPath,
    WorkMem,
    StatementTimeout,
    ApplicationName,
    MyappX,
];

impl Setting {
    fn name(self) -> &'static str {
        match self {
            SearchPath => "search_path",
            WorkMem => "work_mem",
            StatementTimeout => "statement_timeout",
            ApplicationName => "application_name",
            MyappX => "myapp.x",
        }
    }

    /// (right-hand side of SET, value for set_config); the first is DEFAULT.
    fn values(self) -> &'static [(&'static str, &'static str)] {
        match self {
            SearchPath => &[
                ("DEFAULT", ""),
                ("\"$user\", public", "\"$user\", public"),
                ("pg_catalog, public", "pg_catalog, public"),
                ("\"My Schema\", public", "\"My Schema\", public"),
                ("s1, \"$user\"", "s1,\"$user\""),
                ("''", "\"\""),
                ("\"a,b\", \"it's\"", "\"a,b\", \"it's\""),
            ],
            WorkMem => &[
                ("DEFAULT", ""),
                ("'7MB'", "7MB"),
                ("'64kB'", "64kB"),
                ("'1GB'", "1GB"),
                ("4096", "4096"),
            ],
            StatementTimeout => &[
                ("DEFAULT", ""),
                ("'5s'", "5s"),
                ("'1min'", "1min"),
                ("0", "0"),
                ("'250ms'", "250ms"),
            ],
            ApplicationName => &[
                ("DEFAULT", ""),
                ("'app_a'", "app_a"),
                ("''", ""),
                ("'it''s, $user'", "it's, $user"),
                ("'ünï'", "ünï"),
            ],
            MyappX => &[
                ("DEFAULT", ""),
                ("'a'", "a"),
                ("'b b'", "b b"),
                ("''", ""),
                ("'x,y'", "x,y"),
            ],
        }
    }

    /// Value `v` is DEFAULT (`SET x TO DEFAULT` is RESET).
    fn is_default(self, v: u8) -> bool {
        usize::from(v) % self.values().len() == 0
    }

    fn value(self, v: u8) -> (&'static str, &'static str) {
        let values = self.values();
        values[usize::from(v) % values.len()]
    }

    /// set_config with this value succeeds (an empty work_mem does not).
    fn valid_raw(self, v: u8) -> bool {
        !(self.value(v).1.is_empty() && matches!(self, WorkMem | StatementTimeout))
    }

    fn show_sql(self) -> String {
        match self {
            MyappX => "SELECT coalesce(current_setting('myapp.x', true), '')".to_string(),
            s => format!("SHOW {}", s.name()),
        }
    }

    /// The startup parameter a client may log in with.
    fn startup(self) -> (&'static str, &'static str) {
        match self {
            SearchPath => ("options", "-c search_path=pg_catalog,public"),
            WorkMem => ("options", "-c work_mem=8MB"),
            StatementTimeout => ("options", "-c statement_timeout=7s"),
            ApplicationName => ("application_name", "startup_app"),
            MyappX => ("options", "-c myapp.x=boot"),
        }
    }

    /// PostgreSQL 15 reports this one with ParameterStatus whoever set it.
    fn reported(self) -> bool {
        self == ApplicationName
    }
}

/// Statement texts for PREPARE and the extended protocol; the last one is
/// a syntax error.
const TEXTS: &[&str] = &[
    "SELECT 'zero:' || $1::text",
    "SELECT 'one:' || $1::text AS one",
    "SELECT current_setting('work_mem') || ':' || $1::text",
    "SELECT coalesce(current_setting('myapp.x', true), '') || ':' || $1::text",
    "SELEC $1",
];
const ARGS: &[&str] = &["x", "y"];
/// SQL-level PREPARE names, the same for every client.
const SQL_NAMES: &[&str] = &["a", "b", "c"];
/// Wire-level statement names: the unnamed statement and two that collide
/// with each other's clients (not with the SQL names: pglittle keeps the
/// two namespaces apart, see the module doc).
const WIRE_NAMES: &[&str] = &["", "p", "q"];

fn text(t: u8) -> &'static str {
    TEXTS[usize::from(t) % TEXTS.len()]
}
fn arg(a: u8) -> &'static str {
    ARGS[usize::from(a) % ARGS.len()]
}
fn sql_name(n: u8) -> &'static str {
    SQL_NAMES[usize::from(n) % SQL_NAMES.len()]
}
fn wire_name(n: u8) -> &'static str {
    WIRE_NAMES[usize::from(n) % WIRE_NAMES.len()]
}

/// One client action. Settings and SQL statements are sent as a simple
/// Query, or through the extended protocol when the step says so; the
/// `Ext*` actions are protocol-level statements (`slot` is a driver's
/// statement, or a wire client's statement name).
#[derive(Clone, Debug)]
enum Act {
    Set(Setting, u8),
    SetLocal(Setting, u8),
    Reset(Setting),
    ResetAll,
    DiscardAll,
    /// `SELECT set_config(name, value, is_local)`
    SetConfig(Setting, u8, bool),
    /// `DO $$ ... set_config(name, value, is_local) ... $$`
    Do(Setting, u8, bool),
    Show(Setting),
    /// `current_schemas(false)`: what search_path really resolves to.
    Schemas,
    Prepare(u8, u8),
    Execute(u8, u8),
    Deallocate(u8),
    DeallocateAll,
    /// Named statement: driver `prepare`/`prepare_typed`; wire (Close +)
    /// Parse + Describe + Sync (slot 0 is the unnamed statement).
    ExtPrepare(u8, u8, bool),
    /// Bind + Execute + Sync of the slot's statement.
    ExtQuery(u8, u8),
    /// Driver: drop the statement (Close); wire: Close + Sync.
    ExtClose(u8),
    /// Unnamed statement in one round trip (driver `query_typed`).
    ExtOnce(u8, u8),
    /// Driver `query(&str)` (a named statement prepared, run and closed);
    /// wire: the unnamed statement parsed, then bound in a second round trip.
    ExtSplit(u8, u8),
    TempCreate(u8),
    TempInsert(u8),
    TempCount(u8),
    TempDrop(u8),
    TempTables,
    /// pg_try_advisory_lock on a key every client uses.
    TryLock(u8),
    /// pg_advisory_lock on a key of this client's own (never blocks on PostgreSQL).
    Lock(u8),
    /// Unlock a shared key (false) or an own key (true).
    Unlock(u8, bool),
    UnlockAll,
    Locks,
    Listen(u8),
    Unlisten(u8),
    UnlistenAll,
    Channels,
    Declare(u8),
    Fetch(u8),
    CloseCursor(u8),
    Cursors,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Driver,
    Wire,
}

#[derive(Clone, Debug)]
struct ClientSpec {
    kind: Kind,
    startup: Option<Setting>,
}

#[derive(Clone, Debug)]
enum Block {
    One(Act),
    /// BEGIN, the actions, then COMMIT (true) or ROLLBACK, with no other
    /// client in between.
    Tx(Vec<Act>, bool),
}

#[derive(Clone, Debug)]
struct Step {
    client: u8,
    /// SQL goes through the extended protocol (BEGIN and COMMIT too).
    ext: bool,
    block: Block,
}

#[derive(Clone, Debug)]
struct Script {
    clients: Vec<ClientSpec>,
    steps: Vec<Step>,
}

// Constructors for the fixed cases (and what `Script::to_rust` prints).
fn script(clients: &[(Kind, Option<Setting>)], steps: Vec<Step>) -> Script {
    Script {
        clients: clients
            .iter()
            .map(|&(kind, startup)| ClientSpec { kind, startup })
            .collect(),
        steps,
    }
}
fn one(client: u8, ext: bool, act: Act) -> Step {
    Step {
        client,
        ext,
        block: Block::One(act),
    }
}
fn tx(client: u8, ext: bool, acts: Vec<Act>, commit: bool) -> Step {
    Step {
        client,
        ext,
        block: Block::Tx(acts, commit),
    }
}

impl Script {
    /// The script as Rust, to paste into the fixed cases.
    fn to_rust(&self) -> String {
        let clients: Vec<String> = self
            .clients
            .iter()
            .map(|c| format!("({:?}, {:?})", c.kind, c.startup))
            .collect();
        let mut out = format!("script(&[{}], vec![\n", clients.join(", "));
        for s in &self.steps {
            match &s.block {
                Block::One(a) => {
                    let _ = writeln!(out, "    one({}, {}, {a:?}),", s.client, s.ext);
                }
                Block::Tx(acts, commit) => {
                    let acts: Vec<String> = acts.iter().map(|a| format!("{a:?}")).collect();
                    let _ = writeln!(
                        out,
                        "    tx({}, {}, vec![{}], {commit}),",
                        s.client,
                        s.ext,
                        acts.join(", ")
                    );
                }
            }
        }
        out.push_str("])");
        out
    }
}

/// What the SQL of an action depends on besides the action.
struct Cx {
    client: usize,
    /// Advisory lock namespace, fresh for every run, so a lock left by an
    /// earlier run (or a backend still exiting) is never in the way.
    ns: i32,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Act {
    /// The SQL of an action sent as SQL (None for protocol-level actions).
    fn sql(&self, cx: &Cx) -> Option<String> {
        let own_key = |k: u8| 100 + 10 * cx.client as i32 + i32::from(k % 3);
        let shared_key = |k: u8| 1 + i32::from(k % 3);
        Some(match self {
            Set(s, v) => format!("SET {} TO {}", s.name(), s.value(*v).0),
            SetLocal(s, v) => format!("SET LOCAL {} TO {}", s.name(), s.value(*v).0),
            Reset(s) => format!("RESET {}", s.name()),
            ResetAll => "RESET ALL".to_string(),
            DiscardAll => "DISCARD ALL".to_string(),
            SetConfig(s, v, local) => format!(
                "SELECT set_config('{}', {}, {local})",
                s.name(),
                literal(s.value(*v).1)
            ),
            Do(s, v, local) => format!(
                "DO $$ BEGIN PERFORM set_config('{}', {}, {local}); END $$",
                s.name(),
                literal(s.value(*v).1)
            ),
            Show(s) => s.show_sql(),
            Schemas => "SELECT current_schemas(false)::text".to_string(),
            Prepare(n, t) => format!("PREPARE {} (text) AS {}", sql_name(*n), text(*t)),
            Execute(n, a) => format!("EXECUTE {}({})", sql_name(*n), literal(arg(*a))),
            Deallocate(n) => format!("DEALLOCATE {}", sql_name(*n)),
            DeallocateAll => "DEALLOCATE ALL".to_string(),
            ExtPrepare(..) | ExtQuery(..) | ExtClose(..) | ExtOnce(..) | ExtSplit(..) => {
                return None
            }
            TempCreate(t) => format!("CREATE TEMP TABLE tt{} (v int)", t % 2),
            TempInsert(t) => format!("INSERT INTO tt{} VALUES (1)", t % 2),
            TempCount(t) => format!("SELECT count(*) FROM tt{}", t % 2),
            TempDrop(t) => format!("DROP TABLE tt{}", t % 2),
            TempTables => {
                "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()".to_string()
            }
            TryLock(k) => format!("SELECT pg_try_advisory_lock({}, {})", cx.ns, shared_key(*k)),
            Lock(k) => format!("SELECT pg_advisory_lock({}, {})", cx.ns, own_key(*k)),
            Unlock(k, own) => format!(
                "SELECT pg_advisory_unlock({}, {})",
                cx.ns,
                if *own { own_key(*k) } else { shared_key(*k) }
            ),
            UnlockAll => "SELECT pg_advisory_unlock_all()".to_string(),
            Locks => "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() \
                      AND locktype = 'advisory'"
                .to_string(),
            Listen(c) => format!("LISTEN ch{}", c % 3),
            Unlisten(c) => format!("UNLISTEN ch{}", c % 3),
            UnlistenAll => "UNLISTEN *".to_string(),
            Channels => {
                "SELECT coalesce(string_agg(c, ',' ORDER BY c), '') FROM pg_listening_channels() c"
                    .to_string()
            }
            Declare(k) => format!(
                "DECLARE cur{} CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 3) g",
                k % 2
            ),
            Fetch(k) => format!("FETCH 1 FROM cur{}", k % 2),
            CloseCursor(k) => format!("CLOSE cur{}", k % 2),
            Cursors => "SELECT count(*) FROM pg_cursors WHERE name LIKE 'cur%'".to_string(),
        })
    }

    /// A short description for reports.
    fn label(&self, kind: Kind, cx: &Cx) -> String {
        if let Some(sql) = self.sql(cx) {
            return sql;
        }
        let slot = |s: &u8| match kind {
            Driver => format!("slot {}", s % 3),
            Wire => format!("{:?}", wire_name(*s)),
        };
        match self {
            ExtPrepare(s, t, typed) => {
                let how = if *typed { "prepare typed" } else { "prepare" };
                format!("ext {how} {} = {}", slot(s), text(*t))
            }
            ExtQuery(s, a) => format!("ext bind+execute {} ({})", slot(s), arg(*a)),
            ExtClose(s) => format!("ext close {}", slot(s)),
            ExtOnce(t, a) => format!("ext unnamed, one round trip: {} ({})", text(*t), arg(*a)),
            ExtSplit(t, a) => format!("ext query(&str)/split unnamed: {} ({})", text(*t), arg(*a)),
            _ => unreachable!(),
        }
    }
}

impl Act {
    /// The same action with one number made smaller (for the minimiser).
    fn smaller(&self) -> Vec<Act> {
        let down = |v: u8| if v > 0 { vec![0] } else { vec![] };
        let mut out = Vec::new();
        match *self {
            Set(s, v) => out.extend(down(v).into_iter().map(|v| Set(s, v))),
            SetLocal(s, v) => out.extend(down(v).into_iter().map(|v| SetLocal(s, v))),
            SetConfig(s, v, l) => out.extend(down(v).into_iter().map(|v| SetConfig(s, v, l))),
            Do(s, v, l) => out.extend(down(v).into_iter().map(|v| Do(s, v, l))),
            Prepare(n, t) => {
                out.extend(down(n).into_iter().map(|n| Prepare(n, t)));
                out.extend(down(t).into_iter().map(|t| Prepare(n, t)));
            }
            Execute(n, a) => {
                out.extend(down(n).into_iter().map(|n| Execute(n, a)));
                out.extend(down(a).into_iter().map(|a| Execute(n, a)));
            }
            Deallocate(n) => out.extend(down(n).into_iter().map(Deallocate)),
            ExtPrepare(s, t, ty) => {
                out.extend(down(t).into_iter().map(|t| ExtPrepare(s, t, ty)));
                if ty {
                    out.push(ExtPrepare(s, t, false));
                }
            }
            ExtQuery(s, a) => out.extend(down(a).into_iter().map(|a| ExtQuery(s, a))),
            ExtOnce(t, a) => {
                out.extend(down(t).into_iter().map(|t| ExtOnce(t, a)));
                out.extend(down(a).into_iter().map(|a| ExtOnce(t, a)));
            }
            ExtSplit(t, a) => {
                out.extend(down(t).into_iter().map(|t| ExtSplit(t, a)));
                out.extend(down(a).into_iter().map(|a| ExtSplit(t, a)));
            }
            TryLock(k) => out.extend(down(k).into_iter().map(TryLock)),
            Lock(k) => out.extend(down(k).into_iter().map(Lock)),
            Listen(c) => out.extend(down(c).into_iter().map(Listen)),
            _ => {}
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Generators

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Pool of ONE, `server_reset = "detect"`.
    Detect,
    /// Pool of ONE, `server_reset = "always"`: adds DO blocks.
    Always,
    /// Pool of 4, `pin_on_session_state = true`: adds temp tables, locks,
    /// LISTEN, WITH HOLD cursors.
    Pinned,
}

fn setting() -> impl Strategy<Value = Setting> + Clone {
    proptest::sample::select(SETTINGS.to_vec())
}

fn act(mode: Mode) -> BoxedStrategy<Act> {
    let val = 0u8..8;
    let text = 0u8..TEXTS.len() as u8;
    let settings = prop_oneof![
        4 => (setting(), val.clone()).prop_map(|(s, v)| Set(s, v)),
        2 => (setting(), val.clone()).prop_map(|(s, v)| SetLocal(s, v)),
        2 => setting().prop_map(Reset),
        1 => Just(ResetAll),
        1 => Just(DiscardAll),
        2 => (setting(), val.clone(), any::<bool>()).prop_map(|(s, v, l)| SetConfig(s, v, l)),
        5 => setting().prop_map(Show),
        2 => Just(Schemas),
    ];
    let prepared = prop_oneof![
        3 => (0u8..3, text.clone()).prop_map(|(n, t)| Prepare(n, t)),
        3 => (0u8..3, 0u8..2).prop_map(|(n, a)| Execute(n, a)),
        1 => (0u8..3).prop_map(Deallocate),
        1 => Just(DeallocateAll),
    ];
    let ext = prop_oneof![
        3 => (0u8..3, text.clone(), any::<bool>()).prop_map(|(s, t, ty)| ExtPrepare(s, t, ty)),
        3 => (0u8..3, 0u8..2).prop_map(|(s, a)| ExtQuery(s, a)),
        1 => (0u8..3).prop_map(ExtClose),
        2 => (text.clone(), 0u8..2).prop_map(|(t, a)| ExtOnce(t, a)),
        1 => (text, 0u8..2).prop_map(|(t, a)| ExtSplit(t, a)),
    ];
    match mode {
        Mode::Detect => {
            let dos = (setting(), val, any::<bool>()).prop_map(|(s, v, l)| Do(s, v, l));
            prop_oneof![4 => settings, 2 => prepared, 3 => ext, 1 => dos].boxed()
        }
        Mode::Always => {
            let dos = (setting(), val, any::<bool>()).prop_map(|(s, v, l)| Do(s, v, l));
            prop_oneof![4 => settings, 2 => prepared, 2 => ext, 3 => dos].boxed()
        }
        Mode::Pinned => {
            let temp = prop_oneof![
                2 => (0u8..2).prop_map(TempCreate),
                2 => (0u8..2).prop_map(TempInsert),
                2 => (0u8..2).prop_map(TempCount),
                1 => (0u8..2).prop_map(TempDrop),
                1 => Just(TempTables),
            ];
            let locks = prop_oneof![
                2 => (0u8..3).prop_map(TryLock),
                2 => (0u8..3).prop_map(Lock),
                2 => (0u8..3, any::<bool>()).prop_map(|(k, own)| Unlock(k, own)),
                1 => Just(UnlockAll),
                2 => Just(Locks),
            ];
            let listen = prop_oneof![
                2 => (0u8..3).prop_map(Listen),
                1 => (0u8..3).prop_map(Unlisten),
                1 => Just(UnlistenAll),
                2 => Just(Channels),
            ];
            let cursors = prop_oneof![
                2 => (0u8..2).prop_map(Declare),
                2 => (0u8..2).prop_map(Fetch),
                1 => (0u8..2).prop_map(CloseCursor),
                1 => Just(Cursors),
            ];
            prop_oneof![
                3 => settings,
                1 => prepared,
                1 => ext,
                2 => temp,
                2 => locks,
                2 => listen,
                1 => cursors,
            ]
            .boxed()
        }
    }
}

fn step(clients: usize, mode: Mode) -> impl Strategy<Value = Step> {
    let block = prop_oneof![
        4 => act(mode).prop_map(Block::One),
        1 => (proptest::collection::vec(act(mode), 1..5), proptest::bool::weighted(0.7))
            .prop_map(|(acts, commit)| Block::Tx(acts, commit)),
    ];
    (0..clients as u8, proptest::bool::weighted(0.3), block).prop_map(|(client, ext, block)| Step {
        client,
        ext,
        block,
    })
}

fn scripts(mode: Mode) -> impl Strategy<Value = Script> {
    let client = (
        prop_oneof![Just(Driver), Just(Wire)],
        proptest::option::weighted(0.25, setting()),
    )
        .prop_map(|(kind, startup)| ClientSpec { kind, startup });
    (2usize..=4)
        .prop_flat_map(move |n| {
            (
                proptest::collection::vec(client.clone(), n),
                proptest::collection::vec(step(n, mode), 5..=20),
            )
        })
        .prop_map(|(clients, steps)| Script { clients, steps })
}

// ---------------------------------------------------------------------------
// Clients

/// A wire-protocol client that logs in with a password (SCRAM or md5) or
/// none (a pglittle trust user).
struct WireConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl WireConn {
    async fn connect(
        port: u16,
        user: &str,
        password: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<WireConn, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut w = WireConn {
            stream,
            buf: Vec::new(),
        };
        let mut params = vec![("user", user), ("database", "app")];
        params.extend_from_slice(extra);
        w.send(&startup_packet(&params)).await?;
        let password = password.unwrap_or("").as_bytes();
        let mut scram = None;
        loop {
            let (tag, body) = w.next().await.ok_or("EOF during login")?;
            let mut out = BytesMut::new();
            match tag {
                b'R' => {
                    let code = i32::from_be_bytes(body[..4].try_into().unwrap());
                    let data = &body[4..];
                    match code {
                        0 => {}
                        3 => frontend::password_message(password, &mut out).unwrap(),
                        5 => {
                            let salt = data[..4].try_into().unwrap();
                            let hash = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                password,
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut out).unwrap();
                        }
                        10 => {
                            let s = ScramSha256::new(password, ChannelBinding::unsupported());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                                .unwrap();
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or("SASL continue without a start")?;
                            s.update(data).map_err(|e| e.to_string())?;
                            frontend::sasl_response(s.message(), &mut out).unwrap();
                        }
                        12 => {
                            let s = scram.as_mut().ok_or("SASL final without a start")?;
                            s.finish(data).map_err(|e| e.to_string())?;
                        }
                        c => return Err(format!("unsupported authentication request {c}")),
                    }
                }
                b'E' => return Err(format!("login failed: {:?}", error_code_of(&body))),
                b'Z' => return Ok(w),
                _ => {}
            }
            if !out.is_empty() {
                w.send(&out).await?;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())
    }

    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    let body = self.buf[5..1 + len].to_vec();
                    self.buf.drain(..1 + len);
                    return Some((tag, body));
                }
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends one batch ending in Sync or Query; the rendered replies up to
    /// ReadyForQuery.
    async fn round_trip(&mut self, bytes: &[u8]) -> String {
        if let Err(e) = self.send(bytes).await {
            return format!("SEND FAILED {e}");
        }
        let mut out = Vec::new();
        loop {
            let Some((tag, body)) = self.next().await else {
                out.push("EOF".to_string());
                break;
            };
            if let Some(s) = render_message(tag, &body) {
                out.push(s);
            }
            if tag == b'Z' {
                break;
            }
        }
        out.join(" ")
    }
}

fn error_code_of(body: &[u8]) -> Option<String> {
    raw::Msg {
        tag: b'E',
        body: body.to_vec(),
    }
    .code()
}

fn cstr_at(body: &[u8], pos: &mut usize) -> String {
    let end = *pos + body[*pos..].iter().position(|&b| b == 0).unwrap_or(0);
    let s = String::from_utf8_lossy(&body[*pos..end]).into_owned();
    *pos = end + 1;
    s
}

/// One backend message as text, or None for those that may differ between
/// a pooler and PostgreSQL without a client noticing (notices,
/// ParameterStatus, notifications, BackendKeyData).
fn render_message(tag: u8, body: &[u8]) -> Option<String> {
    let i16_at = |p: usize| i16::from_be_bytes(body[p..p + 2].try_into().unwrap());
    let i32_at = |p: usize| i32::from_be_bytes(body[p..p + 4].try_into().unwrap());
    Some(match tag {
        b'N' | b'S' | b'A' | b'K' => return None,
        b'E' => format!("E{}", error_code_of(body).unwrap_or_default()),
        b'Z' => format!("Z{}", body[0] as char),
        b'C' => format!("C[{}]", cstr_at(body, &mut 0)),
        b'D' => {
            let mut pos = 2;
            let mut values = Vec::new();
            for _ in 0..i16_at(0) {
                let len = i32_at(pos);
                pos += 4;
                if len < 0 {
                    values.push("NULL".to_string());
                } else {
                    let end = pos + len as usize;
                    values.push(String::from_utf8_lossy(&body[pos..end]).into_owned());
                    pos = end;
                }
            }
            format!("D[{}]", values.join("|"))
        }
        b'T' => {
            let mut pos = 2;
            let mut fields = Vec::new();
            for _ in 0..i16_at(0) {
                let name = cstr_at(body, &mut pos);
                fields.push(format!("{name}:{}", i32_at(pos + 6)));
                pos += 18;
            }
            format!("T[{}]", fields.join(","))
        }
        b't' => {
            let oids: Vec<String> = (0..i16_at(0) as usize)
                .map(|i| i32_at(2 + 4 * i).to_string())
                .collect();
            format!("t[{}]", oids.join(","))
        }
        b'1' | b'2' | b'3' | b'n' | b's' | b'I' => (tag as char).to_string(),
        other => format!("?{}", other as char),
    })
}

fn parse_typed(name: &str, sql: &str, typed: bool) -> BytesMut {
    let mut b = BytesMut::new();
    let types: &[u32] = if typed { &[25] } else { &[] };
    frontend::parse(name, sql, types.iter().copied(), &mut b).unwrap();
    b
}

fn describe(variant: u8, name: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::describe(variant, name, &mut b).unwrap();
    b
}

fn close_statement(name: &str) -> BytesMut {
    let mut b = BytesMut::new();
    frontend::close(b'S', name, &mut b).unwrap();
    b
}

/// Any column value as text (drivers get binary results).
struct AnyText(String);

impl<'a> FromSql<'a> for AnyText {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(AnyText(match *ty {
            Type::BOOL => bool::from_sql(ty, raw)?.to_string(),
            Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
            Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
            Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
            _ => String::from_utf8_lossy(raw).into_owned(),
        }))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn driver_error(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(c) => format!("E{}", c.code()),
        None => format!("ERR {e}"),
    }
}

fn driver_rows(rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>) -> String {
    match rows {
        Err(e) => driver_error(&e),
        Ok(rows) => {
            let mut out = Vec::new();
            for row in &rows {
                let values: Vec<String> = (0..row.len())
                    .map(|i| match row.try_get::<_, Option<AnyText>>(i) {
                        Ok(Some(v)) => v.0,
                        Ok(None) => "NULL".to_string(),
                        Err(e) => format!("ERR {e}"),
                    })
                    .collect();
                out.push(format!("D[{}]", values.join("|")));
            }
            out.push(format!("rows {}", rows.len()));
            out.join(" ")
        }
    }
}

enum Conn {
    Driver {
        client: Client,
        slots: [Option<Statement>; 3],
    },
    Wire(WireConn),
}

/// Where a run connects: through pglittle (trust) or straight to the primary.
#[derive(Clone, Copy)]
struct Target<'a> {
    port: u16,
    user: &'a str,
    password: Option<&'a str>,
}

impl Conn {
    async fn connect(target: Target<'_>, spec: &ClientSpec) -> Result<Conn, String> {
        let extra: Vec<(&str, &str)> = spec.startup.iter().map(|s| s.startup()).collect();
        match spec.kind {
            Wire => Ok(Conn::Wire(
                WireConn::connect(target.port, target.user, target.password, &extra).await?,
            )),
            Driver => {
                let mut url = format!(
                    "host=127.0.0.1 port={} user={} dbname=app",
                    target.port, target.user
                );
                if let Some(pw) = target.password {
                    let _ = write!(url, " password={pw}");
                }
                for (k, v) in extra {
                    let _ = write!(url, " {k}='{v}'");
                }
                let (client, conn) = tokio_postgres::connect(&url, NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Conn::Driver {
                    client,
                    slots: [None, None, None],
                })
            }
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Conn::Driver { .. } => Driver,
            Conn::Wire(_) => Wire,
        }
    }

    async fn sql(&mut self, sql: &str, ext: bool) -> String {
        match self {
            Conn::Driver { client, .. } if ext => driver_rows(client.query(sql, &[]).await),
            Conn::Driver { client, .. } => match client.simple_query(sql).await {
                Err(e) => driver_error(&e),
                Ok(msgs) => {
                    let mut out = Vec::new();
                    for m in msgs {
                        match m {
                            SimpleQueryMessage::Row(row) => {
                                let values: Vec<&str> = (0..row.len())
                                    .map(|i| row.get(i).unwrap_or("NULL"))
                                    .collect();
                                out.push(format!("D[{}]", values.join("|")));
                            }
                            SimpleQueryMessage::CommandComplete(n) => out.push(format!("C{n}")),
                            _ => {}
                        }
                    }
                    out.join(" ")
                }
            },
            Conn::Wire(w) if ext => {
                let mut b = parse_typed("", sql, false);
                b.extend_from_slice(&raw::bind("", "", &[]));
                b.extend_from_slice(&describe(b'P', ""));
                b.extend_from_slice(&raw::execute());
                b.extend_from_slice(&raw::sync());
                w.round_trip(&b).await
            }
            Conn::Wire(w) => w.round_trip(&raw::query(sql.as_bytes())).await,
        }
    }

    async fn protocol(&mut self, act: &Act) -> String {
        match self {
            Conn::Driver { client, slots } => match *act {
                ExtPrepare(s, t, typed) => {
                    let prepared = if typed {
                        client.prepare_typed(text(t), &[Type::TEXT]).await
                    } else {
                        client.prepare(text(t)).await
                    };
                    match prepared {
                        Err(e) => driver_error(&e),
                        Ok(st) => {
                            let params: Vec<String> =
                                st.params().iter().map(|t| t.name().to_string()).collect();
                            let cols: Vec<String> = st
                                .columns()
                                .iter()
                                .map(|c| format!("{}:{}", c.name(), c.type_().name()))
                                .collect();
                            slots[usize::from(s % 3)] = Some(st);
                            format!("prepared [{}] -> [{}]", params.join(","), cols.join(","))
                        }
                    }
                }
                ExtQuery(s, a) => match &slots[usize::from(s % 3)] {
                    None => "no statement".to_string(),
                    Some(st) => driver_rows(client.query(st, &[&arg(a)]).await),
                },
                ExtClose(s) => match slots[usize::from(s % 3)].take() {
                    None => "no statement".to_string(),
                    Some(_) => "dropped".to_string(),
                },
                ExtOnce(t, a) => {
                    driver_rows(client.query_typed(text(t), &[(&arg(a), Type::TEXT)]).await)
                }
                ExtSplit(t, a) => driver_rows(client.query(text(t), &[&arg(a)]).await),
                _ => unreachable!("not a protocol action: {act:?}"),
            },
            Conn::Wire(w) => match *act {
                ExtPrepare(s, t, typed) => {
                    // A named statement is closed first, as drivers do
                    // before re-preparing a name: re-Parse of a name the
                    // client has is a documented gap (no 42P05).
                    let name = wire_name(s);
                    let mut b = BytesMut::new();
                    if !name.is_empty() {
                        b = close_statement(name);
                    }
                    b.extend_from_slice(&parse_typed(name, text(t), typed));
                    b.extend_from_slice(&describe(b'S', name));
                    b.extend_from_slice(&raw::sync());
                    w.round_trip(&b).await
                }
                ExtQuery(s, a) => {
                    let mut b = raw::bind("", wire_name(s), &[arg(a).as_bytes()]);
                    b.extend_from_slice(&raw::execute());
                    b.extend_from_slice(&raw::sync());
                    w.round_trip(&b).await
                }
                ExtClose(s) => {
                    let mut b = close_statement(wire_name(s)).to_vec();
                    b.extend_from_slice(&raw::sync());
                    w.round_trip(&b).await
                }
                ExtOnce(t, a) => {
                    let mut b = parse_typed("", text(t), false);
                    b.extend_from_slice(&raw::bind("", "", &[arg(a).as_bytes()]));
                    b.extend_from_slice(&describe(b'P', ""));
                    b.extend_from_slice(&raw::execute());
                    b.extend_from_slice(&raw::sync());
                    w.round_trip(&b).await
                }
                ExtSplit(t, a) => {
                    let mut b = parse_typed("", text(t), false);
                    b.extend_from_slice(&raw::sync());
                    let first = w.round_trip(&b).await;
                    let mut b = raw::bind("", "", &[arg(a).as_bytes()]);
                    b.extend_from_slice(&raw::execute());
                    b.extend_from_slice(&raw::sync());
                    format!("{first} | {}", w.round_trip(&b).await)
                }
                _ => unreachable!("not a protocol action: {act:?}"),
            },
        }
    }

    async fn act(&mut self, act: &Act, ext: bool, cx: &Cx) -> String {
        match act.sql(cx) {
            Some(sql) => self.sql(&sql, ext).await,
            None => self.protocol(act).await,
        }
    }
}

// ---------------------------------------------------------------------------
// Running a script

/// Whether what `act` shows depends on setting `s` (statement texts 2
/// and 3 read work_mem and myapp.x).
fn reads(act: &Act, s: Setting) -> bool {
    match act {
        Show(x) => *x == s,
        Schemas => s == SearchPath,
        Execute(..) | ExtQuery(..) | ExtOnce(..) | ExtSplit(..) => matches!(s, WorkMem | MyappX),
        _ => false,
    }
}

/// The settings whose value a client's own observations are not compared
/// for, where pglittle documents that it differs from PostgreSQL:
/// - what a DO block set at session level, until the client SETs or
///   RESETs it again (a DO block is followed by DISCARD ALL: the value
///   reaches nobody, its caller included), unless the server reports it;
/// - inside a transaction block, a startup setting after RESET of it (or
///   SET [LOCAL] ... TO DEFAULT) or RESET ALL ("within the same
///   transaction the server's own defaults show"; from the next
///   transaction on, the startup value is back).
struct Unfollowed {
    startup: Option<Setting>,
    sticky: HashSet<Setting>,
    this_tx: HashSet<Setting>,
}

impl Unfollowed {
    fn new(spec: &ClientSpec) -> Unfollowed {
        Unfollowed {
            startup: spec.startup,
            sticky: HashSet::new(),
            this_tx: HashSet::new(),
        }
    }

    fn hides(&self, act: &Act) -> bool {
        self.sticky
            .iter()
            .chain(&self.this_tx)
            .any(|&s| reads(act, s))
    }

    fn after(&mut self, act: &Act, in_tx: bool) {
        match *act {
            Do(s, _, false) if !s.reported() => {
                self.sticky.insert(s);
            }
            Reset(s) if in_tx && self.startup == Some(s) => {
                self.this_tx.insert(s);
            }
            Set(s, v) | SetLocal(s, v) if in_tx && self.startup == Some(s) && s.is_default(v) => {
                self.this_tx.insert(s);
            }
            ResetAll if in_tx => self.this_tx.extend(self.startup),
            // Only outside a transaction block is a new value certain to stick.
            Set(s, _) | Reset(s) if !in_tx => {
                self.sticky.remove(&s);
            }
            SetConfig(s, v, false) if !in_tx && s.valid_raw(v) => {
                self.sticky.remove(&s);
            }
            ResetAll | DiscardAll if !in_tx => self.sticky.clear(),
            _ => {}
        }
    }

    fn end_tx(&mut self) {
        self.this_tx.clear();
    }
}

/// What one client saw in one step (one entry per round trip or action).
#[derive(Clone, Debug)]
struct Seen {
    client: usize,
    /// What was sent, for the report (not compared: lock keys differ per run).
    labels: Vec<String>,
    results: Vec<String>,
}

impl PartialEq for Seen {
    fn eq(&self, other: &Seen) -> bool {
        self.client == other.client && self.results == other.results
    }
}

const STEP_LIMIT: Duration = Duration::from_secs(15);

static NAMESPACE: AtomicI32 = AtomicI32::new(1);

/// What a fresh client checks after everyone else left: nothing of theirs
/// may show.
/// (action, through the extended protocol)
fn epilogue() -> Vec<(Act, bool)> {
    let mut acts: Vec<(Act, bool)> = SETTINGS.iter().map(|&s| (Show(s), false)).collect();
    acts.push((Schemas, false));
    // EXECUTE both as a Query and through Parse (which a pooler may not
    // look into), so a statement left on the server is found either way.
    for n in 0..SQL_NAMES.len() as u8 {
        acts.push((Execute(n, 0), false));
        acts.push((Execute(n, 0), true));
    }
    for n in 0..WIRE_NAMES.len() as u8 {
        acts.push((ExtQuery(n, 0), false));
    }
    for a in [TempTables, Locks, Channels, Cursors] {
        acts.push((a, false));
    }
    acts
}

/// Server connections the pool of `mode` has.
fn pool_size(mode: Mode) -> usize {
    match mode {
        Mode::Detect | Mode::Always => 1,
        Mode::Pinned => 4,
    }
}

/// The epilogue: one fresh client runs every check on a pool of one; on a
/// bigger pool, so that every server is looked at, as many fresh clients
/// as the pool has servers each hold one in a transaction and run them.
async fn epilogue_run(
    target: Target<'_>,
    mode: Mode,
    cx: &Cx,
) -> Result<(Vec<String>, Vec<String>), String> {
    let fresh = ClientSpec {
        kind: Wire,
        startup: None,
    };
    let (mut labels, mut results) = (Vec::new(), Vec::new());
    if pool_size(mode) == 1 {
        let mut conn = Conn::connect(target, &fresh).await?;
        for (a, ext) in &epilogue() {
            let via = if *ext { "(through Parse) " } else { "" };
            labels.push(format!("{via}{}", a.label(Wire, cx)));
            results.push(conn.act(a, *ext, cx).await);
        }
    } else {
        let mut holders = Vec::new();
        for _ in 0..pool_size(mode) {
            let mut conn = Conn::connect(target, &fresh).await?;
            conn.sql("BEGIN", false).await;
            holders.push(conn);
        }
        for (k, conn) in holders.iter_mut().enumerate() {
            for (a, ext) in &epilogue() {
                let via = if *ext { "(through Parse) " } else { "" };
                labels.push(format!("(holding server {k}) {via}{}", a.label(Wire, cx)));
                // A check that may fail runs in a savepoint, so the
                // transaction that holds the server goes on.
                let may_fail = matches!(a, Execute(..) | ExtQuery(..));
                if may_fail {
                    conn.sql("SAVEPOINT check", false).await;
                }
                results.push(conn.act(a, *ext, cx).await);
                if may_fail {
                    conn.sql("ROLLBACK TO SAVEPOINT check", false).await;
                }
            }
        }
        for conn in &mut holders {
            conn.sql("COMMIT", false).await;
        }
    }
    Ok((labels, results))
}

/// Runs the script against `target`; returns what each step showed. Stops
/// at the first step that does not finish within STEP_LIMIT.
async fn run(script: &Script, target: Target<'_>, mode: Mode) -> Vec<Seen> {
    let ns = NAMESPACE.fetch_add(1, Ordering::Relaxed);
    let mut seen = Vec::new();
    let mut conns = Vec::new();
    for (i, spec) in script.clients.iter().enumerate() {
        match Conn::connect(target, spec).await {
            Ok(c) => conns.push(c),
            Err(e) => {
                seen.push(Seen {
                    client: i,
                    labels: vec!["connect".to_string()],
                    results: vec![format!("CONNECT FAILED {e}")],
                });
                return seen;
            }
        }
    }
    let mut unfollowed: Vec<Unfollowed> = script.clients.iter().map(Unfollowed::new).collect();
    for step in &script.steps {
        let client = usize::from(step.client) % conns.len();
        let cx = Cx { client, ns };
        let conn = &mut conns[client];
        let kind = conn.kind();
        let hidden = &mut unfollowed[client];
        let mut labels = Vec::new();
        let work = async {
            let mut results = Vec::new();
            match &step.block {
                Block::One(a) => {
                    labels.push(a.label(kind, &cx));
                    let hide = hidden.hides(a);
                    let r = conn.act(a, step.ext, &cx).await;
                    results.push(if hide {
                        "(not compared)".to_string()
                    } else {
                        r
                    });
                    hidden.after(a, false);
                }
                Block::Tx(acts, commit) => {
                    labels.push("BEGIN".to_string());
                    results.push(conn.sql("BEGIN", step.ext).await);
                    for a in acts {
                        labels.push(a.label(kind, &cx));
                        let hide = hidden.hides(a);
                        let r = conn.act(a, step.ext, &cx).await;
                        results.push(if hide {
                            "(not compared)".to_string()
                        } else {
                            r
                        });
                        hidden.after(a, true);
                    }
                    hidden.end_tx();
                    let end = if *commit { "COMMIT" } else { "ROLLBACK" };
                    labels.push(end.to_string());
                    results.push(conn.sql(end, step.ext).await);
                }
            }
            results
        };
        let outcome = tokio::time::timeout(STEP_LIMIT, work).await;
        let timed_out = outcome.is_err();
        let results = outcome.unwrap_or_else(|_| vec![format!("TIMEOUT after {STEP_LIMIT:?}")]);
        seen.push(Seen {
            client,
            labels,
            results,
        });
        if timed_out {
            return seen;
        }
    }
    // Everyone leaves; fresh clients must find clean sessions.
    drop(conns);
    let client = script.clients.len();
    let cx = Cx { client, ns };
    let (labels, results) =
        match tokio::time::timeout(STEP_LIMIT, epilogue_run(target, mode, &cx)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => (
                vec!["connect".to_string()],
                vec![format!("CONNECT FAILED {e}")],
            ),
            Err(_) => (
                vec!["epilogue".to_string()],
                vec![format!("TIMEOUT after {STEP_LIMIT:?}")],
            ),
        };
    seen.push(Seen {
        client,
        labels,
        results,
    });
    seen
}

/// A readable account of both runs, marking the first difference.
fn report(script: &Script, pooled: &[Seen], direct: &[Seen]) -> Option<String> {
    let first = (0..pooled.len().max(direct.len())).find(|&i| pooled.get(i) != direct.get(i))?;
    let mut out = format!(
        "pooled and direct runs differ at step {first}.\nThe script, as a fixed case:\n{}\n\nTranscript:\n",
        script.to_rust()
    );
    for i in 0..=first {
        let (p, d) = (pooled.get(i), direct.get(i));
        let Some(any) = p.or(d) else { break };
        let who = if i == script.steps.len() {
            "fresh client".to_string()
        } else {
            format!("client {}", any.client)
        };
        let mark = if i == first { "  <== differs" } else { "" };
        let _ = writeln!(out, "step {i} ({who}){mark}");
        let n = p
            .map_or(0, |s| s.results.len())
            .max(d.map_or(0, |s| s.results.len()));
        for j in 0..n {
            let label = any.labels.get(j).map_or("", String::as_str);
            let pr = p.and_then(|s| s.results.get(j)).map_or("-", String::as_str);
            let dr = d.and_then(|s| s.results.get(j)).map_or("-", String::as_str);
            if pr == dr {
                let _ = writeln!(out, "    {label}\n        both:   {pr}");
            } else {
                let _ = writeln!(
                    out,
                    "    {label}\n        pooled: {pr}\n        direct: {dr}"
                );
            }
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// The harness: one role and one pooler per mode, fresh clients per case

struct Harness {
    mode: Mode,
    role: String,
    password: String,
    pooler: Option<Pooler>,
}

impl Harness {
    async fn new(mode: Mode) -> Harness {
        let role = match mode {
            Mode::Detect => "diff_detect",
            Mode::Always => "diff_always",
            Mode::Pinned => "diff_pinned",
        };
        let mut scratch = config();
        let password = trust_role(&mut scratch, role).await;
        // Schemas the search_path values name, and one for "$user". The
        // three tests do this at once: the lock keeps their GRANTs apart
        // ("tuple concurrently updated" otherwise).
        superuser()
            .await
            .batch_execute(&format!(
                "DO $$ BEGIN \
                   PERFORM pg_advisory_xact_lock(4242); \
                   CREATE SCHEMA IF NOT EXISTS \"My Schema\"; \
                   CREATE SCHEMA IF NOT EXISTS s1; \
                   GRANT USAGE ON SCHEMA \"My Schema\", s1 TO PUBLIC; \
                 EXCEPTION WHEN unique_violation OR duplicate_schema THEN NULL; END $$; \
                 CREATE SCHEMA IF NOT EXISTS {role} AUTHORIZATION {role}"
            ))
            .await
            .unwrap();
        let mut h = Harness {
            mode,
            role: role.to_string(),
            password,
            pooler: None,
        };
        h.start_pooler().await;
        h
    }

    async fn start_pooler(&mut self) {
        let t = Instant::now();
        if let Some(old) = self.pooler.take() {
            old.running.shutdown().advance(pglittle::Phase::Stopping);
            old.running.wait().await;
        }
        let mode = self.mode;
        self.pooler = Some(
            pool_of_one(&self.role, |c| {
                c.pooler.query_wait_timeout = Duration::from_secs(5);
                match mode {
                    Mode::Detect => {}
                    Mode::Always => c.pooler.server_reset = pglittle::config::ServerReset::Always,
                    Mode::Pinned => {
                        c.pooler.pool_size = 4.into();
                        c.pooler.pin_on_session_state = true;
                    }
                }
            })
            .await,
        );
        if std::env::var_os("PGLITTLE_DIFF_TRACE").is_some() {
            eprintln!("pooler (re)started in {:?}", t.elapsed());
        }
    }

    /// Runs the script directly and through pglittle; Err is the report.
    /// After a failure the pooler is replaced, so whatever the failure left
    /// on its server cannot leak into the next (shrunk) case.
    async fn check(&mut self, script: &Script) -> Result<(), String> {
        if std::env::var_os("PGLITTLE_DIFF_FRESH_POOLER").is_some() {
            self.start_pooler().await;
        }
        let c = cluster();
        let direct = Target {
            port: c.primary.port,
            user: &self.role,
            password: Some(&self.password),
        };
        let direct = run(script, direct, self.mode).await;
        let pooled = Target {
            port: self.pooler.as_ref().unwrap().port,
            user: &self.role,
            password: None,
        };
        let pooled = run(script, pooled, self.mode).await;
        match report(script, &pooled, &direct) {
            None => Ok(()),
            Some(r) => {
                self.start_pooler().await;
                Err(r)
            }
        }
    }
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Scripts one simplification away from `s`.
fn simpler(s: &Script) -> Vec<Script> {
    let mut out = Vec::new();
    let used: Vec<usize> = (0..s.clients.len())
        .filter(|&c| {
            s.steps
                .iter()
                .any(|st| usize::from(st.client) % s.clients.len() == c)
        })
        .collect();
    if used.len() < s.clients.len() && !used.is_empty() {
        let mut t = s.clone();
        t.clients = used.iter().map(|&c| s.clients[c].clone()).collect();
        for st in &mut t.steps {
            let old = usize::from(st.client) % s.clients.len();
            st.client = used.iter().position(|&c| c == old).unwrap() as u8;
        }
        out.push(t);
    }
    for i in 0..s.steps.len() {
        let mut t = s.clone();
        t.steps.remove(i);
        out.push(t);
    }
    for (i, st) in s.steps.iter().enumerate() {
        if let Block::Tx(acts, commit) = &st.block {
            for j in 0..acts.len() {
                let mut t = s.clone();
                let mut acts = acts.clone();
                let a = acts.remove(j);
                t.steps[i].block = if acts.is_empty() {
                    Block::One(a)
                } else {
                    Block::Tx(acts, *commit)
                };
                out.push(t);
            }
        }
        if st.ext {
            let mut t = s.clone();
            t.steps[i].ext = false;
            out.push(t);
        }
        match &st.block {
            Block::One(a) => {
                for b in a.smaller() {
                    let mut t = s.clone();
                    t.steps[i].block = Block::One(b);
                    out.push(t);
                }
            }
            Block::Tx(acts, commit) => {
                for (j, a) in acts.iter().enumerate() {
                    for b in a.smaller() {
                        let mut t = s.clone();
                        let mut acts = acts.clone();
                        acts[j] = b;
                        t.steps[i].block = Block::Tx(acts, *commit);
                        out.push(t);
                    }
                }
            }
        }
    }
    for (c, spec) in s.clients.iter().enumerate() {
        if spec.startup.is_some() {
            let mut t = s.clone();
            t.clients[c].startup = None;
            out.push(t);
        }
        if spec.kind == Wire {
            let mut t = s.clone();
            t.clients[c].kind = Driver;
            out.push(t);
        }
    }
    out
}

/// What proptest's shrinking leaves is often not minimal (shrinking under
/// flat_map is limited): removes steps, actions and clients one at a time
/// while the script still fails, for at most `budget`.
fn minimise(
    rt: &tokio::runtime::Runtime,
    h: &mut Harness,
    script: Script,
    report: String,
    budget: Duration,
) -> (Script, String) {
    let started = Instant::now();
    let (mut best, mut report) = (script, report);
    // Every candidate runs on a fresh pooler, so what an earlier case left
    // on a server cannot make it fail.
    rt.block_on(h.start_pooler());
    if let Err(r) = rt.block_on(h.check(&best)) {
        report = r;
    } else {
        report = format!(
            "(passes on a fresh pooler: it failed only after earlier cases; the report is \
             from the failing run)\n{report}"
        );
        return (best, report);
    }
    'outer: while started.elapsed() < budget {
        for candidate in simpler(&best) {
            if started.elapsed() >= budget {
                break 'outer;
            }
            rt.block_on(h.start_pooler());
            if let Err(r) = rt.block_on(h.check(&candidate)) {
                best = candidate;
                report = r;
                continue 'outer;
            }
        }
        break;
    }
    (best, report)
}

fn fixed(mode: Mode) -> Vec<Script> {
    match mode {
        Mode::Detect => fixed_detect(),
        Mode::Always => fixed_always(),
        Mode::Pinned => fixed_pinned(),
    }
}

/// Runs the fixed cases, then the generated ones; fails with every report.
///
/// `PGLITTLE_DIFF_CASES` (default 64) generated cases; after a failure the
/// run goes on with fresh cases until `PGLITTLE_DIFF_FAILURES` (default 1)
/// distinct minimised failures are found.
fn differential(mode: Mode) {
    let fixed = fixed(mode);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut h = rt.block_on(Harness::new(mode));
    let mut failures = Vec::new();
    // PGLITTLE_DIFF_REPEAT runs each fixed case that many times (to tell
    // a flaky failure from a steady one).
    let repeat = env_number("PGLITTLE_DIFF_REPEAT", 1).max(1);
    for (i, s) in fixed.iter().enumerate() {
        let mut failed = 0;
        let mut first = None;
        for _ in 0..repeat {
            if let Err(r) = rt.block_on(h.check(s)) {
                failed += 1;
                first.get_or_insert(r);
            }
        }
        if let Some(r) = first {
            failures.push(format!(
                "fixed case {i} of {mode:?} fails ({failed} of {repeat} runs): {r}"
            ));
        }
    }
    let fixed_time = started.elapsed();
    let cases = env_number("PGLITTLE_DIFF_CASES", 64);
    let wanted = env_number("PGLITTLE_DIFF_FAILURES", 1).max(1) as usize;
    let mut found: Vec<String> = Vec::new();
    let mut ran = 0u32;
    let passing_time = Cell::new(Duration::ZERO);
    let passing = Cell::new(0u32);
    while ran < cases && found.len() < wanted {
        let harness = RefCell::new(&mut h);
        // Cases that passed before the first failure (later runs are shrinking).
        let passed = Cell::new(0u32);
        let failed = Cell::new(false);
        let mut runner = TestRunner::new(PtConfig {
            cases: cases - ran,
            failure_persistence: None,
            max_shrink_iters: 500,
            max_shrink_time: 30_000,
            ..PtConfig::default()
        });
        let result = runner.run(&scripts(mode), |s| {
            let t = Instant::now();
            let outcome = rt.block_on(harness.borrow_mut().check(&s));
            if outcome.is_ok() {
                passing_time.set(passing_time.get() + t.elapsed());
                passing.set(passing.get() + 1);
            }
            if !failed.get() {
                match outcome {
                    Ok(()) => passed.set(passed.get() + 1),
                    Err(_) => failed.set(true),
                }
            }
            outcome.map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => ran = cases,
            Err(TestError::Fail(reason, script)) => {
                let (script, reason) = minimise(
                    &rt,
                    &mut h,
                    script,
                    reason.message().to_string(),
                    Duration::from_secs(60),
                );
                let again = (0..3)
                    .filter(|_| {
                        rt.block_on(h.start_pooler());
                        rt.block_on(h.check(&script)).is_err()
                    })
                    .count();
                let text = script.to_rust();
                if found.contains(&text) {
                    // Found again: nothing new.
                } else if let Some((m, i)) = [Mode::Detect, Mode::Always, Mode::Pinned]
                    .into_iter()
                    .find_map(|m| {
                        let i = self::fixed(m).iter().position(|f| f.to_rust() == text)?;
                        Some((m, i))
                    })
                {
                    failures.push(format!(
                        "generated case of {mode:?} fails, minimised to fixed case {i} of \
                         {m:?} (fails again {again} of 3 runs):\n{text}"
                    ));
                    found.push(text);
                } else {
                    failures.push(format!(
                        "generated case of {mode:?} fails, minimised (fails again {again} of 3 runs); \
                         keep it as a fixed case:\n{text}\n\n{reason}"
                    ));
                    found.push(text);
                }
                ran += passed.get() + 1;
            }
            Err(TestError::Abort(reason)) => {
                failures.push(format!("{mode:?} aborted: {reason}"));
                break;
            }
        }
    }
    eprintln!(
        "differential {mode:?}: {} fixed cases in {fixed_time:.1?}; {ran} of {cases} generated \
         cases run, {} distinct failures; {} passing runs took {:.1?} ({:.0?} each); \
         {:.1?} in all",
        fixed.len(),
        found.len(),
        passing.get(),
        passing_time.get(),
        passing_time.get() / passing.get().max(1),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// The tests, each with the failures it found, kept as fixed cases

#[test]
fn differential_settings_and_statements_on_one_server() {
    differential(Mode::Detect);
}

/// Found on da1f082 under `always`, and wrong under `detect` too: RESET of
/// a startup setting, then a local set of it in the same block (in a DO
/// block, SET LOCAL, set_config(.., true)). The local set was read back as
/// the session's value, which by then was the server's reset value, not the
/// client's startup one. Also the same block rolled back (the client keeps
/// its value).
fn masked_reset_cases() -> Vec<Script> {
    vec![
        script(
            &[(Driver, Some(SearchPath))],
            vec![
                tx(
                    0,
                    false,
                    vec![Reset(SearchPath), Do(SearchPath, 0, true)],
                    true,
                ),
                one(0, false, Schemas),
            ],
        ),
        // The same with the local set in plain sight (SET LOCAL, and
        // set_config(.., true), which was followed as a session SET), and
        // with the block rolled back (the client keeps its value).
        script(
            &[(Driver, Some(SearchPath))],
            vec![
                tx(
                    0,
                    false,
                    vec![Reset(SearchPath), SetLocal(SearchPath, 3)],
                    true,
                ),
                one(0, false, Schemas),
                tx(
                    0,
                    false,
                    vec![Reset(SearchPath), SetConfig(SearchPath, 2, true)],
                    true,
                ),
                one(0, false, Schemas),
                one(0, false, Set(SearchPath, 1)),
                tx(
                    0,
                    false,
                    vec![Reset(SearchPath), SetLocal(SearchPath, 3)],
                    false,
                ),
                one(0, false, Schemas),
                tx(
                    0,
                    false,
                    vec![Reset(SearchPath), SetLocal(SearchPath, 3)],
                    true,
                ),
                one(0, false, Schemas),
            ],
        ),
    ]
}

fn fixed_detect() -> Vec<Script> {
    let mut cases = masked_reset_cases();
    cases.extend(vec![
        // Found on 2600adb (passes since 8cafb50):
        // search_path learned as `"$user", public` was re-applied as
        // one quoted name: """$user"", public".
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                one(0, false, Set(SearchPath, 0)),
                one(1, false, Set(SearchPath, 2)),
                one(0, false, Show(SearchPath)),
            ],
        ),
        // An empty search_path (only set_config makes one) came back
        // as `""`, a path of one schema named "".
        script(
            &[(Driver, None)],
            vec![
                one(0, false, SetConfig(SearchPath, 0, false)),
                one(0, false, Show(SearchPath)),
            ],
        ),
        // A SQL-level PREPARE stayed on the server: a fresh client
        // could EXECUTE it, and Bind it as "a".
        script(&[(Driver, None)], vec![one(0, false, Prepare(0, 0))]),
        // set_config of an untracked setting was dropped at the end
        // of the transaction (SHOW said 4MB).
        script(
            &[(Driver, None)],
            vec![
                one(0, false, SetConfig(WorkMem, 1, false)),
                one(0, false, Show(WorkMem)),
            ],
        ),
        // A SET sent through the extended protocol was not seen: it
        // reached the next client.
        script(
            &[(Driver, None)],
            vec![one(0, true, Set(StatementTimeout, 1))],
        ),
        // The unnamed statement (here a SET sent with Parse) was gone
        // by the next round trip: 26000 instead of PostgreSQL's 08P01
        // for binding one parameter to a statement that takes none.
        script(
            &[(Wire, None)],
            vec![
                one(0, true, Set(SearchPath, 0)),
                one(0, false, ExtQuery(0, 0)),
            ],
        ),
        // Found on main 468695a: a second PREPARE of a name the client
        // already prepared succeeded; PostgreSQL says 42P05.
        script(
            &[(Driver, None)],
            vec![one(0, false, Prepare(0, 0)), one(0, false, Prepare(0, 0))],
        ),
        // A PREPARE sent through Parse (driver `query("PREPARE ...")`)
        // was not tracked: it stayed on the server, and a fresh client
        // could EXECUTE it.
        script(&[(Driver, None)], vec![one(0, true, Prepare(0, 0))]),
        // DEALLOCATE ALL sent through Parse emptied the server of
        // pglittle's statements without pglittle knowing: another
        // client's statement, still "prepared" in pglittle's cache of
        // that server, then failed with 26000 (and so did the
        // DEALLOCATE ALL statement itself, the second time).
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                one(0, false, ExtPrepare(1, 0, false)),
                one(1, true, DeallocateAll),
                one(0, false, ExtQuery(1, 0)),
            ],
        ),
        script(
            &[(Driver, None)],
            vec![one(0, true, DeallocateAll), one(0, true, DeallocateAll)],
        ),
        // The same with DISCARD ALL through Parse.
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                one(0, false, ExtPrepare(1, 0, false)),
                one(1, true, DiscardAll),
                one(0, false, ExtQuery(1, 0)),
            ],
        ),
        // SET of a custom setting through Parse reached the next client.
        script(&[(Driver, None)], vec![one(0, true, Set(MyappX, 1))]),
        // RESET ALL inside a transaction block that rolled back was
        // taken as done: the server kept 7MB, pglittle thought it
        // clean, and the next client got 7MB.
        script(
            &[(Driver, None)],
            vec![
                one(0, false, Set(WorkMem, 1)),
                tx(0, false, vec![ResetAll], false),
            ],
        ),
        // DISCARD ALL inside a transaction block fails (25001), but
        // pglittle forgot the client's statements as if it had run:
        // the SQL-level one stayed on the server for the next client
        // to EXECUTE...
        script(
            &[(Driver, None)],
            vec![
                one(0, false, Prepare(0, 0)),
                tx(0, false, vec![DiscardAll], false),
            ],
        ),
        // ...the client's own protocol-level statement was gone for it
        // (26000)...
        script(
            &[(Driver, None)],
            vec![
                one(0, false, ExtPrepare(2, 0, false)),
                tx(0, false, vec![DiscardAll], false),
                one(0, false, ExtQuery(2, 0)),
            ],
        ),
        // ...and a startup search_path stayed on the server for the
        // next client.
        script(
            &[(Driver, Some(SearchPath))],
            vec![tx(0, false, vec![DiscardAll], false)],
        ),
        // An EXECUTE of another client's name in a transaction block
        // that had already failed: the DEALLOCATE pglittle sent first
        // failed too (25P02), pglittle took the server as clean, and
        // the next client's EXECUTE ran client 0's statement.
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                one(0, false, Prepare(1, 0)),
                tx(1, false, vec![Execute(2, 0), Execute(1, 0)], false),
            ],
        ),
        // Found on main ab3d0fe: RESET of one setting inside a
        // transaction block that rolled back was taken as done (as
        // RESET ALL above): the value stayed on the server for the
        // next client. With an empty search_path from set_config...
        script(
            &[(Driver, None)],
            vec![
                one(0, false, SetConfig(SearchPath, 0, false)),
                tx(0, false, vec![Reset(SearchPath)], false),
            ],
        ),
        // ...and with a reported setting a DO block set.
        script(
            &[(Driver, None)],
            vec![
                one(0, false, Do(ApplicationName, 3, false)),
                tx(0, false, vec![Reset(ApplicationName)], false),
            ],
        ),
        // An EXECUTE sent through Parse is not matched to the client's
        // own statements: it ran the statement another client had
        // PREPAREd on the server.
        script(
            &[(Driver, None), (Driver, None)],
            vec![one(1, false, Prepare(1, 0)), one(0, true, Execute(1, 0))],
        ),
        // Found on main fa02154, the same family: after another client's
        // DEALLOCATE ALL, the client's own EXECUTE through Parse was not
        // preceded by a replay of its PREPARE (26000)...
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                one(0, false, Prepare(0, 0)),
                one(1, false, DeallocateAll),
                one(0, true, Execute(0, 0)),
            ],
        ),
        // ...and a PREPARE through Parse collided with another client's
        // statement of the same name on the server (42P05).
        script(
            &[(Driver, None), (Driver, None)],
            vec![one(1, false, Prepare(1, 0)), one(0, true, Prepare(1, 0))],
        ),
        // Found on main fa02154: the failed DISCARD ALL (above) also
        // reset the client's own settings: its search_path was lost.
        script(
            &[(Driver, None)],
            vec![
                one(0, false, Set(SearchPath, 2)),
                tx(0, false, vec![DiscardAll], false),
                one(0, false, Show(SearchPath)),
            ],
        ),
        // Found on main 445d533, statements sent with Parse (a driver's
        // `query`) whose SQL is PREPARE, EXECUTE, DEALLOCATE ALL or
        // DISCARD ALL changed the books at the Parse, before they ran:
        // a PREPARE refused in a failed block was taken as made...
        script(
            &[(Driver, None)],
            vec![
                tx(0, true, vec![Execute(0, 0), Prepare(1, 0)], false),
                one(0, false, Do(SearchPath, 0, false)),
                one(0, false, Execute(1, 0)),
            ],
        ),
        // ...and so was one with a syntax error: the DEALLOCATE pglittle
        // sent before another client's EXECUTE of that name failed, and
        // took its transaction block down (25P02)...
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                one(1, true, Prepare(1, 4)),
                tx(0, false, vec![Execute(1, 0)], false),
            ],
        ),
        // ...a DISCARD ALL refused in a block (25001) emptied the books of
        // the server's statements, which it still had (42P05 next).
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                tx(0, true, vec![ExtPrepare(0, 0, false)], true),
                tx(1, true, vec![DiscardAll], true),
            ],
        ),
        script(
            &[(Driver, None)],
            vec![
                tx(0, true, vec![DiscardAll], true),
                tx(0, true, vec![ExtClose(2)], true),
            ],
        ),
        // A COMMIT sent with Parse in a failed block, of a text the server
        // had prepared already, was sent on to the server (42P05) instead
        // of being answered here: PostgreSQL accepts a Parse of COMMIT
        // there.
        script(
            &[(Driver, None)],
            vec![
                tx(0, true, vec![Prepare(0, 0)], true),
                tx(0, true, vec![ExtPrepare(0, 4, false)], true),
            ],
        ),
        // Found on main 35212bc: `SET x TO DEFAULT` was taken as a SET of
        // the server's default; on PostgreSQL it is RESET, back to the
        // value the session started with.
        script(
            &[(Driver, Some(WorkMem))],
            vec![one(0, false, Set(WorkMem, 0)), one(0, false, Show(WorkMem))],
        ),
        script(
            &[(Driver, Some(ApplicationName))],
            vec![
                one(0, false, Set(ApplicationName, 0)),
                one(0, false, Show(ApplicationName)),
            ],
        ),
        // DISCARD ALL sent as the unnamed statement leaves that statement
        // in place (08P01 for binding a parameter to it); pglittle forgot
        // it (26000).
        script(
            &[(Wire, None)],
            vec![one(0, true, DiscardAll), one(0, false, ExtQuery(0, 0))],
        ),
        // Found on main f6f1a79: a DEALLOCATE in a failed block, of a
        // statement pglittle had to replay first (a DO block's DISCARD ALL
        // had dropped it), failed with its replay; undoing the DEALLOCATE
        // then put the statement back in the books of a server that did
        // not have it, and the next DEALLOCATE was 26000.
        script(
            &[(Wire, None)],
            vec![
                tx(
                    0,
                    false,
                    vec![Prepare(1, 0), Do(SearchPath, 0, false)],
                    false,
                ),
                tx(0, false, vec![ExtQuery(0, 0), Deallocate(1)], false),
                one(0, false, Deallocate(1)),
            ],
        ),
    ]);
    cases
}

#[test]
fn differential_do_blocks_with_server_reset_always() {
    differential(Mode::Always);
}

fn fixed_always() -> Vec<Script> {
    let mut cases = masked_reset_cases();
    cases.extend(vec![
        // Found in the 10,000-case run on e340c92: an EXECUTE through
        // Parse of a name not prepared (26000), PREPARE, then the same
        // EXECUTE: pglittle reused the server's statement of that text,
        // whose row description PostgreSQL had fixed at its Parse (none),
        // and the driver got a row it had not been told of.
        script(
            &[(Driver, None)],
            vec![
                one(0, true, Execute(0, 1)),
                one(0, false, Prepare(0, 0)),
                one(0, true, Execute(0, 1)),
            ],
        ),
        // Found on 2600adb (passes since 8cafb50): a DO block's
        // set_config reached the next client.
        script(
            &[(Driver, None)],
            vec![one(0, false, Do(WorkMem, 1, false))],
        ),
        // set_config(..., is_local = true) outside a transaction block
        // lasts for its statement only; it was kept as the session's
        // search_path.
        script(
            &[(Driver, None)],
            vec![
                one(0, false, SetConfig(SearchPath, 0, true)),
                one(0, false, Schemas),
            ],
        ),
        // Found on main 468695a: set_config through Parse was not
        // followed; under `always` the reset at check-in dropped it
        // for its own client.
        script(
            &[(Driver, None)],
            vec![
                one(0, true, SetConfig(SearchPath, 2, false)),
                one(0, false, Schemas),
            ],
        ),
        // As under `detect`: DEALLOCATE ALL through Parse desynced
        // pglittle's cache of the server's statements.
        script(
            &[(Driver, None)],
            vec![one(0, true, DeallocateAll), one(0, true, DeallocateAll)],
        ),
        // Found on main ab3d0fe: a DISCARD ALL that failed in a
        // transaction block emptied pglittle's cache of the server's
        // statements, which the server still had: preparing one again
        // gave 42P05.
        script(
            &[(Driver, None)],
            vec![
                one(0, true, Set(SearchPath, 0)),
                tx(0, false, vec![DiscardAll], false),
                one(0, true, Set(SearchPath, 0)),
            ],
        ),
        // Found on main 445d533: a DISCARD ALL through Parse refused in a
        // block forgot the client's own statements (26000).
        script(
            &[(Driver, None)],
            vec![
                one(0, false, ExtPrepare(1, 0, false)),
                tx(0, true, vec![DiscardAll], false),
                one(0, false, ExtQuery(1, 0)),
            ],
        ),
        // A wire client's Parse in a failed transaction block, of a text
        // the server already had prepared, was answered ParseComplete
        // locally; PostgreSQL refuses it (25P02).
        script(
            &[(Wire, None), (Wire, None)],
            vec![
                one(0, false, ExtPrepare(1, 1, false)),
                tx(
                    1,
                    false,
                    vec![ExtQuery(1, 1), ExtPrepare(1, 1, false)],
                    true,
                ),
            ],
        ),
        // The DEALLOCATE pglittle sends before a PREPARE of a name another
        // client holds on the server failed in a failed block; undoing the
        // PREPARE then forgot that the server still had the other
        // client's statement, and a fresh client ran it.
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                one(0, false, Prepare(0, 0)),
                tx(1, false, vec![Deallocate(1), Prepare(0, 0)], false),
            ],
        ),
    ]);
    cases
}

#[test]
fn differential_session_state_with_pinning() {
    differential(Mode::Pinned);
}

fn fixed_pinned() -> Vec<Script> {
    vec![
        // Found on 2600adb (passes since 8cafb50): a WITH HOLD cursor
        // vanished at the end of the transaction.
        script(
            &[(Driver, None)],
            vec![one(0, false, Declare(0)), one(0, false, Cursors)],
        ),
        // LISTEN did not last: pg_listening_channels() was empty.
        script(
            &[(Driver, None)],
            vec![one(0, false, Listen(0)), one(0, false, Channels)],
        ),
        // Found on main 468695a: session state made through Parse
        // (driver `query(...)`) was not noticed: no pin, no reset, and
        // the lock, the LISTEN, the temp table and the cursor reached
        // the next client of that server.
        script(&[(Driver, None)], vec![one(0, true, TryLock(0))]),
        script(&[(Driver, None)], vec![one(0, true, Listen(0))]),
        script(&[(Driver, None)], vec![one(0, true, TempCreate(0))]),
        script(&[(Driver, None)], vec![one(0, true, Declare(0))]),
        // After RESET ALL in a transaction block that also pinned the
        // client (a WITH HOLD cursor), later transactions saw the
        // server's default search_path instead of the startup one.
        script(
            &[(Driver, Some(SearchPath))],
            vec![
                tx(0, false, vec![ResetAll, Declare(0)], true),
                one(0, false, Schemas),
            ],
        ),
        // Found on main ab3d0fe: RESET of a startup setting in a
        // transaction block that failed (FETCH from no cursor), so its
        // COMMIT rolled back: the next client got the startup value.
        script(
            &[(Driver, Some(ApplicationName))],
            vec![tx(0, false, vec![Reset(ApplicationName), Fetch(1)], true)],
        ),
        // Found on main fa02154: a DEALLOCATE through Parse on another
        // server than the one the client PREPAREd on (client 0 pinned the
        // first) was not preceded by a replay of the PREPARE (26000).
        script(
            &[(Driver, None), (Driver, None)],
            vec![
                one(1, false, Prepare(2, 0)),
                one(0, false, TempCreate(0)),
                one(1, true, Deallocate(2)),
            ],
        ),
        // Found on main 445d533: DEALLOCATE ALL through Parse in a failed
        // block emptied the books; the next client's statement collided
        // with the server's (42P05).
        script(
            &[(Driver, Some(StatementTimeout)), (Driver, None)],
            vec![
                tx(1, true, vec![Fetch(1), DeallocateAll], true),
                tx(0, true, vec![Listen(0)], true),
            ],
        ),
    ]
}
