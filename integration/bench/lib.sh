# Shared helpers for integration/bench/sweep.sh and peak.sh (sourced, not
# run). The same patterns as run.sh, which keeps its own copy: a dedicated
# PostgreSQL primary on a free port in a temporary directory (run as user
# "postgres" when we are root), pglittle and PgBouncer on free ports, all on
# 127.0.0.1, every process stopped by pid at exit.
#
# The caller sets before sourcing: SCALE, PG_MAX_CONNECTIONS; after sourcing
# it calls bench_setup, then bench_build, bench_start_pg.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
HELPER="$HERE/bench.py"
PGBIN=${PGLITTLE_PG_BINDIR:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
PGBENCH=$(command -v pgbench || echo "$PGBIN/pgbench")
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
DB=bench
DBUSER=bench
DBPASS="bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
PG_STARTED=0
PIDS=()
FAILED=0
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}

# shellcheck source=proc.sh
. "$HERE/proc.sh"

bench_cleanup() {
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
    log "failed; logs kept in $WORK"
  elif ((KEEP)); then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}

bench_setup() {
  for tool in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/postgres" "$PGBENCH" python3; do
    command -v "$tool" >/dev/null 2>&1 || die "missing $tool"
  done
  local hard
  hard=$(ulimit -Hn)
  ulimit -n "$hard" 2>/dev/null || ulimit -n 20000 2>/dev/null || true
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user"
    AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)
  else
    AS_PG=()
  fi
  # BENCH_NICE=-10 (root only) runs the benchmark and everything it starts
  # at a higher priority than other work on a shared machine.
  if [ -n "${BENCH_NICE:-}" ]; then
    renice -n "$BENCH_NICE" -p $$ >/dev/null || die "renice $BENCH_NICE failed"
  fi
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/pglittle-${BENCH_NAME:-bench}.XXXXXX")
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK"; fi
  chmod 755 "$WORK"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

# Whole-machine CPU busy % over an interval: how much other work is running.
busy_pct() { # seconds
  local a b
  a=$(head -1 /proc/stat); sleep "$1"; b=$(head -1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); t = 0
    for (k = 2; k <= 9; k++) { t += y[k] - x[k] }
    i = (y[5] - x[5]) + (y[6] - x[6]); printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}

bench_build() {
  # PGLITTLE_BIN: a binary built earlier (its commit in PGLITTLE_REV), used
  # instead of building, so a concurrent cargo build cannot disturb a run.
  if [ -n "${PGLITTLE_BIN:-}" ]; then
    [ -x "$PGLITTLE_BIN" ] || die "$PGLITTLE_BIN not found"
    REV_DESC="${PGLITTLE_REV:-?} (prebuilt)"
    PGLITTLE="$WORK/pglittle"
    cp "$PGLITTLE_BIN" "$PGLITTLE"
    return
  fi
  if ((BUILD)); then
    log "building pglittle (release) from the working tree"
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
  fi
  local built="$REPO/target/release/pglittle"
  [ -x "$built" ] || die "$built not found (drop --no-build)"
  REV_DESC="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
  if [ -n "$(git -C "$REPO" --no-optional-locks status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    REV_DESC="$REV_DESC, with uncommitted changes in src/"
  fi
  # A private copy: a concurrent cargo build must not swap the binary mid-run.
  PGLITTLE="$WORK/pglittle"
  cp "$built" "$PGLITTLE"
}

bench_start_pg() {
  PGPORT=$(free_port)
  log "starting PostgreSQL on 127.0.0.1:$PGPORT in $WORK/pg (max_connections $PG_MAX_CONNECTIONS)"
  echo "$DBPASS" >"$WORK/pw"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/pw"; fi
  "${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres -E UTF8 --no-sync \
    --auth-local=trust --auth-host=scram-sha-256 --pwfile="$WORK/pw" >"$WORK/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -5 "$WORK/initdb.log")"
  cat >>"$WORK/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
max_connections = $PG_MAX_CONNECTIONS
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
  "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 start >/dev/null ||
    die "PostgreSQL did not start: $(tail -5 "$WORK/pg.log")"
  PG_STARTED=1
  PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PGPORT" -U postgres)
  "${PSQL[@]}" -d postgres -c "CREATE ROLE $DBUSER LOGIN PASSWORD '$DBPASS'" \
    -c "CREATE DATABASE $DB OWNER $DBUSER" || die "cannot create role/database"
  export PGPASSWORD=$DBPASS
  log "pgbench -i -s $SCALE"
  "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" "$DB" >"$WORK/pgbench-init.out" 2>&1 ||
    die "pgbench -i failed: $(tail -5 "$WORK/pgbench-init.out")"
}

