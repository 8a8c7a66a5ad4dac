#!/usr/bin/env bash
# pglittle benchmark: direct PostgreSQL vs pglittle vs PgBouncer.
#
#   integration/bench/run.sh [--quick] [options]
#
# 1. Builds pglittle (release) and starts a dedicated PostgreSQL primary in
#    a temporary directory on a free port (127.0.0.1 only).
# 2. pgbench -i -s 10.
# 3. Throughput: pgbench -S (select-only), 100 clients, -j 2, -T 15, through
#    pools of 20 server connections, interleaved direct/pglittle/PgBouncer
#    for N rounds (default 5, --quick 2; the order rotates every round).
#    Records TPS, mean and p99 latency (from pgbench's per-transaction log)
#    and the pooler's CPU time (utime+stime from /proc/PID/stat).
# 4. Idle clients: a fresh pooler, one warm-up client, then 10,000 idle
#    md5-authenticated clients; RSS growth per client from /proc/PID/status.
# 5. Prints a markdown summary and writes it to
#    integration/bench/results/<UTC timestamp>.md.
#
# Needs: cargo, PostgreSQL server binaries (pg_config --bindir), pgbench,
# pgbouncer, python3 (stdlib only). Run as root (PostgreSQL and PgBouncer
# are then run as user "postgres") or as an ordinary user.
set -euo pipefail

ROUNDS=5
TLS=0
CONNECT=0
DURATION=15
MODE=simple
CLIENTS=100
THREADS=2
POOL_SIZE=20
SCALE=10
IDLE_CLIENTS=10000
BUILD=1
RUN_TPS=1
RUN_IDLE=1
KEEP=0
ONLY=""
REV=""
ORIG_ARGS="$*"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --quick             2 rounds instead of 5
  --rounds N          rounds of the throughput test (default $ROUNDS)
  --duration S        pgbench -T per run, seconds (default $DURATION)
  --clients N         pgbench clients (default $CLIENTS)
  --pool-size N       server connections per pool (default $POOL_SIZE)
  --idle-clients N    idle clients for the memory test (default $IDLE_CLIENTS)
  --targets LIST      comma-separated subset of direct,pglittle,pgbouncer,
                      pglittle_always (a second pglittle with
                      server_reset = "always"; only when named here)
  --rev REV           benchmark a commit (git archive REV, built in
                      target/bench-rev) instead of the working tree
  --base-bin PATH     a second, prebuilt pglittle to compare against in the
                      same interleaved rounds (target pglittle_base; name it
                      in --targets): before/after ratios without the day's
                      drift between two runs
  --no-build          use the existing target/release/pglittle
  --mode M            pgbench query mode: simple (default), prepared, extended
  --tls               TLS on every hop: PostgreSQL ssl = on, both poolers
                      require TLS from clients and use it to the server,
                      pgbench connects with sslmode=require (direct too);
                      a throwaway ECDSA P-256 certificate made with openssl
  --connect           pgbench -C: a new connection per transaction (a
                      connection storm; TPS is then logins per second)
  --skip-tps          memory test only
  --skip-idle         throughput test only
  --keep              keep the temporary directory (logs, data) at the end
EOF
}

while (($#)); do
  case "$1" in
    --quick) ROUNDS=2 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --pool-size) POOL_SIZE=$2; shift ;;
    --idle-clients) IDLE_CLIENTS=$2; shift ;;
    --targets) ONLY=$2; shift ;;
    --rev) REV=$2; shift ;;
    --base-bin) BASE_BIN=$2; shift ;;
    --no-build) BUILD=0 ;;
    --mode) MODE=$2; shift ;;
    --tls) TLS=1 ;;
    --connect) CONNECT=1 ;;
    --skip-tps) RUN_TPS=0 ;;
    --skip-idle) RUN_IDLE=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
