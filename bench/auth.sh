#!/usr/bin/env bash
# Requests/s through the gateway with no auth, the static worker token, and an ES256 JWT
# (verified once, then served from the token cache), in one run: wrk against the in-process
# worker's /v1/models over HTTPS keep-alive, the three cases alternating (A B C A B C …) so drift
# hits all equally. Prints each round and the medians with ratios to no-auth.
#
#   bench/auth.sh                 # defaults: 3 rounds of 10 s, 50 connections, 1 proxy thread
#   ROUNDS=5 DURATION=20s CONNECTIONS=100 THREADS=2 bench/auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}

if ! command -v wrk >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk
fi
command -v cmake >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq cmake; }
cargo build --release --locked --bin portcullis >/dev/null
BIN=$PWD/target/release/portcullis

WORK=$(mktemp -d)
trap 'kill $GW 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/policies" "$WORK/certs" "$WORK/keys"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$WORK/keys/es.key"
openssl pkey -in "$WORK/keys/es.key" -pubout -out "$WORK/keys/es.pub" 2>/dev/null

cat > "$WORK/policies/bench.toml" <<POLICY
[auth]
default_provider = "jwt"

[[auth.issuers]]
name = "bench"
issuer = "portcullis-rooms"
algorithms = ["ES256"]
keys = [{ kid = "k1", algorithm = "ES256", pem_file = "../keys/es.pub" }]

[[upstreams]]
name = "worker"
kind = "worker"

[[upstreams]]
name = "rooms"
kind = "rooms"

[[routes]]
name = "open"
hosts = ["open.test"]
path_prefix = "/v1/"
upstream = "worker"
public = true

[[routes]]
name = "static"
hosts = ["static.test"]
path_prefix = "/v1/"
upstream = "worker"
auth = "static"

[[routes]]
name = "jwt"
hosts = ["jwt.test"]
path_prefix = "/v1/"
upstream = "worker"
auth = "jwt"

[rooms]
keys = [{ kid = "k1", algorithm = "ES256", public_key_file = "../keys/es.pub", private_key_file = "../keys/es.key" }]

[worker]
models = ["bench"]
POLICY

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADMIN=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/portcullis.toml" <<CONFIG
mode = "development"
threads = $THREADS
[listeners]
https = "127.0.0.1:$PORT"
http = "off"
admin = "127.0.0.1:$ADMIN"
[log]
level = "warn"
CONFIG

STATIC_TOKEN=$($BIN token generate)
JWT=$($BIN token mint --config "$WORK/portcullis.toml" --room bench --sub bench --ttl 1d --kid k1)
PORTCULLIS_WORKER_TOKEN=$STATIC_TOKEN PORTCULLIS_TOKEN_FILE=$WORK/token.yaml \
    $BIN serve --config "$WORK/portcullis.toml" >"$WORK/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$ADMIN/ready" >/dev/null && break
    sleep 0.1
done

run() { # host, auth header → requests/s
    local out
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "Host: $1" ${2:+-H "Authorization: Bearer $2"} \
        "https://127.0.0.1:$PORT/v1/models")
    if echo "$out" | grep -q "Non-2xx"; then
        echo "non-2xx answers for $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "$out" | awk '/Requests\/sec/ {print $2}'
}

declare -a NONE STATIC JWTS
for r in $(seq "$ROUNDS"); do
    NONE+=("$(run open.test "")")
    STATIC+=("$(run static.test "$STATIC_TOKEN")")
    JWTS+=("$(run jwt.test "$JWT")")
    echo "round $r: none ${NONE[-1]}  static ${STATIC[-1]}  es256-jwt ${JWTS[-1]}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
M_NONE=$(median "${NONE[@]}")
M_STATIC=$(median "${STATIC[@]}")
M_JWT=$(median "${JWTS[@]}")
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, $THREADS proxy thread(s)"
printf '%-12s %12s %8s\n' "auth" "median rps" "ratio"
printf '%-12s %12.0f %8.2f\n' "none" "$M_NONE" 1
printf '%-12s %12.0f %8.2f\n' "static" "$M_STATIC" "$(awk -v a="$M_STATIC" -v b="$M_NONE" 'BEGIN {print a / b}')"
printf '%-12s %12.0f %8.2f\n' "es256-jwt" "$M_JWT" "$(awk -v a="$M_JWT" -v b="$M_NONE" 'BEGIN {print a / b}')"
echo "signature checks: $(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^portcullis_token_signature_checks_total/ {print $2}')"
