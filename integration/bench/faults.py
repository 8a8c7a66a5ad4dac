#!/usr/bin/env python3
"""TPC-B clients through a pooler while a fault is injected (stdlib only),
for integration/faults.sh.

  faults.py run --port P --user U --password PW --db D --clients N
                --seconds S --fault-at T --fault-cmd CMD
                [--heal-at H --heal-cmd CMD2] [--burst B]

N clients each run pgbench's TPC-B transaction as seven statements (BEGIN,
three UPDATEs, a SELECT, an INSERT, COMMIT), one round trip each, so a fault
usually lands inside a transaction. A client that sees an error counts it
by SQLSTATE (or "lost" when the connection dropped without one), logs in
again (counting failed logins) and goes on. At T seconds CMD runs in a
shell, and --burst more clients start; at H seconds (if given) CMD2 runs,
which ends the fault. Prints one JSON object: transactions committed before
and after the fault (and, with H, during the fault and after it ended),
errors by SQLSTATE, clients that saw any error, failed logins (by error),
how long after the fault the first transaction committed again, and with H
how long after the heal the commit rate was back to half the pre-fault
rate. Each error is also listed (up to 40) with its time from the fault,
the statement of the transaction it hit (0 = BEGIN, so no transaction was
open; "login" for a failed login), how long that statement had waited, and
whether it hit a transaction open while the fault command ran ("in_flight").
A failed statement is followed by a ROLLBACK, whose own failures are
counted apart (rollback_errors).
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


def note_error(state, code, where, msg, in_flight, sent=None, now=None):
    now = now or time.monotonic()
    if len(state["error_list"]) < 40:
        e = {"t": round(now - state["fault_at"], 3), "code": code, "stmt": where,
             "in_flight": in_flight, "msg": (msg or "")[:120]}
        if sent is not None:
            e["waited"] = round(now - sent, 3)  # since the statement was sent
        state["error_list"].append(e)


async def client(a, state, n):
    conn = None
    saw_error = False
    flight = state["flight"]
    while time.monotonic() < state["end"]:
        if conn is None:
            try:
                conn = await asyncio.wait_for(
                    login("127.0.0.1", a.port, a.user, a.password, a.db), 10)
            except Exception as e:  # noqa: BLE001 - any failure to log in counts
                state["failed_logins"] += 1
                text = str(e) or type(e).__name__
                key = text.split(":")[0][:40] if text[:1] in "EF" else type(e).__name__
                state["login_errors"][key] = state["login_errors"].get(key, 0) + 1
                note_error(state, key, "login", text, False)
                await asyncio.sleep(0.05)
                continue
        reader, writer = conn
        err = None
        stmt = 0
        sent = err_at = None
        tx = (n, state["tx_no"].get(n, 0))
        flight[n] = True  # a transaction is open from BEGIN to COMMIT's reply
        if state["window"]:
            state["fault_txs"].add(tx)
        try:
            for stmt, sql in enumerate(tpcb(a.scale)):
                sent = time.monotonic()
                err = await asyncio.wait_for(simple_query(reader, writer, sql), 30)
                if err:
                    err_at = time.monotonic()
                    # A failed statement: roll back, as pgbench would (its
                    # own failure is counted apart).
                    if await asyncio.wait_for(simple_query(reader, writer, "ROLLBACK"), 30):
                        state["rollback_errors"] += 1
                    break
        except Broken as e:
            if err is None:
                err = e.args[0] if e.args else {}
                err = {"C": err.get("C", "lost"), "M": err.get("M", "")}
            writer.close()
            conn = None
        except (asyncio.TimeoutError, ConnectionError, OSError) as e:
            if err is None:
                err = {"C": "timeout", "M": type(e).__name__}
            writer.close()
            conn = None
        flight[n] = False
        now = time.monotonic()
        if err:
            code = err.get("C", "?")
            state["errors"][code] = state["errors"].get(code, 0) + 1
            in_flight = tx in state["fault_txs"]
            note_error(state, code, stmt, err.get("M", ""), in_flight, sent, err_at or now)
            if not in_flight:
                state["errors_outside"] += 1
            saw_error = True
            state["tx_no"][n] = tx[1] + 1
            continue
        state["tx_no"][n] = state["tx_no"].get(n, 0) + 1
        key = "after" if now >= state["fault_at"] else "before"
        state[key] += 1
        if key == "after" and state["recovered_s"] is None:
            state["recovered_s"] = round(now - state["fault_at"], 3)
        if state["heal_at"] is not None and now >= state["fault_at"]:
            state["after_heal" if now >= state["heal_at"] else "during"] += 1
        bucket = int((now - state["start"]) / BUCKET)
        state["buckets"][bucket] = state["buckets"].get(bucket, 0) + 1
    if saw_error:
        state["clients_with_errors"] += 1
    if conn:
        conn[1].close()


BUCKET = 0.25


async def run_cmd(cmd):
    proc = await asyncio.create_subprocess_shell(
        cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await proc.communicate()
    return proc.returncode, stderr.decode(errors="replace")[-300:]


def recovery(state, a):
    """Seconds from the heal until a 250 ms bucket reaches half the median
    pre-fault commit rate (None if it never does)."""
    pre = sorted(state["buckets"].get(b, 0) for b in range(4, int(a.fault_at / BUCKET)))
    if not pre:
        return None
    half = pre[len(pre) // 2] / 2
    first = int(a.heal_at / BUCKET)
    for b in range(first, int(a.seconds / BUCKET)):
        if state["buckets"].get(b, 0) >= half and state["buckets"].get(b, 0) > 0:
            return round(max(0.0, (b + 1) * BUCKET - a.heal_at), 2)
    return None


async def run_main(a):
    start = time.monotonic()
    state = {
        "before": 0, "after": 0, "errors": {}, "clients_with_errors": 0,
        "failed_logins": 0, "login_errors": {}, "errors_outside": 0, "recovered_s": None,
        "error_list": [], "buckets": {}, "flight": {}, "rollback_errors": 0,
        "tx_no": {}, "fault_txs": set(), "window": False,
        "start": start, "fault_at": start + a.fault_at, "end": start + a.seconds,
        "heal_at": None if a.heal_at is None else start + a.heal_at,
    }
    if a.heal_at is not None:
        state["during"] = state["after_heal"] = 0
    tasks = [asyncio.create_task(client(a, state, n)) for n in range(a.clients)]
    await asyncio.sleep(a.fault_at)
    # The transactions the fault may hit: those open as the fault command
    # starts, and those that begin while it runs.
    state["window"] = True
    state["fault_txs"] = {(n, state["tx_no"].get(n, 0))
                          for n, open_ in state["flight"].items() if open_}
    state["fault_rc"], err = await run_cmd(a.fault_cmd)
    state["window"] = False
    if state["fault_rc"]:
        state["fault_stderr"] = err
    # A burst right after the fault takes the servers that sat idle.
    tasks += [asyncio.create_task(client(a, state, a.clients + n)) for n in range(a.burst)]
    if a.heal_at is not None:
        await asyncio.sleep(max(0.0, start + a.heal_at - time.monotonic()))
        state["heal_rc"], err = await run_cmd(a.heal_cmd)
        if state["heal_rc"]:
            state["heal_stderr"] = err
    await asyncio.gather(*tasks)
    if a.heal_at is not None:
        state["recovered_after_heal_s"] = recovery(state, a)
    state["in_flight_at_fault_n"] = len(state["fault_txs"])
    state["seconds"], state["fault_at_s"], state["heal_at_s"] = a.seconds, a.fault_at, a.heal_at
    state["rate_per_s"] = {str(round(b * BUCKET, 2)): v * int(1 / BUCKET)
                           for b, v in sorted(state["buckets"].items())}
    for k in ("start", "fault_at", "end", "heal_at", "flight", "fault_txs", "window",
              "buckets", "tx_no"):
        del state[k]
    print(json.dumps(state, sort_keys=True))


def rates(d):
    """Commits a second before the fault, during it, and after it ended."""
    fa, end, heal = d["fault_at_s"], d["seconds"], d.get("heal_at_s")
    before = d["before"] / fa
    if heal is None:
        return before, d["after"] / (end - fa), None
    return before, d["during"] / (heal - fa), d["after_heal"] / (end - heal)


def fmt_rate(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_s(x):
    return "-" if x is None else f"{x:g} s"


def errs_text(errors):
    total = sum(errors.values())
    inner = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
    return f"{total} ({inner})" if total else "0"


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def report(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    print("| fault | pooler | round | tx/s before | tx/s during the fault | tx/s after it ended "
          "| client errors (by SQLSTATE) | errors outside a transaction open as the fault struck "
          "| clients with errors | failed logins | first commit after the fault "
          "| back to half the rate after the fault ended | balances agree |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---|")
    for d in runs:
        b, du, af = rates(d)
        logins = errs_text(d.get("login_errors", {})) if d["failed_logins"] else "0"
        print(f"| {d['fault']} | {d['pooler']} | {d['round']} | {fmt_rate(b)} | {fmt_rate(du)} "
              f"| {fmt_rate(af)} | {errs_text(d['errors'])} | {d.get('errors_outside', '?')} "
              f"| {d['clients_with_errors']} | {logins} | {fmt_s(d['recovered_s'])} "
              f"| {fmt_s(d.get('recovered_after_heal_s'))} | {'yes' if d['balances'] else 'NO'} |")
    rounds = max(d["round"] for d in runs)
    if rounds > 1:
        print()
        print(f"Medians over {rounds} rounds (errors: the median total, then every "
              "SQLSTATE seen in any round, summed over the rounds):")
        print()
        print("| fault | pooler | tx/s before | tx/s during | tx/s after | client errors "
              "| outside a tx open as the fault struck | clients with errors | failed logins "
              "| first commit after the fault | back to half rate after it ended "
              "| balances agree |")
        print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
        keys = []
        for d in runs:
            if (d["fault"], d["pooler"]) not in keys:
                keys.append((d["fault"], d["pooler"]))
        for fault, pooler in keys:
            rs = [d for d in runs if d["fault"] == fault and d["pooler"] == pooler]
            rt = [rates(d) for d in rs]
            summed = {}
            for d in rs:
                for k, v in d["errors"].items():
                    summed[k] = summed.get(k, 0) + v
            med_err = median([sum(d["errors"].values()) for d in rs])
            codes = ", ".join(f"{k}: {v}" for k, v in sorted(summed.items()))
            print(f"| {fault} | {pooler} | {fmt_rate(median([r[0] for r in rt]))} "
                  f"| {fmt_rate(median([r[1] for r in rt]))} | {fmt_rate(median([r[2] for r in rt]))} "
                  f"| {med_err:g}{f' ({codes})' if codes else ''} "
                  f"| {median([d.get('errors_outside', 0) for d in rs]):g} "
                  f"| {median([d['clients_with_errors'] for d in rs]):g} "
                  f"| {median([d['failed_logins'] for d in rs]):g} "
                  f"| {fmt_s(median([d['recovered_s'] for d in rs]))} "
                  f"| {fmt_s(median([d.get('recovered_after_heal_s') for d in rs]))} "
                  f"| {sum(d['balances'] for d in rs)}/{len(rs)} |")
    print()
    print("Errors outside a transaction open as the fault struck (while its command "
          "ran), and failed logins, per run (time from the fault; statement 0 is "
          "BEGIN; how long the failed statement waited for its answer):")
    print()
    any_listed = False
    for d in runs:
        groups = {}
        for e in d.get("error_list", []):
            if e["in_flight"]:
                continue
            key = (e["code"], str(e["stmt"]), e["msg"])
            w = e.get("waited", 0)
            g = groups.setdefault(key, [0, e["t"], e["t"], w, w])
            g[0] += 1
            g[2] = e["t"]
            g[3], g[4] = min(g[3], w), max(g[4], w)
        for (code, stmt, msg), (n, t0, t1, w0, w1) in sorted(groups.items(), key=lambda kv: kv[1][1]):
            any_listed = True
            when = f"{t0:+.2f} s" if n == 1 else f"{t0:+.2f} to {t1:+.2f} s"
            print(f"- {d['fault']}, {d['pooler']}, round {d['round']}: {n} x {code} at "
                  f"statement {stmt}, {when} (waited {w0:g} to {w1:g} s): {msg}")
        if d.get("rollback_errors"):
            any_listed = True
            print(f"- {d['fault']}, {d['pooler']}, round {d['round']}: "
                  f"{d['rollback_errors']} ROLLBACKs after a failed statement failed too")
        if len(d.get("error_list", [])) >= 40:
            print(f"- {d['fault']}, {d['pooler']}, round {d['round']}: (only the first 40 "
                  "errors are listed)")
    if not any_listed:
        print("- none")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    rep = sub.add_parser("report")
    rep.add_argument("jsonl")
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
    r.add_argument("--heal-at", type=float, default=None,
                   help="seconds from the start when --heal-cmd ends the fault")
    r.add_argument("--heal-cmd", default="true")
    a = p.parse_args()
    if a.cmd == "report":
        report(a.jsonl)
        return
    asyncio.run(run_main(a))


if __name__ == "__main__":
    main()
