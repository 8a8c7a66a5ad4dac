//! pglittle: a PostgreSQL connection pooler.
//!
//! # Layout (rooms, bottom floor first; each imports only rooms above it
//! in this list, checked by `integration/house.py`)
//! - `shutdown`: the shutdown phases and signal (imports nothing).
//! - `protocol`: sans-IO wire protocol (frames, startup packets, the
//!   messages pglittle decodes or encodes, `TxStatus`, named SQLSTATEs in
//!   `protocol::sqlstate`, `Lsn`, SCRAM and md5).
//! - `config`: TOML and sidecar flags -> validated, typed `Config`.
//! - `tls`: the TLS acceptor offered to clients (built from the config's
//!   PEM files, rebuilt at RELOAD) and `ClientStream`, a client connection
//!   that is plain TCP or TLS over it (rustls, ring provider; or, after a
//!   the login, `tls::records`'s record layer).
//! - `metrics`: a per-instance Prometheus registry (no global recorder),
//!   metric names, and the tiny HTTP server for /metrics and /health.
//! - `sql`: pure statement analysis: the lexer, session side effects,
//!   read/write classification with hints, SQL PREPARE & co, pglittle's
//!   own `SET`/`SHOW pglittle.*`, which reads may run twice (`rerun`).
//! - `prepared`: every prepared-statement concern, pure: the client's
//!   statements, the per-server LRU, the `Rewriter` (client messages in,
//!   bytes for the server out, and a queue saying what each reply means),
//!   SQL-level statements.
//! - `router`: pure "where may this request run": the buffered request
//!   folded into a `Request` (`router::request`), the session's
//!   `RouteState` (floor, override, pglittle's own commands), and
//!   `router::plan`, a `Decision` tested as a table.
//! - `sizing`: how big a pool should be and whom it turns away, pure with
//!   the clock passed in: Little's Law windows (`sizing::windows`), Erlang C
//!   and the recommended size (`sizing::erlang`), the auto-size controller,
//!   the sharing of a server's connection budget, admission (shedding).
//! - `pool`: per (database, user, host) pools of server connections, leases, the
//!   janitor, opening connections (`pool::open`), PAUSE/RESUME/KILL/RECONNECT
//!   (`pool::ops`); it records lease boundaries into `sizing`, asks it whom
//!   to admit, and applies the controller's sizes (`pool::autosize`).
//! - `topology`: hosts per database with health, WAL positions and lag,
//!   kept by a background probe (the one health check, which /health reads
//!   too); picks the replica for a read.
//! - `relay`: the two pumps of one transaction over generic stream halves,
//!   their shared `State` (the `TxRecord` plus the `Rewriter`, one plain
//!   struct with pure methods), per-query metering.
//! - `shared`: the app-wide hub passed to every session and the console
//!   (`Shared`: config snapshot, pools, topology), the client and cancel
//!   registries, the failed-login table.
//! - `error`: the session's errors, each with its SQLSTATE.
//! - `session`: one logged-in pool client: next request -> plan -> acquire ->
//!   relay -> check-in, each a named step (`session::request`).
//! - `admin`: the PgBouncer-compatible console, and the export of pool
//!   state into Prometheus at scrape time. A sibling of `session`: neither
//!   imports the other.
//! - `front`: the accept loop and the handshake; hands a `Login` to
//!   `session` (a pool client) or `admin` (a console client).
//! - `app`: builds everything, spawns the background tasks, applies reloads.
//! - The throwaway local primary + replica for `demo` and the tests is not
//!   part of this library: it is the workspace crate `crates/pgcluster`, a
//!   dev-dependency of the tests and an optional dependency (the default
//!   `demo` feature) of the binary.
//!
//! # Life of one query (transaction mode)
//! 1. `front` accepts, `front::tls` settles TLS, `front::handshake`
//!    reads the StartupMessage, `front::auth` verifies the client
//!    (SCRAM-SHA-256(-PLUS), md5, trust or a certificate) and greets it with the server's parameters and pglittle's own
//!    cancel key; `session::Session::start` takes it from there.
//! 2. The session waits for a complete message without holding a buffer
//!    (`session::client_io`).
//! 3. `router::inspect` and `router::plan` decide where it may run (for a
//!    database with replicas); `session::routing` asks the topology for the
//!    host.
//! 4. `Pool::acquire` lends an idle server (checked for liveness), opens a
//!    new one, or queues the client FIFO up to `query_wait_timeout`.
//! 5. The client's session parameters are applied if the server differs.
//! 6. `relay::transaction` pumps bytes both ways, rewriting prepared
//!    statement names through `prepared::Rewriter` and reading only
//!    ReadyForQuery, ParameterStatus and ErrorResponse from the server.
//! 7. At ReadyForQuery('I') with nothing in flight, `session::checkin`:
//!    the LSN of a write is taken from the probe the relay pipelined
//!    behind it (or read now, on the same server), the settings the
//!    client changed are read back so they follow it, and the server is
//!    released, kept (pinned) or reset.
//!
//! # Where the map changed
//! - Relaying is two pumps in one task (client -> server, server -> client)
//!   so a pipelining client can never deadlock against a server writing
//!   results. What they share is one plain struct, `relay::State` (the
//!   `TxRecord` record plus the prepared-statement `Rewriter`), behind one
//!   mutex that neither holds across an await; its methods are pure and
//!   `relay::state_tests` drive whole conversations through them.
//! - Named prepared statements need more than "read only ReadyForQuery":
//!   `prepared` keeps a queue of what each message sent to the server
//!   expects back, so replies can be forwarded, swallowed (pglittle's own
//!   Parse/Close) or made up (a Parse or Close answered locally) in order,
//!   across pipelines and errors. The scanner (`protocol::scan`) classifies
//!   every server frame by kind and lets the session decide its fate,
//!   without copying DataRows that pass through.
//! - An idle client is a boxed `Session` plus a task whose future is only
//!   the idle wait: every other step is boxed, and a unit test guards the size.
//! - Server connections are boxed for life, so the pool moves pointers.
//!
//! - Read/write splitting happens before step 4: `router::plan` decides,
//!   and `session::routing` asks the topology for a replica, which may wait
//!   (`causal_wait`) for one to replay the client's floor; a replica lease
//!   serves one batch. After a write, step 7 first reads
//!   `pg_current_wal_insert_lsn()` on the same server: the client's new
//!   floor (and its `pglittle.lsn` token).
//!
//! - Check-in is one place, `session::checkin`, used by every path (end of
//!   a transaction, a client leaving or cut off, session mode): settings the
//!   client SET or RESET are read back so they follow it (RESET returns to
//!   the session's start value; whether a RESET stuck or was rolled back is
//!   told by the setting's `pg_settings.source` and whether it is at its
//!   reset value, `session::follow`), one query asks what session state is left
//!   when the SQL may have made some, and a pure `decide` keeps the server
//!   (LISTEN, or `pin_on_session_state`), resets it (DISCARD ALL, or the
//!   pipelined `server_reset = "always"` reset whose reply the next borrower
//!   reads), or releases it. Abandoned servers get ROLLBACK and DISCARD ALL
//!   as two pipelined queries.
//! - A client that keeps its server while idle (session mode, pinned)
//!   waits on both sockets: `session::idle` passes on what the server says
//!   by itself (notifications, notices, ParameterStatus, a FATAL).
//! - The relay runs over generic stream halves (`relay::pump`), so
//!   `relay::tests` drive it with `tokio::io::duplex` and a scripted
//!   server. Large Bind/CopyData/FunctionCall messages stream through after
//!   their head (`frontend::peek_stream_head`).
//! - `Lsn` lives in `protocol` and `RouteOverride` in `sql::local` (the
//!   value of `SET pglittle.route`), so `sql` and `prepared` import
//!   nothing above them; the default writer-function list is a `config`
//!   default that `sql::classify` re-exports.
//! - `shutdown` sits below `protocol` (DESIGN.md does not place it): the
//!   phases are read by `topology`, `shared`, `session` and `admin`, and it
//!   imports nothing. `error` (the session's errors) sits between `shared`
//!   and `session`, because `front` and `admin` use it too.
//! - After the relay, `TxRecord::replay(outcome)` says whether the request
//!   may run again elsewhere (`relay::Replay`: no; refused by a replica
//!   before anything reached the client; or its server died first, with
//!   or without a FATAL first), as pingora's `RetryType` does for an error.
//!   The session decides where (`session::placement`): a replica's request
//!   moves to the primary, a primary's only when `safe_to_move` (a lone
//!   BEGIN, reads answered first by a FATAL, or, after a bare hang-up,
//!   reads that call only functions known to change nothing: `sql::rerun`).
//! - Each query text is lexed once. Routing (`router::inspect`) lexes a
//!   Query or Parse text into stack-held spans (`sql::lexer::Spans`) and
//!   runs both the classifier and the effects scan over them
//!   (`sql::analyze`); what it found travels in `sql::Known`, which the
//!   session lends to the relay's `TxRecord`, so the relay does not lex
//!   those texts again. Without replicas routing does not run and the relay
//!   lexes each text itself, once.
//! - `tls` is a room of its own, just above `config` (DESIGN.md places TLS
//!   in `front`): the client stream it defines is used by `front`, `admin`,
//!   `session` and `relay`, which `front` must not be imported by. TLS is
//!   settled in `front::tls` before the startup packet; a plain stream is
//!   waited on for readiness and split without a lock as before, a TLS
//!   stream is read (rustls may hold decrypted bytes the socket no longer
//!   shows) and split with tokio's lock.
//! - The relay allocates nothing per transaction for its own buffers: they
//!   live with the server connection (`pool::server::RelayBuffers`; few
//!   servers, so nothing per client) and the reply queue's storage with the
//!   server's statement books. Both pumps share one `Ctx`.
//! - Whether a client's Parse arrives in a failed transaction block is
//!   passed to `Rewriter::client_message` by the relay state (it alone sees
//!   both the last ReadyForQuery and what is in flight), not patched in.
//! - Statement books change when SQL is sent, before the server runs it, so
//!   every change carries the index of the statement that makes it
//!   (`prepared::sql`): when a query fails at statement n, the
//!   changes of n and later are undone (a refused DISCARD ALL gives the
//!   books back whole). A statement sent with Parse changes them at its
//!   Execute. The reply queue's undo sees the SQLSTATE, because a failed
//!   DEALLOCATE means "still there" (25P02) or "never was" (26000).
//! - Logging in to a server is its own file (`pool::login`) with a pure
//!   `LoginCheck` of message order: a server is logged in only after
//!   AuthenticationOk and, for SCRAM, a verified server-final message.
//! - Where a new connection stands against `max_client_conn` is a pure
//!   `front::Admission` decided at accept: over the cap it has 1 s to be
//!   a cancel request or (within a reserve of 5) a console login.
//! - A cancel holds its client's server until delivered
//!   (`shared::cancel`): check-in waits for it before a clean release.
//! - Every pool place that lives inside a client's future has one RAII
//!   owner (`pool::slot`): `Opening` for a counted connect, `Ticket` for a
//!   place in the queue and any grant sent to it. Cancelling the future at
//!   any await (a login timeout, KILL, a hang-up) gives the place back; a
//!   property test checks the counts after every step of random sequences.
//! - Per-client memory is bounded where a client could grow it: named
//!   statements (`max_client_statements`, session ends with 54000), the
//!   reply queue (the relay stops reading from a client with 16,384 replies
//!   queued: backpressure, not an error), a replica's held-back reply
//!   (256 KiB, then the read stays where it is).
//! - A panic while serving a request is caught at the session boundary
//!   (`session::panic`): XX000 to that client, an error log line, the lent
//!   server closed.
//! - Who a client is (step 1) is decided in `front::auth`: a listed user
//!   (from `[users]` or a PgBouncer userlist, `config::auth`), or one
//!   `auth_query` finds (`shared::secrets`: a TTL cache and one kept lookup
//!   connection per database, running `pool::lookup`'s one parameterised
//!   query). A login gives the credential servers get for that user when
//!   none is configured (SCRAM or md5 pass-through); `Shared` keeps it per
//!   user, so replica pools made later get it too.
//! - `config::pgbouncer` is a pure translator (pgbouncer.ini to TOML) for
//!   `pglittle import-pgbouncer`, split by what it reads: INI lines, key
//!   tables, the `[pgbouncer]` and `[databases]` sections.
//! - The relay's two pumps wake each other with `relay::signal::Signal`
//!   (one waiter, a flag and a waker under one lock) rather than tokio's
//!   `Notify`, and an idle client's wait leaves its waker in its client
//!   registry entry, which `app::wake_idle_clients` wakes when the shutdown
//!   phase moves: per transaction, no waiter list is joined and left.
//! - Fleet sync is a background task like the probe: the arithmetic is pure
//!   in `sizing::fleet`, the I/O and the state SHOW FLEET reads in
//!   `shared::fleet`; its cap reaches the pools through the autosize
//!   controller's `cap_of`, as `max_db_connections` does. The rules for
//!   fleet names live in `config::fleet`, so config errors name their key.
//! - A rolling restart crosses processes: `upgrade` (the one module allowed
//!   `unsafe`: SCM_RIGHTS over a SOCK_SEQPACKET pair) carries sockets,
//!   `session::handover` turns an idle session into bytes and back, and
//!   the binary's `restart.rs` runs the steps on SIGUSR2.
//! - TLS 1.3 connections leave rustls once logged in (session 10): their
//!   record keys are taken out (`tls::keys`; the socket under rustls is
//!   `Tracked`, so only between records) and `tls::records`, a record layer
//!   of pglittle's own over ring's AEADs, carries the session: a fifth
//!   fewer instructions per transaction, and a client's session can move
//!   to a new process at a rolling restart with its keys.
//! - A fleet cap that moves reaches the pools at once: the janitor, told by
//!   `Fleet::moved`, re-applies the last allocation between its ticks
//!   (`autosize::reapply`) rather than at the next one.
//! - The relay may send the server a query of pglittle's own behind the
//!   client's (session 11): read-your-writes' WAL position is pipelined in
//!   the same write as an autocommit write or a COMMIT. The rewriter's reply
//!   queue already swallowed the replies to pglittle's own setup queries;
//!   a `Reply::Probe` entry is swallowed the same way and read on the way
//!   (the scanner reads small DataRows whole while a probe may answer), and
//!   the client pump takes no more of the client's messages until it has
//!   answered, so the next request is routed afresh. Whether the server
//!   is outside any block afterwards comes from `SqlEffects::blocks`,
//!   found in the same lexing pass as the other effects (of the Query, or
//!   of what an extended batch binds, kept with each prepared statement),
//!   and `sql::commit::ends_block` for a Query inside a block.
//!
//! Statistics are taken at those boundaries: the wait when a server is lent,
//! the hold time (W) when it comes back, arrivals when `acquire` starts;
//! the relay only bumps atomics for bytes, queries and errors.

// No unsafe code, except in `upgrade` (passing sockets between processes
// with SCM_RIGHTS, which std offers only unstably): denied everywhere else.
#![deny(unsafe_code)]

pub(crate) mod admin;
pub mod app;
pub mod config;
pub(crate) mod error;
pub(crate) mod front;
pub mod metrics;
pub mod pool;
pub mod prepared;
pub mod protocol;
pub(crate) mod relay;
pub(crate) mod router;
pub(crate) mod session;
pub mod shared;
pub mod shutdown;
pub mod sizing;
pub mod sql;
pub(crate) mod tls;
pub mod topology;
#[allow(unsafe_code)]
pub mod upgrade;

pub use app::{start, Running};
pub use config::Config;
pub use shutdown::{Phase, Shutdown};
