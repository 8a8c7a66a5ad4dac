#!/usr/bin/env bash
# Fault battery: TPC-B clients through pglittle and through PgBouncer (the
# same clients, pool sizes and faults), against a real PostgreSQL, with the
# client-visible errors counted per fault and the TPC-B balances checked
# after every run.
#
#   integration/faults.sh [--seconds N] [--clients N] [--no-build]
#
# Faults (each in a run of its own, injected FAULT_AT seconds in):
#   kill_active      pg_terminate_backend of every backend in a transaction
#   kill_idle        pg_terminate_backend of every backend idle in the pool
#                    (POOL/2 clients run, so servers sit idle; CLIENTS more
#                    start right after the kill and take every server)
#   primary_restart  pg_ctl restart -m fast
# Not run here (they need a userspace proxy on the server path; the
# integration tests cover a silent server and a stopped replica):
#   partition, added latency, a server that accepts and says nothing.
#
# Prints a markdown table and writes integration/bench/results/faults-<UTC>.md.
set -euo pipefail
SCALE=1
PG_MAX_CONNECTIONS=200
BENCH_NAME=faults
SECONDS_PER_RUN=12
FAULT_AT=4
CLIENTS=16
POOL=8
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
log() { echo "faults: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/bench/lib.sh"
bench_setup
bench_build
bench_start_pg
PY="$HERE/faults.py"
psql_q() { "${PSQL[@]}" -d "$DB" -At -c "$1"; }

fault_cmd() { # FAULT -> a shell command
  local kill_where
  case "$1" in
    kill_active) kill_where="state in ('active', 'idle in transaction')" ;;
    kill_idle) kill_where="state = 'idle'" ;;
    primary_restart)
      printf '%q ' "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w -t 60 restart -l "$WORK/pg.log"
      return ;;
  esac
  printf '%q ' "${PSQL[@]}" -d "$DB" -c \
    "select count(pg_terminate_backend(pid)) from pg_stat_activity where usename = '$DBUSER' and pid <> pg_backend_pid() and $kill_where"
}

balances_agree() {
  psql_q "select (select sum(abalance) from pgbench_accounts) = h and
                 (select sum(tbalance) from pgbench_tellers) = h and
                 (select sum(bbalance) from pgbench_branches) = h
          from (select coalesce(sum(delta), 0) h from pgbench_history) x"
}

RESULTS=()
for fault in kill_active kill_idle primary_restart; do
  for target in pglittle pgbouncer; do
    case "$target" in
      # Both keep the whole pool open (so there are idle servers to kill).
      pglittle) start_pglittle "$fault" "pool_size = $POOL" "min_pool_size = $POOL"; port=$PGL_PORT; pid=$PGL_PID ;;
      pgbouncer) start_pgbouncer "$fault" "$POOL" "min_pool_size = $POOL"; port=$PGB_PORT; pid=$PGB_PID ;;
    esac
    log "$fault through $target"
    # Idle servers exist only with fewer clients than servers: half the
    # pool runs, and after the kill a burst takes every server.
    clients=$CLIENTS burst=0
    if [ "$fault" = kill_idle ]; then clients=$((POOL / 2)) burst=$CLIENTS; fi
    out=$(python3 "$PY" run --port "$port" --user "$DBUSER" --password "$DBPASS" --db "$DB" \
      --clients "$clients" --burst "$burst" --seconds "$SECONDS_PER_RUN" --fault-at "$FAULT_AT" \
      --fault-cmd "$(fault_cmd "$fault")") || die "faults.py failed"
    ok=$(balances_agree)
    RESULTS+=("$fault|$target|$out|$ok")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$HERE/results"
report="$HERE/results/faults-$stamp.md"
{
  echo "## Fault battery, $stamp"
  echo
  echo "pglittle $REV_DESC and PgBouncer $("$PGBOUNCER" --version 2>/dev/null | head -1 | awk '{print $2}'), pool of $POOL each; $CLIENTS TPC-B clients (7 round trips a transaction; for kill_idle $((POOL / 2)), and $CLIENTS more after the kill), ${SECONDS_PER_RUN}s a run, the fault at ${FAULT_AT}s; $(machine_desc)."
  echo
  echo "| fault | pooler | tx before | tx after | client errors (by SQLSTATE) | clients with errors | failed logins | first commit after the fault | balances agree |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for r in "${RESULTS[@]}"; do
    IFS='|' read -r fault target json ok <<<"$r"
    python3 - "$fault" "$target" "$json" "$ok" <<'PYEOF'
import json, sys
fault, target, raw, ok = sys.argv[1:]
d = json.loads(raw)
errs = ", ".join(f"{k}: {v}" for k, v in sorted(d["errors"].items())) or "none"
total = sum(d["errors"].values())
rec = "-" if d["recovered_s"] is None else f'{d["recovered_s"]}s'
agree = "yes" if ok == "t" else "NO"
print(f"| {fault} | {target} | {d['before']} | {d['after']} | {total} ({errs}) | "
      f"{d['clients_with_errors']} | {d['failed_logins']} | {rec} | {agree} |")
PYEOF
  done
  echo
  echo "Reproduce: \`integration/faults.sh --seconds $SECONDS_PER_RUN --clients $CLIENTS\`"
} | tee "$report"
