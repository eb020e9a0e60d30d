#!/usr/bin/env bash
# Runs every cargo fuzz target of fuzz/ for a fixed time and reports executions and crashes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Seeds fuzz/corpus/<target>/ from shared/fixtures/mysql-binlogs/ (scripts/fuzz-seed.py; the
# corpora are not committed, what the fuzzer adds stays there for the next run), builds the
# targets, runs them one after another under `nice -n 15`, prints per target the executions
# and crashes and a total. Exits 1 when a target crashed (its input is in
# fuzz/artifacts/<target>/, its log in fuzz/logs/<target>.log), 2 on a setup failure.
#
# Why RUSTC_BOOTSTRAP=1: cargo fuzz builds with nightly-only rustc flags
# (-Zsanitizer=address, sancov passes). Only the stable toolchain is installed here and no
# other can be fetched, so the stable compiler is told to accept them. It is set for the fuzz
# build only: the product and its tests build with plain stable.
#
# cargo fuzz 0.13 builds with ASan and -Cdebug-assertions (so integer overflow panics too).
# Environment: FUZZ_BUILD_FLAGS (extra `cargo fuzz build`/`run` flags, e.g. `-s none` for no
# sanitizer: several times the executions per second; safe Rust gains little from ASan).
set -uo pipefail

secs=${1:-60}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
export RUSTC_BOOTSTRAP=1
read -r -a build_flags <<<"${FUZZ_BUILD_FLAGS:-}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(row_image jsonb decimal_temporal binlog_events receiver_body)
fi

if ! command -v cargo-fuzz >/dev/null; then
    nice -n 15 cargo install cargo-fuzz --locked || exit 2
fi

fixtures=""
for d in "$root" "$root"/.. "$root"/../.. "$root"/../../..; do
    if [ -d "$d/shared/fixtures/mysql-binlogs" ]; then
        fixtures="$d/shared/fixtures/mysql-binlogs"
        break
    fi
done
[ -n "$fixtures" ] || { echo "no shared/fixtures/mysql-binlogs above $root" >&2; exit 2; }
python3 scripts/fuzz-seed.py "$fixtures" fuzz/corpus || exit 2

cd fuzz || exit 2
nice -n 15 cargo fuzz build "${build_flags[@]}" >/dev/null 2>build.log \
    || { tail -30 build.log >&2; echo "cargo fuzz build failed (fuzz/build.log)" >&2; exit 2; }
mkdir -p logs

total=0
crashed=0
printf '%-18s %12s %10s %8s  %s\n' target executions exec/s crashes result
for t in "${targets[@]}"; do
    mkdir -p "artifacts/$t" "corpus/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: the decoders' memory is
    # bounded by their input.
    nice -n 15 cargo fuzz run "${build_flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"logs/$t.log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    if [ -z "$execs" ]; then
        # A crash ends the run before the final stats: take the last status line.
        execs=$(grep -oE '^#[0-9]+' "logs/$t.log" | tr -d '#' | tail -1)
    fi
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    result=ok
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        result="CRASH (exit $rc): fuzz/logs/$t.log, fuzz/artifacts/$t/"
        crashed=1
        [ "$crashes" -eq 0 ] && crashes=1
    fi
    printf '%-18s %12s %10s %8s  %s\n' "$t" "${execs:-0}" "${rate:-?}" "$crashes" "$result"
    total=$((total + ${execs:-0}))
done
printf '%-18s %12s\n' total "$total"
exit "$crashed"
