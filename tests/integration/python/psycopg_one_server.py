"""psycopg 3 (async) clients sharing ONE server connection through pglittle.

PGL_MODE=0: prepare_threshold=0, so every query, SETs included, is a named
statement `_pg3_N`, numbered per connection: the clients use the same names
for different queries. Odd clients also keep at most 4 statements
(prepared_max), so psycopg keeps closing and re-preparing them, and a
rollback makes psycopg send DEALLOCATE ALL.
PGL_MODE=none: prepare_threshold=None, so every query with parameters is
Parse of the unnamed statement + Bind + Describe + Execute + Sync; each
client also uses a SQL-level PREPARE of the same name as the others, with
its own text.

Even clients are in autocommit mode; odd ones commit (every statement is in
a transaction until then). Each client sets its own search_path,
application_name, TimeZone and IntervalStyle once, then every round checks
them (on the server, as psycopg was told by ParameterStatus, and through
psycopg's timestamptz loader, which uses that TimeZone), runs queries whose
results name the client, uses enum and composite types it registered
(psycopg introspects them), arrays and json/jsonb, runs pipelines (one
with a failing query), copies rows in and out, and commits or rolls back a transaction that reads through
a server-side cursor. See one_server.py for the environment
and the exit status.
"""
import asyncio
import datetime
import enum
import logging
import re
import sys

try:
    import psycopg
    from psycopg.types.composite import CompositeInfo, register_composite
    from psycopg.types.enum import EnumInfo, register_enum
    from psycopg.types.json import Json, Jsonb
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

from one_server import (
    COPIED, DB, HOST, INSTANT, INTERVAL, LOG, MODE, MOOD, MOODS, PAIR, PASSWORD, PORT, ROUNDS,
    SETTINGS_SQL, USER, expect, expect_all, run,
)

THRESHOLD = {"0": 0, "none": None}[MODE]

# psycopg warns of each pipeline left with an error, which this script makes
# on purpose; failures are reported on stdout.
logging.getLogger("psycopg").setLevel(logging.ERROR)

Mood = enum.Enum("Mood", [(m, m) for m in MOODS])


async def row(conn, sql, params=None):
    return await (await conn.execute(sql, params)).fetchone()


async def val(conn, sql, params=None):
    return (await row(conn, sql, params))[0]


def utc_offset(text):
    """The offset at the end of a timestamptz PostgreSQL printed: +05:30, -03."""
    sign, hours, minutes = re.search(r"([+-])(\d\d)(?::(\d\d))?$", text).groups()
    offset = datetime.timedelta(hours=int(hours), minutes=int(minutes or 0))
    return -offset if sign == "-" else offset


async def reply_arrived(conn):
    """Waits until the server's reply reaches this connection's socket (or
    psycopg has already read it), without reading it."""
    if conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.ABORTED:
        return
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    fd = conn.pgconn.socket
    loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
    try:
        await asyncio.wait_for(readable, 10)
    finally:
        loop.remove_reader(fd)


async def connect(c):
    conn = await psycopg.AsyncConnection.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB,
        prepare_threshold=THRESHOLD, autocommit=c.i % 2 == 0,
    )
    c.broken = lambda: conn.closed

    async def recover():
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await conn.rollback()
    c.recover = recover

    if THRESHOLD is not None and c.i % 2 == 1:
        conn.prepared_max = 4
    async with c.step(None, "session SETs"):
        for sql in c.session_sets:
            await conn.execute(sql)
        await conn.commit()
    c.pair = None
    async with c.step(None, "type introspection (EnumInfo/CompositeInfo.fetch)"):
        mood = await EnumInfo.fetch(conn, MOOD)
        pair = await CompositeInfo.fetch(conn, PAIR)
        missing = [name for name, info in ((MOOD, mood), (PAIR, pair)) if info is None]
        expect(missing, [], "types not found")
        register_enum(mood, conn, Mood)
        register_composite(pair, conn)
        c.pair = pair.python_type
        await conn.commit()
    if THRESHOLD is None:
        async with c.step(None, "SQL PREPARE"):
            await conn.execute(f"PREPARE mine (int) AS SELECT '{c.schema}:' || $1")
            await conn.commit()
    return conn


