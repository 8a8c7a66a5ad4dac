#!/usr/bin/env bash
# Fleet benchmark (issue 16): four pglittle instances sharing one database's
# connection budget (fleet = "...") against the same four with a static
# split of that budget, under a load that moves from instance to instance.
#
#   integration/bench/fleet.sh [--bin PATH] [--rounds N] [--phase-seconds S]
#
# 1. Starts a dedicated PostgreSQL primary in a temporary directory on a free
#    port (127.0.0.1 only, max_connections 100; run as user "postgres" when
#    we are root), pgbench -i -s 10, a load role "load" and a role
#    "fleetsync" for the fleet's sync connections (both with SCRAM
#    passwords). pglittle's sync logs in as the first [users] entry with a
#    password in name order, so "fleetsync" sorts before "load" and only the
#    load role's backends are the pooled server connections counted below.
# 2. Two configurations, each 4 pglittle instances on free ports in front
#    of the same primary, pool_size = "auto", transaction pooling, budget
#    B = 40 server connections for the database:
#      fleet   fleet = "bench", fleet_instance = "i0".."i3",
#              fleet_sync_period = "1s", max_db_connections = B
#      static  no fleet, max_db_connections = B / 4 on every instance
#    Both run in turn for N rounds (default 2; the order rotates every
#    round). Every run starts 4 fresh instances (cold pools).
# 3. The shifting load: 4 phases of P seconds (default 15); in phase k
#    instance k is busy (pgbench -c 40) and the other three light
#    (-c 2 each), all 4 pgbench processes at once (-j 1, -T P, --no-vacuum).
#    The transaction holds its server connection across client-side work,
#    so throughput follows the connections an instance gets (Little's Law):
#      \set aid random(1, 100000 * :scale)
#      BEGIN; SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
#      \sleep 5 ms
#      END;
#    pgbench counts its connection phase inside -T: run TPS below is the
#    transactions / (phases x P), i.e. wall clock with connecting included;
#    per phase, pgbench's own TPS (without the connection time) is shown too.
# 4. During every run, one psql session (as postgres, over the Unix socket)
#    counts the load role's backends in pg_stat_activity every 100 ms, with
#    a timestamp and the fleet's published application_names; each
#    instance's held server connections are read from its /metrics every
#    0.5 s. One TSV per run.
# 5. Report: integration/bench/results/fleet-<UTC timestamp>.md (per round
#    and per phase figures, the ratio fleet TPS / static TPS per round and
#    its median; target: median ratio >= 1.2, the fleet never above B, no
#    failed transactions), the plot fleet-<stamp>.png (total connections
#    over time, both configurations, B, phase boundaries; made by
#    fleet_plot.py with matplotlib, pip-installed if missing) and the raw
#    TSVs in fleet-<stamp>/.
#
# On a shared machine, BENCH_NICE=-10 (root only) runs the benchmark and all
# it starts at a higher priority than other work; every phase records the
# machine's CPU busy % and the part of it not used by the benchmark.
#
# Needs: a release pglittle (cargo build --release, or --bin), PostgreSQL
# server binaries (pg_config --bindir), psql, pgbench, python3. Does not
# build. Run as root (PostgreSQL then runs as "postgres") or as a user.
set -euo pipefail

ROUNDS=2
PHASE_SECONDS=15
PHASES=4
INSTANCES=4
BUDGET=40
HEAVY=40
LIGHT=2
SLEEP_MS=5
SYNC_PERIOD=1s
SETTLE=3
SCALE=10
PG_MAX_CONNECTIONS=100
TARGET_RATIO=1.2
PLOT=1
BIN=""
ORIG_ARGS="$*"
BENCH_NAME=fleet

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --bin PATH           pglittle binary (default target/release/pglittle)
  --rounds N           rounds, each one fleet run and one static run (default $ROUNDS)
  --phase-seconds S    seconds per phase, pgbench -T (default $PHASE_SECONDS)
  --budget B           max_db_connections of the fleet; B/4 per static instance (default $BUDGET)
  --heavy N            pgbench clients on the busy instance (default $HEAVY)
  --light N            pgbench clients on each other instance (default $LIGHT)
  --sleep-ms MS        client-side work inside the transaction (default $SLEEP_MS)
  --sync-period D      fleet_sync_period (default $SYNC_PERIOD)
  --settle S           seconds between the instances' start and the first phase (default $SETTLE)
  --no-plot            skip the PNG
  --keep               keep the temporary directory (logs, data) at the end
