#!/usr/bin/env python3
"""Helpers for integration/bench/sweep.sh and peak.sh (Python 3 stdlib only).

Subcommands:
  sweep-report RAW      markdown for sweep.sh (medians over rounds, auto vs
                        the best static pool size)
  loadgen ...           open-loop load generator: requests arrive at a fixed
                        rate whatever happens to earlier ones; each runs one
                        simple-protocol query on a free connection out of N
                        persistent md5-authenticated ones; latency is counted
                        from the scheduled arrival, so queueing anywhere (in
                        the pooler, or for a free client connection) shows.
                        Errors are classified by SQLSTATE and message: shed
                        (53300 "refusing now"), wait timeouts, other.
                        Prints one JSON object.
  peak-report JSON...   markdown for peak.sh
"""

import argparse
import asyncio
import json
import math
import os
import gc
import random
import re
import resource
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import login, read_message  # noqa: E402


def pct(sorted_vals, p):
    """Nearest-rank percentile of a sorted list (None if empty)."""
    if not sorted_vals:
        return None
    return sorted_vals[max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1)]


def fields_of(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


# --------------------------------------------------------------------------
# loadgen
# --------------------------------------------------------------------------

class Broken(Exception):
    """The connection is unusable (closed by the peer, or timed out mid-way)."""


async def simple_query(reader, writer, sql):
    """Runs one simple-protocol query; returns None or the error fields."""
    q = sql.encode() + b"\0"
    writer.write(b"Q" + struct.pack("!I", len(q) + 4) + q)
    await writer.drain()
    err = None
    while True:
        try:
            kind, body = await read_message(reader)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise Broken(err or {"M": f"connection lost: {e}"}) from e
        if kind == b"E":
            err = fields_of(body)
        elif kind == b"Z":
            return err


def classify(err):
    code, msg = err.get("C", "?"), err.get("M", "")
    if code == "53300" and "refusing now" in msg:
        return "shed"
    if "query_wait_timeout" in msg:
        return "wait_timeout"
    return "other"


async def loadgen_main(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.conns + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.conns + 100), hard))
    loop = asyncio.get_running_loop()

    async def connect():
        return await asyncio.wait_for(
            login(a.host, a.port, a.user, a.password, a.db), timeout=30)

    sem = asyncio.Semaphore(50)

    async def connect_limited():
        async with sem:
            return await connect()

    conns = await asyncio.gather(*(connect_limited() for _ in range(a.conns)))
    gc.disable()  # no collector pauses in the middle of the schedule
    free = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)

    records = []  # (sched, sent, end, outcome)
    errors = {}
    inflight = set()
    reconnects = 0

    async def one(sched):
        nonlocal reconnects
        started = loop.time()  # later than sched when the event loop is behind
        conn = await free.get()
        sent = loop.time()  # later than started when every connection is busy
        reader, writer = conn
        outcome = "ok"
        key = None
        try:
            err = await asyncio.wait_for(simple_query(reader, writer, a.sql),
                                         timeout=a.request_timeout)
            if err is not None:
                outcome = classify(err)
                key = f"{err.get('C', '?')}: {err.get('M', '')}"
                if outcome == "shed":
                    key = "53300: " + err.get("M", "").split(":")[0] + ": ... refusing now"
                key = re.sub(r"\(\d+ busy, \d+ waiting\)", "(N busy, M waiting)", key)
        except (Broken, asyncio.TimeoutError, OSError) as e:
            if isinstance(e, asyncio.TimeoutError):
                outcome = "client_timeout"
                key = f"client timeout after {a.request_timeout}s"
            else:
                err = e.args[0] if e.args and isinstance(e.args[0], dict) else {"M": str(e)}
                outcome = classify(err) if "C" in err else "conn_lost"
                key = f"{err.get('C', 'connection')}: {err.get('M', '')} (connection closed)"
            writer.close()
            conn = None
            # Replace the connection (in the background: the request is done).

            async def replace():
                nonlocal reconnects
                while True:
                    try:
                        free.put_nowait(await connect())
                        reconnects += 1
                        return
                    except Exception:  # noqa: BLE001 - retry until it works
                        await asyncio.sleep(0.1)
            t = asyncio.ensure_future(replace())
            inflight.add(t)
            t.add_done_callback(inflight.discard)
        end = loop.time()
        records.append((sched, sent, end, outcome, key, started))
        if conn is not None:
            free.put_nowait(conn)

    # Warm-up arrivals (same rate) come first and are not recorded.
    n = int(a.rate * (a.warmup + a.duration))
    rng = random.Random(a.seed)
    t_start = loop.time() + 0.2
    t0 = t_start + a.warmup
    sched = t0
    tasks = []
    all_scheds = []
    for i in range(n):
        now = loop.time()
        if sched > now:
            await asyncio.sleep(sched - now)
        all_scheds.append(sched)
        tasks.append(asyncio.ensure_future(one(sched)))
        if a.arrivals == "poisson":
            sched += rng.expovariate(a.rate)
        else:
            sched = t_start + (i + 1) / a.rate
    # Let requests in flight finish, up to the grace period after the last
    # arrival; the rest are unfinished (their wait so far is a lower bound).
    last_sched = all_scheds[-1] if all_scheds else t0
    _, pending = await asyncio.wait(tasks, timeout=max(0.1, last_sched + a.grace - loop.time()))
    stop = loop.time()
    records = [rec for rec in records if rec[0] >= t0]
    for rec in records:
        if rec[4] is not None:
            errors[rec[4]] = errors.get(rec[4], 0) + 1
    loop_lag = sorted((rec[5] - rec[0]) * 1000 for rec in records)
    ok_from_start = sorted((rec[2] - rec[5]) * 1000 for rec in records if rec[3] == "ok")
    conn_wait = sorted((rec[1] - rec[5]) * 1000 for rec in records)
    records = [rec[:4] for rec in records]
    finished = {rec[0] for rec in records}
    unfinished_lat = [stop - s for s in all_scheds if s >= t0 and s not in finished]
    n = sum(1 for s in all_scheds if s >= t0)
    for t in pending:
        t.cancel()
    window_end = max(t0 + a.duration, last_sched)

    ok = sorted((e - s) * 1000 for s, _, e, o in records if o == "ok")
    ok_lb = sorted(ok + [x * 1000 for x in unfinished_lat])
    shed = sorted((e - s) * 1000 for s, _, e, o in records if o == "shed")
    lag = sorted((snt - s) * 1000 for s, snt, _, _ in records)
    counts = {}
    for _, _, _, o in records:
        counts[o] = counts.get(o, 0) + 1
    ok_in_window = sum(1 for _, _, e, o in records if o == "ok" and e <= window_end)
    # Admitted throughput over the second half (steady state).
    half = t0 + a.duration / 2
    ok_2nd_half = sum(1 for _, _, e, o in records if o == "ok" and half < e <= t0 + a.duration)

    def r(x):
        return None if x is None else round(x, 2)

    out = {
        "label": a.label, "rate": a.rate, "duration": a.duration, "conns": a.conns,
        "arrivals": a.arrivals, "sql": a.sql,
        "scheduled": n, "ok": counts.get("ok", 0), "shed": counts.get("shed", 0),
        "wait_timeout": counts.get("wait_timeout", 0),
        "other": counts.get("other", 0), "conn_lost": counts.get("conn_lost", 0),
        "client_timeout": counts.get("client_timeout", 0),
        "unfinished": len(unfinished_lat), "reconnects": reconnects,
        "ok_p50_ms": r(pct(ok, 50)), "ok_p99_ms": r(pct(ok, 99)),
        "ok_p999_ms": r(pct(ok, 99.9)), "ok_max_ms": r(ok[-1] if ok else None),
        "ok_mean_ms": r(statistics.fmean(ok) if ok else None),
        "ok_p99_incl_unfinished_ms": r(pct(ok_lb, 99)),
        "ok_p99_from_start_ms": r(pct(ok_from_start, 99)),
        "shed_p99_ms": r(pct(shed, 99)),
        "send_lag_p99_ms": r(pct(lag, 99)),
        "loop_lag_p99_ms": r(pct(loop_lag, 99)),
        "conn_wait_p99_ms": r(pct(conn_wait, 99)),
        "ok_per_s": round(ok_in_window / a.duration, 1),
        "ok_per_s_2nd_half": round(ok_2nd_half / (a.duration / 2), 1),
        "bg_busy": a.bg_busy,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:8]),
    }
    print(json.dumps(out))
    for reader_writer in list(conns):
        try:
            reader_writer[1].write(b"X\0\0\0\4")
            reader_writer[1].close()
        except Exception:  # noqa: BLE001
            pass