async def work(c, conn):
    for r in range(ROUNDS):
        async with c.step(r, "settings"):
            c.check_settings(await row(conn, SETTINGS_SQL), r)
        async with c.step(r, "settings psycopg was told (ParameterStatus)"):
            expect_all([(conn.info.parameter_status(name), want, name) for name, want in (
                ("application_name", c.app), ("TimeZone", c.time_zone),
                ("IntervalStyle", c.interval_style))])

        async with c.step(r, "whoami() through search_path"):
            expect(await val(conn, "select whoami()"), c.schema,
                   "whoami() resolved through this client's search_path")
        async with c.step(r, "a query only this client sends"):
            expect(await val(conn, f"select '{c.schema}:' || %s::text", (str(r),)),
                   f"{c.schema}:{r}", "its result")
        async with c.step(r, "a query every client sends"):
            expect(await val(conn, "select %s::int * 1000 + %s::int", (c.i, r)), c.i * 1000 + r,
                   "its result for this client's parameters")
        if THRESHOLD is None:
            async with c.step(r, "EXECUTE of this client's own PREPARE mine"):
                expect(await val(conn, f"EXECUTE mine({r})"), f"{c.schema}:{r}", "its result")

        if c.pair is not None:  # the types were registered
            mood = Mood[MOODS[(c.i + r) % len(MOODS)]]
            async with c.step(r, "enum (registered)"):
                expect(await val(conn, f"select %s::{MOOD}", (mood,)), mood, "an enum round trip")
                expect(await val(conn, f"select array[%s::{MOOD}, 'ok']", (mood,)),
                       [mood, Mood.ok], "an enum array")
            async with c.step(r, "composite (registered)"):
                expect(await val(conn, f"select row(%s::text, %s::int)::{PAIR}", (c.schema, r)),
                       c.pair(c.schema, r), "a composite result")
                expect(await val(conn, f"select (%s::{PAIR}).n * 2", (c.pair(c.schema, r),)), 2 * r,
                       "a composite parameter")
        async with c.step(r, "arrays"):
            expect(await val(conn, "select %s::int[] || %s::int", ([c.i, r], 7)), [c.i, r, 7],
                   "an int[] round trip")
            expect(await val(conn, "select %s::text[]", ([c.schema, None, "x,y"],)),
                   [c.schema, None, "x,y"], "a text[] round trip")
        async with c.step(r, "json/jsonb"):
            expect(await val(conn, "select %s::jsonb || jsonb_build_object('who', %s::text)",
                             (Jsonb({"i": c.i, "r": r}), c.schema)),
                   {"i": c.i, "r": r, "who": c.schema}, "a jsonb round trip")
            expect(await val(conn, "select json_build_object('i', %s::int, 'tags', %s::json)",
                             (c.i, Json(["a", c.schema]))),
                   {"i": c.i, "tags": ["a", c.schema]}, "a json round trip")
        async with c.step(r, "rendering under this client's TimeZone and IntervalStyle"):
            expect_all([
                (await val(conn, f"select {INSTANT}::text"), c.instant_text, "a timestamptz"),
                (await val(conn, f"select {INTERVAL}::text"), c.interval_text, "an interval"),
            ])
        async with c.step(r, "timestamptz loaded in the TimeZone psycopg was told"):
            instant = await val(conn, f"select {INSTANT}")
            expect((str(instant.tzinfo), instant.utcoffset()),
                   (c.time_zone, utc_offset(c.instant_text)), "its zone and offset")

        async with c.step(r, "pipeline"):
            async with conn.pipeline() as p:
                who = await conn.execute("select whoami(), %s::int", (r,))
                mine = await conn.execute(f"select '{c.schema}' || %s::text", ("-pipelined",))
                app = await conn.execute("select current_setting('application_name')")
                await p.sync()
                expect((await who.fetchone(), await mine.fetchone(), await app.fetchone()),
                       ((c.schema, r), (f"{c.schema}-pipelined",), (c.app,)),
                       "three pipelined queries")
            await conn.commit()

        async with c.step(r, "a pipeline whose first query fails before the rest is sent"):
            # The server answers the first query's Parse..Execute with its
            # error at once; an application busy between two statements of a
            # pipeline sends the rest (and the Sync) after that error has
            # arrived; waiting for it makes that timing certain. The server
            # skips to the Sync; psycopg sends a Flush as it leaves.
            try:
                async with conn.pipeline() as p:
                    await conn.execute("select 1 / %s::int", (0,))
                    await reply_arrived(conn)
                    await conn.execute(f"insert into {COPIED} values (%s, %s, 'after the error')",
                                       (c.i, r))
                    await p.sync()
                raise Mismatch("select 1 / 0 in a pipeline raised nothing")
            except psycopg.errors.DivisionByZero:
                pass
            await conn.rollback()

        async with c.step(r, "COPY in and out, right after that pipeline"):
            notes = [f"{c.schema}/{r}/{k}" for k in range(3)]
            async with conn.cursor() as cur:
                async with cur.copy(f"COPY {COPIED} (client, round, note) FROM STDIN") as copy:
                    for n in notes:
                        await copy.write_row((c.i, r, n))
                query = f"select note from {COPIED} where client = {c.i} and round = {r} order by note"
                async with cur.copy(f"COPY ({query}) TO STDOUT") as copy:
                    got = [x async for (x,) in copy.rows()]
            expect(got, notes, "the rows this client copied in this round (and not the insert"
                   " the server skipped after the error)")
            await conn.commit()

        async with c.step(r, "transaction"):
            async with conn.transaction():
                await conn.execute(f"insert into {LOG} values (%s, %s, %s)", (c.i, r, c.schema))
                await conn.execute("SET LOCAL application_name TO 'in-a-transaction'")
                # Untracked: lasts to the end of this transaction, and must
                # never reach another client.
                await conn.execute(f"SET statement_timeout TO '{c.statement_timeout}'")
                expect_all([
                    (await val(conn, "select current_setting('application_name')"),
                     "in-a-transaction", "application_name after SET LOCAL"),
                    (conn.info.parameter_status("application_name"), "in-a-transaction",
                     "application_name psycopg was told after SET LOCAL"),
                    (await val(conn, f"select count(*) from {LOG} where client = %s and round = %s",
                               (c.i, r)), 1, "this transaction's own insert"),
                ])
                # A server-side cursor (DECLARE, then FETCH 2 at a time); every
                # client's has the same name.
                async with conn.cursor(name="notes") as cur:
                    cur.itersize = 2
                    await cur.execute(f"select '{c.schema}:' || g from generate_series(1, 5) g")
                    notes = [x async for (x,) in cur]
                    expect(notes, [f"{c.schema}:{k}" for k in range(1, 6)], "a cursor's rows")
                if r % 3 == 2:
                    raise psycopg.Rollback()
            if r % 3 != 2:
                c.committed.append(r)
        async with c.step(r, "application_name once SET LOCAL's transaction ended"):
            expect_all([
                (await val(conn, "select current_setting('application_name')"), c.app,
                 "on the server"),
                (conn.info.parameter_status("application_name"), c.app, "as psycopg was told"),
            ])
            await conn.commit()

    async with c.step(None, "the committed rows"):
        rows = await (await conn.execute(
            f"select round from {LOG} where client = %s order by round", (c.i,))).fetchall()
        expect([x[0] for x in rows], c.committed,
               "this client's committed rounds (and none it rolled back)")
        await conn.commit()


async def close(conn):
    await conn.close()


run("psycopg", f"psycopg {psycopg.__version__} prepare_threshold={THRESHOLD}", connect, work, close)
