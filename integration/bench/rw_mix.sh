#!/usr/bin/env bash
# pglittle read/write-split benchmark (issue 4): a read-heavy mix through
# pglittle with one streaming replica, against PgBouncer and a direct
# connection, both to the primary only.
#
#   integration/bench/rw_mix.sh [options]
#
# 1. Builds pglittle (release), starts a dedicated PostgreSQL primary and a
#    streaming replica (pg_basebackup -R) in a temporary directory on free
#    ports (127.0.0.1 only), pgbench -i -s 10.
# 2. Load: pgbench -f select.sql@9 -f write.sql@1, 100 clients, -j 2, -T 15.
#    select.sql reads one random account. write.sql, in autocommit, UPDATEs
#    one of the client's own accounts (no other client writes it) to a fresh
#    random value, then SELECTs it back as a separate statement; if the
#    value read is not the value written, it INSERTs a row into
#    ryw_violations (a write, so it lands on the primary). Violations are
#    counted there after each run and must be 0.
# 3. Targets, interleaved for N rounds (default 3; the order rotates):
#      direct     pgbench -> primary
#      pgbouncer  pgbench -> PgBouncer (transaction mode) -> primary
#      pglittle   pgbench -> pglittle (transaction mode, read/write split,
#                 read_your_writes = "lsn") -> primary + replica
#      pglittle-fastprobe  the same with health_check_period = --fast-probe
#                 (default 20ms; pglittle's default is 500ms): the floor
#                 check uses the replay position the probe last saw, so a
#                 faster probe sends reads after a write back to the
#                 replica sooner
#      pglittle-primary  pglittle without replicas (the pooler alone)
#    Poolers get pool_size/default_pool_size 20 per host.
# 4. Control (one run each, after the rounds): the replica applies WAL
#    --control-delay late (recovery_min_apply_delay), and pglittle runs once
#    with read_your_writes = "off" (violations must appear: the check can
#    fail) and once with "lsn" (still 0).
# 5. Reports per run: TPS (pgbench scripts per second, without connection
#    time), failed transactions, the share of reads that the replica served
#    (pg_stat_database.xact_commit delta on the replica / reads issued), and
#    violations; then medians per target. Written to
#    integration/bench/results/rw_mix-<UTC timestamp>.md.
#
# Needs: cargo, PostgreSQL server binaries (pg_config --bindir, with
# pg_basebackup), pgbench, pgbouncer, python3. Run as root (PostgreSQL and
# PgBouncer then run as user "postgres") or as an ordinary user.
set -euo pipefail

ROUNDS=3
DURATION=15
CLIENTS=100
THREADS=2
POOL_SIZE=20
SCALE=10
CONTROL_DELAY=50ms
CONTROL_DURATION=10
FAST_PROBE=20ms
SETTLE=11
BUILD=1
RUN_CONTROL=1
READ_WEIGHT=9
WRITE_WEIGHT=1
KEEP=0
TARGETS_ARG="direct,pgbouncer,pglittle,pglittle-fastprobe,pglittle-primary"
ORIG_ARGS="$*"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --rounds N          rounds (default $ROUNDS)
  --duration S        pgbench -T per run, seconds (default $DURATION)
  --clients N         pgbench clients (default $CLIENTS)
  --pool-size N       server connections per pool and host (default $POOL_SIZE)
  --targets LIST      comma-separated, from direct,pgbouncer,pglittle,pglittle-primary
                      (default $TARGETS_ARG)
  --control-delay D   replica apply delay for the control runs (default $CONTROL_DELAY)
  --fast-probe D      health_check_period of pglittle-fastprobe (default $FAST_PROBE)
  --no-control        skip the control runs
  --no-build          use the existing target/release/pglittle
  --mix R:W           pgbench weights of select.sql and write.sql (default 9:1;
                      0:1 is writes only, each read back)
  --base-bin PATH     another pglittle binary, run as target pglittle-base
                      (the pglittle target's configuration): same-run
                      before/after figures
  --keep              keep the temporary directory (logs, data) at the end
EOF
}

