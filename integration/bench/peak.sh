#!/usr/bin/env bash
# "2x peak" (issue 6): does p99 stay bounded when twice the sustainable rate
# arrives, with the excess shed?
#
#   integration/bench/peak.sh [options]
#
# Workload: one query with a fixed server cost, SELECT pg_sleep(0.020) by
# default, through a pool of 8 server connections. The server time per
# request is then fixed and uses almost no CPU, so capacity is set by the
# database side (8 connections / 20 ms = 400/s at most), not by how the 2
# shared cores happen to be split between PostgreSQL, the pooler and the
# client; and 2R is only ~800 requests/s, which one Python process can
# generate on time while leaving the pooler CPU to work with. (With 10 ms,
# 2R was ~1,450/s and the client's and pooler's CPU contention on this box
# added tens of ms to every request, refusals included.)
#
# 1. A dedicated PostgreSQL primary (127.0.0.1, free port, temporary
#    directory), pglittle built in release mode.
# 2. Capacity probe: closed-loop pgbench (64 clients) through pglittle with
#    pool 8 and query_wait_timeout 120s (no shedding).
# 3. R: bisection over pgbench -R rates (64 clients, -T 15) for the highest
#    rate whose p99 latency (per-transaction log, measured by pgbench from
#    the scheduled start, so schedule lag is in it) stays under 50 ms.
# 4. pglittle configured to shed: query_wait_timeout = 2 x the p99 at R
#    (or --wait-timeout), max_queue 0 (the predicted-wait check does the
#    shedding). An open-loop generator (loadbench.py loadgen: Poisson
#    arrivals, 200 persistent connections, latency from the scheduled
#    arrival, errors classified by SQLSTATE and message; pgbench cannot be
#    used here because it aborts a client on the first 53300) runs at R for
#    30 s, then at 2R for 60 s, each after 5 s of unrecorded arrivals at
#    the same rate.
# 5. The same two generator runs through PgBouncer with the same pool size
#    (default query_wait_timeout 120s), interleaved: both poolers run side
#    by side and the order is pglittle @ R, PgBouncer @ R, pglittle @ 2R,
#    PgBouncer @ 2R.
# 6. Markdown report to integration/bench/results/peak-<UTC timestamp>.md.
#
# Needs: cargo, PostgreSQL server binaries, pgbench, pgbouncer, python3
# (stdlib only). As root, PostgreSQL and PgBouncer run as user "postgres".
set -euo pipefail

POOL_SIZE=8
SLEEP_MS=20
SEARCH_CLIENTS=64
SEARCH_DURATION=15
SEARCH_STEPS=5
P99_LIMIT_MS=50
R_DURATION=30
PEAK_DURATION=60
GEN_CONNS=200
GEN_WARMUP=5
WAIT_TIMEOUT=""
MAX_QUEUE=0
RATE=""
TARGETS="pglittle,pgbouncer"
SCALE=1
PG_MAX_CONNECTIONS=100
ORIG_ARGS="$*"
BENCH_NAME=peak

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  cat <<EOF
Options:
  --pool-size N         server connections (default $POOL_SIZE)
  --sleep-ms MS         pg_sleep per request (default $SLEEP_MS)
  --search-steps N      bisection steps for R (default $SEARCH_STEPS)
  --search-duration S   pgbench -T per search step (default $SEARCH_DURATION)
  --rate R              skip the search and use this R
  --wait-timeout MS     pglittle's query_wait_timeout for the overload runs
                        (default 2 x the p99 at R, at least 20 ms)
  --max-queue N         pglittle's max_queue for the overload runs (default $MAX_QUEUE)
  --r-duration S        generator run at R, seconds (default $R_DURATION)
  --peak-duration S     generator run at 2R, seconds (default $PEAK_DURATION)
  --conns N             generator connections (default $GEN_CONNS)
  --gen-warmup S        unrecorded arrivals before each generator run (default $GEN_WARMUP)
  --targets LIST        pglittle,pgbouncer (default both)
  --no-build            use the existing target/release/pglittle
  --keep                keep the temporary directory
EOF
}

while (($#)); do
  case "$1" in
    --pool-size) POOL_SIZE=$2; shift ;;
    --sleep-ms) SLEEP_MS=$2; shift ;;
    --search-steps) SEARCH_STEPS=$2; shift ;;
    --search-duration) SEARCH_DURATION=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --wait-timeout) WAIT_TIMEOUT=$2; shift ;;
    --max-queue) MAX_QUEUE=$2; shift ;;
    --r-duration) R_DURATION=$2; shift ;;
    --peak-duration) PEAK_DURATION=$2; shift ;;
    --conns) GEN_CONNS=$2; shift ;;
    --gen-warmup) GEN_WARMUP=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
GEN="$HERE/loadbench.py"
bench_setup
target_enabled() { [[ ",$TARGETS," == *",$1,"* ]]; }
if target_enabled pgbouncer && ! [ -x "$PGBOUNCER" ]; then
  die "pgbouncer not found (install it, or --targets pglittle)"
