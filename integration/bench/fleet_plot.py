#!/usr/bin/env python3
"""Helpers of integration/bench/fleet.sh (the fleet benchmark of issue 16).

    fleet_plot.py sample --out SAMPLES.tsv --held HELD.tsv --psql ... -- PSQL ARGS
        Samples the load role's server connections in pg_stat_activity every
        --interval (default 0.1 s) on one psql session (a coprocess), with
        the fleet members' published application_names, and every
        --held-interval (default 0.5 s) each pglittle's held server
        connections and pool size from its /metrics; until SIGTERM/SIGINT.
    fleet_plot.py report DATA_DIR
        Prints the markdown tables of the report (stdlib only); the last
        line of stdout is "TARGET MET|MISSED <median ratio> <fleet max>".
    fleet_plot.py plot DATA_DIR OUT.png
        The fleet's total connections over time, both configurations, the
        budget, phase boundaries; one panel per round. Needs matplotlib:
        installs it with pip if missing, else says so and exits 3.

DATA_DIR holds what fleet.sh writes: meta.tsv, runs.tsv, phases.tsv,
pgbench.tsv, samples-<run>.tsv, held-<run>.tsv.
"""

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


# ------------------------------------------------------------------ sample --

def sample(argv):
    import argparse

    ap = argparse.ArgumentParser(prog="fleet_plot.py sample")
    ap.add_argument("--out", required=True)
    ap.add_argument("--held", required=True)
    ap.add_argument("--role", required=True)
    ap.add_argument("--fleet", default="")
    ap.add_argument("--metrics", default="", help="comma-separated instance=port")
    ap.add_argument("--db", default="bench")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--held-interval", type=float, default=0.5)
    ap.add_argument("psql", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.psql[1:] if a.psql and a.psql[0] == "--" else a.psql
    if not cmd:
        ap.error("no psql command after --")

    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())

    role = a.role.replace("'", "''")
    query = (
        "SELECT extract(epoch FROM clock_timestamp()), "
        f"count(*) FILTER (WHERE usename = '{role}'), "
        f"count(*) FILTER (WHERE usename = '{role}' AND state = 'active'), "
        "coalesce(string_agg(application_name, ' ' ORDER BY application_name) "
        "FILTER (WHERE starts_with(application_name, 'pglittle-fleet:')), '-') "
        "FROM pg_stat_activity;\n"
    )
    psql = subprocess.Popen(
        cmd + ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
    )

    def held_loop():
        targets = [t.split("=", 1) for t in a.metrics.split(",") if t]
        with open(a.held, "w", buffering=1) as f:
            f.write("t\tinstance\theld\tpool_size\n")
            while not stop.is_set():
                t0 = time.monotonic()
                for inst, port in targets:
                    t = time.time()
                    try:
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/metrics", timeout=1
                        ) as r:
                            text = r.read().decode()
                    except Exception:
                        continue
                    held = size = 0.0
                    for line in text.splitlines():
                        if f'database="{a.db}"' not in line:
                            continue
                        if line.startswith("pglittle_servers{"):
                            held += float(line.split()[-1])
                        elif line.startswith("pglittle_pool_size{"):
                            size += float(line.split()[-1])
                    f.write(f"{t:.3f}\t{inst}\t{held:g}\t{size:g}\n")
                stop.wait(max(0.0, a.held_interval - (time.monotonic() - t0)))

    th = threading.Thread(target=held_loop, daemon=True)
    th.start()
    with open(a.out, "w", buffering=1) as f:
        f.write("t\tconns\tactive\tfleet\n")
        nxt = time.monotonic()
        while not stop.is_set():
            try:
                psql.stdin.write(query)
                psql.stdin.flush()
                line = psql.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
            if not line:
                if stop.is_set():
                    break
                print("sampler: psql ended", file=sys.stderr)
                return 1
            f.write(line if line.endswith("\n") else line + "\n")
            nxt += a.interval
            delay = nxt - time.monotonic()
            if delay < 0:
                nxt = time.monotonic()
            else:
                stop.wait(delay)
    try:
        psql.stdin.close()
        psql.wait(timeout=5)
    except Exception:
        psql.kill()
    th.join(timeout=3)
    return 0


