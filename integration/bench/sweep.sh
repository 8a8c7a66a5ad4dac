#!/usr/bin/env bash
# Pool-size sweep (issue 6): static pool sizes against pool_size = "auto".
#
#   integration/bench/sweep.sh [options]
#
# 1. Builds pglittle (release) and starts a dedicated PostgreSQL primary in
#    a temporary directory on a free port (127.0.0.1 only, max_connections
#    200), then pgbench -i -s 10.
# 2. For each workload - pgbench -S with 200 clients ("select"), and TPC-B
#    (pgbench's default script) with 100 clients ("tpcb") - and each pool
#    setting (static sizes 4 8 16 32 64 128, "auto" and "auto-cold"):
#    a fresh pglittle, a warm-up pgbench (not recorded), then the measured
#    pgbench -T with per-transaction logs. "auto" gets a 10 s warm-up so the
#    controller can settle first; "auto-cold" is measured from a fresh
#    pglittle with no warm-up at all (the settling is inside the figures).
#    pglittle's pool size is sampled every second from /metrics
#    (pglittle_pool_size); the server connections in use are counted in
#    pg_stat_activity at the end of the run.
# 3. PgBouncer at the best static size of that workload and round, same
#    warm-up, for reference.
# 4. Prints a markdown report (medians over rounds; auto vs the best static
#    size: TPS >= 90% and p99 <= 1.2x is the issue's bar) and writes it to
#    integration/bench/results/sweep-<UTC timestamp>.md.
#
# Needs: cargo, PostgreSQL server binaries, pgbench, pgbouncer, python3
# (stdlib only). As root, PostgreSQL and PgBouncer run as user "postgres".
set -euo pipefail

ROUNDS=1
DURATION=20
WARMUP=5
AUTO_WARMUP=10
SIZES="4,8,16,32,64,128,auto,auto-cold"
WORKLOADS="select,tpcb"
PGB_SIZE=best
SCALE=10
PG_MAX_CONNECTIONS=200
AUTO_LINES=()
ORIG_ARGS="$*"
BENCH_NAME=sweep

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --rounds N          rounds (default $ROUNDS); medians are reported
  --duration S        measured pgbench -T, seconds (default $DURATION)
  --warmup S          warm-up before static sizes and PgBouncer (default $WARMUP)
  --auto-warmup S     warm-up before "auto" (default $AUTO_WARMUP)
  --sizes LIST        pool settings (default $SIZES)
  --workloads LIST    select,tpcb (default $WORKLOADS)
  --pgbouncer-size N  PgBouncer pool size: a number, "best" (the best static
                      size of the round, default) or "none"
  --auto-line LINE    extra [pooler] line for the auto runs, repeatable
                      (e.g. --auto-line 'max_pool_size = 64')
  --no-build          use the existing target/release/pglittle
  --keep              keep the temporary directory
EOF
}

while (($#)); do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --auto-warmup) AUTO_WARMUP=$2; shift ;;
    --sizes) SIZES=$2; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --pgbouncer-size) PGB_SIZE=$2; shift ;;
    --auto-line) AUTO_LINES+=("$2"); shift ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
REPORTER="$HERE/loadbench.py"
bench_setup
if [ "$PGB_SIZE" != none ] && ! [ -x "$PGBOUNCER" ]; then
  die "pgbouncer not found (install it, or --pgbouncer-size none)"
fi
bench_build
bench_start_pg
T0=$SECONDS

RAW="$WORK/sweep.tsv"
printf 'round\tworkload\ttarget\tsetting\twarmup_s\ttps\tmean_ms\tp99_ms\ttx\tfailed\tpool_end\tpool_min\tpool_max\tserver_conns\tbg_busy\taborted\n' >"$RAW"

workload_args() { # workload -> pgbench arguments
  case $1 in
    select) echo "-S -c 200" ;;
    tpcb) echo "-c 100" ;;
    *) die "unknown workload $1" ;;
  esac
}

# Samples pglittle's pool size every second into FILE until killed.
pool_sampler() { # file
  while :; do
    pglittle_pool_size >>"$1"
    sleep 1
  done
}

server_conns() {
  "${PSQL[@]}" -d postgres -At -c \
    "SELECT count(*) FROM pg_stat_activity WHERE usename = '$DBUSER' AND backend_type = 'client backend'" 2>/dev/null || echo "?"
}