EOF
}

while (($#)); do
  case "$1" in
    --bin) BIN=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --phase-seconds) PHASE_SECONDS=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --heavy) HEAVY=$2; shift ;;
    --light) LIGHT=$2; shift ;;
    --sleep-ms) SLEEP_MS=$2; shift ;;
    --sync-period) SYNC_PERIOD=$2; shift ;;
    --settle) SETTLE=$2; shift ;;
    --no-plot) PLOT=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in ROUNDS PHASE_SECONDS BUDGET HEAVY LIGHT SLEEP_MS SETTLE; do
  opt=${v,,}
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "--${opt//_/-} must be a whole number, not '${!v}'" >&2; exit 2; }
done
((ROUNDS >= 1 && PHASE_SECONDS >= 2 && BUDGET >= INSTANCES)) ||
  { echo "need --rounds >= 1, --phase-seconds >= 2, --budget >= $INSTANCES" >&2; exit 2; }
((BUDGET + INSTANCES + 10 <= PG_MAX_CONNECTIONS)) ||
  { echo "--budget $BUDGET does not fit max_connections $PG_MAX_CONNECTIONS" >&2; exit 2; }
STATIC_SHARE=$((BUDGET / INSTANCES))

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
DBUSER=load
SYNCUSER=fleetsync
SYNCPASS="sync-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
PLOTTER="$HERE/fleet_plot.py"
BIN=${BIN:-$REPO/target/release/pglittle}
[ -x "$BIN" ] || die "pglittle binary $BIN not found or not executable (cargo build --release, or --bin PATH)"
[ -f "$PLOTTER" ] || die "missing $PLOTTER"
command -v "$PGBIN/psql" >/dev/null 2>&1 || die "missing $PGBIN/psql"
command -v timeout >/dev/null 2>&1 || die "missing timeout (coreutils)"

bench_setup
# A private copy: a concurrent cargo build must not swap the binary mid-run.
PGLITTLE="$WORK/pglittle"
cp "$BIN" "$PGLITTLE"
BIN_DESC="\`$BIN\` ($("$PGLITTLE" --version 2>/dev/null || echo '?'), sha256 $(sha256sum "$PGLITTLE" | cut -c1-12), built $(date -u -r "$BIN" +%Y-%m-%dT%H:%MZ)); checkout at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
DATA="$WORK/data"
mkdir -p "$DATA"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS_DIR="$HERE/results"

bench_start_pg
"${PSQL[@]}" -d postgres -c "CREATE ROLE $SYNCUSER LOGIN PASSWORD '$SYNCPASS'" ||
  die "cannot create role $SYNCUSER"
SQL=("${PSQL[@]}" -d postgres -A -t)

cat >"$WORK/shift.sql" <<EOF
\\set aid random(1, 100000 * :scale)
BEGIN;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
\\sleep $SLEEP_MS ms
END;
EOF