def loadgen(argv):
    p = argparse.ArgumentParser(prog="loadbench.py loadgen")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--rate", type=float, required=True, help="arrivals per second")
    p.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    p.add_argument("--conns", type=int, default=200, help="persistent client connections")
    p.add_argument("--sql", default="SELECT pg_sleep(0.01)")
    p.add_argument("--arrivals", choices=["fixed", "poisson"], default="poisson")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup", type=float, default=0.0,
                   help="seconds of arrivals at the same rate before the measured "
                        "ones, not recorded")
    p.add_argument("--grace", type=float, default=5.0,
                   help="seconds after the last arrival to let requests finish; "
                        "the rest count as unfinished")
    p.add_argument("--request-timeout", type=float, default=300.0)
    p.add_argument("--label", default="")
    p.add_argument("--bg-busy", default="?",
                   help="machine busy %% before the run (recorded as given)")
    a = p.parse_args(argv)
    asyncio.run(loadgen_main(a))


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------

def read_tsv(path):
    with open(path) as f:
        lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    return [dict(zip(lines[0], r)) for r in lines[1:]]


def num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"


def sweep_report(raw):
    rows = read_tsv(raw)
    out = []
    w = out.append
    rounds = len({r["round"] for r in rows})
    w(f"Medians of {rounds} round(s). TPS: pgbench's figure without the initial "
      "connection time; p99/mean: pgbench's per-transaction log. \"pool end\": "
      "pglittle_pool_size from /metrics right after the measured run (min-max of "
      "the 1 s samples during it in brackets); \"server conns\": client backends "
      "of the bench user in pg_stat_activity at the end of the run.")
    w("")
    for wl in dict.fromkeys(r["workload"] for r in rows):
        wr = [r for r in rows if r["workload"] == wl]
        title = {"select": "pgbench -S, 200 clients", "tpcb": "TPC-B (pgbench default script), 100 clients"}.get(wl, wl)
        w(f"### {title}")
        w("")
        w("| target | pool | warm-up s | TPS | p99 ms | mean ms | failed | pool end (min-max) | server conns |")
        w("|---|---|---:|---:|---:|---:|---:|---|---:|")
        summ = {}
        for key in dict.fromkeys((r["target"], r["setting"]) for r in wr):
            kr = [r for r in wr if (r["target"], r["setting"]) == key]
            tps = med([num(r["tps"]) for r in kr])
            p99 = med([num(r["p99_ms"]) for r in kr])
            mean = med([num(r["mean_ms"]) for r in kr])
            failed = sum(int(num(r["failed"]) or 0) for r in kr)
            pools = ", ".join(f"{r['pool_end']} ({r['pool_min']}-{r['pool_max']})" for r in kr) \
                if key[0] == "pglittle" else "n/a"
            conns = ", ".join(r["server_conns"] for r in kr)
            summ[key] = (tps, p99)
            label = "pglittle" if key[0] == "pglittle" else "PgBouncer"
            w(f"| {label} | {key[1]} | {kr[0]['warmup_s']} | {fmt(tps)} | {fmt(p99, 2)} | {fmt(mean, 2)} | "
              f"{failed} | {pools} | {conns} |")
        w("")
        static = {k: v for k, v in summ.items() if k[0] == "pglittle" and k[1].isdigit() and v[0]}
        if static:
            best = max(static, key=lambda k: static[k][0])
            btps, bp99 = static[best]
            w(f"Best static size: {best[1]} ({fmt(btps)} TPS, p99 {fmt(bp99, 2)} ms).")
            w("")
            for s in ("auto", "auto-cold"):
                if ("pglittle", s) in summ and summ[("pglittle", s)][0]:
                    tps, p99 = summ[("pglittle", s)]
                    tr, pr = tps / btps, (p99 / bp99 if bp99 else None)
                    ok = tr >= 0.9 and pr is not None and pr <= 1.2
                    w(f"- {s}: TPS {tr * 100:.0f}% of best static (bar >= 90%), p99 "
                      f"{fmt(pr, 2)}x best static's (bar <= 1.2x): {'MET' if ok else 'MISSED'}")
            for k, v in summ.items():
                if k[0] == "pgbouncer" and v[0]:
                    w(f"- PgBouncer at pool {k[1]}: TPS {v[0] / btps * 100:.0f}% of pglittle's best static, "
                      f"p99 {fmt(v[1] / bp99 if bp99 else None, 2)}x")
            w("")
    w("Per run:")
    w("")
    w("| round | workload | target | pool | warm-up s | TPS | p99 ms | mean ms | tx | failed | pool end | pool min-max | server conns | other work before (%) | pgbench clients aborted (warm-up+measured) |")
    w("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        w("| " + " | ".join([r["round"], r["workload"], r["target"], r["setting"], r["warmup_s"],
                            fmt(num(r["tps"])), r["p99_ms"], r["mean_ms"], r["tx"], r["failed"],
                            r["pool_end"], f"{r['pool_min']}-{r['pool_max']}", r["server_conns"],
                            r["bg_busy"], r.get("aborted", "n/a")]) + " |")
    w("")
    print("\n".join(out))


