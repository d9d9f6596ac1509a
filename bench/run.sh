#!/usr/bin/env bash
# Portcullis against nginx and HAProxy on the same machine, load and certificate.
#
# Contenders, each with one worker process/thread, TLS 1.2+1.3 with the same certificate, HTTP/2
# by ALPN, and a keep-alive pool to the same upstream (an nginx serving a 20-byte and a 64 KiB
# body, and a WebSocket echo server):
#   nginx      proxy_pass with keepalive upstream, 1024 idle connections (access log off)
#   haproxy    mode http, http-reuse always (no logging)
#   pc-plain   Portcullis with a plain proxy policy (public route, no headers profile, no HSTS)
#   pc-full    Portcullis with the full policy: ES256 JWT auth (a cached token), rate limits that
#              never trigger, api-strict security headers, HSTS, the access log on
# Scenarios run alternating (nginx haproxy pc-plain pc-full, then again, ROUNDS times) so drift
# hits all alike; the table shows medians and ratios to nginx.
#
#   bench/run.sh                       # 3 rounds of 5 s per scenario, ~10 minutes
#   ROUNDS=5 DURATION=10 bench/run.sh  # longer
#   IDLE=9000 bench/run.sh             # idle connections for the memory scenario
#   PROFILE=pc-full bench/run.sh       # a perf profile of one contender instead of the table
#   HOLD=1 bench/run.sh                # start everything, print ports, PIDs and the token, and
#                                      # wait (Ctrl-C ends it) for experiments by hand
#   PIN=0 bench/run.sh                 # do not pin (by default the proxies share core 0 and the
#                                      # load generators, upstream and echo server the others)
#
# Beside req/s the table shows each contender's CPU-µs per request: the user+system time its
# process spent during the scenario (from /proc/PID/stat) divided by the requests it answered, a
# figure that does not depend on how busy the load generator's core was.
#
# Writes bench/results/<date>.md. Needs root once to install nginx, haproxy, wrk and h2load.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
# HAProxy needs two descriptors per connection it admits (maxsock = 2 × maxconn); under a hard
# limit of 20000 open files it admits at most 9990, so the memory scenario holds 9000 by default.
IDLE=${IDLE:-9000}
OUT=${OUT:-bench/results/$(date +%F).md}
PIN=${PIN:-1}

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the packaged services; they are not part of the benchmark.
systemctl stop nginx haproxy >/dev/null 2>&1 || true
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
# Pinning: proxies on core 0, everything else (load generators, upstream, echo server) on the
# remaining cores, so a proxy never competes with the load it is measured under.
PX=() LD=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    PX=(taskset -c 0) LD=(taskset -c "1-$(($(nproc) - 1))")
fi
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of a process, all threads
per_req_us() { # ticks requests → CPU-µs per request
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print 0}'
}
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
EX=$ROOT/target/release/examples
# PORTCULLIS_BIN=path/to/portcullis measures that binary (built elsewhere) without a build here.
if [ -z "${PORTCULLIS_BIN:-}" ] || [ ! -x "$EX/idle_conns" ]; then
    echo "building (release)…"
    cargo build --release --locked --bin portcullis --example ws_echo --example ws_load --example idle_conns 2>&1 | tail -1
fi

W=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$W/nginx-up.pid" ] && kill "$(cat "$W/nginx-up.pid")" 2>/dev/null || true
    [ -f "$W/nginx-px.pid" ] && kill "$(cat "$W/nginx-px.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

# One certificate for every contender: a CA and a leaf for localhost / 127.0.0.1 (ECDSA P-256).
mkdir -p "$W/certs" "$W/keys" "$W/pc-plain/policies" "$W/pc-full/policies" "$W/www"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$W/ca.key" -out "$W/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$W/certs/localhost.key" -out "$W/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$W/ext"
openssl x509 -req -in "$W/leaf.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -days 2 \
    -extfile "$W/ext" -out "$W/certs/localhost.crt" 2>/dev/null
cat "$W/certs/localhost.crt" "$W/certs/localhost.key" >"$W/haproxy.pem"
printf '%s' "hello from upstream!" >"$W/www/small"   # 20 bytes
head -c 65536 /dev/urandom >"$W/www/big"

UP=18080 ECHO=18090 P_NGINX=18443 P_HAPROXY=18444 P_PLAIN=18445 P_FULL=18446
A_PLAIN=19901 A_FULL=19902

