#!/usr/bin/env bash
# Soak with faults: fixed-rate load while the policy reloads every second, the certificate is
# swapped every 10 s and the external upstream is killed for 5 s of every 20. Reports success
# rates, p99 latency, and the gateway's RSS and open descriptors over time; fails when
#   - a request to the in-process route fails, or one to the killed upstream gets anything but
#     2xx or a clean 502/503 — except a response the upstream died in the middle of, which has
#     no clean ending: its head is out, so the gateway resets the stream. Each such reset must be
#     one the gateway counted in portcullis_responses_aborted_total;
#   - RSS or descriptors grow (last quarter against the first quarter after warm-up: more than
#     20 MiB or 20 descriptors);
#   - the log shows a panic, or a reload or certificate swap was never applied.
#
#   bash scripts/soak.sh                  # 10 minutes, release binary (built when missing)
#   SOAK_SECONDS=120 bash scripts/soak.sh # the short run .ci/run makes (debug binary)
#   RATE=200 ...                          # requests/s per route (default 100)
# PORTCULLIS_BIN names the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${SOAK_SECONDS:-600}
RATE=${RATE:-100}
command -v h2load >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
}
if [ -z "${PORTCULLIS_BIN:-}" ]; then
    if [ "$SECS" -ge 300 ]; then
        cargo build --release --locked --bin portcullis 2>&1 | tail -1
        PORTCULLIS_BIN=$ROOT/target/release/portcullis
    else
        [ -x "$ROOT/target/debug/portcullis" ] || cargo build --locked --bin portcullis
        PORTCULLIS_BIN=$ROOT/target/debug/portcullis
    fi
fi
BIN=$PORTCULLIS_BIN

