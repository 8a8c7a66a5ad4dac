"""asyncpg clients sharing ONE server connection through pglittle.

PGL_MODE=named: asyncpg's default statement cache, so every query is a named
statement `__asyncpg_stmt_N__`, numbered per connection: the clients use the
same names for different queries.
PGL_MODE=unnamed: statement_cache_size=0, so each query is Parse of the
unnamed statement + Describe + Flush in one round trip, and Bind + Execute +
Sync in the next: the unnamed statement must stay with its client in between.
(Explicit `prepare()` still makes named statements.)

Each client sets its own search_path, application_name, TimeZone and
IntervalStyle once, then every round checks them (on the server, and as
asyncpg was told by ParameterStatus), runs queries whose results name the
client, uses enum, composite, array and json/jsonb types (asyncpg
introspects the types it does not know; json/jsonb get a set_type_codec),
runs an executemany that fails, copies rows in and out, and commits or rolls
back a transaction that reads through a cursor. See one_server.py for the
environment and the exit status.
"""
import json
import sys

try:
    import asyncpg
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

from one_server import (
    COPIED, DB, HOST, INSTANT, INTERVAL, LOG, MODE, MOOD, MOODS, PAIR, PASSWORD, PORT, ROUNDS,
    SETTINGS_SQL, TYPES, USER, expect, expect_all, run,
)

CACHE_SIZE = {"named": 100, "unnamed": 0}[MODE]


class RolledBack(Exception):
    """Raised inside a transaction block to roll it back."""


async def connect(c):
    conn = await asyncpg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB,
        statement_cache_size=CACHE_SIZE,
    )
    c.broken = conn.is_closed
    async with c.step(None, "session SETs (one simple Query)"):
        await conn.execute("; ".join(c.session_sets))
    async with c.step(None, "set_type_codec json/jsonb"):
        for name in ("json", "jsonb"):
            await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads,
                                      schema="pg_catalog")
    return conn


