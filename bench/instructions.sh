#!/usr/bin/env bash
# Instructions per request, counted by callgrind: a figure that does not move with the machine's
# load, for pricing hot-path changes too small for requests/s to show on a noisy machine.
# Each gateway binary runs the plain policy (one public route, no security headers, HSTS off,
# access log off, one thread) in front of an nginx upstream serving 20 bytes; after a warm-up,
# h2load sends a fixed number of HTTP/1.1 keep-alive requests over TLS and callgrind counts the
# instructions the gateway ran for them (its handshakes for the measured connections included).
# With WITH_NGINX=1, nginx as a TLS proxy to the same upstream is counted the same way, as a reference.
# With POLICY=full, each gateway runs bench/run.sh's full policy instead: ES256 JWT auth (a cached
# token), two rate limits that never trigger, the default security headers, HSTS, and the JSON
# access log on.
#
#   bench/instructions.sh BINARY [BINARY …]
#   REQUESTS=8000 CONNECTIONS=20 WITH_NGINX=1 bench/instructions.sh old/portcullis new/portcullis
#   KEEP=dir bench/instructions.sh a   # keeps each count as dir/<name>.callgrind for
#                                      # callgrind_annotate (--inclusive=yes, --tree=caller)
#
# Note: callgrind counts each iteration of the `rep movs`/`rep stos` that memcpy and memset use for
# large copies as one instruction, so copies and zero-fills weigh more here than in cycles.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench/instructions.sh BINARY [BINARY …]"; exit 2; }
REQUESTS=${REQUESTS:-4000}
CONNECTIONS=${CONNECTIONS:-20}
need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}"; fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

W=$(mktemp -d)
VP=
cleanup() {
    [ -n "$VP" ] && kill "$VP" 2>/dev/null || true
    [ -f "$W/up.pid" ] && kill "$(cat "$W/up.pid")" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

UP=$(free)
mkdir -p "$W/www"
printf 'hello small response\n' >"$W/www/small"
cat >"$W/up.conf" <<EOF
worker_processes 1;
user root;
pid $W/up.pid;
error_log $W/up.err warn;
events { worker_connections 4096; }
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
"$NGINX_BIN" -c "$W/up.conf"

mkdir -p "$W/cfg/policies" "$W/cfg/certs"
cat >"$W/cfg/portcullis.toml" <<EOF
mode = "development"
threads = 1
[listeners]
https = "127.0.0.1:0"
http = "off"
admin = "127.0.0.1:0"
[tls]
cert_dir = "certs"
[log]
format = "json"
level = "warn"
[network]
keepalive_timeout_seconds = 300
max_requests_per_connection = 1000000
EOF
if [ "${POLICY:-plain}" = full ]; then
    sed -i 's/^level = "warn"/level = "info"/' "$W/cfg/portcullis.toml"
    mkdir -p "$W/keys"
    openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null |
        openssl pkcs8 -topk8 -nocrypt -out "$W/keys/es.key"
    openssl pkey -in "$W/keys/es.key" -pubout -out "$W/keys/es.pub" 2>/dev/null
    cat >"$W/cfg/policies/bench.toml" <<EOF
[[upstreams]]
name = "up"
kind = "external"
addresses = ["127.0.0.1:$UP"]

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
name = "all"
path_prefix = "/"
upstream = "up"

[[limits]]
name = "per-ip"
key = ["ip"]
requests = 10000000
per_seconds = 1
burst = 10000000

[[limits]]
name = "per-subject"
key = ["subject"]
requests = 10000000
per_seconds = 1
EOF
else
    cat >"$W/cfg/policies/bench.toml" <<EOF
[[upstreams]]
name = "up"
kind = "external"
addresses = ["127.0.0.1:$UP"]

[[routes]]
name = "all"
path_prefix = "/"
upstream = "up"
public = true
headers = "none"

[hsts]
enabled = false
EOF
fi

# Runs "$@" under callgrind, instrumentation off until the server answers; prints Ir/request.
count() { # label url-port ready-check command…
    local label=$1 port=$2 ready=$3 out
    shift 3
    out="$W/cg.$RANDOM"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$@" >"$out.log" 2>&1 &
    VP=$!
    for _ in $(seq 240); do
        eval "$ready" && break
        sleep 0.5
    done
    callgrind_control -i on "$VP" >/dev/null 2>&1
    h2load --h1 -n 1000 -c "$CONNECTIONS" "${AUTH[@]}" "https://localhost:$port/small" >/dev/null 2>&1
    callgrind_control -z "$VP" >/dev/null 2>&1
    local done
    done=$(h2load --h1 -n "$REQUESTS" -c "$CONNECTIONS" "${AUTH[@]}" "https://localhost:$port/small" 2>&1 |
        awk '/^requests:/ {print $8}')
    callgrind_control -d "$VP" >/dev/null 2>&1
    kill "$VP" 2>/dev/null || true
    wait "$VP" 2>/dev/null || true
    VP=
    local ir
    ir=$(grep -ah '^totals:' "$out".* | awk '{print $2}' | sort -n | tail -1)
    if [ "$done" != "$REQUESTS" ] || [ -z "$ir" ]; then
        echo "$label: $done of $REQUESTS requests succeeded; no count" >&2
        return 1
    fi
    printf '%-40s %12d Ir/request (%d requests)\n' "$label" $((ir / REQUESTS)) "$REQUESTS"
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP"
        cp "$out.1" "$KEEP/$(basename "$label").callgrind"
    fi
}

AUTH=()
for bin in "$@"; do
    bin=$(realpath "$bin")
    if [ "${POLICY:-plain}" = full ]; then
        token=$("$bin" token mint --config "$W/cfg/portcullis.toml" --room bench --sub bench --ttl 1d --kid k1)
        AUTH=(-H "authorization: Bearer $token")
    fi
    dir="$W/run.$RANDOM"
    cp -r "$W/cfg" "$dir"
    port=$(free)
    admin=$(free)
    (cd "$dir" && export PORTCULLIS_HTTPS_ADDR="127.0.0.1:$port" PORTCULLIS_ADMIN_ADDR="127.0.0.1:$admin" &&
        count "$bin" "$port" "curl -sf http://127.0.0.1:$admin/ready >/dev/null" \
            "$bin" serve --config portcullis.toml)
done

if [ "${WITH_NGINX:-0}" = 1 ]; then
    AUTH=()
    port=$(free)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/px.key" \
        -out "$W/px.crt" -days 2 -subj /CN=localhost 2>/dev/null
    cat >"$W/px.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
user root;
pid $W/px.pid;
error_log $W/px.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$UP; keepalive 128; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$port ssl backlog=4096;
        ssl_certificate $W/px.crt;
        ssl_certificate_key $W/px.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    count "nginx (TLS proxy, reference)" "$port" \
        "curl -sk https://localhost:$port/small >/dev/null" "$NGINX_BIN" -c "$W/px.conf"
fi