# start_pglittle TAG POOLER_LINES... -> PGL_PID PGL_PORT PGL_METRICS.
# Both poolers reach the server at 127.0.0.1:${SERVER_PORT:-$PGPORT} (set
# SERVER_PORT to put something, e.g. a fault proxy, on the server path).
# Each extra argument is one line added to [pooler] (pool_size, timeouts...).
start_pglittle() {
  local tag=$1; shift
  PGL_PORT=$(free_port)
  PGL_METRICS=$(free_port)
  {
    echo "[pooler]"
    echo "listen = \"127.0.0.1:$PGL_PORT\""
    echo "metrics_listen = \"127.0.0.1:$PGL_METRICS\""
    echo "pool_mode = \"transaction\""
    echo "max_client_conn = 2000"
    echo "admin_users = [\"$DBUSER\"]"
    local line
    for line in "$@"; do echo "$line"; done
    cat <<EOF

[databases.$DB]
host = "127.0.0.1"
port = ${SERVER_PORT:-$PGPORT}
dbname = "$DB"

[users.$DBUSER]
auth = "md5"
password = "$DBPASS"
EOF
  } >"$WORK/pglittle-$tag.toml"
  RUST_LOG=${RUST_LOG:-info} "$PGLITTLE" --config "$WORK/pglittle-$tag.toml" 2>"$WORK/pglittle-$tag.log" &
  PGL_PID=$!
  PIDS+=("$PGL_PID")
  wait_port "$PGL_PORT" 30 "$PGL_PID" || die "pglittle did not start: $(tail -5 "$WORK/pglittle-$tag.log")"
}

# pglittle_metric NAME: the value of a Prometheus series of pglittle's
# /metrics for the bench database (summed over its series; "?" if none).
pglittle_metric() {
  local text
  text=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
    cat <&3' _ "$PGL_METRICS" 2>/dev/null) || { echo "?"; return; }
  awk -v name="$1" -v db="$DB" '
    index($0, name "{") == 1 && index($0, "database=\"" db "\"") { s += $NF; n++ }
    $1 == name { s += $NF; n++ }
    END { if (n) printf "%g\n", s; else print "?" }' <<<"$text"
}

# pglittle's current server-connection pool size for the bench database.
pglittle_pool_size() { pglittle_metric pglittle_pool_size; }

# start_pgbouncer TAG POOL_SIZE [EXTRA_LINES...] -> PGB_PID PGB_PORT.
start_pgbouncer() {
  local tag=$1 size=$2; shift 2
  PGB_PORT=$(free_port)
  printf '"%s" "%s"\n' "$DBUSER" "$DBPASS" >"$WORK/userlist.txt"
  {
    cat <<EOF
[databases]
$DB = host=127.0.0.1 port=${SERVER_PORT:-$PGPORT} dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = md5
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $size
max_client_conn = 2000
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
EOF
    local line
    for line in "$@"; do echo "$line"; done
  } >"$WORK/pgbouncer-$tag.ini"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/userlist.txt" "$WORK/pgbouncer-$tag.ini"; fi
  "${AS_PG[@]}" "$PGBOUNCER" "$WORK/pgbouncer-$tag.ini" >"$WORK/pgbouncer-$tag.log" 2>&1 &
  PGB_PID=$!
  PIDS+=("$PGB_PID")
  wait_port "$PGB_PORT" 30 "$PGB_PID" || die "pgbouncer did not start: $(tail -5 "$WORK/pgbouncer-$tag.log")"
}

machine_desc() {
  echo "$(nproc) CPUs${BENCH_NICE:+, benchmark run at nice $BENCH_NICE} ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr), $(awk '/^MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo) RAM"
}