{
  printf 'key\tvalue\n'
  printf 'budget\t%s\nphase_seconds\t%s\ninstances\t%s\nheavy\t%s\nlight\t%s\n' \
    "$BUDGET" "$PHASE_SECONDS" "$INSTANCES" "$HEAVY" "$LIGHT"
  printf 'static_share\t%s\nsleep_ms\t%s\nsync_period\t%s\ninterval\t0.1\nheld_interval\t0.5\ntarget_ratio\t%s\n' \
    "$STATIC_SHARE" "$SLEEP_MS" "$SYNC_PERIOD" "$TARGET_RATIO"
} >"$DATA/meta.tsv"
printf 'round\torder\tconfig\trun\n' >"$DATA/runs.tsv"
printf 'run\tphase\tbusy\tt0\tt1\tcpu_busy\tcpu_other\n' >"$DATA/phases.tsv"
printf 'run\tphase\tinstance\trole\tclients\ttps\ttx\tfailed\taborted\tconn_ms\tlat_ms\trc\n' >"$DATA/pgbench.tsv"

# start_instance RUN CONFIG I -> appends to INST_PIDS, INST_PORTS, INST_METRICS.
start_instance() {
  local run=$1 cfg=$2 i=$3 port metrics conf budget fleet_lines=""
  port=$(free_port)
  metrics=$(free_port)
  conf="$WORK/pglittle-$run-i$i.toml"
  if [ "$cfg" = fleet ]; then
    budget=$BUDGET
    fleet_lines=$(printf 'fleet = "bench"\nfleet_instance = "i%s"\nfleet_sync_period = "%s"' "$i" "$SYNC_PERIOD")
  else
    budget=$STATIC_SHARE
  fi
  cat >"$conf" <<EOF
[pooler]
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$metrics"
pool_mode = "transaction"
pool_size = "auto"
max_client_conn = 2000
admin_users = ["$DBUSER"]
$fleet_lines

[databases.$DB]
host = "127.0.0.1"
port = $PGPORT
dbname = "$DB"
max_db_connections = $budget

# Listed first by name: the fleet's sync connections log in as this role.
[users.$SYNCUSER]
auth = "md5"
password = "$SYNCPASS"

[users.$DBUSER]
auth = "md5"
password = "$DBPASS"
EOF
  "$PGLITTLE" check-config "$conf" >"$WORK/check-$run-i$i.out" 2>&1 ||
    die "pglittle rejects $conf: $(tail -5 "$WORK/check-$run-i$i.out")"
  RUST_LOG=${RUST_LOG:-info} "$PGLITTLE" --config "$conf" 2>"$WORK/pglittle-$run-i$i.log" &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$port" 30 "$pid" || die "pglittle i$i ($run) did not start: $(tail -5 "$WORK/pglittle-$run-i$i.log")"
  INST_PIDS+=("$pid")
  INST_PORTS+=("$port")
  INST_METRICS+=("$metrics")
}

count_backends() { # role... : backends of these roles now
  local roles="'$1'" r
  shift
  for r in "$@"; do roles="$roles,'$r'"; done
  "${SQL[@]}" -c "SELECT count(*) FROM pg_stat_activity WHERE usename IN ($roles)"
}

# CPU ticks used by this benchmark so far: the PostgreSQL cluster (the
# postmaster with its reaped backends, plus every live backend), the
# pglittle instances and the sampler (INST_PIDS, SAMPLER), and the children
# this shell has reaped (pgbench): from `times`, which the caller runs in
# this shell into $WORK/times.out first (a subshell would not see them).
TICKS=$(getconf CLK_TCK)
our_ticks() {
  local pm p
  pm=$(head -1 "$WORK/pg/postmaster.pid")
  {
    for p in "$pm" $(ps -o pid= --ppid "$pm"); do
      awk -v self="$pm" '{ pid = $1; sub(/^.*\) /, "")
        print (pid == self ? $12 + $13 + $14 + $15 : $12 + $13) }' "/proc/$p/stat" 2>/dev/null || true
    done
    for p in "${INST_PIDS[@]}" ${SAMPLER:-}; do
      awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true
    done
    # `times` line 2: the reaped children's user and system time (XmY.Zs).
    sed -n 2p "$WORK/times.out" | awk -v t="$TICKS" '
      function secs(s,  a) { split(s, a, "m"); return a[1] * 60 + substr(a[2], 1, length(a[2]) - 1) }
      { printf "%.0f\n", (secs($1) + secs($2)) * t }'
  } | awk '{ s += $1 } END { print s + 0 }'
}