fi
bench_build
bench_start_pg
T0=$SECONDS

SQL="SELECT pg_sleep($(awk -v m="$SLEEP_MS" 'BEGIN { printf "%.3f", m / 1000 }'))"
echo "$SQL;" >"$WORK/script.sql"
SEARCH_JSON="$WORK/search.json"
echo "[]" >"$SEARCH_JSON"

# One pgbench -R step: prints "tps p99 mean late".
pgbench_step() { # port rate duration tag
  local dir="$WORK/txlog/$4" out="$WORK/pgbench-$4.out"
  mkdir -p "$dir"
  timeout --signal=INT $(($3 + 60)) "$PGBENCH" -h 127.0.0.1 -p "$1" -U "$DBUSER" -n -f "$WORK/script.sql" \
    -c "$SEARCH_CLIENTS" -j 2 -T "$3" ${2:+-R "$2"} -l --log-prefix="$dir/tx" "$DB" >"$out" 2>&1 ||
    { tail -20 "$out" >&2; die "pgbench $4 failed"; }
  local tps n mean p99 bad late
  tps=$(awk '/^tps = .*without initial connection time/ { print $3 }' "$out")
  read -r n mean p99 bad < <(python3 "$HELPER" txstats "$dir"/tx.*)
  # Transactions that started more than 50 ms after their schedule.
  late=$(cat "$dir"/tx.* | awk 'NF >= 7 && $7 > 50000 { n++ } END { print n + 0 }')
  rm -rf "$dir"
  echo "$tps $p99 $mean $late"
}

start_pglittle search "pool_size = $POOL_SIZE" 'query_wait_timeout = "120s"'
log "capacity probe: closed-loop pgbench, $SEARCH_CLIENTS clients, 10 s"
read -r CAP _ _ _ < <(pgbench_step "$PGL_PORT" "" 10 probe)
log "capacity: $CAP tx/s (pool $POOL_SIZE x $SLEEP_MS ms = $((POOL_SIZE * 1000 / SLEEP_MS))/s at most)"

add_search() { # rate tps p99 mean late ok
  python3 - "$SEARCH_JSON" "$@" <<'EOF'
import json, sys
path, rate, tps, p99, mean, late, ok = sys.argv[1:]
s = json.load(open(path))
s.append({"rate": int(rate), "tps": float(tps), "p99": float(p99), "mean": float(mean),
          "late": int(late), "ok": ok == "1"})
json.dump(s, open(path, "w"))
EOF
}

if [ -z "$RATE" ]; then
  LO=$(awk -v c="$CAP" 'BEGIN { printf "%d", c * 0.5 }')
  HI=$(awk -v c="$CAP" 'BEGIN { printf "%d", c * 1.02 }')
  # LO is assumed sustainable; check it first.
  read -r tps p99 mean late < <(pgbench_step "$PGL_PORT" "$LO" "$SEARCH_DURATION" "search-$LO")
  ok=$(awk -v p="$p99" -v l="$P99_LIMIT_MS" 'BEGIN { print (p < l) ? 1 : 0 }')
  add_search "$LO" "$tps" "$p99" "$mean" "$late" "$ok"
  log "R search: rate $LO -> tps $tps p99 ${p99}ms ($([ "$ok" = 1 ] && echo ok || echo too slow))"
  ((ok)) || die "even half the measured capacity ($LO/s) has p99 >= ${P99_LIMIT_MS} ms; is the machine busy?"
  RATE=$LO
  P99_AT_R=$p99
  for ((i = 0; i < SEARCH_STEPS; i++)); do
    mid=$(((LO + HI) / 2))
    read -r tps p99 mean late < <(pgbench_step "$PGL_PORT" "$mid" "$SEARCH_DURATION" "search-$mid")
    ok=$(awk -v p="$p99" -v l="$P99_LIMIT_MS" 'BEGIN { print (p < l) ? 1 : 0 }')
    add_search "$mid" "$tps" "$p99" "$mean" "$late" "$ok"
    log "R search: rate $mid -> tps $tps p99 ${p99}ms ($([ "$ok" = 1 ] && echo ok || echo too slow))"
    if ((ok)); then LO=$mid; RATE=$mid; P99_AT_R=$p99; else HI=$mid; fi
  done
else
  read -r tps p99 mean late < <(pgbench_step "$PGL_PORT" "$RATE" "$SEARCH_DURATION" "given-$RATE")
  ok=$(awk -v p="$p99" -v l="$P99_LIMIT_MS" 'BEGIN { print (p < l) ? 1 : 0 }')
  add_search "$RATE" "$tps" "$p99" "$mean" "$late" "$ok"
  P99_AT_R=$p99
fi
stop_pid "$PGL_PID" INT
log "R = $RATE/s (pgbench p99 ${P99_AT_R} ms)"
if [ -z "$WAIT_TIMEOUT" ]; then
  WAIT_TIMEOUT=$(awk -v p="$P99_AT_R" 'BEGIN { t = int(2 * p + 0.5); if (t < 20) t = 20; print t }')
