#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-fuzz (libFuzzer) on the stable toolchain, run by .ci/run:
# each target in fuzz/fuzz_targets for FUZZ_SECONDS (default 60), starting from its corpus in
# fuzz/corpus/<target> (kept in the repository; new inputs go to a scratch folder, so a run
# leaves the checkout as it was). A crash, a failed assertion, a leak or a timeout fails the run
# and leaves the input under fuzz/artifacts/<target>/.
#
# Stable Rust has no sanitizers, so targets build with `-s none`: libFuzzer still finds panics,
# assertion failures, and inputs that hang or exhaust memory.
#   FUZZ_TARGETS  space-separated subset (default: all)
#   FUZZ_JOBS     targets run side by side (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked --quiet cargo-fuzz@0.13.2
command -v c++ >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq g++ >/dev/null
}

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir fuzz)}
jobs=${FUZZ_JOBS:-2}
echo "== building fuzz targets: $(echo "$targets" | xargs)"
# shellcheck disable=SC2086 # one argument per target
for t in $targets; do
    cargo fuzz build --fuzz-dir fuzz -s none "$t"
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
run_one() {
    local t=$1
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    if cargo fuzz run --fuzz-dir fuzz -s none "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1; then
        local runs cov
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$t.log" | awk '{print $2}')
        cov=$(grep -o 'cov: [0-9]*' "$scratch/$t.log" | tail -1 | awk '{print $2}')
        echo "  $t: ${runs:-?} runs in ${seconds} s, coverage ${cov:-?} edges, $(ls "$scratch/$t" | wc -l) new inputs, no crash"
    else
        echo "  $t: FAILED"
        grep -A30 -m1 'panicked\|ERROR: libFuzzer\|==ERROR' "$scratch/$t.log" | head -40
        ls "fuzz/artifacts/$t" | sed 's/^/  artifact: /'
        return 1
    fi
}
failed=0
running=0
for t in $targets; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
[ "$failed" = 0 ] || { echo "fuzzing: a target failed"; exit 1; }
# FUZZ_KEEP=1: fold the inputs that found new coverage into the repository's corpora.
if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    for t in $targets; do
        cargo fuzz run --fuzz-dir fuzz -s none "$t" "fuzz/corpus/$t" "$scratch/$t" -- -merge=1 \
            >"$scratch/$t.merge.log" 2>&1
        echo "  $t: corpus now $(ls "fuzz/corpus/$t" | wc -l) inputs"
    done
fi
echo "fuzzing: ok"
