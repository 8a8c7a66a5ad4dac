#!/usr/bin/env bash
# Instructions per transaction (issue 15): pglittle against PgBouncer under
# the same fixed pgbench load, counted by valgrind's callgrind. Instruction
# counts do not depend on what else the machine is running, so this is the
# figure to track per commit on a shared or busy machine.
#
#   integration/bench/instructions.sh [options]
#
# 1. A dedicated PostgreSQL primary (127.0.0.1, free port, temporary
#    directory; run as user "postgres" when we are root), pgbench -i -s 10.
# 2. pglittle (a prebuilt binary, --bin; nothing is built) and PgBouncer,
#    each started under `valgrind --tool=callgrind`, transaction pooling,
#    the same pool size, clients authenticated with md5, servers with SCRAM.
#    pglittle runs with --threads N (--threads, default 2; a list such as
#    1,2 measures each).
# 3. For each workload (select-only simple, select-only extended, TPC-B):
#    a warm-up pgbench (not counted: fills the pool and the caches), then
#    counters zeroed (callgrind_control --zero) and two counted windows,
#    each ended by callgrind_control --dump:
#      base:  pgbench -t 1    (the clients' logins and logouts + C transactions)
#      main:  pgbench -t T    (the same logins and logouts + C*T transactions)
#    Ir per transaction = (Ir(main) - Ir(base)) / (tx(main) - tx(base)):
#    the cost of a transaction with the connection set-up taken out. The
#    raw Ir(main) / tx(main) is reported too; with --repeat R the main
#    window is counted R times (mean, min and max are reported).
#    Callgrind counts user-space instructions only (the kernel's work in
#    system calls is not in Ir); the system calls themselves are counted
#    (--collect-systime) and reported per transaction.
# 4. For pglittle (first thread count), select-only simple, the first main
#    window: the top functions by self Ir, self Ir by origin (crate, libc),
#    the functions making the system calls, and pglittle's own functions by
#    inclusive Ir (callgrind_annotate); the same for PgBouncer alongside.
# 5. Prints a markdown report and writes it to
#    integration/bench/results/instructions-<UTC timestamp>.md.
#
# Under callgrind the poolers run many times slower than native; with the
# defaults (4 clients, -j 1, 2,500 transactions per client for select-only,
# 250 for TPC-B) a run took ~4 minutes on a busy 2-core machine with
# --threads 2,1 --repeat 2 (PgBouncer's windows are the slow part: vgdb
# waits for it to wake up by itself).
#
# Needs: valgrind (callgrind_control, callgrind_annotate), PostgreSQL
# server binaries, pgbench, pgbouncer, python3.
set -euo pipefail

BIN=""
LABEL=""
PGL_THREADS=2
CLIENTS=4
POOL_SIZE=4
TX=2500
TPCB_TX=250
WARMUP_TX=100
REPEAT=1
WORKLOADS="simple,extended,tpcb"
TOP=15
SCALE=10
PG_MAX_CONNECTIONS=50
START_WAIT=180
TLS=0
ORIG_ARGS="$*"
BENCH_NAME=instructions

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --bin PATH          pglittle binary (default target/release/pglittle); not built
  --label TEXT        how to name that binary in the report (e.g. a commit)
  --threads LIST      pglittle worker threads, comma-separated (default $PGL_THREADS)
  --clients N         pgbench clients, -j 1 (default $CLIENTS)
  --pool-size N       server connections, both poolers (default $POOL_SIZE)
  --tx N              select-only transactions per client, -t (default $TX)
  --tpcb-tx N         TPC-B transactions per client (default $TPCB_TX)
  --warmup-tx N       uncounted warm-up transactions per client (default $WARMUP_TX)
  --repeat R          count the main window R times (default $REPEAT)
  --workloads LIST    simple,extended,tpcb (default $WORKLOADS)
  --top N             functions in the profile lists (default $TOP)
  --tls               TLS on every hop (PostgreSQL ssl = on, both poolers
                      require it from clients and use it to the server,
                      pgbench sslmode=require); a throwaway ECDSA P-256
                      certificate made with openssl, as run.sh --tls
  --keep              keep the temporary directory (callgrind files, logs)