HELPER="$HERE/bench.py"
PGBIN=${PGLITTLE_PG_BINDIR:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
PGBENCH=$(command -v pgbench || echo "$PGBIN/pgbench")
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
TICKS=$(getconf CLK_TCK)
DB=bench
DBUSER=bench
DBPASS="bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; FAILED=1; exit 1; }

for tool in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/postgres" "$PGBENCH" python3; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool"
done
target_enabled() {
  if [ "$1" = pglittle_always ]; then [[ ",$ONLY," == *",$1,"* ]]; return; fi
  if [ "$1" = pglittle_base ]; then [ -n "${BASE_BIN:-}" ] && [[ ",$ONLY," == *",$1,"* ]]; return; fi
  [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]
}
if target_enabled pgbouncer && ! [ -x "$PGBOUNCER" ]; then
  die "pgbouncer not found (install it, or --targets direct,pglittle)"
fi

# Up to 10,000 idle clients plus the pooler's own sockets, in one process.
HARD_NOFILE=$(ulimit -Hn)
if [ "$HARD_NOFILE" != unlimited ] && ((HARD_NOFILE < IDLE_CLIENTS + 200)); then
  die "open-file hard limit $HARD_NOFILE is too low for $IDLE_CLIENTS idle clients (--idle-clients N)"
fi
ulimit -n "$HARD_NOFILE" 2>/dev/null || ulimit -n 20000

# Run PostgreSQL and PgBouncer as "postgres" when we are root (both refuse root).
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user"
  AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)
else
  AS_PG=()
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pglittle-bench.XXXXXX")
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK"; fi
chmod 755 "$WORK"
PG_STARTED=0
PIDS=()
FAILED=0

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  if ((PG_STARTED)); then
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1
  fi
  if ((rc != 0 || FAILED)); then
    log "failed; logs kept in $WORK (pglittle*.log, pgbouncer*.log, pg.log, pgbench-*.out)"
  elif ((KEEP)); then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port seconds pid
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.1
  done
  return 1
}

# Whole-machine CPU busy % over an interval (user+nice+system+irq+softirq+steal).
busy_pct() { # seconds
  local a b
  a=$(head -1 /proc/stat); sleep "$1"; b=$(head -1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); t = 0; i = 0
    for (k = 2; k <= 9; k++) { t += y[k] - x[k] }
    i = (y[5] - x[5]) + (y[6] - x[6]); printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}

