"""Shared by asyncpg_one_server.py and psycopg_one_server.py: several clients
of one driver run at once through pglittle on a pool of ONE server
connection, and each checks that it gets its own results, settings and
prepared statements, and sees nothing of the others' sessions.

Each client runs ROUNDS rounds of steps. A failed step is recorded and the
client goes on with the next one, so one defect does not hide the others;
a client whose connection broke stops. The report groups the failures by
step, with the first one of each.

Environment (set by tests/integration/drivers.rs):
  PGL_HOST, PGL_PORT, PGL_USER, PGL_PASSWORD (may be empty), PGL_DB
  PGL_PREFIX   schemas PREFIX_t (enum `mood`, composite `pair`, tables `log`
               and `copied`)
               and PREFIX_c0, PREFIX_c1, ... (each with `whoami()` returning
               its own schema name), made by the Rust test
  PGL_CLIENTS, PGL_ROUNDS
  PGL_MODE     the driver setting under test (each script says which)
  PGL_ONE_SERVER=1  all clients must have run on one backend
  PGL_TIMEOUT  seconds before clients still running count as hung

Exit status: 0 when every client passed; 1 with the failures on stdout; 77
when the driver is not installed.
"""
import asyncio
import os
import sys
import time
import traceback

HOST = os.environ["PGL_HOST"]
PORT = int(os.environ["PGL_PORT"])
USER = os.environ["PGL_USER"]
PASSWORD = os.environ.get("PGL_PASSWORD") or None
DB = os.environ["PGL_DB"]
PREFIX = os.environ["PGL_PREFIX"]
CLIENTS = int(os.environ["PGL_CLIENTS"])
ROUNDS = int(os.environ["PGL_ROUNDS"])
MODE = os.environ["PGL_MODE"]
ONE_SERVER = os.environ.get("PGL_ONE_SERVER") == "1"
# A hung client (say, one whose reply went to another client) fails the run
# instead of hanging it.
TIMEOUT = float(os.environ.get("PGL_TIMEOUT", "60"))

# Types and the log table are named with their schema, so only the steps
# about search_path depend on it.
TYPES = f"{PREFIX}_t"
MOOD = f"{TYPES}.mood"
PAIR = f"{TYPES}.pair"
LOG = f"{TYPES}.log"
COPIED = f"{TYPES}.copied"
MOODS = ["sad", "ok", "happy"]

# Per-client session settings, tracked by pglittle (they must follow each
# client). The rendered texts are what PostgreSQL prints under each setting.
TIME_ZONES = [
    ("UTC", "2024-01-15 12:00:00+00"),
    ("Asia/Tokyo", "2024-01-15 21:00:00+09"),
    ("America/New_York", "2024-01-15 07:00:00-05"),
    ("Asia/Kolkata", "2024-01-15 17:30:00+05:30"),
    ("Europe/Berlin", "2024-01-15 13:00:00+01"),
    ("Australia/Adelaide", "2024-01-15 22:30:00+10:30"),
    ("Pacific/Chatham", "2024-01-16 01:45:00+13:45"),
    ("America/Sao_Paulo", "2024-01-15 09:00:00-03"),
]
INSTANT = "timestamptz '2024-01-15 12:00:00+00'"
INTERVAL_STYLES = [
    ("postgres", "1 day 02:03:04"),
    ("iso_8601", "P1DT2H3M4S"),
    ("sql_standard", "1 2:03:04"),
    ("postgres_verbose", "@ 1 day 2 hours 3 mins 4 secs"),
]
INTERVAL = "interval '1 day 02:03:04'"

# Settings as the server sees them, read without depending on search_path.
# statement_timeout is untracked: a client's SET of it lasts to the end of
# its transaction through pglittle (and for the session on PostgreSQL), so a
# client may see the default or its own value, never another client's.
SETTINGS_SQL = (
    "select current_setting('search_path'), current_setting('application_name'),"
    " current_setting('TimeZone'), current_setting('IntervalStyle'),"
    " current_setting('statement_timeout'),"
    " (select setting = reset_val from pg_settings where name = 'statement_timeout'),"
    " pg_backend_pid()"
)

# A client stops after this many failures (its report would say no more).
MAX_FAILURES = 200


class Mismatch(AssertionError):
    """A result a user would notice is wrong."""


class Stop(Exception):
    """The client cannot go on (its failure is already recorded)."""


def expect(got, want, what):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def expect_all(checks):
    """Like expect for several (got, want, what), reporting every mismatch."""
    wrong = [f"{what}: got {got!r}, want {want!r}" for got, want, what in checks if got != want]
    if wrong:
        raise Mismatch("; ".join(wrong))