EOF
}

while (($#)); do
  case "$1" in
    --bin) BIN=$2; shift ;;
    --label) LABEL=$2; shift ;;
    --threads) PGL_THREADS=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --pool-size) POOL_SIZE=$2; shift ;;
    --tx) TX=$2; shift ;;
    --tpcb-tx) TPCB_TX=$2; shift ;;
    --warmup-tx) WARMUP_TX=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --top) TOP=$2; shift ;;
    --keep) KEEP=1 ;;
    --tls) TLS=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
[ -n "$BIN" ] || BIN="$REPO/target/release/pglittle"
[[ "$BIN" == /* ]] || BIN="$PWD/$BIN"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

for tool in valgrind callgrind_control callgrind_annotate; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool (apt-get install valgrind)"
done
[ -x "$PGBOUNCER" ] || die "pgbouncer not found"
((TX >= 2 && TPCB_TX >= 2 && REPEAT >= 1)) || die "--tx and --tpcb-tx must be at least 2, --repeat at least 1"

# Under valgrind the poolers take many seconds to start: lib.sh's
# start_pglittle/start_pgbouncer wait 30 s; give them START_WAIT instead.
wait_port() { # port seconds pid
  local deadline=$((SECONDS + (START_WAIT > $2 ? START_WAIT : $2)))
  while ((SECONDS < deadline)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.2
  done
  return 1
}

bench_setup
BG_BUSY=$(busy_pct 2)
LOAD_AVG=$(cut -d' ' -f1-3 /proc/loadavg)
PGLITTLE_BIN=$BIN PGLITTLE_REV=${LABEL:-$(basename "$BIN")} bench_build
bench_start_pg
PGL_TLS=() PGB_TLS=()
if ((TLS)); then
  # ssl = on by reload.
  # shellcheck source=tls.sh
  . "$HERE/tls.sh"
  bench_tls_cert "$WORK/pg"
  "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" reload >/dev/null || die "pg_ctl reload failed"
  PGL_TLS=('client_tls_mode = "require"' "client_tls_cert_file = \"$WORK/tls.crt\""
    "client_tls_key_file = \"$WORK/tls.key\"" 'server_tls_mode = "require"')
  PGB_TLS=('client_tls_sslmode = require' "client_tls_cert_file = $WORK/tls.crt"
    "client_tls_key_file = $WORK/tls.key" 'server_tls_sslmode = require')
  export PGSSLMODE=require
fi
PGL_REAL=$PGLITTLE
PGB_REAL=$PGBOUNCER

VG_OPTS=(--tool=callgrind --dump-instr=no --collect-atstart=yes --collect-systime=yes)

# A wrapper that execs valgrind, so the pid lib.sh records is valgrind's
# (the pooler itself) and callgrind_control can address it.
make_wrapper() { # path outfile command...
  local path=$1 out=$2; shift 2
  {
    echo '#!/bin/sh'
    printf 'exec valgrind'
    printf ' %q' "${VG_OPTS[@]}" "--callgrind-out-file=$out" "--log-file=$out.vglog" "$@"
    echo ' "$@"'
  } >"$path"
  chmod 755 "$path"
}

# A callgrind file reader (python, stdlib): "totals FILE" prints Ir, system
# calls and the system calls made by clock_gettime/gettimeofday (under
# valgrind those are real system calls; natively they go through the vDSO
# without entering the kernel). "report FILE N" prints the top N functions
# by self Ir (a function's own cost lines with its inlined code, not its
# calls), self Ir by origin (source file's crate, libc area), and the
# functions making the system calls, as markdown lists.
cat >"$WORK/cgread.py" <<'PYEOF'
import re, sys
from collections import Counter

def read(path):
    tables = {"fn": {}, "fl": {}, "ob": {}}
    kind_table = {"fn": "fn", "cfn": "fn", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl", "ob": "ob", "cob": "ob"}
    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", rest)
        if not m:
            return rest
        t = tables[kind_table[kind]]
        if m.group(2) is not None:
            t[m.group(1)] = m.group(2)
        return t.get(m.group(1), "?")
    events = []
    fn = fl = fil = ob = "?"
    selfc, sysc, origin = Counter(), Counter(), Counter()
    skip = False
    for line in open(path):
        c = line[0]
        if c.isdigit() or c in "+-*":
            if skip:
                skip = False
                continue
            parts = line.split()
            vals = dict(zip(events, (int(x) for x in parts[1:])))
            selfc[(fn, ob)] += vals.get("Ir", 0)
            sysc[fn] += vals.get("sysCount", 0)
            origin[(fil, ob, fn)] += vals.get("Ir", 0)
            continue
        m = re.match(r"^(\w+)[=:]\s*(.*)$", line.rstrip("\n"))
        if not m:
            continue
        k, rest = m.groups()
        if k == "events":
            events = rest.split()
        elif k == "fn":
            fn = name(k, rest)
        elif k == "fl":
            fl = fil = name(k, rest)
        elif k in ("fi", "fe"):
            fil = name(k, rest)
        elif k == "ob":
            ob = name(k, rest)
        elif k in kind_table:
            name(k, rest)
        elif k == "calls":
            skip = True
    return selfc, sysc, origin

def short(fn):
    fn = re.sub(r"::h[0-9a-f]{16}$", "", fn)
    return fn if len(fn) <= 160 else fn[:157] + "..."

def is_clock(fn):
    return bool(re.match(r"^(__)?(clock_gettime|gettimeofday|time)(@|$)", fn))

def kind_of(f, ob, fn):
    mo = re.search(r"/registry/src/[^/]+/([A-Za-z0-9_-]+?)-\d+\.\d+[^/]*/", f)
    if mo:
        return "crate " + mo.group(1)
    if f.startswith("/rustc/"):
        return "Rust std/core/alloc"
    if "/src/" in f:
        return "pglittle (src/)"
    if f.startswith("./malloc/"):
        return "libc malloc/free"
    if f.startswith("./string/"):
        return "libc memcpy/memset/str*"
    base = ob.rsplit("/", 1)[-1]
    if f.startswith("./") or base.startswith("libc."):
        return "libc, other"
    if f == "???":
        return base + " (no debug info)"
    return "other: " + base

selfc, sysc, origin = read(sys.argv[2])
total = sum(selfc.values())
if sys.argv[1] == "totals":
    print(total, sum(sysc.values()), sum(v for f, v in sysc.items() if is_clock(f)))
    sys.exit(0)
n = int(sys.argv[3])
print(f"Top {n} functions by self Ir (share of the window's {total:,} Ir):")
print()
for i, ((fn, ob), ir) in enumerate(selfc.most_common(n), 1):
    print(f"{i}. {100.0 * ir / total:4.1f}%  `{short(fn)}` ({ob.rsplit('/', 1)[-1]})")
print()
print("Self Ir by origin (the source file of the instructions, inlined code included):")
print()
kinds = Counter()
for (f, ob, fn), ir in origin.items():
    kinds[kind_of(f, ob, fn)] += ir
shown = 0
for k, ir in kinds.most_common():
    if 100.0 * ir / total < 0.5:
        break
    shown += ir
    print(f"- {k}: {100.0 * ir / total:.1f}%")
print(f"- the rest: {100.0 * (total - shown) / total:.1f}%")
print()
st = sum(sysc.values())
print(f"Where the {st:,} system calls are made:")
print()
for fn, c in sysc.most_common(8):
    if c == 0:
        break
    print(f"- `{short(fn)}`: {100.0 * c / st:.1f}%")
PYEOF

# cg_total FILE: "Ir sysCount clockCalls" of a callgrind dump.
cg_total() { python3 "$WORK/cgread.py" totals "$1"; }

# run_pgbench PORT WORKLOAD TX_PER_CLIENT OUT -> echoes transactions processed
run_pgbench() {
  local port=$1 w=$2 t=$3 out=$4 args=()
  case $w in
    simple) args=(-S -M simple) ;;
    extended) args=(-S -M extended) ;;
    tpcb) args=(-b tpcb-like -M simple) ;;
    *) die "unknown workload $w" ;;
  esac
  timeout 1800 "$PGBENCH" -h 127.0.0.1 -p "$port" -U "$DBUSER" -n "${args[@]}" \
    -c "$CLIENTS" -j 1 -t "$t" "$DB" >"$out" 2>&1 || {
    tail -20 "$out" >&2; die "pgbench ($w, -t $t, port $port) failed; see $out"; }
  local tx failed
  tx=$(awk '/^number of transactions actually processed:/ { split($6, a, "/"); print a[1] }' "$out")
  failed=$(awk '/^number of failed transactions:/ { print $5 }' "$out")
  [ -n "$tx" ] && ((tx == CLIENTS * t)) && [ "${failed:-0}" = 0 ] ||
    die "pgbench ($w, -t $t) processed ${tx:-?} of $((CLIENTS * t)) transactions, ${failed:-?} failed; see $out"
  echo "$tx"
}