while (($#)); do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --pool-size) POOL_SIZE=$2; shift ;;
    --targets) TARGETS_ARG=$2; shift ;;
    --control-delay) CONTROL_DELAY=$2; shift ;;
    --fast-probe) FAST_PROBE=$2; shift ;;
    --base-bin) BASE_BIN=$2; shift ;;
    --mix) READ_WEIGHT=${2%%:*}; WRITE_WEIGHT=${2##*:}; shift ;;
    --no-control) RUN_CONTROL=0 ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PGBIN=${PGLITTLE_PG_BINDIR:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
PGBENCH=$(command -v pgbench || echo "$PGBIN/pgbench")
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
DB=bench
DBUSER=bench
DBPASS="bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
IFS=, read -r -a TARGETS <<<"$TARGETS_ARG"

BENCH_NAME=rw_mix
# shellcheck source=proc.sh
. "$(dirname "$0")/proc.sh"

for tool in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/pg_basebackup" "$PGBIN/psql" "$PGBENCH" python3; do
  command -v "$tool" >/dev/null 2>&1 || die "missing $tool"
done
for t in "${TARGETS[@]}"; do
  case $t in
    direct|pglittle|pglittle-fastprobe|pglittle-primary) ;;
    pglittle-base) [ -x "${BASE_BIN:-}" ] || die "target pglittle-base needs --base-bin PATH" ;;
    pgbouncer) [ -x "$PGBOUNCER" ] || die "pgbouncer not found (or --targets without it)" ;;
    *) die "unknown target $t" ;;
  esac
done

# Run PostgreSQL and PgBouncer as "postgres" when we are root (both refuse root).
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user"
  AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)