# ---------------------------------------------------------------- reading --

def read_tsv(path):
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    if not lines:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, l.split("\t"))) for l in lines[1:]]


def num(v, default=float("nan")):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def load(data):
    meta = {r["key"]: r["value"] for r in read_tsv(os.path.join(data, "meta.tsv"))}
    runs = read_tsv(os.path.join(data, "runs.tsv"))
    phases = read_tsv(os.path.join(data, "phases.tsv"))
    bench = read_tsv(os.path.join(data, "pgbench.tsv"))
    samples, held = {}, {}
    for r in runs:
        rid = r["run"]
        p = os.path.join(data, f"samples-{rid}.tsv")
        samples[rid] = [
            (num(s["t"]), num(s["conns"]), num(s["active"]), s.get("fleet", "-"))
            for s in read_tsv(p)
        ] if os.path.exists(p) else []
        p = os.path.join(data, f"held-{rid}.tsv")
        held[rid] = [
            (num(s["t"]), s["instance"], num(s["held"]), num(s["pool_size"]))
            for s in read_tsv(p)
        ] if os.path.exists(p) else []
    return meta, runs, phases, bench, samples, held


def parse_fleet(field):
    """pglittle-fleet:<fleet>:<instance>:d<demand>:c<cap>[+]:h<held> ..."""
    out = {}
    if not field or field == "-":
        return out
    for name in field.split(" "):
        parts = name.split(":")
        if len(parts) < 6:
            continue
        try:
            out[parts[2]] = {
                "demand": int(parts[3][1:]),
                "cap": int(parts[4][1:].rstrip("+")),
                "held": int(parts[5][1:]),
            }
        except ValueError:
            continue
    return out


# ----------------------------------------------------------------- report --

def fmt(x, digits=0):
    if x is None or x != x:
        return "n/a"
    return f"{x:,.{digits}f}"


