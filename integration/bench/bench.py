#!/usr/bin/env python3
"""Helpers for integration/bench/run.sh (Python 3 standard library only).

Subcommands:
  txstats FILE...      per-transaction pgbench logs (-l) -> "COUNT MEAN_MS P99_MS"
  idle ...             open many idle, authenticated (md5) PostgreSQL client
                       connections and hold them; driven by lines on stdin
  report RAW IDLE META write the markdown summary (medians and ratios)
"""

import argparse
import asyncio
import hashlib
import math
import resource
import signal
import statistics
import struct
import sys


# --------------------------------------------------------------------------
# txstats: latency from pgbench per-transaction logs
# --------------------------------------------------------------------------

def txstats(paths):
    """pgbench -l lines: client_id transaction_no time script_no epoch us
    [lag]; `time` is the transaction latency in microseconds. Failed or
    skipped transactions (PG15 writes "failed"/"skipped" there) are left out
    and counted separately."""
    lat = []
    bad = 0
    for path in paths:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                try:
                    lat.append(int(fields[2]))
                except ValueError:
                    bad += 1
    if not lat:
        print("0 nan nan", bad)
        return
    lat.sort()
    n = len(lat)
    mean_ms = sum(lat) / n / 1000.0
    # Nearest-rank percentile.
    p99_ms = lat[max(0, math.ceil(0.99 * n) - 1)] / 1000.0
    print(f"{n} {mean_ms:.3f} {p99_ms:.3f} {bad}")


# --------------------------------------------------------------------------
# idle: many idle authenticated clients
# --------------------------------------------------------------------------

PROTOCOL_3 = 196608