else
  AS_PG=()
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pglittle-rwmix.XXXXXX")
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK"; fi
chmod 755 "$WORK"
PG_STARTED=()
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
  # The replica first, then the primary (stop is by data directory: pg_ctl
  # signals the postmaster whose pid is in it).
  for ((i = ${#PG_STARTED[@]} - 1; i >= 0; i--)); do
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "${PG_STARTED[$i]}" -m fast -w stop >/dev/null 2>&1
  done
  if ((rc != 0 || FAILED)); then
    log "failed; logs kept in $WORK"
  elif ((KEEP)); then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build ---
if ((BUILD)); then
  log "building pglittle (release) from the working tree"
  (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
fi
BUILT="$REPO/target/release/pglittle"
[ -x "$BUILT" ] || die "$BUILT not found (drop --no-build)"
REV_DESC="working tree at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
if [ -n "$(git -C "$REPO" --no-optional-locks status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  REV_DESC="$REV_DESC, with uncommitted changes in src/"
fi
# A private copy: a concurrent cargo build must not swap the binary mid-run.
PGLITTLE="$WORK/pglittle"
cp "$BUILT" "$PGLITTLE"
if [ -n "${BASE_BIN:-}" ]; then
  cp "$BASE_BIN" "$WORK/pglittle-base-bin"
  REV_DESC="$REV_DESC; pglittle-base: $BASE_BIN ($("$BASE_BIN" --version 2>/dev/null | head -1))"
fi

# ---------------------------------------------------------- postgresql ---
PGPORT=$(free_port)
REPORT_PORT=$(free_port)
log "starting the primary on 127.0.0.1:$PGPORT in $WORK/pg"
echo "$DBPASS" >"$WORK/pw"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/pw"; fi
"${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres -E UTF8 --no-sync \
  --auth-local=trust --auth-host=scram-sha-256 --pwfile="$WORK/pw" >"$WORK/initdb.log" 2>&1 ||
  die "initdb failed: $(tail -5 "$WORK/initdb.log")"
# The same settings as run.sh, plus streaming replication (over the Unix
# socket in $WORK, trusted for replication by initdb's pg_hba.conf).
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
wal_level = replica
max_wal_senders = 5
wal_keep_size = 512MB
hot_standby = on
hot_standby_feedback = on
EOF
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 start >/dev/null ||
  die "PostgreSQL did not start: $(tail -5 "$WORK/pg.log")"
PG_STARTED+=("$WORK/pg")
PSQL=("$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -U postgres)
"${PSQL[@]}" -p "$PGPORT" -d postgres -c "CREATE ROLE $DBUSER LOGIN PASSWORD '$DBPASS'" \
  -c "CREATE DATABASE $DB OWNER $DBUSER" || die "cannot create role/database"
export PGPASSWORD=$DBPASS
log "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" "$DB" >"$WORK/pgbench-init.out" 2>&1 ||
  die "pgbench -i failed: $(tail -5 "$WORK/pgbench-init.out")"
"${PSQL[@]}" -p "$PGPORT" -d "$DB" -c "CREATE TABLE ryw_violations (aid int, wrote int, seen int)" \
  -c "ALTER TABLE ryw_violations OWNER TO $DBUSER" || die "cannot create ryw_violations"

log "cloning the replica (pg_basebackup -R) on 127.0.0.1:$REPORT_PORT in $WORK/replica"
"${AS_PG[@]}" "$PGBIN/pg_basebackup" -h "$WORK" -p "$PGPORT" -U postgres -D "$WORK/replica" \
  -R -X stream -c fast --no-sync >"$WORK/basebackup.log" 2>&1 ||
  die "pg_basebackup failed: $(tail -5 "$WORK/basebackup.log")"
cat >>"$WORK/replica/postgresql.conf" <<EOF
port = $REPORT_PORT
EOF
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/replica" -l "$WORK/replica.log" -w -t 60 start >/dev/null ||
  die "the replica did not start: $(tail -5 "$WORK/replica.log")"
PG_STARTED+=("$WORK/replica")
primary_sql() { "${PSQL[@]}" -p "$PGPORT" -d "$DB" -c "$1"; }
replica_sql() { "${PSQL[@]}" -p "$REPORT_PORT" -d "$DB" -c "$1"; }
streaming=0
for _ in $(seq 300); do
  if [ "$(replica_sql 'SELECT pg_is_in_recovery()' 2>/dev/null)" = t ] &&
    [ "$("${PSQL[@]}" -p "$PGPORT" -d postgres -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" = 1 ]; then
    streaming=1; break
  fi
  sleep 0.1
done
((streaming)) || die "the replica is not streaming: $(tail -5 "$WORK/replica.log")"

set_apply_delay() { # delay ("0" to turn off)
  replica_sql "ALTER SYSTEM SET recovery_min_apply_delay = '$1'" >/dev/null
  replica_sql "SELECT pg_reload_conf()" >/dev/null
  for _ in $(seq 100); do
    [ "$(replica_sql 'SHOW recovery_min_apply_delay')" = "$1" ] && return 0
    sleep 0.1
  done
  die "recovery_min_apply_delay did not change to $1"
}

# --------------------------------------------------------------- scripts ---
cat >"$WORK/select.sql" <<'EOF'
\set aid random(1, :naccounts)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
EOF
# Client k writes only accounts k+1, k+1+clients, ...: a value read back
# that differs from the one written is a stale read, never another
# client's write. Two statements, each its own autocommit transaction.
cat >"$WORK/write.sql" <<'EOF'
\set aid 1 + :client_id + :clients * random(0, :naccounts / :clients - 1)
\set v random(1, 2000000000)
UPDATE pgbench_accounts SET abalance = :v WHERE aid = :aid;
SELECT abalance AS seen FROM pgbench_accounts WHERE aid = :aid \gset
\if :seen != :v
INSERT INTO ryw_violations VALUES (:aid, :v, :seen);
\endif
EOF
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK"/*.sql; fi

# -------------------------------------------------------------- poolers ---
start_pglittle() { # tag ryw(lsn|off|none) [health_check_period [binary]] -> sets PGL_PID PGL_PORT
  PGL_PORT=$(free_port)
  local cfg="$WORK/pglittle-$1.toml"
  cat >"$cfg" <<EOF
[pooler]
listen = "127.0.0.1:$PGL_PORT"
pool_mode = "transaction"
pool_size = $POOL_SIZE
max_client_conn = $((CLIENTS + 100))
health_check_period = "${3:-500ms}"

[databases.$DB]
host = "127.0.0.1"
port = $PGPORT
dbname = "$DB"
EOF
  if [ "$2" != none ]; then
    cat >>"$cfg" <<EOF
read_write_split = "on"
read_your_writes = "$2"

[[databases.$DB.replicas]]
host = "127.0.0.1"
port = $REPORT_PORT
EOF
  fi
  cat >>"$cfg" <<EOF

[users.$DBUSER]
auth = "md5"
password = "$DBPASS"
EOF
  RUST_LOG=${RUST_LOG:-warn} "${4:-$PGLITTLE}" --config "$cfg" 2>"$WORK/pglittle-$1.log" &
  PGL_PID=$!
  PIDS+=("$PGL_PID")
  wait_port "$PGL_PORT" 30 "$PGL_PID" || die "pglittle did not start: $(tail -5 "$WORK/pglittle-$1.log")"
}

start_pgbouncer() { # -> sets PGB_PID PGB_PORT
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
max_client_conn = $((CLIENTS + 100))
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
EOF
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/userlist.txt" "$WORK/pgbouncer.ini"; fi
  "${AS_PG[@]}" "$PGBOUNCER" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.log" 2>&1 &
  PGB_PID=$!
  PIDS+=("$PGB_PID")
  wait_port "$PGB_PORT" 30 "$PGB_PID" || die "pgbouncer did not start: $(tail -5 "$WORK/pgbouncer.log")"
}

# ------------------------------------------------------------------ runs ---
RAW="$WORK/raw.tsv"
printf 'round\torder\ttarget\ttps\ttx\tfailed\treads\treplica_xacts\treplica_share\tviolations\n' >"$RAW"

replica_commits() { replica_sql "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'"; }
# A busy backend's statistics may reach pg_stat_database only up to 10 s
# after it goes idle (PostgreSQL retries a contended flush after 10 s): read
# the replica's commit count once they have all landed. Between runs this
# is the same reading: the end of one run is the start of the next.
# Also sets LAST_AT, the time of the reading.
settled_commits() { sleep "$SETTLE"; LAST_AT=$(date +%s.%N); replica_commits; }
# pglittle's health probes commit on the replica too (every
# health_check_period, for each running pglittle with a replica): their rate,
# measured while every pooler is up and idle, is subtracted.
probe_rate() {
  local a b t0 t1
  settled_commits >"$WORK/commits"; a=$(cat "$WORK/commits"); t0=$LAST_AT
  settled_commits >"$WORK/commits"; b=$(cat "$WORK/commits"); t1=$LAST_AT
  awk -v a="$a" -v b="$b" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f", (b - a) / (t1 - t0) }'
}

# One pgbench run; appends a row to $RAW.
run_mix() { # round order target port duration
  local round=$1 order=$2 target=$3 port=$4 dur=$5
  local out="$WORK/pgbench-$target-$round.out" rc=0
  primary_sql "TRUNCATE ryw_violations" >/dev/null
  local x0 x1
  x0=$LAST_COMMITS
  local t0=$LAST_AT
  timeout --signal=INT $((dur + 120)) \
    "$PGBENCH" -h 127.0.0.1 -p "$port" -U "$DBUSER" -M simple -c "$CLIENTS" -j "$THREADS" -T "$dur" \
    --no-vacuum -D naccounts=$((SCALE * 100000)) -D clients="$CLIENTS" \
    -f "$WORK/select.sql@$READ_WEIGHT" -f "$WORK/write.sql@$WRITE_WEIGHT" "$DB" >"$out" 2>&1 || rc=$?
  settled_commits >"$WORK/commits"
  x1=$(cat "$WORK/commits")
  LAST_COMMITS=$x1
  local xacts
  xacts=$(awk -v a="$x0" -v b="$x1" -v t0="$t0" -v t1="$LAST_AT" -v p="$PROBES" \
    'BEGIN { x = b - a - p * (t1 - t0); printf "%d", (x > 0 ? x : 0) }')
  if ((rc != 0)) || ! grep -q '^tps = ' "$out"; then
    tail -20 "$out" >&2
    die "pgbench through $target failed (exit $rc); see $out"
  fi
  local tps tx failed n_sel n_wr reads viol
  tps=$(awk '/^tps = .*without initial connection time/ { print $3 }' "$out")
  tx=$(awk '/^number of transactions actually processed:/ { print $6 }' "$out" | cut -d/ -f1)
  failed=$(awk '/^number of failed transactions:/ { print $5 }' "$out")
  # Per-script counts: " - N transactions (x% of total, tps = ...)".
  read -r n_sel n_wr < <(awk '/^SQL script [0-9]+:/ { s++ }
    s && /^ - [0-9]+ transactions \(/ { n[s] = $2 }
    END { print n[1] + 0, n[2] + 0 }' "$out")
  reads=$((n_sel + n_wr))
  viol=$(primary_sql "SELECT count(*) FROM ryw_violations")
  local share
  share=$(awk -v x="$xacts" -v r="$reads" 'BEGIN { printf "%.1f", (r > 0 ? 100 * x / r : 0) }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$order" "$target" "$tps" "$tx" \
    "${failed:-0}" "$reads" "$xacts" "$share" "$viol" >>"$RAW"
  log "round $round $target: tps=$tps failed=${failed:-0} reads=$reads replica_xacts=$xacts (${share}% of reads) violations=$viol"
}

declare -A PORT_OF
for t in "${TARGETS[@]}"; do
  case $t in
    direct) PORT_OF[$t]=$PGPORT ;;
    pgbouncer) start_pgbouncer; PORT_OF[$t]=$PGB_PORT ;;
    pglittle) start_pglittle split lsn; PORT_OF[$t]=$PGL_PORT ;;
    pglittle-fastprobe) start_pglittle fastprobe lsn "$FAST_PROBE"; PORT_OF[$t]=$PGL_PORT ;;
    pglittle-primary) start_pglittle primary none; PORT_OF[$t]=$PGL_PORT ;;
    pglittle-base) start_pglittle base lsn 500ms "$WORK/pglittle-base-bin"; PORT_OF[$t]=$PGL_PORT ;;
  esac
done

for t in "${TARGETS[@]}"; do
  log "warm-up through $t (5s)"
  "$PGBENCH" -h 127.0.0.1 -p "${PORT_OF[$t]}" -U "$DBUSER" -M simple -c "$CLIENTS" -j "$THREADS" -T 5 \
    --no-vacuum -D naccounts=$((SCALE * 100000)) -D clients="$CLIENTS" \
    -f "$WORK/select.sql@$READ_WEIGHT" -f "$WORK/write.sql@$WRITE_WEIGHT" "$DB" >"$WORK/pgbench-$t-warmup.out" 2>&1 ||
    { tail -20 "$WORK/pgbench-$t-warmup.out" >&2; die "warm-up through $t failed"; }
done

probe_rate >"$WORK/probes"; PROBES=$(cat "$WORK/probes")
log "health probes commit $PROBES transactions/s on the replica (subtracted)"
settled_commits >"$WORK/commits"
LAST_COMMITS=$(cat "$WORK/commits")
n=${#TARGETS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < n; i++)); do
    t=${TARGETS[$(((i + r - 1) % n))]}
    run_mix "$r" "$((i + 1))" "$t" "${PORT_OF[$t]}" "$DURATION"
  done
done
for pid in "${PIDS[@]}"; do
  stop_pid "$pid" TERM
done

if ((RUN_CONTROL)); then
  log "control: the replica applies WAL $CONTROL_DELAY late"
  set_apply_delay "$CONTROL_DELAY"
  for ryw in off lsn; do
    start_pglittle "control-$ryw" "$ryw"
    probe_rate >"$WORK/probes"; PROBES=$(cat "$WORK/probes")
    settled_commits >"$WORK/commits"
    LAST_COMMITS=$(cat "$WORK/commits")
    run_mix control 1 "pglittle-ryw-$ryw+delay" "$PGL_PORT" "$CONTROL_DURATION"
    stop_pid "$PGL_PID" TERM
  done
  set_apply_delay 0
fi

# --------------------------------------------------------------- report ---
RESULTS_DIR="$HERE/results"
mkdir -p "$RESULTS_DIR"
REPORT="$RESULTS_DIR/rw_mix-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# pglittle read/write mix, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- command: \`integration/bench/rw_mix.sh${ORIG_ARGS:+ $ORIG_ARGS}\` (rounds=$ROUNDS, -T $DURATION, -c $CLIENTS, -j $THREADS, pool $POOL_SIZE per host, scale $SCALE, mix select.sql@$READ_WEIGHT write.sql@$WRITE_WEIGHT, control delay $CONTROL_DELAY)"
  echo "- pglittle: $REV_DESC"
  echo "- $("$PGBIN/postgres" --version), $("$PGBENCH" --version), $("$PGBOUNCER" --version 2>/dev/null | head -1)"
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr); primary, replica, pooler and pgbench share it"
  echo
  python3 - "$RAW" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| round | target | TPS | failed | reads | replica xacts | replica share of reads | RYW violations |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['round']} | {r['target']} | {float(r['tps']):.0f} | {r['failed']} | {r['reads']} "
          f"| {r['replica_xacts']} | {r['replica_share']}% | {r['violations']} |")
print()
main = [r for r in rows if r["round"] != "control"]
targets = list(dict.fromkeys(r["target"] for r in main))
med = {t: statistics.median(float(r["tps"]) for r in main if r["target"] == t) for t in targets}
print("Medians over the rounds:")
print()
print("| target | median TPS | vs direct | median replica share | violations (all rounds) |")
print("|---|---:|---:|---:|---:|")
for t in targets:
    share = statistics.median(float(r["replica_share"]) for r in main if r["target"] == t)
    viol = sum(int(r["violations"]) for r in main if r["target"] == t)
    vs = f"{med[t] / med['direct']:.2f}x" if "direct" in med and med["direct"] else "n/a"
    print(f"| {t} | {med[t]:.0f} | {vs} | {share:.1f}% | {viol} |")
rounds = sorted({r["round"] for r in main})
print()
for t in [t for t in targets if t.startswith("pglittle")] if "pgbouncer" in targets else []:
    ratios = []
    for rd in rounds:
        by = {r["target"]: float(r["tps"]) for r in main if r["round"] == rd}
        ratios.append(by[t] / by["pgbouncer"])
    print(f"- {t} / PgBouncer TPS, same round: " + ", ".join(f"{x:.2f}" for x in ratios)
          + f" (median {statistics.median(ratios):.2f})")
EOF
} >"$REPORT"
cat "$REPORT"
log "written to ${REPORT#"$REPO"/}"
bad=$(awk -F'\t' 'NR > 1 && $1 != "control" && $10 != 0' "$RAW" | wc -l)
((bad == 0)) || die "read-your-writes violations in $bad run(s) (see the table)"