def report(data):
    meta, runs, phases, bench, samples, held = load(data)
    budget = int(meta["budget"])
    secs = float(meta["phase_seconds"])
    n_inst = int(meta["instances"])
    target = float(meta.get("target_ratio", "1.2"))
    by_run_phase = {}
    for b in bench:
        by_run_phase.setdefault((b["run"], int(b["phase"])), []).append(b)
    phase_rows = {}
    for p in phases:
        phase_rows[(p["run"], int(p["phase"]))] = p

    def in_window(rid, t0, t1):
        return [s for s in samples[rid] if t0 <= s[0] <= t1]

    run_stat = {}
    for r in runs:
        rid = r["run"]
        tx = sum(num(b["tx"], 0) for b in bench if b["run"] == rid)
        failed = sum(num(b["failed"], 0) for b in bench if b["run"] == rid)
        aborted = sum(num(b["aborted"], 0) for b in bench if b["run"] == rid)
        bad_rc = sum(1 for b in bench if b["run"] == rid and b["rc"] != "0")
        nph = len([p for p in phases if p["run"] == rid])
        conns = [s[1] for s in samples[rid]]
        # The measured window: from the first phase's start to the last's end.
        ph = [p for p in phases if p["run"] == rid]
        t0 = min(num(p["t0"]) for p in ph) if ph else 0
        t1 = max(num(p["t1"]) for p in ph) if ph else 0
        wall = t1 - t0 if ph else float("nan")
        inside = [s[1] for s in in_window(rid, t0, t1)]
        run_stat[rid] = {
            "tps": tx / (nph * secs) if nph else float("nan"),
            "tx": tx,
            "wall": wall,
            "failed": failed,
            "aborted": aborted,
            "bad_rc": bad_rc,
            "max": max(conns) if conns else float("nan"),
            "mean": statistics.mean(inside) if inside else float("nan"),
            "nsamples": len(conns),
        }

    rounds = sorted({int(r["round"]) for r in runs})
    cfgs = ["fleet", "static"]
    label = {"fleet": "fleet", "static": "static split"}
    rid_of = {(int(r["round"]), r["config"]): r["run"] for r in runs}
    order_of = {}
    for r in runs:
        order_of.setdefault(int(r["round"]), []).append((int(r["order"]), r["config"]))

    out = []
    w = out.append
    ratios, fleet_max, all_failed = [], [], 0
    w("## Per round\n")
    w("TPS = transactions of all pgbench processes of the run / (phases x phase "
      "seconds): wall-clock throughput with pgbench's connection phase inside "
      "-T. Connections = load-role backends in pg_stat_activity, sampled every "
      f"{meta.get('interval', '0.1')} s (fleet sync connections excluded).\n")
    w("| round | order | fleet TPS | static split TPS | ratio | fleet max conns | "
      "static max conns | fleet mean conns | static mean conns | failed tx | aborted clients |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rd in rounds:
        f = run_stat.get(rid_of.get((rd, "fleet")))
        s = run_stat.get(rid_of.get((rd, "static")))
        if not f or not s:
            continue
        ratio = f["tps"] / s["tps"] if s["tps"] else float("nan")
        ratios.append(ratio)
        fleet_max.append(f["max"])
        bad = f["failed"] + s["failed"]
        ab = f["aborted"] + s["aborted"]
        all_failed += bad + ab + f["bad_rc"] + s["bad_rc"]
        order = " -> ".join(label[c] for _, c in sorted(order_of[rd]))
        w(f"| {rd} | {order} | {fmt(f['tps'])} | {fmt(s['tps'])} | {ratio:.2f}x | "
          f"{fmt(f['max'])} | {fmt(s['max'])} | {fmt(f['mean'], 1)} | {fmt(s['mean'], 1)} | "
          f"{fmt(bad)} | {fmt(ab)} |")
    med = statistics.median(ratios) if ratios else float("nan")
    fmax = max(fleet_max) if fleet_max else float("nan")
    w("")
    w(f"- median ratio fleet / static split over {len(ratios)} round(s): **{med:.2f}x**"
      + (f" (per round: {', '.join(f'{x:.2f}x' for x in ratios)})" if len(ratios) > 1 else ""))
    w(f"- fleet: most load-role server connections seen at once: **{fmt(fmax)}** "
      f"(budget {budget}); samples per run: "
      + ", ".join(str(run_stat[rid_of[(rd, 'fleet')]]['nsamples']) for rd in rounds
                  if (rd, 'fleet') in rid_of))
    w("")

    w("## Per phase\n")
    w("Busy = the instance with the heavy load in that phase. pgbench TPS is "
      "pgbench's own figure (without its initial connection time); total = the "
      "four instances' transactions / phase seconds. Busy held = the busy "
      "instance's server connections (its /metrics, every "
      f"{meta.get('held_interval', '0.5')} s): the median over the phase's last "
      "third, and the seconds from the phase start until it first reached 80% "
      "of that. Conns = all load-role backends in the phase. CPU busy = the "
      "whole machine's over the phase; in brackets the part not used by this "
      "benchmark's processes (PostgreSQL, pglittle, pgbench, sampler): other "
      "work on a shared machine.\n")
    for rd in rounds:
        for cfg in cfgs:
            rid = rid_of.get((rd, cfg))
            if rid is None:
                continue
            w(f"### Round {rd}, {label[cfg]}\n")
            w("| phase | busy | busy pgbench TPS | busy connect ms | total TPS | busy held (last third) | "
              "s to 80% | max conns | mean conns | CPU busy (not ours) | failed |")
            w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            k = 0
            while (rid, k) in phase_rows:
                p = phase_rows[(rid, k)]
                t0, t1 = num(p["t0"]), num(p["t1"])
                rows = by_run_phase.get((rid, k), [])
                busy = [b for b in rows if b["role"] == "heavy"]
                bt = num(busy[0]["tps"]) if busy else float("nan")
                bc = num(busy[0]["conn_ms"]) if busy else float("nan")
                total = sum(num(b["tx"], 0) for b in rows) / secs
                fails = sum(num(b["failed"], 0) + num(b["aborted"], 0) for b in rows)
                win = [s[1] for s in in_window(rid, t0, t1)]
                hb = [(h[0], h[2]) for h in held[rid] if h[1] == p["busy"] and t0 <= h[0] <= t1]
                last = [v for t, v in hb if t >= t1 - (t1 - t0) / 3]
                settled = statistics.median(last) if last else float("nan")
                reach = float("nan")
                if last and settled > 0:
                    for t, v in hb:
                        if v >= 0.8 * settled:
                            reach = t - t0
                            break
                w(f"| {k} | {p['busy']} | {fmt(bt)} | {fmt(bc, 1)} | {fmt(total)} | {fmt(settled)} | "
                  f"{fmt(reach, 1)} | {fmt(max(win) if win else float('nan'))} | "
                  f"{fmt(statistics.mean(win) if win else float('nan'), 1)} | {p.get('cpu_busy', '?')}% ({p.get('cpu_other', '?')}%) | {fmt(fails)} |")
                k += 1
            w("")
    # The fleet's own view, from the published application_names: how the
    # budget was dealt in each phase (median of each member's cap over the
    # phase's last third) and the highest sum of published caps.
    w("## The fleet's published state\n")
    w("From the sync connections' application_name (`d<demand>:c<cap>:h<held>`), "
      "sampled with the connection counts: each member's cap, median over the "
      "phase's last third (busy instance in bold); the highest sum of published "
      "caps and of published held at any sample of the run.\n")
    for rd in rounds:
        rid = rid_of.get((rd, "fleet"))
        if rid is None:
            continue
        insts = sorted({i for s in samples[rid] for i in parse_fleet(s[3])})
        if not insts:
            w(f"Round {rd}: no published fleet state was sampled.\n")
            continue
        w(f"### Round {rd}\n")
        w("| phase | " + " | ".join(f"{i} cap" for i in insts) + " | sum of caps |")
        w("|---:|" + "---:|" * (len(insts) + 1))
        k = 0
        while (rid, k) in phase_rows:
            p = phase_rows[(rid, k)]
            t0, t1 = num(p["t0"]), num(p["t1"])
            win = [parse_fleet(s[3]) for s in in_window(rid, t1 - (t1 - t0) / 3, t1)]
            cells, total = [], 0
            for i in insts:
                caps = [m[i]["cap"] for m in win if i in m]
                c = statistics.median(caps) if caps else float("nan")
                total += c if c == c else 0
                cell = fmt(c)
                cells.append(f"**{cell}**" if i == p["busy"] else cell)
            w(f"| {k} | " + " | ".join(cells) + f" | {fmt(total)} |")
            k += 1
        caps_sum = [sum(m["cap"] for m in parse_fleet(s[3]).values()) for s in samples[rid]]
        held_sum = [sum(m["held"] for m in parse_fleet(s[3]).values()) for s in samples[rid]]
        w("")
        w(f"Highest sum of published caps: {fmt(max(caps_sum) if caps_sum else float('nan'))}; "
          f"of published held: {fmt(max(held_sum) if held_sum else float('nan'))} (budget {budget}).\n")

    met = (med == med and med >= target and fmax == fmax and fmax <= budget and all_failed == 0)
    w(f"TARGET {'MET' if met else 'MISSED'} {med:.3f} {fmt(fmax)} {fmt(all_failed)}")
    print("\n".join(out))
    return 0


# ------------------------------------------------------------------- plot --

def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        pass
    print("fleet_plot.py: matplotlib is missing; trying python3 -m pip install --quiet matplotlib",
          file=sys.stderr)
    rc = subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    if rc != 0:
        print("fleet_plot.py: could not install matplotlib (pip exit %d); no plot" % rc,
              file=sys.stderr)
        return False
    import importlib
    importlib.invalidate_caches()
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        print("fleet_plot.py: matplotlib still not importable; no plot", file=sys.stderr)
        return False


def plot(data, out_png):
    if not ensure_matplotlib():
        return 3
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, runs, phases, bench, samples, held = load(data)
    budget = int(meta["budget"])
    rounds = sorted({int(r["round"]) for r in runs})
    rid_of = {(int(r["round"]), r["config"]): r["run"] for r in runs}
    style = {"fleet": ("tab:blue", "fleet (shared budget)"),
             "static": ("tab:orange", f"static split ({meta.get('static_share', '?')} each)")}
    fig, axes = plt.subplots(len(rounds), 2, figsize=(15, 3.8 * len(rounds)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for row, rd in zip(axes, rounds):
        ax, side = row
        # Right: each fleet instance's held server connections (its /metrics).
        rid = rid_of.get((rd, "fleet"))
        ph = sorted((p for p in phases if p["run"] == rid), key=lambda p: int(p["phase"])) if rid else []
        if ph:
            t0 = num(ph[0]["t0"])
            for inst in sorted({h[1] for h in held[rid]}):
                pts = [(h[0] - t0, h[2]) for h in held[rid] if h[1] == inst]
                side.step([x for x, _ in pts], [y for _, y in pts], where="post", lw=1.1, label=inst)
            for p in ph:
                side.axvline(num(p["t0"]) - t0, color="grey", ls=":", lw=0.8)
            side.axvline(num(ph[-1]["t1"]) - t0, color="grey", ls=":", lw=0.8)
        side.axhline(budget, color="tab:red", ls="--", lw=1)
        side.set_ylim(0, budget * 1.25)
        side.set_xlabel("seconds since the first phase started")
        side.set_ylabel("server connections")
        side.set_title(f"Round {rd}, fleet: each instance's server connections", fontsize=10)
        side.grid(alpha=0.3)
        side.legend(loc="upper left", fontsize=7, ncol=4)
        bounds = None
        for cfg in ("fleet", "static"):
            rid = rid_of.get((rd, cfg))
            if rid is None:
                continue
            ph = sorted((p for p in phases if p["run"] == rid), key=lambda p: int(p["phase"]))
            if not ph:
                continue
            t0 = num(ph[0]["t0"])
            xs = [s[0] - t0 for s in samples[rid]]
            ys = [s[1] for s in samples[rid]]
            color, lab = style[cfg]
            ax.plot(xs, ys, color=color, lw=1.2, label=lab)
            if bounds is None:
                bounds = [(num(p["t0"]) - t0, p["busy"]) for p in ph] + [(num(ph[-1]["t1"]) - t0, None)]
        ax.axhline(budget, color="tab:red", ls="--", lw=1, label=f"budget B = {budget}")
        for x, busy in bounds or []:
            ax.axvline(x, color="grey", ls=":", lw=0.8)
            if busy is not None:
                ax.text(x + 0.3, budget * 1.12, f"{busy} busy", fontsize=8, color="dimgrey")
        ax.set_ylim(0, budget * 1.25)
        ax.set_xlabel("seconds since the first phase started")
        ax.set_ylabel("server connections (load role)")
        ax.set_title(f"Round {rd}: total server connections of the 4 pglittle instances, shifting load")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    print(f"wrote {out_png}", file=sys.stderr)
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "sample":
        return sample(argv)
    if cmd == "report" and len(argv) == 1:
        return report(argv[0])
    if cmd == "plot" and len(argv) == 2:
        return plot(argv[0], argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