# run_phase RUN K: pgbench on every instance at once; instance K mod 4 busy.
run_phase() {
  local run=$1 k=$2 busy=$(($2 % INSTANCES)) i t0 t1
  local pids=() c0 c1 o0 o1
  c0=$(head -1 /proc/stat)
  times >"$WORK/times.out"
  o0=$(our_ticks)
  t0=$(date +%s.%N)
  for ((i = 0; i < INSTANCES; i++)); do
    local clients=$LIGHT
    ((i == busy)) && clients=$HEAVY
    timeout --signal=INT $((PHASE_SECONDS + 60)) \
      "$PGBENCH" -h 127.0.0.1 -p "${INST_PORTS[$i]}" -U "$DBUSER" -n -c "$clients" -j 1 \
      -T "$PHASE_SECONDS" -f "$WORK/shift.sql" "$DB" >"$WORK/pgbench-$run-p$k-i$i.out" 2>&1 &
    pids+=($!)
    PIDS+=($!)
  done
  local rcs=()
  for ((i = 0; i < INSTANCES; i++)); do
    local rc=0
    wait "${pids[$i]}" || rc=$?
    rcs+=("$rc")
  done
  t1=$(date +%s.%N)
  times >"$WORK/times.out"
  o1=$(our_ticks)
  c1=$(head -1 /proc/stat)
  # Whole-machine CPU busy % over the phase (is the box the bottleneck?),
  # and the part of it that was not ours: other work on a shared machine.
  local cpu other
  read -r cpu other < <(awk -v a="$c0" -v b="$c1" -v o0="$o0" -v o1="$o1" 'BEGIN {
    split(a, x); split(b, y); t = 0
    for (k = 2; k <= 9; k++) { t += y[k] - x[k] }
    i = (y[5] - x[5]) + (y[6] - x[6]); busy = t - i
    o = busy - (o1 - o0); if (o < 0) o = 0
    printf "%.0f %.0f\n", (t > 0 ? 100 * busy / t : 0), (t > 0 ? 100 * o / t : 0) }')
  local keep=() p q drop
  for p in "${PIDS[@]}"; do
    drop=0
    for q in "${pids[@]}"; do [ "$p" = "$q" ] && drop=1; done
    ((drop)) || keep+=("$p")
  done
  PIDS=("${keep[@]}")
  printf '%s\t%s\ti%s\t%s\t%s\t%s\t%s\n' "$run" "$k" "$busy" "$t0" "$t1" "$cpu" "$other" >>"$DATA/phases.tsv"
  local summary=""
  for ((i = 0; i < INSTANCES; i++)); do
    local out="$WORK/pgbench-$run-p$k-i$i.out" role=light clients=$LIGHT
    ((i == busy)) && { role=heavy; clients=$HEAVY; }
    local tps tx failed aborted conn lat
    if ! grep -q '^tps = ' "$out"; then
      tail -20 "$out" >&2
      die "pgbench on instance i$i ($run, phase $k) printed no result (exit ${rcs[$i]}); see $out and $WORK/pglittle-$run-i$i.log"
    fi
    tps=$(awk '/^tps = / { print $3; exit }' "$out")
    tx=$(awk '/^number of transactions actually processed:/ { print $6 }' "$out" | cut -d/ -f1)
    failed=$(awk '/^number of failed transactions:/ { print $5 }' "$out")
    aborted=$(grep -c 'aborted' "$out" || true)
    conn=$(awk '/^initial connection time = / { print $5 }' "$out")
    lat=$(awk '/^latency average = / { print $4 }' "$out")
    if ((rcs[i] != 0)) || [ "${failed:-0}" != 0 ] || ((aborted > 0)); then
      log "WARNING: $run phase $k i$i: pgbench exit ${rcs[$i]}, ${failed:-?} failed transactions, $aborted aborted-client lines (see $out)"
    fi
    printf '%s\t%s\ti%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$k" "$i" "$role" "$clients" \
      "$tps" "${tx:-0}" "${failed:-0}" "$aborted" "${conn:-?}" "${lat:-?}" "${rcs[$i]}" >>"$DATA/pgbench.tsv"
    summary+=" i$i=${tps%.*}"
  done
  log "  phase $k (i$busy busy):$summary tps, machine CPU ${cpu}% busy (${other}% not ours), load backends now $(count_backends "$DBUSER")"
}

