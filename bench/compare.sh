#!/usr/bin/env bash
# Requests/s of two gateway binaries on the same load, alternating (A B A B …) so drift hits both
# equally: wrk over HTTPS keep-alive to the in-process worker's /v1/models, each binary on its
# embedded default policy (development mode), one proxy thread. Prints each round and the
# medians with the ratio B/A. Use it to price a change: build the old commit in a worktree.
#
#   bench/compare.sh OLD_BINARY NEW_BINARY
#   ROUNDS=5 DURATION=20s CONNECTIONS=100 bench/compare.sh a/portcullis b/portcullis
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/compare.sh BINARY_A BINARY_B"; exit 2; }
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }

WORK=$(mktemp -d)
trap 'kill $GA $GB 2>/dev/null || true; rm -rf "$WORK"' EXIT
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # binary, folder → "https_port pid"
    local dir=$2 port admin
    mkdir -p "$dir"
    port=$(free); admin=$(free)
    (cd "$dir" && exec env PORTCULLIS_HTTPS_ADDR="127.0.0.1:$port" PORTCULLIS_ADMIN_ADDR="127.0.0.1:$admin" \
        PORTCULLIS_HTTP_ADDR=off PORTCULLIS_LOG_LEVEL=warn "$1" serve >gateway.log 2>&1) &
    local pid=$!
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break
        sleep 0.1
    done
    echo "$port $pid"
}
read -r PA GA < <(start "$A" "$WORK/a")
read -r PB GB < <(start "$B" "$WORK/b")

run() { # port → requests/s
    local out
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "https://127.0.0.1:$1/v1/models")
    if echo "$out" | grep -q "Non-2xx"; then
        echo "non-2xx answers on port $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$out" | awk '/Requests\/sec/ {print $2}'
}

declare -a RA RB
for r in $(seq "$ROUNDS"); do
    RA+=("$(run "$PA")")
    RB+=("$(run "$PB")")
    echo "round $r: A ${RA[-1]}  B ${RB[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
MA=$(median "${RA[@]}")
MB=$(median "${RB[@]}")
echo "median A $MA req/s, B $MB req/s, B/A $(awk -v a="$MA" -v b="$MB" 'BEGIN {printf "%.2f", b / a}')"
