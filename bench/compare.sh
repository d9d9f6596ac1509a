#!/usr/bin/env bash
# Requests/s of two gateway binaries on the same load, alternating (A B A B …) so drift hits both
# equally: wrk over HTTPS keep-alive to the in-process worker's /v1/models, each binary on its
# embedded default policy (development mode), one proxy thread. Prints each round and the
# medians with the ratio B/A, in requests/s and in CPU-µs per request (user+system time of the
# gateway's process ÷ requests answered). Use it to price a change: build the old commit in a
# worktree.
#
#   bench/compare.sh OLD_BINARY NEW_BINARY
#   ROUNDS=5 DURATION=20s CONNECTIONS=100 bench/compare.sh a/portcullis b/portcullis
#   LOG_LEVEL=info bench/compare.sh a b     # with the access log on (default warn: off), in
#                                           # JSON (LOG_FORMAT=pretty for the development format)
#   URL_PATH=/healthz bench/compare.sh a b  # another path (default /v1/models)
#   CONFIG=dir URL_PATH=/small bench/compare.sh a b
#                                           # each gateway on a copy of dir (its portcullis.toml,
#                                           # policies, certificates) instead of the embedded
#                                           # defaults, e.g. a plain route to an upstream you run
#   PIN=0 bench/compare.sh a b              # by default the gateways run on core 0 and wrk on
#                                           # the others
#   H2=1 bench/compare.sh a b               # HTTP/2: h2load with CONNECTIONS connections (default
#                                           # 10) of STREAMS concurrent streams each (default 100)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/compare.sh BINARY_A BINARY_B"; exit 2; }
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
H2=${H2:-0}
if [ "$H2" = 1 ]; then CONNECTIONS=${CONNECTIONS:-10}; else CONNECTIONS=${CONNECTIONS:-50}; fi
STREAMS=${STREAMS:-100}
LOG_LEVEL=${LOG_LEVEL:-warn}
LOG_FORMAT=${LOG_FORMAT:-json}
URL_PATH=${URL_PATH:-/v1/models}
PX=() LD=()
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    PX=(taskset -c 0) LD=(taskset -c "1-$(($(nproc) - 1))")
fi
CLK_TCK=$(getconf CLK_TCK)
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v h2load >/dev/null 2>&1 || [ "$H2" != 1 ] || { apt-get update -qq && apt-get install -y -qq nghttp2-client; }

WORK=$(mktemp -d)
trap 'kill $GA $GB 2>/dev/null || true; rm -rf "$WORK"' EXIT
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # binary, folder → "https_port pid"
    local dir=$2 port admin
    mkdir -p "$dir"
    local config=()
    if [ -n "${CONFIG:-}" ]; then
        cp -r "$CONFIG"/. "$dir"/
        config=(--config portcullis.toml)
    fi
    port=$(free); admin=$(free)
    # h2load keeps its connections for the whole run: no stream limit ends them (GOAWAY).
    local h2=()
    [ "$H2" = 1 ] && h2=(PORTCULLIS_MAX_REQUESTS_PER_CONNECTION=0)
    (cd "$dir" && exec env PORTCULLIS_HTTPS_ADDR="127.0.0.1:$port" PORTCULLIS_ADMIN_ADDR="127.0.0.1:$admin" \
        PORTCULLIS_HTTP_ADDR=off PORTCULLIS_LOG_LEVEL="$LOG_LEVEL" PORTCULLIS_LOG_FORMAT="$LOG_FORMAT" "${h2[@]}" "${PX[@]}" "$1" serve "${config[@]}" >gateway.log 2>&1) &
    local pid=$!
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break
        sleep 0.1
    done
    echo "$port $pid"
}
read -r PA GA < <(start "$A" "$WORK/a")
read -r PB GB < <(start "$B" "$WORK/b")

run() { # port pid → "requests/s CPU-µs-per-request"
    local out t0 t1
    t0=$(awk '{print $14 + $15}' "/proc/$2/stat")
    if [ "$H2" = 1 ]; then
        out=$("${LD[@]}" h2load -D "${DURATION%s}" -c "$CONNECTIONS" -m "$STREAMS" -t 1 "https://127.0.0.1:$1$URL_PATH")
        t1=$(awk '{print $14 + $15}' "/proc/$2/stat")
        if ! echo "$out" | grep -q " 0 failed, 0 errored"; then
            echo "failed requests on port $1:" >&2
            echo "$out" >&2
            exit 1
        fi
        echo "$out" | awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" '/^finished in/ {r = $4}
            /^status codes:/ {n = $3}
            END {printf "%s %.1f\n", r, n ? t * 1e6 / hz / n : 0}'
        return
    fi
    out=$("${LD[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "https://127.0.0.1:$1$URL_PATH")
    t1=$(awk '{print $14 + $15}' "/proc/$2/stat")
    if echo "$out" | grep -q "Non-2xx"; then
        echo "non-2xx answers on port $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$out" | awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" '/Requests\/sec/ {r = $2} /requests in/ {n = $1}
        END {printf "%s %.1f\n", r, n ? t * 1e6 / hz / n : 0}'
}

declare -a RA RB UA UB
for r in $(seq "$ROUNDS"); do
    read -r rps us < <(run "$PA" "$GA"); RA+=("$rps"); UA+=("$us")
    read -r rps us < <(run "$PB" "$GB"); RB+=("$rps"); UB+=("$us")
    echo "round $r: A ${RA[-1]} req/s ${UA[-1]} CPU-µs/req  B ${RB[-1]} req/s ${UB[-1]} CPU-µs/req"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
MA=$(median "${RA[@]}") MB=$(median "${RB[@]}")
CA=$(median "${UA[@]}") CB=$(median "${UB[@]}")
echo "median A $MA req/s, B $MB req/s, B/A $(awk -v a="$MA" -v b="$MB" 'BEGIN {printf "%.2f", b / a}')"
echo "median A $CA CPU-µs/req, B $CB CPU-µs/req, B/A $(awk -v a="$CA" -v b="$CB" 'BEGIN {printf "%.2f", a ? b / a : 0}')"