# run_config ROUND ORDER CONFIG: 4 fresh instances, the sampler, 4 phases.
run_config() {
  local round=$1 order=$2 cfg=$3 run="r$1-$3" i
  log "round $round/$ROUNDS: $cfg (budget $BUDGET$([ "$cfg" = static ] && echo " split $STATIC_SHARE x $INSTANCES"))"
  printf '%s\t%s\t%s\t%s\n' "$round" "$order" "$cfg" "$run" >>"$DATA/runs.tsv"
  INST_PIDS=() INST_PORTS=() INST_METRICS=()
  for ((i = 0; i < INSTANCES; i++)); do start_instance "$run" "$cfg" "$i"; done
  if [ "$cfg" = fleet ]; then
    # Every member has published once before the load starts.
    local deadline=$((SECONDS + 20)) n=0
    while ((SECONDS < deadline)); do
      n=$("${SQL[@]}" -c "SELECT count(*) FROM pg_stat_activity WHERE starts_with(application_name, 'pglittle-fleet:bench:')")
      ((n >= INSTANCES)) && break
      sleep 0.2
    done
    ((n >= INSTANCES)) || die "only $n of $INSTANCES fleet members published within 20 s; see $WORK/pglittle-$run-i*.log"
  fi
  local mlist="" 
  for ((i = 0; i < INSTANCES; i++)); do mlist+="${mlist:+,}i$i=${INST_METRICS[$i]}"; done
  python3 "$PLOTTER" sample --out "$DATA/samples-$run.tsv" --held "$DATA/held-$run.tsv" \
    --role "$DBUSER" --metrics "$mlist" --db "$DB" -- "$PGBIN/psql" -h "$WORK" -p "$PGPORT" -U postgres -d postgres \
    2>"$WORK/sampler-$run.log" &
  local sampler=$!
  SAMPLER=$sampler
  PIDS+=("$sampler")
  sleep "$SETTLE"
  kill -0 "$sampler" 2>/dev/null || die "the sampler ended: $(tail -5 "$WORK/sampler-$run.log")"
  for ((k = 0; k < PHASES; k++)); do run_phase "$run" "$k"; done
  sleep 1
  kill -0 "$sampler" 2>/dev/null || die "the sampler ended early: $(tail -5 "$WORK/sampler-$run.log")"
  stop_pid "$sampler" TERM
  SAMPLER=""
  for ((i = 0; i < INSTANCES; i++)); do stop_pid "${INST_PIDS[$i]}" INT; done
  # The next run starts from an empty server.
  local deadline=$((SECONDS + 20))
  while (($(count_backends "$DBUSER" "$SYNCUSER") > 0)); do
    ((SECONDS < deadline)) || die "backends of $DBUSER/$SYNCUSER still open 20 s after the instances stopped"
    sleep 0.2
  done
}

log "pglittle: $BIN; $ROUNDS round(s) x (fleet, static) x $PHASES phases of ${PHASE_SECONDS}s"
log "load: busy instance -c $HEAVY, others -c $LIGHT, \\sleep $SLEEP_MS ms inside the transaction; budget $BUDGET"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(fleet static); else order=(static fleet); fi
  run_config "$r" 1 "${order[0]}"
  run_config "$r" 2 "${order[1]}"
done