def startup_packet(user, database):
    body = struct.pack("!I", PROTOCOL_3)
    for k, v in (("user", user), ("database", database),
                 ("application_name", "pglittle-bench-idle")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def md5_response(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    outer = hashlib.md5(inner.encode() + salt).hexdigest()
    return b"md5" + outer.encode() + b"\0"


async def read_message(reader):
    header = await reader.readexactly(5)
    kind = header[:1]
    (length,) = struct.unpack("!I", header[1:])
    body = await reader.readexactly(length - 4)
    return kind, body


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', '?')} {fields.get('C', '?')}: {fields.get('M', '?')}"


async def login(host, port, user, password, database):
    """Connect, authenticate with md5 (or trust) and wait for ReadyForQuery.
    Returns (reader, writer)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(startup_packet(user, database))
        await writer.drain()
        while True:
            kind, body = await read_message(reader)
            if kind == b"R":
                (code,) = struct.unpack("!I", body[:4])
                if code == 0:
                    continue
                if code == 5:
                    resp = md5_response(user, password, body[4:8])
                    writer.write(b"p" + struct.pack("!I", len(resp) + 4) + resp)
                    await writer.drain()
                    continue
                raise RuntimeError(f"unsupported auth request {code} "
                                   "(configure md5 for this user)")
            if kind == b"E":
                raise RuntimeError(error_text(body))
            if kind == b"Z":
                return reader, writer
            # ParameterStatus, BackendKeyData, NoticeResponse: ignore.
    except BaseException:
        writer.close()
        raise


async def select_one(reader, writer):
    q = b"SELECT 1\0"
    writer.write(b"Q" + struct.pack("!I", len(q) + 4) + q)
    await writer.drain()
    while True:
        kind, body = await read_message(reader)
        if kind == b"E":
            raise RuntimeError(error_text(body))
        if kind == b"Z":
            return


async def open_many(args, count, conns, errors):
    sem = asyncio.Semaphore(args.concurrency)

    async def one():
        async with sem:
            try:
                conns.append(await asyncio.wait_for(
                    login(args.host, args.port, args.user, args.password, args.db),
                    timeout=args.login_timeout))
            except Exception as e:  # noqa: BLE001 - count and report every failure
                errors.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(one() for _ in range(count)))


async def idle_main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.count + args.warmup + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    loop = asyncio.get_running_loop()

    async def command():
        line = await loop.run_in_executor(None, sys.stdin.readline)
        return line.strip()

    def say(*parts):
        print(*parts, flush=True)

    conns, errors = [], []
    await open_many(args, args.warmup, conns, errors)
    say("WARM", len(conns), len(errors))
    if errors:
        say("ERROR", errors[0])
    if await command() != "go":
        return
    warm_ok, warm_errors = len(conns), len(errors)
    await open_many(args, args.count, conns, errors)
    new_errors = errors[warm_errors:]
    say("READY", len(conns) - warm_ok, len(new_errors))
    for e in sorted(set(new_errors))[:5]:
        say("ERROR", e, f"(x{new_errors.count(e)})")
    await command()  # "stop" (or EOF)
    # Are the idle sessions still alive and usable? Query a sample.
    sample = conns[-args.check:] if args.check else []
    ok = 0
    for reader, writer in sample:
        try:
            await asyncio.wait_for(select_one(reader, writer), timeout=10)
            ok += 1
        except Exception as e:  # noqa: BLE001
            say("CHECKERROR", f"{type(e).__name__}: {e}")
    say("CHECK", ok, len(sample))
    for _, writer in conns:
        try:
            writer.write(b"X\0\0\0\4")
            writer.close()
        except Exception:  # noqa: BLE001 - already gone
            pass
    await asyncio.sleep(0.5)
    say("CLOSED")


def idle(argv):
    p = argparse.ArgumentParser(prog="bench.py idle")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=1,
                   help="clients opened before the baseline reading")
    p.add_argument("--concurrency", type=int, default=200,
                   help="handshakes in flight at once")
    p.add_argument("--login-timeout", type=float, default=60.0)
    p.add_argument("--check", type=int, default=10,
                   help="idle sessions that run SELECT 1 before closing")
    args = p.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    asyncio.run(idle_main(args))


# --------------------------------------------------------------------------
# report: medians, ratios, markdown
# --------------------------------------------------------------------------

TARGETS = [("direct", "direct Postgres"), ("pglittle", "pglittle"),
           ("pglittle_base", "pglittle, base binary"),
           ("pglittle_always", "pglittle, server_reset = always"),
           ("pgbouncer", "PgBouncer")]


def read_tsv(path):
    with open(path) as f:
        lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    header, rows = lines[0], lines[1:]
    return [dict(zip(header, r)) for r in rows]


def num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, digits):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def report(raw_path, idle_path, meta_path):
    rows = read_tsv(raw_path)
    idle_rows = read_tsv(idle_path) if idle_path != "-" else []
    with open(meta_path) as f:
        meta = dict(l.rstrip("\n").split("\t", 1) for l in f if "\t" in l)
    rounds = max((int(r["round"]) for r in rows), default=0)

    metrics = [  # key, label, digits, better
        ("tps", "TPS", 0, "higher"),
        ("mean_ms", "mean latency (ms)", 2, "lower"),
        ("p99_ms", "p99 latency (ms)", 2, "lower"),
        ("cpu_per_100k", "pooler CPU s / 100k tx", 3, "lower"),
    ]
    summary = {}
    spread = {}
    for key, _, _, _ in metrics:
        for t, _ in TARGETS:
            vals = [num(r[key]) for r in rows if r["target"] == t]
            vals = [v for v in vals if v is not None]
            summary[(t, key)] = med(vals)
            spread[(t, key)] = (min(vals), max(vals)) if vals else None
    for t, _ in TARGETS:
        kib = [num(r["kib_per_client"]) for r in idle_rows if r["target"] == t]
        summary[(t, "kib")] = med(kib)

    out = []
    w = out.append
    w(f"Medians of {rounds} interleaved round(s) per target "
      f"(pgbench -S, {meta.get('clients')} clients, -T {meta.get('duration')}s, "
      f"pool size {meta.get('pool_size')}); idle-client memory from "
      f"{meta.get('idle_clients')} idle clients, one measurement per pooler.")
    w("")
    head = ["target", "TPS", "mean latency (ms)", "p99 latency (ms)",
            "pooler CPU s / 100k tx", "RSS per idle client (KiB)"]
    w("| " + " | ".join(head) + " |")
    w("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    present = {r["target"] for r in rows} | {r["target"] for r in idle_rows}
    for t, label in TARGETS:
        if t in ("pglittle_always", "pglittle_base") and t not in present:
            continue
        cells = [label]
        for key, _, digits, _ in metrics:
            cells.append(fmt(summary[(t, key)], digits))
        cells.append("n/a" if t == "direct" else fmt(summary[(t, "kib")], 3))
        w("| " + " | ".join(cells) + " |")
    pairs = [("pglittle", "pgbouncer", "pglittle / PgBouncer"),
             ("pglittle", "direct", "pglittle / direct"),
             ("pgbouncer", "direct", "PgBouncer / direct")]
    if "pglittle_base" in present:
        pairs += [("pglittle", "pglittle_base", "pglittle / base"),
                  ("pglittle_base", "pgbouncer", "base / PgBouncer")]
    if "pglittle_always" in present:
        pairs += [("pglittle_always", "pglittle", "always / detect"),
                  ("pglittle_always", "pgbouncer", "always / PgBouncer")]
    for a, b, label in pairs:
        cells = [f"*{label}*"]
        for key, _, _, _ in metrics:
            cells.append(ratio(summary[(a, key)], summary[(b, key)]))
        cells.append(ratio(summary[(a, "kib")], summary[(b, "kib")]))
        w("| " + " | ".join(cells) + " |")
    w("")
    w("Range over rounds (min – max):")
    w("")
    w("| target | TPS | mean latency (ms) | p99 latency (ms) | pooler CPU s / 100k tx |")
    w("|---|---:|---:|---:|---:|")
    for t, label in TARGETS:
        cells = [label]
        for key, _, digits, _ in metrics:
            s = spread[(t, key)]
            cells.append("n/a" if s is None else f"{fmt(s[0], digits)} – {fmt(s[1], digits)}")
        w("| " + " | ".join(cells) + " |")
    w("")

    bg = [v for v in (num(r.get("bg_busy")) for r in rows) if v is not None]
    od = [v for v in (num(r.get("other_during")) for r in rows) if v is not None]
    if bg or od:
        parts = []
        if od:
            parts.append(f"during the runs, other processes used a median {med(od):.0f}% "
                         f"(max {max(od):.0f}%) of the machine's CPU")
        if bg:
            parts.append(f"in the 2 s before each run (benchmark idle) the machine was "
                         f"a median {med(bg):.0f}% busy (max {max(bg):.0f}%)")
        w("Other work on the shared machine: " + "; ".join(parts) + ".")
        w("")

    # Targets from the issue.
    pl, pb = "pglittle", "pgbouncer"
    checks = []

    def check(name, ok, detail):
        checks.append(f"- {'MET ' if ok else 'MISSED'}: {name} ({detail})"
                      if ok is not None else f"- UNKNOWN: {name} ({detail})")

    a, b = summary[(pl, "tps")], summary[(pb, "tps")]
    check("pglittle TPS >= PgBouncer TPS", None if None in (a, b) else a >= b,
          f"{fmt(a, 0)} vs {fmt(b, 0)}")
    a, b = summary[(pl, "cpu_per_100k")], summary[(pb, "cpu_per_100k")]
    check("pglittle CPU per tx <= PgBouncer", None if None in (a, b) else a <= b,
          f"{fmt(a, 3)} vs {fmt(b, 3)} s / 100k tx")
    a = summary[(pl, "kib")]
    check("pglittle RSS growth per idle client <= 1 KiB", None if a is None else a <= 1.0,
          f"{fmt(a, 3)} KiB; PgBouncer {fmt(summary[(pb, 'kib')], 3)} KiB")
    w("Targets:")
    w("")
    out.extend(checks)
    w("")

    w("Per round (run order rotates each round). mean/p99 ms: pgbench's per-transaction "
      "log (-l); pgbench avg ms: its own 'latency average' (clients x duration / tx); "
      "conn ms: pgbench's initial connection time, not counted in TPS; other work "
      "before: CPU busy % of the whole machine over the 2 s pause before the run, "
      "when the benchmark itself is idle; other work during: share of the machine's "
      "CPU time during the run used by anything but PostgreSQL, pgbench and the pooler.")
    w("")
    w("| round | order | target | TPS | mean ms | p99 ms | pgbench avg ms | tx | failed | conn ms | pooler CPU s | CPU s / 100k tx | other work before (%) | other work during (%) |")
    w("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        w("| " + " | ".join([r["round"], r["order"], r["target"], fmt(num(r["tps"]), 0),
                            r["mean_ms"], r["p99_ms"], r["avg_ms"], r["tx"], r["failed"], r["conn_ms"],
                            r["cpu_s"], r["cpu_per_100k"], r["bg_busy"], r.get("other_during", "?")]) + " |")
    w("")
    if idle_rows:
        w("Idle clients (VmRSS in KiB; baseline taken after one warm-up client "
          "had logged in and stayed connected):")
        w("")
        w("| target | RSS at start | RSS baseline | RSS with idle clients | clients ok | failed | sample SELECT 1 ok | KiB / client | KiB / client from start |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in idle_rows:
            w("| " + " | ".join([r["target"], r["rss_start"], r["rss_base"], r["rss_after"],
                                r["ok"], r["failed"], r["check"], r["kib_per_client"],
                                r["kib_from_start"]]) + " |")
        w("")
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "txstats":
        txstats(rest)
    elif cmd == "idle":
        idle(rest)
    elif cmd == "report":
        report(*rest)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