class Client:
    """What client `i` expects to see, and what went wrong for it."""

    def __init__(self, i, driver):
        self.i = i
        self.schema = f"{PREFIX}_c{i}"
        self.search_path = f"{self.schema}, {TYPES}"
        self.app = f"{driver}-{MODE}-{i}"
        self.time_zone, self.instant_text = TIME_ZONES[i % len(TIME_ZONES)]
        self.interval_style, self.interval_text = INTERVAL_STYLES[i % len(INTERVAL_STYLES)]
        self.statement_timeout = f"{10 + i}s"  # SET in its transactions only
        self.where = "connecting"
        self.failures = []  # (step, where, message)
        self.committed = []  # rounds whose log row was committed
        self.pids = set()
        # Set by the script: `recover()` after a failed step (say, roll back),
        # `broken()` when the connection is gone.
        self.recover = None
        self.broken = lambda: False

    @property
    def session_sets(self):
        """The session-level SETs this client makes once, after connecting."""
        return [
            f"SET search_path TO {self.search_path}",
            f"SET application_name TO '{self.app}'",
            f"SET TimeZone TO '{self.time_zone}'",
            f"SET IntervalStyle TO {self.interval_style}",
        ]

    def step(self, r, name):
        """`async with c.step(r, name):` runs one step; a failure in it is
        recorded and the client goes on."""
        return _Step(self, r, name)

    def record(self, step, e):
        message = f"{type(e).__name__}: {e}".strip().replace("\n", " | ")
        self.failures.append((step, self.where, message))
        if not isinstance(e, Mismatch) and not _first_trace:
            _first_trace.append(f"client {self.i} at {self.where}:\n{traceback.format_exc()}")

    def check_settings(self, row, r):
        sp, app, tz, ivs, timeout, timeout_is_default, pid = row
        self.pids.add(pid)
        expect_all([
            (sp, self.search_path, "search_path (SET by this client)"),
            (app, self.app, "application_name (SET by this client)"),
            (tz, self.time_zone, "TimeZone (SET by this client)"),
            (ivs, self.interval_style, "IntervalStyle (SET by this client)"),
        ])
        if not timeout_is_default and timeout != self.statement_timeout:
            raise Mismatch(f"statement_timeout: got {timeout!r}, want the default or this client's"
                           f" own {self.statement_timeout!r} (another client's SET leaked)")


_first_trace = []


class _Step:
    def __init__(self, c, r, name):
        self.c, self.name = c, name
        c.where = f"round {r}: {name}" if r is not None else name

    async def __aenter__(self):
        return self

    async def __aexit__(self, typ, e, tb):
        if e is None or not isinstance(e, Exception) or isinstance(e, Stop):
            return False
        c = self.c
        c.record(self.name, e)
        if c.broken():
            raise Stop from e
        if c.recover is not None:
            try:
                await c.recover()
            except Exception as again:  # noqa: BLE001 - reported, then stop
                c.record(f"recovering after: {self.name}", again)
                raise Stop from again
        if len(c.failures) >= MAX_FAILURES:
            raise Stop from e
        return True


def run(driver, label, connect, work, close):
    """Connects every client, then runs `work(client, conn)` for all of them
    at once, and reports. Exits the process."""
    clients = [Client(i, driver) for i in range(CLIENTS)]

    async def close_quietly(conn):
        try:
            await asyncio.wait_for(close(conn), 5)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    async def guard(c, coro, conn=None):
        try:
            result = await coro
            if conn is not None:
                c.where = "done"
            return result
        except Exception as e:  # noqa: BLE001 - every failure is reported
            if not isinstance(e, Stop):
                c.record(c.where, e)
            c.where = "stopped"
            if conn is not None:
                # Let the others go on: this client may hold the one server
                # mid-transaction.
                await close_quietly(conn)
            return None

    async def main():
        conns = await asyncio.gather(*(guard(c, connect(c)) for c in clients))
        try:
            if all(conn is not None for conn in conns):
                runs = (guard(c, work(c, conn), conn) for c, conn in zip(clients, conns))
                try:
                    await asyncio.wait_for(asyncio.gather(*runs), TIMEOUT)
                except asyncio.TimeoutError:
                    for c in clients:
                        if c.where not in ("done", "stopped"):
                            c.failures.append(("hung", c.where, f"no reply within {TIMEOUT:.0f}s"))
        finally:
            for conn in conns:
                if conn is not None:
                    await close_quietly(conn)

    started = time.monotonic()
    asyncio.run(main())
    report(f"{label} ({time.monotonic() - started:.1f}s)", clients)


def report(label, clients):
    failed = [c for c in clients if c.failures]
    pids = set().union(*(c.pids for c in clients))
    if failed:
        by_step = {}  # step -> [clients, times, first "client N at where: message"]
        for c in clients:
            for step, where, message in c.failures:
                entry = by_step.setdefault(step, [set(), 0, f"client {c.i} at {where}: {message}"])
                entry[0].add(c.i)
                entry[1] += 1
        total = sum(len(c.failures) for c in clients)
        print(f"FAIL {label}: {len(failed)} of {len(clients)} clients failed, {total} failures")
        # Hangs last: they follow from what went wrong before.
        for step, (who, times, first) in sorted(by_step.items(), key=lambda kv: kv[0] == "hung"):
            print(f"- {step}: {len(who)} client(s), {times} time(s); first: {first}")
        # Where each hung client waited tells who held the server.
        for c in clients:
            for step, where, message in c.failures:
                if step == "hung" and c.i != min(by_step["hung"][0]):
                    print(f"  also hung: client {c.i} at {where}")
        for t in _first_trace:
            print(t, file=sys.stderr)
        sys.exit(1)
    if ONE_SERVER and len(pids) != 1:
        print(f"FAIL {label}: the clients ran on {len(pids)} backends {sorted(pids)}, not the pool's one")
        sys.exit(1)
    print(f"ok {label}: {len(clients)} clients x {ROUNDS} rounds on {len(pids)} backend(s)")
