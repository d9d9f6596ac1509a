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
H2_VERSION=4.4.1
H2RS_VERSION=0.0.1
tools="${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/conformance-venv"
want="h2==$H2_VERSION h2rs==$H2RS_VERSION"

# shellcheck source=scripts/conformance/lib.sh
. scripts/conformance/lib.sh
command -v h2load >/dev/null 2>&1 || apt_install nghttp2-client
ensure_venv "$tools" $want

work=$(mktemp -d)
start_gateway "$work"
port=$GATEWAY_PORT pid=$GATEWAY_PID
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
