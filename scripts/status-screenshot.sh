#!/usr/bin/env bash
# Renders the admin status page in headless Chromium (Debian package `chromium`) with real data
# and saves the screenshot as docs/status-page.png; fails when the browser reports a Content
# Security Policy violation. Takes about two minutes: authentication failures are sent from a
# few client addresses (via a trusted proxy header) in three batches a minute apart, so the
# per-minute chart has more than one bar.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "install chromium (apt-get install chromium)"; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
cargo build --locked --quiet

work="$(mktemp -d)"
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free)
admin=$(free)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/policies"
sed 's/default_provider = "local"/default_provider = "static"/' policies/default.toml >"$work/policies/default.toml"
printf '\n[network]\ntrusted_proxies = ["127.0.0.1/32"]\n' >>"$work/policies/default.toml"
token="status-page-demo-token-$(openssl rand -hex 8)"
(cd "$work" && exec env PORTCULLIS_HTTPS_ADDR="127.0.0.1:$port" PORTCULLIS_ADMIN_ADDR="127.0.0.1:$admin" \
    PORTCULLIS_HTTP_ADDR=off PORTCULLIS_WORKER_TOKEN="$token" \
    "$OLDPWD/target/debug/portcullis" serve >"$work/gateway.log" 2>&1) &
pid=$!
for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
    sleep 0.1
done

fail() { # client address, count
    for _ in $(seq "$2"); do
        curl -s -o /dev/null --cacert "$work/certs/dev-ca.pem" -H "Authorization: Bearer wrong-$RANDOM" \
            -H "X-Forwarded-For: $1" "https://localhost:$port/whoami"
    done
}
for batch in 1 2 3; do
    fail 203.0.113.7 $((batch * 9))
    fail 198.51.100.23 $((batch * 4))
    fail 192.0.2.41 $((4 - batch))
    curl -s -o /dev/null --cacert "$work/certs/dev-ca.pem" -H "Authorization: Bearer $token" \
        "https://localhost:$port/whoami"
    [ "$batch" = 3 ] || sleep 61
done

mkdir -p docs
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1024,1300 \
    --enable-logging=stderr --v=0 --screenshot="$PWD/docs/status-page.png" \
    "http://127.0.0.1:$admin/status.html" 2>"$work/chromium.log" >/dev/null || true
[ -s docs/status-page.png ] || { cat "$work/chromium.log"; echo "no screenshot"; exit 1; }
if grep -E "Content Security Policy|Refused to" "$work/chromium.log"; then
    echo "CSP violations reported by the browser"
    exit 1
fi
echo "docs/status-page.png written; no CSP violation reported"