fi
RATE2=$((2 * RATE))

RUNS=()
gen() { # label port rate duration
  local f="$WORK/gen-${#RUNS[@]}.json" bg
  bg=$(busy_pct 1)
  log "generator: $1 at $3/s for $4 s (+${GEN_WARMUP}s warm-up); machine ${bg}% busy before"
  python3 "$GEN" loadgen --port "$2" --user "$DBUSER" --password "$DBPASS" --db "$DB" \
    --rate "$3" --duration "$4" --warmup "$GEN_WARMUP" --conns "$GEN_CONNS" --sql "$SQL" --label "$1" --bg-busy "$bg" >"$f" 2>"$f.err" ||
    { cat "$f.err" >&2; die "generator $1 failed"; }
  RUNS+=("$f")
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("  ok", r["ok"], "p99", r["ok_p99_ms"], "ms, shed", r["shed"], ", timeouts", r["wait_timeout"], ", other", r["other"] + r["conn_lost"] + r["client_timeout"], ", unfinished", r["unfinished"], ", admitted/s", r["ok_per_s_2nd_half"])' "$f" >&2
}

SHED_PGL="?" TIMEOUTS_PGL="?"
if target_enabled pglittle; then
  start_pglittle shed "pool_size = $POOL_SIZE" "query_wait_timeout = \"${WAIT_TIMEOUT}ms\"" \
    "max_queue = $MAX_QUEUE" "shed_on_predicted_wait = true"
fi
if target_enabled pgbouncer; then start_pgbouncer peak "$POOL_SIZE"; fi
for phase in R 2R; do
  rate=$RATE dur=$R_DURATION
  [ "$phase" = 2R ] && rate=$RATE2 dur=$PEAK_DURATION
  if target_enabled pglittle; then
    gen "pglittle @ $phase" "$PGL_PORT" "$rate" "$dur"
    kill -0 "$PGL_PID" 2>/dev/null || die "pglittle died at $phase"
  fi
  if target_enabled pgbouncer; then
    gen "PgBouncer @ $phase" "$PGB_PORT" "$rate" "$dur"
    kill -0 "$PGB_PID" 2>/dev/null || die "PgBouncer died at $phase"
  fi
done
if target_enabled pglittle; then
  SHED_PGL=$(pglittle_metric pglittle_clients_shed_total)
  TIMEOUTS_PGL=$(pglittle_metric pglittle_wait_timeouts_total)
  log "pglittle_clients_shed_total = $SHED_PGL, pglittle_wait_timeouts_total = $TIMEOUTS_PGL"
  stop_pid "$PGL_PID" INT
fi
if target_enabled pgbouncer; then stop_pid "$PGB_PID" TERM; fi
ELAPSED=$((SECONDS - T0))

mkdir -p "$HERE/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
REPORT="$HERE/results/peak-$STAMP.md"
INTRO="R = **$RATE/s** (capacity probe: $CAP tx/s closed-loop; pool $POOL_SIZE x ${SLEEP_MS} ms); pgbench p99 at R: $P99_AT_R ms. Overload runs: pglittle with query_wait_timeout = ${WAIT_TIMEOUT}ms, max_queue = $MAX_QUEUE, shed_on_predicted_wait = true (over both its runs, warm-ups included: pglittle_clients_shed_total $SHED_PGL, pglittle_wait_timeouts_total $TIMEOUTS_PGL); PgBouncer $("$PGBOUNCER" --version 2>/dev/null | head -1 | awk '{ print $2 }') with default_pool_size $POOL_SIZE and its default query_wait_timeout (120 s)."
python3 - "$WORK/meta.json" "$SEARCH_JSON" "$POOL_SIZE" "$INTRO" <<'EOF'
import json, sys
path, search, pool, intro = sys.argv[1:]
json.dump({"search": json.load(open(search)), "pool_size": pool, "intro": intro}, open(path, "w"))
EOF
{
  echo "# pglittle 2x peak, $STAMP"
  echo
  echo "- command: \`integration/bench/peak.sh${ORIG_ARGS:+ $ORIG_ARGS}\` (pool $POOL_SIZE, \`$SQL\`, search: $SEARCH_CLIENTS pgbench clients, -T $SEARCH_DURATION, $SEARCH_STEPS bisection steps; generator: $GEN_CONNS connections, ${R_DURATION}s at R, ${PEAK_DURATION}s at 2R, each after ${GEN_WARMUP}s unrecorded)"
  echo "- pglittle $REV_DESC"
  echo "- $("$PGBIN/postgres" --version), $("$PGBENCH" --version), $("$PGBOUNCER" --version 2>/dev/null | head -1)"
  echo "- machine: $(machine_desc); shared with other work; measuring took ${ELAPSED}s"
  echo
  python3 "$GEN" peak-report "$WORK/meta.json" "${RUNS[@]}"
} >"$REPORT"
cat "$REPORT"
log "written to ${REPORT#"$REPO"/}"