def peak_report(meta_path, *paths):
    with open(meta_path) as f:
        meta = json.load(f)
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    out = []
    w = out.append
    w(meta.get("intro", ""))
    w("")
    if meta.get("search"):
        w("Search for R (pgbench -R through pglittle, pool "
          f"{meta['pool_size']}, no shedding: query_wait_timeout 120s; p99 from the "
          "per-transaction log, measured from the scheduled start, so it includes "
          "schedule lag):")
        w("")
        w("| rate /s | TPS | p99 ms | mean ms | late (lag > 50 ms) | verdict |")
        w("|---:|---:|---:|---:|---:|---|")
        for s in meta["search"]:
            w(f"| {s['rate']} | {fmt(s.get('tps'))} | {fmt(s.get('p99'), 2)} | {fmt(s.get('mean'), 2)} | "
              f"{s.get('late', 'n/a')} | {'sustainable' if s['ok'] else 'p99 >= 50 ms'} |")
        w("")
    w("Open-loop load generator (loadbench.py loadgen), Poisson arrivals, "
      f"{runs[0]['conns'] if runs else '?'} persistent client connections, `{runs[0]['sql'] if runs else ''}`. "
      "Latency from the scheduled arrival. \"admitted\" = completed without error. "
      "Unfinished = still waiting when the run stopped (5 s after the last arrival); "
      "the p99 with them counts their wait so far (a lower bound). Generator columns: "
      "how late the generator itself started requests (its event loop short of CPU), "
      "and how long requests waited for one of its connections to be free (all busy "
      "in the pooler); both are inside the latencies. \"p99 from the generator's actual "
      "start\" leaves out the generator's own lateness (but not waits for a free connection).")
    w("")
    w("| target | rate /s | s | scheduled | admitted | admitted /s (2nd half) | p50 ms | p99 ms | p99.9 ms | max ms | shed | shed % | p99 of a refusal ms | wait timeouts | other errors | unfinished | p99 incl. unfinished ms | p99 from the generator's actual start ms | generator: late start p99 ms | generator: wait for a free connection p99 ms | other work before (%) |")
    w("|---|" + "---:|" * 20)
    for r in runs:
        other = r["other"] + r["conn_lost"] + r["client_timeout"]
        w(f"| {r['label']} | {r['rate']:.0f} | {r['duration']:.0f} | {r['scheduled']} | {r['ok']} | "
          f"{fmt(r['ok_per_s_2nd_half'])} | {fmt(r['ok_p50_ms'], 1)} | {fmt(r['ok_p99_ms'], 1)} | "
          f"{fmt(r['ok_p999_ms'], 1)} | {fmt(r['ok_max_ms'], 1)} | {r['shed']} | "
          f"{100 * r['shed'] / max(1, r['scheduled']):.1f} | {fmt(r['shed_p99_ms'], 1)} | "
          f"{r['wait_timeout']} | {other} | {r['unfinished']} | {fmt(r['ok_p99_incl_unfinished_ms'], 1)} | "
          f"{fmt(r.get('ok_p99_from_start_ms'), 1)} | {fmt(r.get('loop_lag_p99_ms'), 1)} | {fmt(r.get('conn_wait_p99_ms'), 1)} | {r.get('bg_busy', '?')} |")
    w("")
    errs = {}
    for r in runs:
        for k, v in r["errors"].items():
            errs.setdefault(r["label"], []).append(f"{v} x {k}")
    if errs:
        w("Errors seen (up to 8 kinds per run):")
        w("")
        for label, lst in errs.items():
            w(f"- {label}: " + "; ".join(lst))
        w("")
    by = {r["label"]: r for r in runs}
    for target in ("pglittle", "PgBouncer"):
        at_r, at_2r = by.get(f"{target} @ R"), by.get(f"{target} @ 2R")
        if at_r and at_2r and at_r["ok_p99_ms"] and at_2r["ok_p99_incl_unfinished_ms"]:
            ratio = at_2r["ok_p99_incl_unfinished_ms"] / at_r["ok_p99_ms"]
            other = at_2r["other"] + at_2r["conn_lost"] + at_2r["client_timeout"] + at_2r["wait_timeout"]
            verdict = "MET" if ratio < 3 and other == 0 else "MISSED"
            w(f"- {target}: admitted p99 at 2R is {ratio:.2f}x its p99 at R "
              f"({fmt(at_2r['ok_p99_incl_unfinished_ms'], 1)} vs {fmt(at_r['ok_p99_ms'], 1)} ms; bar < 3x), "
              f"{100 * at_2r['shed'] / max(1, at_2r['scheduled']):.1f}% shed, {other} other errors or timeouts: {verdict}")
    w("")
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "sweep-report":
        sweep_report(*rest)
    elif cmd == "loadgen":
        loadgen(rest)
    elif cmd == "peak-report":
        peak_report(*rest)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