declare -A NDUMP=()
# window NAME PID PORT WORKLOAD TX_PER_CLIENT LABEL -> W_IR W_SYS W_CLK W_TX W_FILE
window() {
  local name=$1 pid=$2 port=$3 w=$4 t=$5 label=$6
  local out="$WORK/pgbench-$name-$w-$label.out"
  W_TX=$(run_pgbench "$port" "$w" "$t" "$out")
  cg_cmd "$pid" "$port" dump "$name-$w-$label"
  NDUMP[$name]=$((${NDUMP[$name]:-0} + 1))
  W_FILE="$WORK/cg-$name.out.${NDUMP[$name]}"
  local i
  for i in $(seq 100); do [ -s "$W_FILE" ] && grep -q '^totals:' "$W_FILE" && break; sleep 0.2; done
  [ -s "$W_FILE" ] || die "no callgrind dump $W_FILE"
  read -r W_IR W_SYS W_CLK < <(cg_total "$W_FILE")
}

# cg_cmd PID PORT COMMAND...: a callgrind monitor command (zero, dump
# DESC) through vgdb, as callgrind_control sends it. vgdb run as root
# against a process of another user (PgBouncer runs as "postgres") hangs
# here when it has to interrupt a blocked syscall with ptrace, so vgdb runs
# as the pooler's own user and, for PgBouncer, waits for the process to
# poll by itself (--max-invoke-ms=0; it wakes at least once a second, and a
# TCP connection to its port, closed at once, wakes it sooner).
declare -A VGDB_AS=()
cg_cmd() {
  local pid=$1 port=$2; shift 2
  local as=() inv=()
  if [ "${VGDB_AS[$pid]:-}" = postgres ]; then as=("${AS_PG[@]}"); inv=(--max-invoke-ms=0); fi
  timeout 120 "${as[@]}" vgdb --pid="$pid" "${inv[@]}" "$@" >"$WORK/vgdb.out" 2>&1 &
  local v=$!
  if ((${#inv[@]})); then
    sleep 0.3
    kill -0 "$v" 2>/dev/null && { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || true; }
  fi
  wait "$v" || die "vgdb $* (pid $pid) failed: $(tail -3 "$WORK/vgdb.out")"
}

zero() { # pid port
  cg_cmd "$1" "$2" zero
}

server_count() {
  "${PSQL[@]}" -d postgres -At -c "SELECT count(*) FROM pg_stat_activity WHERE usename = '$DBUSER' AND backend_type = 'client backend'"
}

RAW="$WORK/raw.tsv"
printf 'pooler\tworkload\tbase_tx\tbase_ir\tbase_sys\ttx\tir\tsys\tclock\tir_per_tx_net\tir_per_tx_raw\tsys_per_tx_net\tclock_per_tx_net\n' >"$RAW"
declare -A PROFILE=()

# measure NAME PID PORT: every workload through one pooler.
measure() {
  local name=$1 pid=$2 port=$3 w t r
  IFS=, read -ra wl <<<"$WORKLOADS"
  for w in "${wl[@]}"; do
    t=$TX; [ "$w" = tpcb ] && t=$TPCB_TX
    log "$name $w: warm-up ($CLIENTS x $WARMUP_TX, not counted)"
    run_pgbench "$port" "$w" "$WARMUP_TX" "$WORK/pgbench-$name-$w-warmup.out" >/dev/null
    # Both poolers open server connections lazily (PgBouncer one at a time);
    # a SCRAM login costs millions of instructions, so the pool must be full
    # before counting starts.
    local k servers
    for k in 1 2 3 4 5 6 7 8 9 10; do
      servers=$(server_count)
      ((servers >= POOL_SIZE)) && break
      log "$name $w: $servers of $POOL_SIZE server connections open; warming up again"
      run_pgbench "$port" "$w" "$WARMUP_TX" "$WORK/pgbench-$name-$w-warmup.out" >/dev/null
    done
    ((servers >= POOL_SIZE)) || log "warning: $name $w: only $servers of $POOL_SIZE server connections open"
    zero "$pid" "$port"
    window "$name" "$pid" "$port" "$w" 1 base
    local bir=$W_IR bsys=$W_SYS bclk=$W_CLK btx=$W_TX
    for ((r = 1; r <= REPEAT; r++)); do
      zero "$pid" "$port"
      window "$name" "$pid" "$port" "$w" "$t" "main$r"
      local net raw snet cnet
      cnet=$(awk -v a="$W_CLK" -v b="$bclk" -v n="$W_TX" -v m="$btx" 'BEGIN { printf "%.2f", (a - b) / (n - m) }')
      net=$(awk -v a="$W_IR" -v b="$bir" -v n="$W_TX" -v m="$btx" 'BEGIN { printf "%.0f", (a - b) / (n - m) }')
      raw=$(awk -v a="$W_IR" -v n="$W_TX" 'BEGIN { printf "%.0f", a / n }')
      snet=$(awk -v a="$W_SYS" -v b="$bsys" -v n="$W_TX" -v m="$btx" 'BEGIN { printf "%.2f", (a - b) / (n - m) }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$w" "$btx" "$bir" "$bsys" \
        "$W_TX" "$W_IR" "$W_SYS" "$W_CLK" "$net" "$raw" "$snet" "$cnet" >>"$RAW"
      log "$name $w #$r: $W_TX tx, Ir $W_IR (base $bir for $btx tx): $net Ir/tx, $snet syscalls/tx ($cnet clock reads)"
      if ((r == 1)); then PROFILE[$name-$w]=$W_FILE; fi
    done
  done
}

FIRST_THREADS=${PGL_THREADS%%,*}
IFS=, read -ra THREAD_LIST <<<"$PGL_THREADS"
PGL_NAMES=()
for th in "${THREAD_LIST[@]}"; do
  name="pglittle-t$th"
  PGL_NAMES+=("$name")
  make_wrapper "$WORK/vg-$name" "$WORK/cg-$name.out" "$PGL_REAL" --threads "$th"
  PGLITTLE="$WORK/vg-$name"
  log "starting pglittle --threads $th under callgrind"
  start_pglittle "$name" "pool_size = $POOL_SIZE" "${PGL_TLS[@]}"
  measure "$name" "$PGL_PID" "$PGL_PORT"
  stop_pid "$PGL_PID" INT
done

make_wrapper "$WORK/vg-pgbouncer" "$WORK/cg-pgbouncer.out" "$PGB_REAL"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/vg-pgbouncer"; fi
PGBOUNCER="$WORK/vg-pgbouncer"
log "starting PgBouncer under callgrind"
start_pgbouncer pgbouncer "$POOL_SIZE" "${PGB_TLS[@]}"
if [ "$(id -u)" -eq 0 ]; then VGDB_AS[$PGB_PID]=postgres; fi
measure pgbouncer "$PGB_PID" "$PGB_PORT"
stop_pid "$PGB_PID" TERM

# top_functions FILE inclusive(yes|no) N [own]: a markdown list of the top
# N functions. Entries with the whole window's Ir (the threads' entry
# points, which callgrind_annotate 3.19 also lists in self mode) are
# skipped; "own" keeps only pglittle's own functions (its src/ files).
top_functions() {
  callgrind_annotate --show=Ir --inclusive="$2" --threshold=100 "$1" 2>/dev/null |
    python3 -c '
import re, sys
n = int(sys.argv[1]); own = len(sys.argv) > 2; total = None; rows = []
for line in sys.stdin:
    m = re.match(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?PROGRAM TOTALS", line)
    if m: total = int(m.group(1).replace(",", "")); continue
    m = re.match(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*?)\s*$", line)
    if m and total and ":" in m.group(2):
        ir = int(m.group(1).replace(",", ""))
        if ir >= total: continue
        if own and not re.match(r"^(/[^:]*)?/src/[^:]*:.*pglittle::", m.group(2)) or own and "/.cargo/" in m.group(2): continue
        rows.append((ir, m.group(2)))
for i, (ir, name) in enumerate(rows[:n], 1):
    # "file:function [object]": keep the function and the object name.
    obj = ""
    mo = re.search(r"\s\[([^\]]*)\]$", name)
    if mo: obj = mo.group(1).rsplit("/", 1)[-1]; name = name[:mo.start()]
    fn = name.split(":", 1)[1] if ":" in name and not name.startswith(":") else name
    fn = re.sub(r"::h[0-9a-f]{16}$", "", fn)
    if len(fn) > 160: fn = fn[:157] + "..."
    pct = 100.0 * ir / total if total else 0
    print(f"{i}. {pct:5.1f}%  `{fn}`" + (f" ({obj})" if obj else ""))
' "$3" ${4:+"$4"}
}

# --------------------------------------------------------------- report ---
mkdir -p "$HERE/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT="$HERE/results/instructions-$STAMP.md"
{
  echo "# Instructions per transaction, $STAMP"
  echo
  echo "- command: \`integration/bench/instructions.sh${ORIG_ARGS:+ $ORIG_ARGS}\`"
  echo "- load: pgbench -n -c $CLIENTS -j 1; select-only (-S) -t $TX per client in simple and extended mode; TPC-B (-b tpcb-like) -t $TPCB_TX per client; scale $SCALE"
  echo "- poolers: transaction mode, pool of $POOL_SIZE servers, clients md5, servers SCRAM; pglittle --threads $PGL_THREADS$( ((TLS)) && echo "; TLS on every hop (--tls)")"
  echo "- pglittle: $REV_DESC, \`$BIN\`"
  echo "- $("$PGBIN/postgres" --version), $("$PGBENCH" --version), $("$PGB_REAL" --version 2>/dev/null | head -1)"
  echo "- $(valgrind --version): valgrind --tool=callgrind --dump-instr=no --collect-atstart=yes --collect-systime=yes"
  echo "- machine: $(machine_desc); busy with other work: ${BG_BUSY}% CPU before the run, load average $LOAD_AVG (instruction counts do not depend on it)"
  echo
  echo "Ir per transaction = (Ir of the main window - Ir of the base window) / (their difference in transactions);"
  echo "the base window (pgbench -t 1) holds the same $CLIENTS client logins and logouts. Raw = Ir of the main window / its transactions."
  echo "User-space instructions only; system calls per transaction are counted apart. Under valgrind clock_gettime is a real"
  echo "system call (natively it is a vDSO call that does not enter the kernel) and how often it is called varies from run to run"
  echo "(the clock source chosen at start-up), so clock reads are shown apart and left out of the syscall ratio."
  echo
  python3 - "$RAW" "$REPEAT" <<'EOF'
import csv, sys
from collections import OrderedDict
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
repeat = int(sys.argv[2])
groups = OrderedDict()
for r in rows:
    groups.setdefault((r["workload"], r["pooler"]), []).append(r)
names = {"simple": "select-only, simple", "extended": "select-only, extended", "tpcb": "TPC-B, simple"}
def fmt(x): return f"{x:,.0f}"
def mean(xs): return sum(xs) / len(xs)
bouncer = {w: mean([float(r["ir_per_tx_net"]) for r in g]) for (w, p), g in groups.items() if p == "pgbouncer"}
def other_sys(g): return mean([float(r["sys_per_tx_net"]) - float(r["clock_per_tx_net"]) for r in g])
bouncer_sys = {w: other_sys(g) for (w, p), g in groups.items() if p == "pgbouncer"}
spread = " (min-max)" if repeat > 1 else ""
print(f"| pooler | mode | transactions | Ir total | Ir per transaction{spread} | raw Ir / tx | syscalls / tx, without clock reads (clock reads) | ratio pglittle/PgBouncer (Ir, syscalls) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for w in ["simple", "extended", "tpcb"]:
    for (gw, p), g in groups.items():
        if gw != w: continue
        net = [float(r["ir_per_tx_net"]) for r in g]
        m = mean(net)
        cell = fmt(m) + (f" ({fmt(min(net))}-{fmt(max(net))})" if len(net) > 1 else "")
        raw = mean([float(r["ir_per_tx_raw"]) for r in g])
        sysc = other_sys(g)
        clk = mean([float(r["clock_per_tx_net"]) for r in g])
        tot = mean([float(r["ir"]) for r in g])
        tx = g[0]["tx"]
        label = p.replace("pglittle-t", "pglittle --threads ")
        if p.startswith("pglittle") and w in bouncer:
            ratio = f"{m / bouncer[w]:.2f}, {sysc / bouncer_sys[w]:.2f}" if bouncer_sys[w] else f"{m / bouncer[w]:.2f}, -"
        else:
            ratio = "-"
        print(f"| {label} | {names[w]} | {int(tx):,} | {fmt(tot)} | {cell} | {fmt(raw)} | {sysc:.2f} ({clk:.2f}) | {ratio} |")
print()
print("Base windows (pgbench -t 1: logins, logouts and one transaction per client):")
print()
seen = set()
for r in rows:
    k = (r["pooler"], r["workload"])
    if k in seen: continue
    seen.add(k)
    print(f"- {r['pooler']}, {r['workload']}: {int(r['base_tx'])} tx, Ir {int(r['base_ir']):,}, {int(r['base_sys'])} syscalls")
EOF
  echo
  first="pglittle-t$FIRST_THREADS"
  if [ -n "${PROFILE[$first-simple]:-}" ]; then
    echo "## Where pglittle's instructions go (--threads $FIRST_THREADS, select-only simple, main window)"
    echo
    python3 "$WORK/cgread.py" report "${PROFILE[$first-simple]}" "$TOP"
    echo
    echo "Top $TOP of pglittle's own functions (src/) by inclusive Ir (callgrind_annotate):"
    echo
    top_functions "${PROFILE[$first-simple]}" yes "$TOP" own
    echo
  fi
  if [ -n "${PROFILE[pgbouncer-simple]:-}" ]; then
    echo "## PgBouncer, same window, for comparison (the Debian binary has no symbols)"
    echo
    python3 "$WORK/cgread.py" report "${PROFILE[pgbouncer-simple]}" 10
    echo
  fi
  echo "## Raw windows"
  echo
  echo '```'
  column -t -s $'\t' "$RAW"
  echo '```'
} >"$REPORT"
cat "$REPORT"
log "written to ${REPORT#"$REPO"/}"