run_one() { # round workload target(pglittle|pgbouncer) setting
  local round=$1 wl=$2 target=$3 setting=$4
  local tag="$wl-$target-$setting-$round" warm=$WARMUP port pid sig
  local args
  args=$(workload_args "$wl")
  if [ "$target" = pglittle ]; then
    local lines=()
    case $setting in
      auto) lines=('pool_size = "auto"' "${AUTO_LINES[@]}"); warm=$AUTO_WARMUP ;;
      auto-cold) lines=('pool_size = "auto"' "${AUTO_LINES[@]}"); warm=0 ;;
      *) lines=("pool_size = $setting") ;;
    esac
    start_pglittle "$tag" "${lines[@]}"
    port=$PGL_PORT pid=$PGL_PID sig=INT
  else
    start_pgbouncer "$tag" "$setting"
    port=$PGB_PORT pid=$PGB_PID sig=TERM
  fi
  local bg
  bg=$(busy_pct 1)
  local aborted_warm=0
  if ((warm > 0)); then
    # shellcheck disable=SC2086
    "$PGBENCH" -h 127.0.0.1 -p "$port" -U "$DBUSER" $args -j 2 -T "$warm" --no-vacuum "$DB" \
      >"$WORK/pgbench-$tag-warmup.out" 2>&1 || {
      # pgbench aborts a client on an error (e.g. a 53300 from the pooler):
      # record it and go on, unless the pooler is gone.
      aborted_warm=$(grep -c 'aborted in command' "$WORK/pgbench-$tag-warmup.out" || true)
      log "warm-up $tag: pgbench failed, $aborted_warm clients aborted: $(grep -m1 'aborted in command' "$WORK/pgbench-$tag-warmup.out" | cut -c1-300)"
      kill -0 "$pid" 2>/dev/null || die "$target is gone during the warm-up of $tag"
    }
  fi
  local samples="$WORK/pool-$tag.txt" sampler=""
  : >"$samples"
  if [ "$target" = pglittle ]; then
    pool_sampler "$samples" &
    sampler=$!
    PIDS+=("$sampler")
  fi
  local dir="$WORK/txlog/$tag" out="$WORK/pgbench-$tag.out" rc=0
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  timeout --signal=INT $((DURATION + 120)) "$PGBENCH" -h 127.0.0.1 -p "$port" -U "$DBUSER" $args -j 2 \
    -T "$DURATION" --no-vacuum -l --log-prefix="$dir/tx" "$DB" >"$out" 2>&1 || rc=$?
  local conns pool_end="n/a"
  conns=$(server_conns)
  if [ -n "$sampler" ]; then
    stop_pid "$sampler" TERM
    pool_end=$(pglittle_pool_size)
  fi
  local aborted
  aborted=$(grep -c 'aborted in command' "$out" || true)
  if ((aborted > 0)); then
    log "$tag: $aborted pgbench clients aborted: $(grep -m1 'aborted in command' "$out" | cut -c1-300)"
  fi
  if ! grep -q '^tps = ' "$out" || { ((rc != 0)) && ((aborted == 0)); }; then
    tail -20 "$out" >&2
    kill -0 "$pid" 2>/dev/null || log "$target is gone"
    die "pgbench $tag failed (exit $rc); see $WORK"
  fi
  stop_pid "$pid" "$sig"
  local tps tx failed n mean p99 bad pmin pmax
  tps=$(awk '/^tps = .*without initial connection time/ { print $3 }' "$out")
  tx=$(awk '/^number of transactions actually processed:/ { print $6 }' "$out" | cut -d/ -f1)
  failed=$(awk '/^number of failed transactions:/ { print $5 }' "$out")
  read -r n mean p99 bad < <(python3 "$HELPER" txstats "$dir"/tx.*)
  rm -rf "$dir"
  read -r pmin pmax < <(awk '$1 != "?" { if (n == 0 || $1 < lo) lo = $1; if ($1 > hi) hi = $1; n++ }
    END { if (n) print lo, hi; else print "n/a n/a" }' "$samples")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$wl" "$target" "$setting" \
    "$warm" "$tps" "$mean" "$p99" "$tx" "${failed:-0}" "$pool_end" "$pmin" "$pmax" "$conns" "$bg" \
    "$aborted_warm+$aborted" >>"$RAW"
  log "round $round $wl $target pool=$setting: tps=$tps p99=${p99}ms mean=${mean}ms pool_end=$pool_end (min $pmin max $pmax) server_conns=$conns other_work_before=${bg}%"
}

IFS=, read -r -a SIZE_LIST <<<"$SIZES"
IFS=, read -r -a WL_LIST <<<"$WORKLOADS"
for ((r = 1; r <= ROUNDS; r++)); do
  for wl in "${WL_LIST[@]}"; do
    for s in "${SIZE_LIST[@]}"; do
      run_one "$r" "$wl" pglittle "$s"
    done
    if [ "$PGB_SIZE" != none ]; then
      size=$PGB_SIZE
      if [ "$size" = best ]; then
        size=$(awk -F'\t' -v r="$r" -v wl="$wl" 'NR > 1 && $1 == r && $2 == wl && $3 == "pglittle" &&
          $4 ~ /^[0-9]+$/ && $6 > best { best = $6; s = $4 } END { print s }' "$RAW")
        [ -n "$size" ] || die "--pgbouncer-size best needs static sizes in --sizes"
      fi
      run_one "$r" "$wl" pgbouncer "$size"
    fi
  done
done
ELAPSED=$((SECONDS - T0))

mkdir -p "$HERE/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT="$HERE/results/sweep-$STAMP.md"
cp "$RAW" "$HERE/results/sweep-$STAMP.tsv"
{
  echo "# pglittle pool-size sweep, $STAMP"
  echo
  echo "- command: \`integration/bench/sweep.sh${ORIG_ARGS:+ $ORIG_ARGS}\` (rounds=$ROUNDS, -T $DURATION, warm-up ${WARMUP}s static/PgBouncer, ${AUTO_WARMUP}s auto, 0 s auto-cold; -j 2, -M simple, scale $SCALE, max_connections $PG_MAX_CONNECTIONS)"
  echo "- pglittle $REV_DESC; auto extra lines: ${AUTO_LINES[*]:-none}"
  echo "- $("$PGBIN/postgres" --version), $("$PGBENCH" --version), $("$PGBOUNCER" --version 2>/dev/null | head -1)"
  echo "- machine: $(machine_desc); shared with other work; measuring took ${ELAPSED}s"
  echo
  python3 "$REPORTER" sweep-report "$RAW"
} >"$REPORT"
cat "$REPORT"
log "written to ${REPORT#"$REPO"/}"
