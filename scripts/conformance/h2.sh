#!/usr/bin/env bash
# HTTP/2 conformance and attacks against a gateway on its embedded defaults on 127.0.0.1, run
# by .ci/run. Fails on any finding:
#   - h2load: 5000 requests, 10 connections × 10 streams: 0 failed, 0 errored;
#   - h2rs (PyPI): request smuggling through HTTP/2 → HTTP/1 downgrades (h2rs_run.py);
#   - rapid reset, CONTINUATION flood and HPACK bomb built on the `h2` package (h2_attacks.py):
#     the gateway stays up, serves other clients during and after, and its memory stays flat;
#   - no panic in the gateway's log.
# PORTCULLIS_BIN names the binary (default target/debug/portcullis, built when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
H2_VERSION=4.4.1
H2RS_VERSION=0.0.1
tools="${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/conformance-venv"
want="h2==$H2_VERSION h2rs==$H2RS_VERSION"

apt_install() {
    [ "$(id -u)" = 0 ] || { echo "h2 conformance: please install: $*" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}
command -v h2load >/dev/null 2>&1 || apt_install nghttp2-client
command -v python3 >/dev/null 2>&1 || apt_install python3
if [ "$(cat "$tools/.installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$tools"
    python3 -m venv "$tools" >/dev/null 2>&1 || { rm -rf "$tools"; apt_install python3-venv; python3 -m venv "$tools"; }
    # shellcheck disable=SC2086 # $want is a list of requirement specifiers
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $want
    echo "$want" >"$tools/.installed"
fi

BIN="${PORTCULLIS_BIN:-$ROOT/target/debug/portcullis}"
[ -x "$BIN" ] || cargo build --locked --bin portcullis
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin=$(free_port)
work=$(mktemp -d)
(cd "$work" && PORTCULLIS_HTTPS_ADDR="127.0.0.1:$port" PORTCULLIS_ADMIN_ADDR="127.0.0.1:$admin" \
    PORTCULLIS_HTTP_ADDR=off exec "$BIN" serve >gateway.log 2>&1) &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/gateway.log"; exit 1; }
    sleep 0.1
done
status=0

echo "== h2load"
out=$(h2load -n 5000 -c 10 -m 10 "https://localhost:$port/v1/models" 2>&1 | grep -E '^requests:|^status codes:')
echo "  $out" | sed 's/^ *//; s/^/  /'
echo "$out" | grep -q ' 5000 succeeded, 0 failed, 0 errored' || { echo "  FINDING: h2load saw failures"; status=1; }

echo "== h2rs $H2RS_VERSION (request smuggling through HTTP/2 downgrades)"
"$tools/bin/python" scripts/conformance/h2rs_run.py "$port" 3 | grep -v '^Making\|^Got' || status=1

echo "== HTTP/2 attacks (h2 $H2_VERSION)"
"$tools/bin/python" scripts/conformance/h2_attacks.py "$port" "$pid" || status=1

if grep -q 'panicked' "$work/gateway.log"; then
    echo "FINDING: the gateway's log shows a panic"
    grep -m3 'panicked' "$work/gateway.log"
    status=1
fi
kill -0 "$pid" 2>/dev/null || { echo "FINDING: the gateway exited"; status=1; }
[ "$status" = 0 ] && echo "HTTP/2 conformance: ok"
exit "$status"
