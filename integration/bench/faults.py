#!/usr/bin/env python3
"""TPC-B clients through a pooler while a fault is injected (stdlib only),
for integration/faults.sh.

  faults.py run --port P --user U --password PW --db D --clients N
                --seconds S --fault-at T --fault-cmd CMD

N clients each run pgbench's TPC-B transaction as seven statements (BEGIN,
three UPDATEs, a SELECT, an INSERT, COMMIT), one round trip each, so a fault
usually lands inside a transaction. A client that sees an error counts it
by SQLSTATE (or "lost" when the connection dropped without one), logs in
again (counting failed logins) and goes on. At T seconds CMD runs in a
shell, and --burst more clients start. Prints one JSON object: transactions committed before and after the
fault, errors by SQLSTATE, clients that saw any error, failed logins, and
how long after the fault the first transaction committed again.
"""

import argparse
import asyncio
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import login  # noqa: E402
from loadbench import Broken, simple_query  # noqa: E402

SCALE_ACCOUNTS = 100000


def tpcb(scale):
    aid = random.randint(1, SCALE_ACCOUNTS * scale)
    bid = random.randint(1, scale)
    tid = random.randint(1, 10 * scale)
    delta = random.randint(-5000, 5000)
    return [
        "BEGIN",
        f"UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid}",
        f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}",
        f"UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid}",
        f"UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid}",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        f"VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP)",
        "COMMIT",
    ]


async def client(a, state, n):
    conn = None
    saw_error = False
    while time.monotonic() < state["end"]:
        if conn is None:
            try:
                conn = await asyncio.wait_for(
                    login("127.0.0.1", a.port, a.user, a.password, a.db), 10)
            except Exception:  # noqa: BLE001 - any failure to log in counts
                state["failed_logins"] += 1
                await asyncio.sleep(0.05)
                continue
        reader, writer = conn
        err = None
        try:
            for sql in tpcb(a.scale):
                err = await asyncio.wait_for(simple_query(reader, writer, sql), 30)
                if err:
                    # A failed statement: roll back, as pgbench would.
                    await asyncio.wait_for(simple_query(reader, writer, "ROLLBACK"), 30)
                    break
        except Broken as e:
            err = e.args[0] if e.args else {}
            err = {"C": err.get("C", "lost")}
            writer.close()
            conn = None
        except (asyncio.TimeoutError, ConnectionError, OSError):
            err = {"C": "timeout"}
            writer.close()
            conn = None
        now = time.monotonic()
        if err:
            code = err.get("C", "?")
            state["errors"][code] = state["errors"].get(code, 0) + 1
            saw_error = True
            continue
        key = "after" if now >= state["fault_at"] else "before"
        state[key] += 1
        if key == "after" and state["recovered_s"] is None:
            state["recovered_s"] = round(now - state["fault_at"], 3)
    if saw_error:
        state["clients_with_errors"] += 1
    if conn:
        conn[1].close()


async def run_main(a):
    start = time.monotonic()
    state = {
        "before": 0, "after": 0, "errors": {}, "clients_with_errors": 0,
        "failed_logins": 0, "recovered_s": None,
        "fault_at": start + a.fault_at, "end": start + a.seconds,
    }
    tasks = [asyncio.create_task(client(a, state, n)) for n in range(a.clients)]
    await asyncio.sleep(a.fault_at)
    proc = await asyncio.create_subprocess_shell(
        a.fault_cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await proc.communicate()
    state["fault_rc"] = proc.returncode
    if proc.returncode:
        state["fault_stderr"] = stderr.decode(errors="replace")[-300:]
    # A burst right after the fault takes the servers that sat idle.
    tasks += [asyncio.create_task(client(a, state, n)) for n in range(a.burst)]
    await asyncio.gather(*tasks)
    del state["fault_at"], state["end"]
    print(json.dumps(state, sort_keys=True))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    for k in ("user", "password", "db", "fault-cmd"):
        r.add_argument(f"--{k}", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--clients", type=int, default=16)
    r.add_argument("--seconds", type=float, default=12)
    r.add_argument("--fault-at", type=float, default=4)
    r.add_argument("--scale", type=int, default=1)
    r.add_argument("--burst", type=int, default=0,
                   help="clients that start right after the fault")
    a = p.parse_args()
    asyncio.run(run_main(a))


if __name__ == "__main__":
    main()