cpu_ticks() { # utime+stime of the whole process (all threads)
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# Machine CPU ticks (all CPUs): "busy total".
machine_ticks() {
  head -1 /proc/stat | awk '{ t = 0; for (k = 2; k <= 9; k++) t += $k; print t - $5 - $6, t }'
}

# CPU ticks of the PostgreSQL cluster: the postmaster (with its reaped
# children, i.e. backends that have exited) plus every live child.
pg_ticks() {
  local pm p
  pm=$(head -1 "$WORK/pg/postmaster.pid")
  for p in "$pm" $(ps -o pid= --ppid "$pm"); do
    cat "/proc/$p/stat" 2>/dev/null || true
  done | awk -v self="$pm" '{ pid = $1; sub(/^.*\) /, "")
    if (pid == self) s += $12 + $13 + $14 + $15; else s += $12 + $13 }
    END { print s + 0 }'
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

stop_pid() { # pid signal
  local pid=$1
  kill "-$2" "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- build ---
if [ -n "$REV" ]; then
  REV_DESC="$(git -C "$REPO" rev-parse --short "$REV^{commit}")" || die "unknown revision $REV"
  log "building pglittle $REV_DESC (release, from git archive)"
  mkdir -p "$WORK/src"
  git -C "$REPO" archive --format=tar "$REV" | tar -x -C "$WORK/src"
  (cd "$WORK/src" && cargo build --release --quiet --target-dir "$REPO/target/bench-rev") ||
    die "cargo build --release of $REV failed"
  BUILT="$REPO/target/bench-rev/release/pglittle"
  REV_DESC="$REV_DESC (clean checkout via git archive)"
else
  if ((BUILD)); then
    log "building pglittle (release) from the working tree"
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
  fi
  BUILT="$REPO/target/release/pglittle"
  REV_DESC="working tree at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
  if [ -n "$(git -C "$REPO" --no-optional-locks status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    REV_DESC="$REV_DESC, with uncommitted changes in src/"
  fi
fi
[ -x "$BUILT" ] || die "$BUILT not found (drop --no-build)"
# A private copy: a concurrent cargo build must not swap the binary mid-run.
PGLITTLE="$WORK/pglittle"
cp "$BUILT" "$PGLITTLE"
if [ -n "${BASE_BIN:-}" ]; then
  [ -x "$BASE_BIN" ] || die "--base-bin $BASE_BIN is not an executable"
  cp "$BASE_BIN" "$WORK/pglittle-base"
fi

# ----------------------------------------------------------- postgresql ---
PGPORT=$(free_port)
log "starting PostgreSQL on 127.0.0.1:$PGPORT in $WORK/pg"
echo "$DBPASS" >"$WORK/pw"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/pw"; fi
"${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres -E UTF8 --no-sync \
  --auth-local=trust --auth-host=scram-sha-256 --pwfile="$WORK/pw" >"$WORK/initdb.log" 2>&1 ||
  die "initdb failed: $(tail -5 "$WORK/initdb.log")"
cat >>"$WORK/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
PGL_TLS="" PGB_TLS=""
if ((TLS)); then
  # shellcheck source=tls.sh
  . "$HERE/tls.sh"
  bench_tls_cert "$WORK/pg"
  PGL_TLS=$(printf 'client_tls_mode = "require"\nclient_tls_cert_file = "%s"\nclient_tls_key_file = "%s"\nserver_tls_mode = "require"' "$WORK/tls.crt" "$WORK/tls.key")
  PGB_TLS=$(printf 'client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\nserver_tls_sslmode = require' "$WORK/tls.crt" "$WORK/tls.key")
fi
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 start >/dev/null ||
  die "PostgreSQL did not start: $(tail -5 "$WORK/pg.log")"
PG_STARTED=1
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PGPORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE ROLE $DBUSER LOGIN PASSWORD '$DBPASS'" \
  -c "CREATE DATABASE $DB OWNER $DBUSER" || die "cannot create role/database"
export PGPASSWORD=$DBPASS
if ((TLS)); then export PGSSLMODE=require; fi
CONNECT_FLAG=()
if ((CONNECT)); then CONNECT_FLAG=(-C); fi
log "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" "$DB" >"$WORK/pgbench-init.out" 2>&1 ||
  die "pgbench -i failed: $(tail -5 "$WORK/pgbench-init.out")"

# -------------------------------------------------------------- poolers ---
# Both poolers authenticate clients with md5 against a password they hold
# (cheap, so the connection phase barely shows in the CPU figures) and log
# in to PostgreSQL with SCRAM. Transaction pooling, $POOL_SIZE servers.
start_pglittle() { # tag [extra [pooler] line] -> sets PGL_PID PGL_PORT
  PGL_PORT=$(free_port)
  cat >"$WORK/pglittle-$1.toml" <<EOF
[pooler]
listen = "127.0.0.1:$PGL_PORT"
${2:-}
$PGL_TLS
pool_mode = "transaction"
pool_size = $POOL_SIZE
max_client_conn = $((IDLE_CLIENTS + 1000))

[databases.$DB]
host = "127.0.0.1"
port = $PGPORT
dbname = "$DB"

[users.$DBUSER]
auth = "md5"
password = "$DBPASS"
EOF
  RUST_LOG=${RUST_LOG:-info} "$PGLITTLE" --config "$WORK/pglittle-$1.toml" 2>"$WORK/pglittle-$1.log" &
  PGL_PID=$!
  PIDS+=("$PGL_PID")
  wait_port "$PGL_PORT" 30 "$PGL_PID" || die "pglittle did not start: $(tail -5 "$WORK/pglittle-$1.log")"
}

start_pgbouncer() { # tag -> sets PGB_PID PGB_PORT
  PGB_PORT=$(free_port)
  printf '"%s" "%s"\n' "$DBUSER" "$DBPASS" >"$WORK/userlist.txt"
  cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PGPORT dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = md5
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $((IDLE_CLIENTS + 1000))
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
$PGB_TLS
EOF
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/userlist.txt" "$WORK/pgbouncer.ini"; fi
  "${AS_PG[@]}" "$PGBOUNCER" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer-$1.log" 2>&1 &
  PGB_PID=$!
  PIDS+=("$PGB_PID")
  wait_port "$PGB_PORT" 30 "$PGB_PID" || die "pgbouncer did not start: $(tail -5 "$WORK/pgbouncer-$1.log")"
}

RESULTS_DIR="$HERE/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW="$WORK/raw.tsv"
IDLE_TSV="$WORK/idle.tsv"
META="$WORK/meta.tsv"
printf 'round\torder\ttarget\ttps\tmean_ms\tp99_ms\tavg_ms\ttx\tfailed\tconn_ms\tcpu_s\tcpu_per_100k\tbg_busy\tother_during\n' >"$RAW"
printf 'target\trss_start\trss_base\trss_after\tok\tfailed\tcheck\tkib_per_client\tkib_from_start\n' >"$IDLE_TSV"
{
  printf 'clients\t%s\nduration\t%s\npool_size\t%s\nidle_clients\t%s\n' "$CLIENTS" "$DURATION" "$POOL_SIZE" "$IDLE_CLIENTS"
} >"$META"

# ---------------------------------------------------------- throughput ---
run_pgbench() { # round order target port pooler-pid|"" duration
  local round=$1 order=$2 target=$3 port=$4 pid=$5 dur=$6
  local dir="$WORK/txlog/$target.$round" out="$WORK/pgbench-$target-$round.out"
  rm -rf "$dir"; mkdir -p "$dir"
  local bg c0=0 c1=0 rc=0 m0 m1 g0 g1
  # Machine busy % while the benchmark itself is idle: other work running.
  bg=$(busy_pct 2)
  if [ -n "$pid" ]; then c0=$(cpu_ticks "$pid"); fi
  m0=$(machine_ticks); g0=$(pg_ticks)
  # The subshell's `times` gives pgbench's own CPU time (its reaped children).
  (
    timeout --signal=INT $((dur + 120)) \
      "$PGBENCH" -h 127.0.0.1 -p "$port" -U "$DBUSER" -S -M "$MODE" "${CONNECT_FLAG[@]}" -c "$CLIENTS" -j "$THREADS" -T "$dur" \
      --no-vacuum -l --log-prefix="$dir/tx" "$DB" >"$out" 2>&1
    echo "rc $?"
    times
  ) >"$out.meta"
  m1=$(machine_ticks); g1=$(pg_ticks)
  if [ -n "$pid" ]; then c1=$(cpu_ticks "$pid"); fi
  rc=$(awk '/^rc / { print $2 }' "$out.meta")
  # Share of the machine used by anything but PostgreSQL, pgbench and the
  # pooler during the run: other people's work on a shared machine.
  local other
  other=$(tail -1 "$out.meta" | awk -v m0="$m0" -v m1="$m1" -v g0="$g0" -v g1="$g1" \
    -v c0="$c0" -v c1="$c1" -v t="$TICKS" '
    function secs(s,  a) { split(s, a, "m"); return a[1] * 60 + substr(a[2], 1, length(a[2]) - 1) }
    { split(m0, a, " "); split(m1, b, " ")
      ours = (c1 - c0) + (g1 - g0) + (secs($1) + secs($2)) * t
      o = 100 * ((b[1] - a[1]) - ours) / (b[2] - a[2]); if (o < 0) o = 0
      printf "%.0f", o }')
  if ((rc != 0)) || ! grep -q '^tps = ' "$out"; then
    log "pgbench through $target failed (exit $rc):"
    tail -20 "$out" >&2
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then log "$target process is gone"; fi
    die "pgbench through $target failed; see $out and the pooler log in $WORK"
  fi
  local tps tx failed conn avg
  # -C prints 'including reconnection times' instead of 'without initial connection time'.
  tps=$(awk '/^tps = / { print $3; exit }' "$out")
  tx=$(awk '/^number of transactions actually processed:/ { print $6 }' "$out" | cut -d/ -f1)
  failed=$(awk '/^number of failed transactions:/ { print $5 }' "$out")
  conn=$(awk '/^initial connection time = / { print $5 }' "$out")
  avg=$(awk '/^latency average = / { print $4 }' "$out")
  local stats n mean p99 bad
  stats=$(python3 "$HELPER" txstats "$dir"/tx.*)
  read -r n mean p99 bad <<<"$stats"
  rm -rf "$dir"
  local cpu_s="n/a" per="n/a"
  rm -f "$out.meta"
  if [ -n "$pid" ]; then
    cpu_s=$(awk -v a="$c0" -v b="$c1" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
    per=$(awk -v a="$c0" -v b="$c1" -v t="$TICKS" -v n="$tx" 'BEGIN { printf "%.4f", (b - a) / t / n * 100000 }')
  fi
  if [ "$n" != "$tx" ]; then
    log "note: $target round $round: pgbench counted $tx transactions, its log has $n"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$order" "$target" "$tps" \
    "$mean" "$p99" "${avg:-?}" "$tx" "${failed:-0}" "${conn:-?}" "$cpu_s" "$per" "$bg" "$other" >>"$RAW"
  log "round $round/$ROUNDS $target: tps=$tps mean=${mean}ms p99=${p99}ms pooler_cpu=${cpu_s}s (${per}s/100k tx) other_work: ${bg}% before, ${other}% during"
}

if ((RUN_TPS)); then
  TARGETS=()
  for t in direct pglittle pglittle_base pglittle_always pgbouncer; do target_enabled "$t" && TARGETS+=("$t"); done
  if target_enabled pglittle_base; then
    MAIN_PGLITTLE=$PGLITTLE; PGLITTLE="$WORK/pglittle-base"
    start_pglittle tps-base
    PGLITTLE=$MAIN_PGLITTLE
    PGLB_PID=$PGL_PID; PGLB_PORT=$PGL_PORT
  fi
  if target_enabled pglittle_always; then
    start_pglittle tps-always 'server_reset = "always"'
    PGLA_PID=$PGL_PID; PGLA_PORT=$PGL_PORT
  fi
  target_enabled pglittle && start_pglittle tps
  target_enabled pgbouncer && start_pgbouncer tps
  port_of() { case $1 in direct) echo "$PGPORT" ;; pglittle) echo "$PGL_PORT" ;; pglittle_always) echo "$PGLA_PORT" ;; pglittle_base) echo "$PGLB_PORT" ;; pgbouncer) echo "$PGB_PORT" ;; esac; }
  pid_of() { case $1 in direct) echo "" ;; pglittle) echo "$PGL_PID" ;; pglittle_always) echo "$PGLA_PID" ;; pglittle_base) echo "$PGLB_PID" ;; pgbouncer) echo "$PGB_PID" ;; esac; }
  # Warm-up (not recorded): fills the pools and the caches.
  for t in "${TARGETS[@]}"; do
    log "warm-up through $t (5s)"
    "$PGBENCH" -h 127.0.0.1 -p "$(port_of "$t")" -U "$DBUSER" -S -M "$MODE" -c "$CLIENTS" -j "$THREADS" -T 5 \
      --no-vacuum "$DB" >"$WORK/pgbench-$t-warmup.out" 2>&1 || {
      if [ "$t" = pgbouncer ] && [ "$MODE" != simple ]; then
        # Expected for PgBouncer 1.18 in transaction mode with -M prepared:
        # record how it fails and go on without it.
        log "PgBouncer fails with -M $MODE: $(grep -m1 -i error "$WORK/pgbench-$t-warmup.out")"
        kept=()
        for x in "${TARGETS[@]}"; do [ "$x" = pgbouncer ] || kept+=("$x"); done
        TARGETS=("${kept[@]}")
        continue
      fi
      tail -20 "$WORK/pgbench-$t-warmup.out" >&2; die "warm-up through $t failed"
    }
  done
  n=${#TARGETS[@]}
  for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
      t=${TARGETS[$(((i + r - 1) % n))]}
      run_pgbench "$r" "$((i + 1))" "$t" "$(port_of "$t")" "$(pid_of "$t")" "$DURATION"
    done
  done
  [ -n "${PGL_PID:-}" ] && stop_pid "$PGL_PID" INT
  [ -n "${PGLA_PID:-}" ] && stop_pid "$PGLA_PID" INT
  [ -n "${PGLB_PID:-}" ] && stop_pid "$PGLB_PID" INT
  [ -n "${PGB_PID:-}" ] && stop_pid "$PGB_PID" TERM
  PGL_PID=""; PGLA_PID=""; PGLB_PID=""; PGB_PID=""
fi

# --------------------------------------------------------- idle clients ---
idle_test() { # target
  local target=$1 pid port
  case $target in
    pglittle) start_pglittle idle; pid=$PGL_PID; port=$PGL_PORT ;;
    pgbouncer) start_pgbouncer idle; pid=$PGB_PID; port=$PGB_PORT ;;
  esac
  sleep 1
  local rss_start rss_base rss_after
  rss_start=$(rss_kib "$pid")
  local ctl="$WORK/idle-$target.ctl" out="$WORK/idle-$target.out"
  rm -f "$ctl"; mkfifo "$ctl"
  python3 "$HELPER" idle --port "$port" --user "$DBUSER" --password "$DBPASS" --db "$DB" \
    --count "$IDLE_CLIENTS" <"$ctl" >"$out" 2>&1 &
  local gen=$!
  PIDS+=("$gen")
  exec 7>"$ctl"
  wait_line() { # word seconds
    local deadline=$((SECONDS + $2))
    until grep -qE "^$1( |$)" "$out"; do
      ((SECONDS < deadline)) && kill -0 "$gen" 2>/dev/null || {
        cat "$out" >&2; die "idle clients through $target: no '$1' (see $out)"; }
      sleep 0.2
    done
  }
  wait_line WARM 60
  read -r _ wok wfail < <(grep '^WARM ' "$out")
  ((wok >= 1)) || { cat "$out" >&2; die "warm-up client could not log in through $target"; }
  sleep 1
  rss_base=$(rss_kib "$pid")
  log "$target: RSS ${rss_start} KiB at start, ${rss_base} KiB with 1 client; opening $IDLE_CLIENTS idle clients"
  echo go >&7
  wait_line READY 600
  sleep 3
  rss_after=$(rss_kib "$pid")
  local ok failed
  read -r _ ok failed < <(grep '^READY ' "$out")
  echo stop >&7
  wait_line CLOSED 120
  exec 7>&-
  wait "$gen" 2>/dev/null || true
  local check
  check=$(awk '/^CHECK / { print $2 "/" $3 }' "$out")
  if ((failed > 0)); then
    log "$target: $failed idle clients failed to log in:"; grep '^ERROR' "$out" >&2 || true
  fi
  local per from_start
  per=$(awk -v a="$rss_base" -v b="$rss_after" -v n="$ok" 'BEGIN { printf (n > 0 ? "%.3f" : "nan"), (b - a) / (n > 0 ? n : 1) }')
  from_start=$(awk -v a="$rss_start" -v b="$rss_after" -v n="$ok" 'BEGIN { printf (n > 0 ? "%.3f" : "nan"), (b - a) / (n > 0 ? n : 1) }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$rss_start" "$rss_base" "$rss_after" \
    "$ok" "$failed" "$check" "$per" "$from_start" >>"$IDLE_TSV"
  log "$target: RSS ${rss_after} KiB with $ok idle clients ($failed failed, SELECT 1 ok on $check): $per KiB per client"
  case $target in
    pglittle) stop_pid "$pid" INT ;;
    pgbouncer) stop_pid "$pid" TERM ;;
  esac
  local keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$gen" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

if ((RUN_IDLE)); then
  for t in pglittle pgbouncer; do target_enabled "$t" && idle_test "$t"; done
fi

# --------------------------------------------------------------- report ---
mkdir -p "$RESULTS_DIR"
REPORT="$RESULTS_DIR/$STAMP.md"
{
  echo "# pglittle benchmark, $STAMP"
  echo
  echo "- command: \`integration/bench/run.sh${ORIG_ARGS:+ $ORIG_ARGS}\` (rounds=$ROUNDS, -M $MODE, -T $DURATION, -c $CLIENTS, -j $THREADS, pool $POOL_SIZE, scale $SCALE, idle clients $IDLE_CLIENTS)"
  echo "- pglittle: $REV_DESC"
  if [ -n "${BASE_BIN:-}" ]; then echo "- pglittle_base: \`$BASE_BIN\` (prebuilt)"; fi
  echo "- $("$PGBIN/postgres" --version), $("$PGBENCH" --version), $("$PGBOUNCER" --version 2>/dev/null | head -1)"
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr), $(awk '/^MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo) RAM"
  echo
  python3 "$HELPER" report "$RAW" "$IDLE_TSV" "$META"
} >"$REPORT"
cat "$REPORT"
log "written to ${REPORT#"$REPO"/}"