async def work(c, conn):
    mine = everyones = None
    for r in range(ROUNDS):
        async with c.step(r, "settings"):
            c.check_settings(await conn.fetchrow(SETTINGS_SQL), r)
        async with c.step(r, "settings asyncpg was told (ParameterStatus)"):
            s = conn.get_settings()
            expect_all([(getattr(s, name, None), want, name) for name, want in (
                ("application_name", c.app), ("TimeZone", c.time_zone),
                ("IntervalStyle", c.interval_style))])

        async with c.step(r, "whoami() through search_path"):
            expect(await conn.fetchval("select whoami()"), c.schema,
                   "whoami() resolved through this client's search_path")
        async with c.step(r, "a query only this client sends"):
            expect(await conn.fetchval(f"select '{c.schema}:' || $1::text", str(r)),
                   f"{c.schema}:{r}", "its result")
        async with c.step(r, "a query every client sends"):
            expect(await conn.fetchval("select $1::int * 1000 + $2::int", c.i, r), c.i * 1000 + r,
                   "its result for this client's parameters")
        async with c.step(r, "prepare(): this client's own statement"):
            # The same client-side name (__asyncpg_stmt_N__) in every client.
            if mine is None:
                mine = await conn.prepare(f"select $1::int * {c.i + 1} as v, '{c.schema}'::text as who")
            expect(tuple(await mine.fetchrow(r)), (r * (c.i + 1), c.schema), "its result")
        async with c.step(r, "prepare(): the statement every client prepared"):
            # whoami() resolves through each client's search_path.
            if everyones is None:
                everyones = await conn.prepare("select whoami() as who, $1::int + 1 as n")
            expect(tuple(await everyones.fetchrow(r)), (c.schema, r + 1), "its result")

        mood = MOODS[(c.i + r) % len(MOODS)]
        async with c.step(r, "enum (introspected)"):
            expect(await conn.fetchval(f"select $1::{MOOD}", mood), mood, "an enum round trip")
            expect(await conn.fetchval(f"select array[$1::{MOOD}, 'ok']", mood), [mood, "ok"],
                   "an enum array")
        async with c.step(r, "composite (introspected)"):
            pair = await conn.fetchval(f"select row($1::text, $2::int)::{PAIR}", c.schema, r)
            expect((pair["k"], pair["n"]), (c.schema, r), "a composite result")
            expect(await conn.fetchval(f"select ($1::{PAIR}).n * 2", (c.schema, r)), 2 * r,
                   "a composite parameter")
        async with c.step(r, "arrays"):
            expect(await conn.fetchval("select $1::int[] || $2::int", [c.i, r], 7), [c.i, r, 7],
                   "an int[] round trip")
            expect(await conn.fetchval("select $1::text[]", [c.schema, None, "x,y"]),
                   [c.schema, None, "x,y"], "a text[] round trip")
        async with c.step(r, "json/jsonb (set_type_codec)"):
            expect(await conn.fetchval("select $1::jsonb || jsonb_build_object('who', $2::text)",
                                       {"i": c.i, "r": r}, c.schema),
                   {"i": c.i, "r": r, "who": c.schema}, "a jsonb round trip")
            expect(await conn.fetchval("select json_build_object('i', $1::int, 'tags', $2::text[])",
                                       c.i, ["a", c.schema]),
                   {"i": c.i, "tags": ["a", c.schema]}, "a json result")
        async with c.step(r, "rendering under this client's TimeZone and IntervalStyle"):
            expect_all([
                (await conn.fetchval(f"select {INSTANT}::text"), c.instant_text, "a timestamptz"),
                (await conn.fetchval(f"select {INTERVAL}::text"), c.interval_text, "an interval"),
            ])

        async with c.step(r, "executemany whose second row fails"):
            # Bind + Execute per row and one Sync: the server skips to it.
            rows = [(c.i, r, "many"), (c.i, r, None), (c.i, r, "many")]
            try:
                await conn.executemany(f"insert into {COPIED} values ($1, $2, $3)", rows)
                raise Mismatch("executemany of a NULL into a NOT NULL column raised nothing")
            except asyncpg.NotNullViolationError:
                pass
            expect(await conn.fetchval(f"select count(*) from {COPIED} where client = $1"
                                       " and round = $2 and note = 'many'", c.i, r),
                   0, "rows of the failed executemany")

        async with c.step(r, "COPY in (copy_records_to_table) and out (copy_from_query)"):
            notes = [f"{c.schema}/{r}/{k}" for k in range(3)]
            await conn.copy_records_to_table("copied", schema_name=TYPES,
                                             records=[(c.i, r, n) for n in notes])
            out = []

            async def sink(chunk):
                out.append(chunk)
            await conn.copy_from_query(
                f"select note from {COPIED} where client = $1 and round = $2 order by note", c.i, r,
                output=sink)
            expect(b"".join(out).decode().splitlines(), notes, "the rows this client copied in")

        async with c.step(r, "transaction"):
            try:
                async with conn.transaction():
                    await conn.execute(f"insert into {LOG} values ($1, $2, $3)", c.i, r, c.schema)
                    await conn.execute("SET LOCAL application_name TO 'in-a-transaction'")
                    # Untracked: lasts to the end of this transaction, and must
                    # never reach another client.
                    await conn.execute(f"SET statement_timeout TO '{c.statement_timeout}'")
                    expect_all([
                        (await conn.fetchval("select current_setting('application_name')"),
                         "in-a-transaction", "application_name after SET LOCAL"),
                        (await conn.fetchval(f"select count(*) from {LOG} where client = $1"
                                             " and round = $2", c.i, r),
                         1, "this transaction's own insert"),
                    ])
                    # A cursor: Bind to a portal, then Execute of 2 rows at a
                    # time, each ending in Sync, within the transaction.
                    notes = [rec[0] async for rec in conn.cursor(
                        f"select '{c.schema}:' || g from generate_series(1, 5) g", prefetch=2)]
                    expect(notes, [f"{c.schema}:{k}" for k in range(1, 6)], "a cursor's rows")
                    if r % 3 == 2:
                        raise RolledBack
                c.committed.append(r)
            except RolledBack:
                pass
        async with c.step(r, "application_name once SET LOCAL's transaction ended"):
            expect_all([
                (await conn.fetchval("select current_setting('application_name')"), c.app,
                 "on the server"),
                (conn.get_settings().application_name, c.app, "as asyncpg was told"),
            ])

    async with c.step(None, "the committed rows"):
        rows = await conn.fetch(f"select round from {LOG} where client = $1 order by round", c.i)
        expect([row["round"] for row in rows], c.committed,
               "this client's committed rounds (and none it rolled back)")


async def close(conn):
    await conn.close()


run("asyncpg", f"asyncpg {asyncpg.__version__} statement_cache_size={CACHE_SIZE}",
    connect, work, close)