# The upstream holds every contender's idle pool at once (up to 1024 connections each).
cat >"$W/nginx-up.conf" <<EOF
worker_processes 1;
user root;
worker_rlimit_nofile 65536;
pid $W/nginx-up.pid;
error_log $W/nginx-up.err warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UP backlog=4096;
        root $W/www;
        location / { default_type text/plain; }
    }
}
EOF
cat >"$W/nginx-px.conf" <<EOF
worker_processes 1;
user root;
worker_rlimit_nofile 65536;
pid $W/nginx-px.pid;
error_log $W/nginx-px.err warn;
events { worker_connections 30000; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    # The same idle pool as Portcullis's default (1024 per worker; HAProxy keeps every idle
    # connection): the HTTP/2 scenario has 1000 requests in flight, and a smaller pool closes
    # the surplus after each burst and connects again, which measures connects, not proxying.
    upstream up { server 127.0.0.1:$UP; keepalive 1024; keepalive_requests 1000000; }
    upstream echo { server 127.0.0.1:$ECHO; }
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    server {
        listen 127.0.0.1:$P_NGINX ssl http2 backlog=4096;
        ssl_certificate $W/certs/localhost.crt;
        ssl_certificate_key $W/certs/localhost.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        location /ws {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_read_timeout 300s;
        }
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
cat >"$W/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 9990
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    timeout tunnel 300s
    http-reuse always
frontend fe
    bind 127.0.0.1:$P_HAPROXY ssl crt $W/haproxy.pem alpn h2,http/1.1
    maxconn 9990
    use_backend echo if { path_beg /ws }
    default_backend up
backend up
    server up 127.0.0.1:$UP maxconn 1000
backend echo
    server echo 127.0.0.1:$ECHO
EOF

# Portcullis: the same certificate, one proxy thread, generous connection caps for the idle test.
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$W/keys/es.key"
openssl pkey -in "$W/keys/es.key" -pubout -out "$W/keys/es.pub" 2>/dev/null
for c in pc-plain pc-full; do
    mkdir -p "$W/$c/certs" && cp "$W/certs/localhost."* "$W/$c/certs/"
done
common_policy() {
    cat <<EOF
[[upstreams]]
name = "up"
kind = "external"
addresses = ["127.0.0.1:$UP"]

[[upstreams]]
name = "echo"
kind = "external"
addresses = ["127.0.0.1:$ECHO"]

[network]
max_connections_per_ip = 50000
max_connections = 50000

[websocket]
bytes_per_second = 1073741824
messages_per_second = 1000000
idle_timeout_seconds = 300
EOF
}
{
    common_policy
    cat <<EOF

[[routes]]
name = "ws"
path_prefix = "/ws"
upstream = "echo"
public = true
websocket = true
headers = "none"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "up"
public = true
headers = "none"

[hsts]
enabled = false
EOF
} >"$W/pc-plain/policies/bench.toml"
full_policy() { # burst of the per-ip limit (changed by the reload scenario)
    common_policy
    cat <<EOF

[auth]
default_provider = "jwt"

[[auth.issuers]]
name = "bench"
issuer = "portcullis-rooms"
algorithms = ["ES256"]
keys = [{ kid = "k1", algorithm = "ES256", pem_file = "$W/keys/es.pub" }]

[rooms]
keys = [{ kid = "k1", algorithm = "ES256", public_key_file = "$W/keys/es.pub", private_key_file = "$W/keys/es.key" }]

[[routes]]
name = "ws"
path_prefix = "/ws"
upstream = "echo"
websocket = true
headers = "ws-only"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "up"

[[limits]]
name = "per-ip"
key = ["ip"]
requests = 10000000
per_seconds = 1
burst = ${1:-10000000}

[[limits]]
name = "per-subject"
key = ["subject"]
requests = 10000000
per_seconds = 1
EOF
}
full_policy >"$W/pc-full/policies/bench.toml"
for c in pc-plain pc-full; do
    port=$P_PLAIN admin=$A_PLAIN level=warn
    [ $c = pc-full ] && { port=$P_FULL; admin=$A_FULL; level=info; }
    cat >"$W/$c/portcullis.toml" <<EOF
mode = "development"
threads = 1
[listeners]
https = "127.0.0.1:$port"
http = "off"
admin = "127.0.0.1:$admin"
[tls]
cert_dir = "certs"
[log]
format = "json"
level = "$level"
# The same connection bounds as nginx and HAProxy above.
[network]
keepalive_timeout_seconds = 300
max_requests_per_connection = 1000000
EOF
done
# A JWT for the full policy: minted with the room key, whose issuer the JWT issuer accepts.
TOKEN=$("$BIN" token mint --config "$W/pc-full/portcullis.toml" --room bench --sub bench --ttl 1d --kid k1)

echo "starting upstream, echo server and contenders…"
"${LD[@]}" "$NGINX" -c "$W/nginx-up.conf" -p "$W"
"${LD[@]}" "$EX/ws_echo" --listen "127.0.0.1:$ECHO" 2>/dev/null &
PIDS+=($!)
"${PX[@]}" "$NGINX" -c "$W/nginx-px.conf" -p "$W"
"${PX[@]}" "$HAPROXY" -q -f "$W/haproxy.cfg" &
PIDS+=($!)
HAPROXY_PID=$!
(cd "$W/pc-plain" && exec "${PX[@]}" "$BIN" serve --config portcullis.toml >gateway.log 2>&1) &
PIDS+=($!)
PLAIN_PID=$!
(cd "$W/pc-full" && exec "${PX[@]}" "$BIN" serve --config portcullis.toml >gateway.log 2>&1) &
PIDS+=($!)
FULL_PID=$!
for a in $A_PLAIN $A_FULL; do
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$a/ready" >/dev/null && break; sleep 0.1; done
done
sleep 0.5
NGINX_PID=$(pgrep -P "$(cat "$W/nginx-px.pid")" | head -1)

declare -A PORT=([nginx]=$P_NGINX [haproxy]=$P_HAPROXY [pc-plain]=$P_PLAIN [pc-full]=$P_FULL)
declare -A PID=([nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [pc-plain]=$PLAIN_PID [pc-full]=$FULL_PID)
CONTENDERS=(nginx haproxy pc-plain pc-full)
AUTH=(-H "Authorization: Bearer $TOKEN")

for c in "${CONTENDERS[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/ca.pem" "${AUTH[@]}" "https://localhost:${PORT[$c]}/small" || true)
    if [ "$code" != 200 ]; then
        echo "$c does not answer 200 (got $code)"
        tail -5 "$W/$c/gateway.log" "$W"/*.err 2>/dev/null
        exit 1
    fi
done

if [ "${HOLD:-0}" = 1 ]; then
    echo "work dir $W (certificates, configs, logs; the CA is $W/ca.pem)"
    for c in "${CONTENDERS[@]}"; do echo "$c: https://localhost:${PORT[$c]}/small pid ${PID[$c]}"; done
    echo "token (pc-full): $TOKEN"
    echo "holding; Ctrl-C stops every contender"
    while sleep 3600; do :; done
fi

if [ -n "${PROFILE:-}" ]; then
    # PROFILE=pc-full bench/run.sh: where the contender's CPU goes under keep-alive load (perf,
    # software clock; flat profile by symbol, grouped by the library it lives in).
    command -v perf >/dev/null 2>&1 || { apt-get install -y -qq linux-perf >/dev/null; }
    PROFILE_OUT=${PROFILE_OUT:-bench/results/$(date +%F)-profile-$PROFILE.txt}
    perf record -e cpu-clock -F 1999 -p "${PID[$PROFILE]}" -o "$W/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    perfpid=$!
    "${LD[@]}" wrk -t1 -c50 -d"${DURATION}s" "${AUTH[@]}" "https://127.0.0.1:${PORT[$PROFILE]}/small" | grep Requests/sec
    wait "$perfpid" || true
    {
        echo "# perf record -e cpu-clock, $PROFILE under wrk -t1 -c50 keep-alive, ${DURATION}s"
        echo "## by component (bench/profile_components.py)"
        perf report -i "$W/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0 2>/dev/null \
            | python3 bench/profile_components.py
        echo "## by shared object"
        perf report -i "$W/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
        echo "## by symbol (top)"
        perf report -i "$W/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
    } >"$PROFILE_OUT"
    echo "profile written to $PROFILE_OUT"
    exit 0
fi

declare -A R   # R[scenario,contender] = space-separated samples
add() { R[$1,$2]="${R[$1,$2]:-} $3"; }

wrk_run() { # contender connections path extra-header… → "req/s p99_ms errors cpu_us_per_request"
    local c=$1 n=$2 path=$3; shift 3
    local out t0 t1
    t0=$(cpu_ticks "${PID[$c]}")
    out=$("${LD[@]}" wrk -t1 -c"$n" -d"${DURATION}s" --latency "${AUTH[@]}" "$@" "https://127.0.0.1:${PORT[$c]}$path" 2>&1)
    t1=$(cpu_ticks "${PID[$c]}")
    local rps p99 err reqs
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')
    err=$(echo "$out" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "${rps:-0} ${p99:-0} ${err:-0} $(per_req_us $((t1 - t0)) "${reqs:-0}")"
}

for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS"
    for c in "${CONTENDERS[@]}"; do
        read -r rps p99 err us < <(wrk_run "$c" 50 /small)
        add ka50 "$c" "$rps"; add ka50p99 "$c" "$p99"; add errors "$c" "$err"; add ka50us "$c" "$us"
        read -r rps p99 err us < <(wrk_run "$c" 500 /small)
        add ka500 "$c" "$rps"; add ka500p99 "$c" "$p99"; add errors "$c" "$err"; add ka500us "$c" "$us"
        read -r rps p99 err us < <(wrk_run "$c" 50 /small -H "Connection: close")
        add hs "$c" "$rps"; add hsp99 "$c" "$p99"; add hsus "$c" "$us"
        read -r rps p99 err us < <(wrk_run "$c" 50 /big)
        add big "$c" "$rps"; add errors "$c" "$err"; add bigus "$c" "$us"
        t0=$(cpu_ticks "${PID[$c]}")
        out=$("${LD[@]}" h2load -D "$DURATION" -c 10 -m 100 -t 1 -H "authorization: Bearer $TOKEN" \
            "https://127.0.0.1:${PORT[$c]}/small" 2>/dev/null)
        t1=$(cpu_ticks "${PID[$c]}")
        add h2 "$c" "$(echo "$out" | awk '/^finished in/ {gsub(/,/,""); print $4}')"
        add h2us "$c" "$(per_req_us $((t1 - t0)) "$(echo "$out" | awk '/^requests:/ {print $8}')")"
        t0=$(cpu_ticks "${PID[$c]}")
        out=$("${LD[@]}" "$EX/ws_load" --url "wss://127.0.0.1:${PORT[$c]}/ws" --ca "$W/ca.pem" --connections 50 \
            --seconds "$DURATION" --size 64 --token "$TOKEN")
        t1=$(cpu_ticks "${PID[$c]}")
        add ws "$c" "$(echo "$out" | awk '{print $1}')"
        add wsus "$c" "$(per_req_us $((t1 - t0)) "$(echo "$out" | awk '{gsub(/\(/,""); print $3}')")"
    done
    ws=$("${LD[@]}" "$EX/ws_load" --url "ws://127.0.0.1:$ECHO/ws" --connections 50 --seconds "$DURATION" --size 64 | awk '{print $1}')
    add ws direct "${ws:-0}"
done

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
echo "idle connections: $IDLE per contender…"
for c in "${CONTENDERS[@]}"; do
    before=$(rss_kib "${PID[$c]}")
    fifo="$W/idle-$c"
    "${LD[@]}" "$EX/idle_conns" --addr "127.0.0.1:${PORT[$c]}" --ca "$W/ca.pem" --count "$IDLE" --hold 8 \
        --token "$TOKEN" >"$fifo" &
    ip=$!
    for _ in $(seq 600); do grep -q ready "$fifo" 2>/dev/null && break; sleep 0.1; done
    sleep 2
    after=$(rss_kib "${PID[$c]}")
    held=$(awk '/ready/ {print $2}' "$fifo")
    wait "$ip" || true
    R[idle,$c]=" $(awk -v a="$after" -v b="$before" -v n="${held:-0}" 'BEGIN {printf "%.1f", n ? (a-b)/n : 0}')"
    R[idleheld,$c]="${held:-0}"
    echo "  $c: RSS ${before} → ${after} KiB with ${held:-0} held"
done

echo "policy reload every second under keep-alive load (pc-full)…"
RELOAD_S=$((DURATION * 2))
(
    for i in $(seq "$RELOAD_S"); do
        sleep 1
        full_policy $((10000000 + i)) >"$W/pc-full/policies/.bench.tmp"
        mv "$W/pc-full/policies/.bench.tmp" "$W/pc-full/policies/bench.toml"
    done
) &
reloader=$!
g0=$(curl -s "http://127.0.0.1:$A_FULL/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["policy"]["generation"])')
out=$("${LD[@]}" wrk -t1 -c50 -d"${RELOAD_S}s" --latency "${AUTH[@]}" "https://127.0.0.1:$P_FULL/small" 2>&1)
wait "$reloader"
g1=$(curl -s "http://127.0.0.1:$A_FULL/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["policy"]["generation"])')
RELOAD_RPS=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
RELOAD_REQS=$(echo "$out" | awk '/requests in/ {print $1}')
RELOAD_ERR=$(echo "$out" | awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END {print n+0}')
RELOADS=$(( ${g1:-0} - ${g0:-0} ))

median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }

{
    echo "# Portcullis vs nginx and HAProxy, $(date +%F)"
    echo
    echo "\`bench/run.sh\` (ROUNDS=$ROUNDS, DURATION=${DURATION}s per scenario, contenders alternating)."
    echo "Machine: $(nproc) cores ($(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')),"
    if ((${#PX[@]})); then
        placement="proxies pinned to core 0, load generators, upstream and echo server to cores 1-$(($(nproc) - 1)) (loopback)"
    else
        placement="load generator, proxies and upstream share the cores (loopback)"
    fi
    echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $placement."
    echo "Versions: $("$NGINX" -v 2>&1 | sed 's/.*: //'), HAProxy $("$HAPROXY" -v | awk 'NR==1 {print $3}'), $("$BIN" --version), wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'), $(h2load --version 2>/dev/null | awk 'NR==1 {print $1, $2}')."
    echo
    echo "Each proxy: one worker process/thread, TLS 1.2+1.3 (same ECDSA P-256 certificate), HTTP/2 by ALPN, keep-alive pool to one upstream nginx (up to 1024 idle connections per worker; HAProxy keeps every idle one). pc-full: ES256 JWT (cached), two rate limits that never trigger, api-strict headers, HSTS, JSON access log on; nginx and HAProxy log nothing."
    echo
    echo "| scenario | nginx | haproxy | pc-plain | pc-full | pc-plain / nginx | pc-full / nginx |"
    echo "|---|---|---|---|---|---|---|"
    row() { # label key [direct]
        local n h p f
        n=$(median "${R[$2,nginx]}"); h=$(median "${R[$2,haproxy]}")
        p=$(median "${R[$2,pc-plain]}"); f=$(median "${R[$2,pc-full]}")
        echo "| $1 | $n | $h | $p | $f | $(ratio "$p" "$n") | $(ratio "$f" "$n") |"
    }
    row "keep-alive, 50 conns: req/s" ka50
    row "keep-alive, 50 conns: p99 ms" ka50p99
    row "keep-alive, 50 conns: CPU-µs per request" ka50us
    row "keep-alive, 500 conns: req/s" ka500
    row "keep-alive, 500 conns: p99 ms" ka500p99
    row "keep-alive, 500 conns: CPU-µs per request" ka500us
    row "new TLS connection per request: req/s" hs
    row "new TLS connection per request: p99 ms" hsp99
    row "new TLS connection per request: CPU-µs per request" hsus
    row "HTTP/2, 10 conns × 100 streams: req/s" h2
    row "HTTP/2: CPU-µs per request" h2us
    row "64 KiB body, 50 conns: req/s" big
    row "64 KiB body: CPU-µs per request" bigus
    row "WebSocket echo, 50 conns: messages/s" ws
    row "WebSocket echo: CPU-µs per message" wsus
    echo "| RSS per idle keep-alive TLS connection, KiB ($IDLE opened) | ${R[idle,nginx]} | ${R[idle,haproxy]} | ${R[idle,pc-plain]} | ${R[idle,pc-full]} | | |"
    echo
    echo "WebSocket echo straight to the echo server (no proxy, no TLS): $(median "${R[ws,direct]}") messages/s."
    echo "Idle connections held: nginx ${R[idleheld,nginx]}, haproxy ${R[idleheld,haproxy]}, pc-plain ${R[idleheld,pc-plain]}, pc-full ${R[idleheld,pc-full]}."
    echo "Errors (non-2xx and socket errors) in the keep-alive and body scenarios: nginx $(median "${R[errors,nginx]}"), haproxy $(median "${R[errors,haproxy]}"), pc-plain $(median "${R[errors,pc-plain]}"), pc-full $(median "${R[errors,pc-full]}") (medians per run)."
    echo
    echo "Policy reload every second under keep-alive load (pc-full, 50 conns, ${RELOAD_S}s): $RELOADS reloads applied, $RELOAD_REQS requests at $RELOAD_RPS req/s, **$RELOAD_ERR failed**."
    echo
    echo "CPU-µs per request: user+system time of the contender's process during the scenario ÷ requests (messages for WebSocket) it answered; lower is better, so its ratio to nginx above reads the other way (2.00 = twice nginx's CPU)."
    echo
    echo "Samples per scenario (rounds in order):"
    echo
    for k in ka50 ka50us ka500 ka500us hs hsus h2 h2us big bigus ws wsus; do
        echo "- $k: nginx [${R[$k,nginx]# }] haproxy [${R[$k,haproxy]# }] pc-plain [${R[$k,pc-plain]# }] pc-full [${R[$k,pc-full]# }]"
    done
} | tee "$OUT"
echo "written to $OUT"
[ "$RELOAD_ERR" = 0 ] || { echo "requests failed during reloads" >&2; exit 1; }