# --------------------------------------------------------------- report ---
mkdir -p "$RESULTS_DIR"
REPORT="$RESULTS_DIR/fleet-$STAMP.md"
PNG="$RESULTS_DIR/fleet-$STAMP.png"
DATA_OUT="$RESULTS_DIR/fleet-$STAMP"
cp -r "$DATA" "$DATA_OUT"
python3 "$PLOTTER" report "$DATA_OUT" >"$WORK/report-body.md" || die "fleet_plot.py report failed"
read -r _ VERDICT MED FMAX BAD < <(tail -1 "$WORK/report-body.md")
PLOT_NOTE=""
if ((PLOT)); then
  if python3 "$PLOTTER" plot "$DATA_OUT" "$PNG"; then
    PLOT_NOTE="![total server connections over time](fleet-$STAMP.png)"
  else
    PLOT_NOTE="(no plot: matplotlib unavailable; run \`python3 integration/bench/fleet_plot.py plot ${DATA_OUT#"$REPO"/} ${PNG#"$REPO"/}\` where it is)"
    log "no plot: matplotlib unavailable"
  fi
fi
{
  echo "# pglittle fleet benchmark (issue 16), $STAMP"
  echo
  echo "- command: \`integration/bench/fleet.sh${ORIG_ARGS:+ $ORIG_ARGS}\`"
  echo "- pglittle: $BIN_DESC"
  echo "- $("$PGBIN/postgres" --version), $("$PGBENCH" --version); max_connections $PG_MAX_CONNECTIONS, pgbench -i -s $SCALE"
  echo "- machine: $(machine_desc)"
  echo "- setup: $INSTANCES pglittle instances in front of one primary, pool_size = \"auto\", transaction pooling, budget B = $BUDGET server connections for database \`$DB\`:"
  echo "  **fleet** = fleet \"bench\", instances i0..i$((INSTANCES - 1)), fleet_sync_period \"$SYNC_PERIOD\", max_db_connections = $BUDGET;"
  echo "  **static split** = no fleet, max_db_connections = $STATIC_SHARE per instance. Fresh instances for every run; the first phase starts $SETTLE s after they are up (fleet: after every member has published)."
  echo "- load: $PHASES phases of $PHASE_SECONDS s; in phase k instance i(k mod $INSTANCES) is busy (pgbench -c $HEAVY) and the others light (-c $LIGHT each); one pgbench per instance, -j 1, -T $PHASE_SECONDS, --no-vacuum; $ROUNDS round(s), the configuration order rotating every round. Script:"
  echo
  echo '  ```'
  sed 's/^/  /' "$WORK/shift.sql"
  echo '  ```'
  echo
  echo "  pgbench counts its connection phase inside -T, so each phase's transactions include that of its $HEAVY + $((3 * LIGHT)) client logins (a few ms: see 'busy connect ms')."
  echo "- connections: load-role (\`$DBUSER\`) backends in pg_stat_activity every 100 ms from a separate psql session; the fleet's sync connections log in as \`$SYNCUSER\` (the first [users] entry) and are not counted."
  echo "- raw data: [fleet-$STAMP/](fleet-$STAMP/) (samples-<run>.tsv, held-<run>.tsv, phases.tsv, pgbench.tsv)"
  echo
  echo "**Target: fleet TPS at least ${TARGET_RATIO}x the static split under shifting load, and never over the budget: $VERDICT** (median ratio ${MED}x, fleet max $FMAX connections against B = $BUDGET, $BAD failed/aborted)"
  echo
  [ -n "$PLOT_NOTE" ] && { echo "$PLOT_NOTE"; echo; }
  sed '$d' "$WORK/report-body.md"
} >"$REPORT"
cat "$REPORT"
log "report: ${REPORT#"$REPO"/}"
[ -f "$PNG" ] && log "plot: ${PNG#"$REPO"/}"
log "data: ${DATA_OUT#"$REPO"/}/"
