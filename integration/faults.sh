#!/usr/bin/env bash
# Fault battery: TPC-B clients through pglittle and through PgBouncer (the
# same clients, pool sizes and faults), against a real PostgreSQL, with the
# client-visible errors counted per fault and the TPC-B balances checked
# after every run.
#
#   integration/faults.sh [--seconds N] [--clients N] [--rounds N]
#                         [--faults a,b,...] [--no-build]
#
# PGLITTLE_BIN=/path (and PGLITTLE_REV=<commit>) runs a prebuilt binary.
#
# Faults (each in a run of its own, injected FAULT_AT seconds in):
#   kill_active      pg_terminate_backend of every backend in a transaction
#   kill_idle        pg_terminate_backend of every backend idle in the pool
#                    (POOL/2 clients run, so servers sit idle; CLIENTS more
#                    start right after the kill and take every server)
#   primary_restart  pg_ctl restart -m fast
# Network faults, through a userspace proxy on the server path of both
# poolers (bench/faultproxy.py; `tc netem` needs a kernel and privileges we
# may not have). Each lasts FAULT_LEN seconds, then the proxy forwards
# normally again, and the run goes on for as long again (NET_SECONDS in
# all). Both poolers get server_connect_timeout = CONNECT_TIMEOUT (PgBouncer
# also server_login_retry = 1).
#   partition        a blackhole: nothing moves on any server connection,
#                    new ones are held silently (no RST), longer than
#                    server_connect_timeout. POOL/2 clients run on a pool
#                    kept at POOL/2 (min_pool_size), and CLIENTS more start
#                    as the partition starts, so each pooler tries to open
#                    servers while it lasts.
#   latency          50 ms more each way on every server connection; CLIENTS
#                    clients on a pool kept full.
#   silent           a server that accepts TCP and then says nothing, on
#                    every new connection (what it accepts in the window
#                    stays silent for ever); connections open before keep
#                    working. Clients as for partition, so the poolers try
#                    to grow the pool into the silent server.
#
# Prints a markdown table and writes integration/bench/results/faults-<UTC>.md.
set -euo pipefail
SCALE=1
PG_MAX_CONNECTIONS=200
BENCH_NAME=faults
SECONDS_PER_RUN=12
FAULT_AT=4
FAULT_LEN=6
NET_SECONDS=16
CONNECT_TIMEOUT=3
LATENCY_MS=50
CLIENTS=16
POOL=8
ROUNDS=1
FAULTS=kill_active,kill_idle,primary_restart,partition,latency,silent
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --faults) FAULTS=$2; shift 2 ;;
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
    partition) proxy_cmd partition; return ;;
    latency) proxy_cmd latency "$LATENCY_MS"; return ;;
    silent) proxy_cmd silent; return ;;
  esac
  printf '%q ' "${PSQL[@]}" -d "$DB" -c \
    "select count(pg_terminate_backend(pid)) from pg_stat_activity where usename = '$DBUSER' and pid <> pg_backend_pid() and $kill_where"
}

proxy_cmd() { # MODE [ARG] -> a shell command that switches the proxy
  printf '%q ' python3 "$HERE/faultproxy.py" ctl --control-port "$PROXY_CTL" "$@"
  printf '>>%q 2>&1' "$WORK/proxy-ctl.log"
}

is_net_fault() { case "$1" in partition | latency | silent) return 0 ;; *) return 1 ;; esac; }

# start_proxy: a fresh fault proxy in front of PostgreSQL -> PROXY_PID,
# SERVER_PORT (which both poolers then use), PROXY_CTL.
start_proxy() {
  local tag=$1
  SERVER_PORT=$(free_port)
  PROXY_CTL=$(free_port)
  python3 "$HERE/faultproxy.py" serve --listen-port "$SERVER_PORT" --upstream-port "$PGPORT" \
    --control-port "$PROXY_CTL" --max-seconds $((NET_SECONDS + 120)) 2>"$WORK/proxy-$tag.log" &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$PROXY_CTL" 30 "$PROXY_PID" || die "faultproxy did not start: $(tail -5 "$WORK/proxy-$tag.log")"
}

