#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), on the nightly
# toolchain, from the corpus kept in integration/fuzz/corpus, and prints
# the executions and crashes per target (the figures in BENCHMARKS.md).
#
#   integration/fuzz.sh [SECONDS] [TARGET...]
#
# Needs: rustup's nightly toolchain and `cargo install cargo-fuzz`.
#
# FUZZ_SANITIZER (default "none"): pglittle has no unsafe code of its own,
# so a panic, not a memory error, is what the targets look for, and without
# AddressSanitizer they run several times faster; "address" turns it on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
dir=integration/fuzz
san="${FUZZ_SANITIZER:-none}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(startup frontend backend_scan sql hint scram_server rewriter)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi
cargo +nightly fuzz build --fuzz-dir "$dir" -O -s "$san" >/dev/null
total=0
crashed=0
printf '%-14s %14s %8s\n' target executions crashes
for t in "${targets[@]}"; do
    mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
    log=$(mktemp)
    status=0
    cargo +nightly fuzz run --fuzz-dir "$dir" -O -s "$san" "$t" "$dir/corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/$t/" >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    crashes=0
    if [ "$status" -ne 0 ]; then
        crashes=1
        crashed=1
        tail -30 "$log" >&2
    fi
    printf '%-14s %14s %8s\n' "$t" "${execs:-0}" "$crashes"
    total=$((total + ${execs:-0}))
    rm -f "$log"
done
printf '%-14s %14s\n' total "$total"
exit "$crashed"
