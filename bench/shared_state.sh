#!/usr/bin/env bash
# Global rate limits (shared through Redis) against local ones, on one machine and one run.
#
# Three Portcullis instances with the same public route to the in-process worker and one
# rate limit that never triggers, differing only in the limit:
#   local        scope = "local" (per replica, no Redis)
#   global       scope = "global", a busy limit (1e9/s): tokens are reserved in batches of 1000
#   global-exact scope = "global", a limit under 200/s: one Redis round trip per request
# wrk runs against each in turn, ROUNDS times alternating; the table shows medians and ratios
# to local, and the Redis round trips per request each instance made (from its /metrics).
#
#   bench/shared_state.sh                       # 3 rounds of 5 s
#   ROUNDS=5 DURATION=10 bench/shared_state.sh
#
# Writes bench/results/shared-state-<date>.md. Needs root once to install wrk and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
OUT=${OUT:-bench/results/shared-state-$(date +%F).md}

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
systemctl stop redis-server >/dev/null 2>&1 || true

echo "building (release)…"
cargo build --release --locked --bin portcullis 2>&1 | tail -1
BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}

W=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$W/redis.pid" ] && kill "$(cat "$W/redis.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

REDIS=16399
redis-server --bind 127.0.0.1 --port $REDIS --save "" --appendonly no --dir "$W" \
    --daemonize yes --pidfile "$W/redis.pid" --logfile "$W/redis.log"
for _ in $(seq 50); do redis-cli -p $REDIS ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

declare -A PORT=([local]=18461 [global]=18462 [global-exact]=18463)
declare -A ADMIN=([local]=19961 [global]=19962 [global-exact]=19963)
declare -A LIMIT=(
    [local]='requests = 1000000000
burst = 1000000000'
    [global]='requests = 1000000000
burst = 1000000000
scope = "global"'
    [global-exact]='requests = 10000000
per_seconds = 86400
burst = 10000000
scope = "global"'
)
CONTENDERS=(local global global-exact)
for c in "${CONTENDERS[@]}"; do
    mkdir -p "$W/$c/policies"
    cat >"$W/$c/portcullis.toml" <<EOF
mode = "development"
threads = 1
[listeners]
https = "127.0.0.1:${PORT[$c]}"
http = "off"
admin = "127.0.0.1:${ADMIN[$c]}"
[log]
format = "json"
level = "warn"
EOF
    cat >"$W/$c/policies/bench.toml" <<EOF
[shared_state]
url = "redis://127.0.0.1:$REDIS/0"
key_prefix = "bench-$c:"

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true

[[limits]]
name = "per-ip"
key = ["ip"]
${LIMIT[$c]}
EOF
    (cd "$W/$c" && exec "$BIN" serve --config portcullis.toml >gateway.log 2>&1) &
    PIDS+=($!)
done
for c in "${CONTENDERS[@]}"; do
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:${ADMIN[$c]}/ready" >/dev/null && break; sleep 0.1; done
    code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:${PORT[$c]}/v1/models" || true)
    [ "$code" = 200 ] || { echo "$c answers $code"; tail -5 "$W/$c/gateway.log"; exit 1; }
done

metric() { curl -s "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
declare -A R
for round in $(seq "$ROUNDS"); do
    for c in "${CONTENDERS[@]}"; do
        rps=$(wrk -t1 -c50 -d"${DURATION}s" "https://127.0.0.1:${PORT[$c]}/v1/models" |
            awk '/Requests\/sec/ {print $2}')
        R[$c]="${R[$c]:-} $rps"
        echo "round $round  $c  $rps req/s"
    done
done

median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
base=$(median "${R[local]}")
{
    echo "# Global (Redis) against local rate limits, $(date +%F)"
    echo
    echo "\`bench/shared_state.sh\` (ROUNDS=$ROUNDS, DURATION=${DURATION}s, wrk -t1 -c50 keep-alive over TLS, one proxy thread each)."
    echo "Machine: $(nproc) cores, $(redis-server --version | awk '{print $1, $2, $3}') on loopback; load generator, gateways and Redis share the cores."
    echo
    echo "| limit | req/s (median) | ratio to local | Redis round trips | admitted from reservations |"
    echo "|---|---|---|---|---|"
    for c in "${CONTENDERS[@]}"; do
        m=$(median "${R[$c]}")
        echo "| $c | $m | $(ratio "$m" "$base") | $(metric "$c" portcullis_shared_state_round_trips_total) | $(metric "$c" portcullis_shared_state_reserved_total) |"
    done
    echo
    echo "Runs: $(for c in "${CONTENDERS[@]}"; do printf '%s:%s; ' "$c" "${R[$c]}"; done)"
} | tee "$OUT"
