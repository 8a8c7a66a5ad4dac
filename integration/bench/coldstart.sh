#!/usr/bin/env bash
# Cold start (issue 12): how many of 1,000 clients that connect at once to a
# fresh pglittle are refused by admission control ("pool ... is saturated")?
#
#   integration/bench/coldstart.sh [--clients N] [--duration S] [--pool N]
#                                  [--modes "simple extended prepared"]
#
# For each pgbench protocol mode: a fresh pglittle (pool_size N, defaults
# otherwise), then `pgbench -S -c CLIENTS -j 2 -T S -M MODE` through it
# (the cold run), then the same again on the now warm instance. pgbench
# aborts a client on its first error, so the refusals are its aborted
# clients; pglittle's own shed counter is read from /metrics. Prints one
# line per run: mode, cold/warm, tps, aborted clients, shed requests.
#
# PGLITTLE_BIN=path runs that binary instead of building release (for a
# before/after comparison of two builds of the same profile).
#
# Issue 12, debug builds, 2 shared cores, -T 10, aborted clients of
# 1,000 (cold run / warm run). With other builds running (load 8-12):
#   before, pool 10: simple 692/0 and 335/0, extended 0/57 and 641/0,
#                    prepared 0/0
#   before, pool 20: simple 830/0, extended 729/0
#   after,  pool 10: simple 0/0 (x2), extended 0/0 (x2), prepared 0/0
#   after,  pool 20: simple 0/0, extended 0/0
# On a quieter box (load 3-5) the old code refused less, or nothing:
#   before, pool 10: simple 0/0, extended 0/0, prepared 0/0
#   before, pool 20: simple 109/0, extended 0/0
#   after,  pool 10: simple 0/0, extended 0/0, prepared 0/0
# (tps swung 700-6,800 with the load: not a throughput comparison.)
# Needs: PostgreSQL server binaries, pgbench, python3.
set -euo pipefail

CLIENTS=1000
DURATION=10
POOL_SIZE=10
MODES="simple extended prepared"
SCALE=1
PG_MAX_CONNECTIONS=100
BENCH_NAME=coldstart

while (($#)); do
  case $1 in
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --pool) POOL_SIZE=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

bench_setup
if [ -n "${PGLITTLE_BIN:-}" ]; then
  PGLITTLE="$WORK/pglittle"
  cp "$PGLITTLE_BIN" "$PGLITTLE"
  REV_DESC="$PGLITTLE_BIN"
else
  bench_build
fi
bench_start_pg

# run MODE TAG: one pgbench run; prints "MODE TAG tps=... aborted=... shed=...".
run() {
  local out="$WORK/pgbench-$1-$2.out"
  "$PGBENCH" -n -S -c "$CLIENTS" -j 2 -T "$DURATION" -M "$1" \
    -h 127.0.0.1 -p "$PGL_PORT" -U "$DBUSER" "$DB" >"$out" 2>&1 || true
  local tps aborted
  tps=$(awk '/^tps = / { printf "%.0f", $3 }' "$out")
  aborted=$(grep -c "aborted in command" "$out" || true)
  echo "$1 $2 tps=${tps:-?} aborted=$aborted shed_total=$(pglittle_metric pglittle_clients_shed_total)"
  grep -m1 "saturated" "$out" >&2 || true
}

log "pglittle: $REV_DESC, pool_size $POOL_SIZE, $CLIENTS clients, -T $DURATION"
for mode in $MODES; do
  start_pglittle "$mode" "pool_size = $POOL_SIZE"
  run "$mode" cold
  run "$mode" warm
  stop_pid "$PGL_PID" TERM
done