sample_metrics() { # SECONDS: pglittle's /metrics, filtered, every 250 ms
  local t0=$EPOCHREALTIME end=$((SECONDS + $1 + 2))
  while ((SECONDS < end)); do
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
      cat <&3' _ "$PGL_METRICS" 2>/dev/null |
      awk -v t="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')" '
        /^pglittle_(servers|clients|server_connect_errors_total|server_connects_total|host_up|errors_total|wait_timeouts_total)[{ ]/ {
          sub(/database="[^"]*",?/, ""); printf "%s %s\n", t, $0 }'
    sleep 0.25
  done
}

balances_agree() {
  psql_q "select (select sum(abalance) from pgbench_accounts) = h and
                 (select sum(tbalance) from pgbench_tellers) = h and
                 (select sum(bbalance) from pgbench_branches) = h
          from (select coalesce(sum(delta), 0) h from pgbench_history) x"
}

JSONL="$WORK/results.jsonl"
: >"$JSONL"
IFS=',' read -r -a FAULT_LIST <<<"$FAULTS"
for round in $(seq "$ROUNDS"); do
  for fault in "${FAULT_LIST[@]}"; do
    for target in pglittle pgbouncer; do
      tag="$fault-$target-$round"
      # Idle servers exist only with fewer clients than servers: half the
      # pool runs, and after the fault a burst asks for every server.
      clients=$CLIENTS burst=0 keep=$POOL seconds=$SECONDS_PER_RUN heal=()
      pgl_extra=() pgb_extra=()
      if [ "$fault" = kill_idle ]; then clients=$((POOL / 2)) burst=$CLIENTS; fi
      unset SERVER_PORT
      if is_net_fault "$fault"; then
        start_proxy "$tag"
        seconds=$NET_SECONDS
        heal=(--heal-at $((FAULT_AT + FAULT_LEN)) --heal-cmd "$(proxy_cmd normal)")
        pgl_extra=("server_connect_timeout = \"${CONNECT_TIMEOUT}s\"")
        pgb_extra=("server_connect_timeout = $CONNECT_TIMEOUT" "server_login_retry = 1")
        if [ "$fault" != latency ]; then clients=$((POOL / 2)) burst=$CLIENTS keep=$((POOL / 2)); fi
      fi
      case "$target" in
        # Both keep `keep` servers open (so there are idle servers to kill).
        pglittle) start_pglittle "$tag" "pool_size = $POOL" "min_pool_size = $keep" "${pgl_extra[@]}"
          port=$PGL_PORT; pid=$PGL_PID ;;
        pgbouncer) start_pgbouncer "$tag" "$POOL" "min_pool_size = $keep" "${pgb_extra[@]}"
          port=$PGB_PORT; pid=$PGB_PID ;;
      esac
      # Let min_pool_size fill before the clients start.
      sleep 1
      log "round $round: $fault through $target"
      # FAULTS_SAMPLE=1: pglittle's server, client and error series every
      # 250 ms into $WORK/metrics-<run>.log (kept with KEEP=1), to see
      # what the pool does during a fault.
      sampler=
      if [ "${FAULTS_SAMPLE:-0}" = 1 ] && [ "$target" = pglittle ]; then
        sample_metrics "$seconds" >"$WORK/metrics-$tag.log" 2>&1 &
        sampler=$!
        PIDS+=("$sampler")
      fi
      out=$(python3 "$PY" run --port "$port" --user "$DBUSER" --password "$DBPASS" --db "$DB" \
        --clients "$clients" --burst "$burst" --seconds "$seconds" --fault-at "$FAULT_AT" \
        --fault-cmd "$(fault_cmd "$fault")" "${heal[@]}") || die "faults.py failed"
      if [ -n "$sampler" ]; then stop_pid "$sampler" TERM; fi
      stop_pid "$pid" TERM
      if is_net_fault "$fault"; then stop_pid "$PROXY_PID" TERM; fi
      ok=$(balances_agree)
      python3 -c 'import json, sys
d = json.loads(sys.argv[1]); d.update(fault=sys.argv[2], pooler=sys.argv[3], round=int(sys.argv[4]), balances=sys.argv[5] == "t")
print(json.dumps(d, sort_keys=True))' "$out" "$fault" "$target" "$round" "$ok" >>"$JSONL"
    done
  done
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$HERE/results"
report="$HERE/results/faults-$stamp.md"
cp "$JSONL" "$HERE/results/faults-$stamp.jsonl"
{
  echo "## Fault battery, $stamp"
  echo
  echo "pglittle $REV_DESC and PgBouncer $("$PGBOUNCER" --version 2>/dev/null | head -1 | awk '{print $2}'), pool of $POOL each; $CLIENTS TPC-B clients (7 round trips a transaction; for kill_idle, partition and silent $((POOL / 2)), and $CLIENTS more as the fault starts), the fault at ${FAULT_AT}s; ${SECONDS_PER_RUN}s a run, or for the network faults ${NET_SECONDS}s with the fault healed at $((FAULT_AT + FAULT_LEN))s and server_connect_timeout ${CONNECT_TIMEOUT}s in both (PgBouncer server_login_retry 1s); $ROUNDS round(s); $(machine_desc)."
  echo
  python3 "$HERE/faults.py" report "$JSONL"
  echo
  echo "Raw per-run data (error list, commit rate per 250 ms): [\`faults-$stamp.jsonl\`](faults-$stamp.jsonl)."
  echo
  echo "Reproduce: \`integration/faults.sh --seconds $SECONDS_PER_RUN --clients $CLIENTS --rounds $ROUNDS --faults $FAULTS\`"
} | tee "$report"
