"""Real Python drivers through pglittle in transaction mode, with their
server-side prepared statements on: psycopg 3 (prepare_threshold=0: every
query is a named statement) and asyncpg (named statements by default).

Run by tests/integration/drivers.rs with PGL_HOST, PGL_PORT, PGL_USER,
PGL_PASSWORD, PGL_DB. Exits 0 on success, 77 if a driver is not installed.
"""
import asyncio
import os
import sys

try:
    import asyncpg
    import psycopg
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

HOST = os.environ["PGL_HOST"]
PORT = int(os.environ["PGL_PORT"])
USER = os.environ["PGL_USER"]
PASSWORD = os.environ["PGL_PASSWORD"]
DB = os.environ["PGL_DB"]
CLIENTS = 20
ROUNDS = 15


def psycopg3():
    conns = [
        psycopg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD,
                        dbname=DB, prepare_threshold=0, autocommit=True)
        for _ in range(CLIENTS)
    ]
    for r in range(ROUNDS):
        for i, c in enumerate(conns):
            got = c.execute("select %s::int * 2 + %s::int", (r, i)).fetchone()[0]
            assert got == r * 2 + i, (got, r, i)
            with c.transaction():
                got = c.execute("select %s::int - %s::int", (r, i)).fetchone()[0]
                assert got == r - i, (got, r, i)
    # Every client really used server-side prepared statements.
    assert all(c.prepared_max > 0 for c in conns)
    for c in conns:
        c.close()


async def asyncpg_clients():
    conns = [
        await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB)
        for _ in range(CLIENTS)
    ]
    for r in range(ROUNDS):
        for i, c in enumerate(conns):
            got = await c.fetchval("select $1::int + $2::int", r, i)
            assert got == r + i, (got, r, i)
            stmt = await c.prepare("select $1::int * 10")
            assert await stmt.fetchval(i) == i * 10
            async with c.transaction():
                got = await c.fetchval("select $1::text || $2::text", str(r), str(i))
                assert got == f"{r}{i}", got
    for c in conns:
        await c.close()


psycopg3()
asyncio.run(asyncpg_clients())
print("drivers ok")