W=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$W/up.pid" ] && kill "$(cat "$W/up.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port) ADMIN=$(free_port) UP=$(free_port)

# Two certificate pairs from one CA, swapped in turn.
mkdir -p "$W/certs" "$W/pairs" "$W/policies" "$W/www/up"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=soak-ca \
    -keyout "$W/ca.key" -out "$W/ca.pem" 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' >"$W/ext"
for n in 1 2; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$W/pairs/$n.key" -out "$W/pairs/$n.csr" 2>/dev/null
    openssl x509 -req -in "$W/pairs/$n.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
        -days 2 -extfile "$W/ext" -out "$W/pairs/$n.crt" 2>/dev/null
done
cp "$W/pairs/1.crt" "$W/certs/localhost.crt"
cp "$W/pairs/1.key" "$W/certs/localhost.key"
printf 'hello from the upstream\n' >"$W/www/up/x"

policy() {
    cat <<TOML
# reload $1
[[upstreams]]
name = "worker"
kind = "worker"

[[upstreams]]
name = "ext"
kind = "external"
addresses = ["127.0.0.1:$UP"]

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true

[[routes]]
name = "ext"
path_prefix = "/up/"
upstream = "ext"
public = true

[[limits]]
name = "per-ip"
key = ["ip"]
requests = 1000000
burst = $((100000 + $1 % 2))
TOML
}
policy 0 >"$W/policies/p.toml"
cat >"$W/portcullis.toml" <<EOF
mode = "development"
threads = 2
[listeners]
https = "127.0.0.1:$PORT"
http = "off"
admin = "127.0.0.1:$ADMIN"
[tls]
cert_dir = "certs"
default_cert = "localhost"
[log]
format = "json"
level = "info"
# h2load's fixed-rate clients never reconnect: each carries thousands of requests on one
# connection, past the default cap of 1000 per connection.
[network]
max_requests_per_connection = 0
EOF

start_upstream() {
    python3 -m http.server "$UP" --bind 127.0.0.1 --directory "$W/www" >/dev/null 2>&1 &
    echo $! >"$W/up.pid"
}
start_upstream
# The upstream first: a health check that finds it down takes it out for a whole interval.
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$UP/up/x" && break; sleep 0.1; done
(cd "$W" && exec "$BIN" serve --config portcullis.toml >gateway.log 2>&1) &
GW=$!
PIDS+=("$GW")
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$ADMIN/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$ADMIN/ready" >/dev/null || { tail -20 "$W/gateway.log"; exit 1; }

sample() {
    local rss fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$GW/status")
    fds=$(ls "/proc/$GW/fd" | wc -l)
    echo "$1 $rss $fds" >>"$W/samples"
}
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m || index($1, m"{") == 1 {s += $2} END {print s + 0}'; }
gen0=$(metric portcullis_policy_generation)
certs0=$(metric portcullis_cert_reloads_total)
aborted0=$(metric portcullis_responses_aborted_total)

echo "soak: ${SECS}s at $RATE req/s to each of /v1/models (in-process) and /up/x (external), binary $(basename "$(dirname "$BIN")")"
clients=4
per_client=$(((RATE + clients - 1) / clients))
h2load --h1 -c $clients --rps "$per_client" -D "$SECS" --log-file="$W/v1.log" \
    "https://localhost:$PORT/v1/models" >"$W/v1.out" 2>&1 &
LOAD1=$!
# The external route over HTTP/2: a response the killed upstream dies in the middle of can only
# be aborted, which over HTTP/1.1 closes the connection, and h2load's fixed-rate mode does not
# reconnect, so that client would drop out for the rest of the run. Over HTTP/2 the abort resets
# one stream.
h2load -c $clients --rps "$per_client" -D "$SECS" --log-file="$W/up.log" \
    "https://localhost:$PORT/up/x" >"$W/up.out" 2>&1 &
LOAD2=$!
PIDS+=("$LOAD1" "$LOAD2")

start=$(date +%s)
reloads=0 swaps=0 kills=0 pair=1
while kill -0 "$LOAD1" 2>/dev/null || kill -0 "$LOAD2" 2>/dev/null; do
    t=$(($(date +%s) - start))
    reloads=$((reloads + 1))
    policy "$reloads" >"$W/policies/.p.tmp" && mv "$W/policies/.p.tmp" "$W/policies/p.toml"
    if ((t > 0 && t % 10 == 0)); then
        pair=$((3 - pair)) swaps=$((swaps + 1))
        cp "$W/pairs/$pair.key" "$W/certs/.k" && cp "$W/pairs/$pair.crt" "$W/certs/.c"
        mv "$W/certs/.k" "$W/certs/localhost.key" && mv "$W/certs/.c" "$W/certs/localhost.crt"
    fi
    if ((t % 20 == 5)) && [ -f "$W/up.pid" ]; then
        kill "$(cat "$W/up.pid")" 2>/dev/null || true
        rm -f "$W/up.pid"
        kills=$((kills + 1))
    elif ((t % 20 == 10)) && [ ! -f "$W/up.pid" ]; then
        start_upstream
    fi
    if ((t % 5 == 0)); then sample "$t"; fi
    sleep 1
done
sample "$(($(date +%s) - start))"
wait "$LOAD1" "$LOAD2" 2>/dev/null || true
[ -f "$W/up.pid" ] || start_upstream

gen1=$(metric portcullis_policy_generation)
certs1=$(metric portcullis_cert_reloads_total)
aborted=$(($(metric portcullis_responses_aborted_total) - aborted0))
status=0
finding() { echo "FINDING: $*"; status=1; }

report() { # name log
    python3 - "$1" "$2" <<'PY'
import sys, collections
name, path = sys.argv[1], sys.argv[2]
codes, lat = collections.Counter(), []
for line in open(path):
    parts = line.split()
    if len(parts) >= 3:
        codes[parts[1]] += 1
        lat.append(int(parts[2]))
lat.sort()
n = len(lat)
p = lambda q: lat[min(n - 1, int(q * n))] / 1000 if n else 0
ok = sum(v for k, v in codes.items() if k.startswith("2"))
print(f"{name} {n} {ok} {p(0.5):.1f} {p(0.99):.1f} " + ",".join(f"{k}:{v}" for k, v in sorted(codes.items())))
PY
}
read -r _ n1 ok1 p50_1 p99_1 codes1 < <(report v1 "$W/v1.log")
read -r _ n2 ok2 p50_2 p99_2 codes2 < <(report up "$W/up.log")
echo "  /v1/models: $n1 requests, $ok1 2xx ($(awk -v a="$ok1" -v b="$n1" 'BEGIN {printf "%.3f%%", b ? 100 * a / b : 0}')), p50 ${p50_1} ms, p99 ${p99_1} ms  [$codes1]"
echo "  /up/x:      $n2 requests, $ok2 2xx, p50 ${p50_2} ms, p99 ${p99_2} ms  [$codes2] (upstream killed $kills times)"
grep -h 'requests:' "$W/v1.out" "$W/up.out" | sed 's/^/  h2load /'
if [ "$n1" -eq 0 ] || [ "$ok1" != "$n1" ]; then finding "/v1/models: $((n1 - ok1)) of $n1 requests failed"; fi
bad2=$(echo "$codes2" | tr ',' '\n' | grep -vE '^(2[0-9][0-9]|502|503|-1):' || true)
[ -z "$bad2" ] || finding "/up/x: answers other than 2xx/502/503: $bad2"
# h2load logs a stream reset as -1 and counts it as errored. On the in-process route there must
# be none; on the killed upstream's route only the responses the upstream died in the middle
# of, each one counted by the gateway as aborted.
resets2=$(echo "$codes2" | tr ',' '\n' | awk -F: '$1 == "-1" {print $2}')
resets2=${resets2:-0}
errored2=$(sed -nE 's/.* ([0-9]+) errored.*/\1/p' "$W/up.out")
echo "  /up/x: $resets2 responses cut short by the upstream's death and reset; the gateway counted $aborted aborted"
grep -qE ' 0 failed, 0 errored' "$W/v1.out" || finding "h2load v1: $(grep requests: "$W/v1.out")"
[ "${errored2:-x}" = "$resets2" ] || finding "h2load up: $errored2 errored, of which only $resets2 were stream resets: $(grep requests: "$W/up.out")"
[ "$resets2" -le "$aborted" ] || finding "/up/x: $resets2 streams reset, but only $aborted responses aborted by the gateway"

echo "  policy reloads written $reloads, applied $((gen1 - gen0)); certificate swaps $swaps, certificate reloads $((certs1 - certs0))"
[ $((gen1 - gen0)) -gt $((reloads / 2)) ] || finding "most policy reloads were not applied"
[ "$swaps" = 0 ] || [ $((certs1 - certs0)) -ge 1 ] || finding "no certificate swap was applied"

python3 - "$W/samples" <<'PY' || status=1
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
print("  t(s)  RSS(MiB)  fds")
step = max(1, len(rows) // 12)
shown = rows[::step]
if shown[-1] != rows[-1]:
    shown.append(rows[-1])
for t, rss, fds in shown:
    print(f"  {t:4d}  {rss / 1024:8.1f}  {fds:3d}")
warm = rows[len(rows) // 6:] or rows
q = max(1, len(warm) // 4)
first, last = warm[:q], warm[-q:]
avg = lambda rs, i: sum(r[i] for r in rs) / len(rs)
drss = (avg(last, 1) - avg(first, 1)) / 1024
dfds = avg(last, 2) - avg(first, 2)
print(f"  RSS {rows[0][1] / 1024:.1f} → {rows[-1][1] / 1024:.1f} MiB (last quarter vs first after warm-up: {drss:+.1f} MiB); fds {rows[0][2]} → {rows[-1][2]} ({dfds:+.1f})")
bad = []
if drss > 20: bad.append(f"RSS grew {drss:.1f} MiB")
if dfds > 20: bad.append(f"descriptors grew {dfds:.0f}")
for b in bad: print("FINDING: " + b)
sys.exit(1 if bad else 0)
PY
if grep -q 'panicked' "$W/gateway.log"; then finding "panic in the log: $(grep -m1 panicked "$W/gateway.log")"; fi
kill -0 "$GW" 2>/dev/null || finding "the gateway exited"
[ "$status" = 0 ] && echo "soak: ok"
exit "$status"
