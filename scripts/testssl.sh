#!/usr/bin/env bash
# Runs testssl.sh (Debian package `testssl.sh`) against a gateway started on its embedded
# defaults on 127.0.0.1, trusting the generated development CA, and fails when any line is
# rated NOT ok, VULNERABLE or CRITICAL. Slow (minutes): kept out of the default test run.
#
#   scripts/testssl.sh              # TLS 1.2 + 1.3 (the default listener)
#   MIN_TLS=1.3 scripts/testssl.sh  # the TLS 1.3-only mode
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v testssl >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "install testssl.sh (apt-get install testssl.sh)"; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq testssl.sh bsdextrautils >/dev/null
fi
cargo build --release --locked --quiet

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
admin="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

(cd "$work" && PORTCULLIS_HTTPS_ADDR="127.0.0.1:$port" PORTCULLIS_ADMIN_ADDR="127.0.0.1:$admin" \
    PORTCULLIS_HTTP_ADDR=off PORTCULLIS_TLS_MIN_VERSION="${MIN_TLS:-1.2}" \
    "$OLDPWD/target/release/portcullis" serve >"$work/gateway.log" 2>&1) &
pid=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
    sleep 0.1
done

out="bench/results/$(date +%F)-testssl${MIN_TLS:+-tls$MIN_TLS}.txt"
mkdir -p bench/results
testssl --quiet --color 0 --warnings off --add-ca "$work/certs/dev-ca.pem" \
    --ip 127.0.0.1 "https://localhost:$port/" | tee "$out.full" >/dev/null || true
# Keep the verdicts: section titles and every rated line.
grep -E '^ (Testing|Start|Done)|(not offered|offered|OK|ok|NOT ok|VULNERABLE|CRITICAL|HIGH|MEDIUM|LOW|supported)' "$out.full" \
    | sed -e 's/[[:space:]]\+$//' >"$out"
rm -f "$out.full"
echo "summary written to $out"
# Findings accepted, each for a stated reason (printed with the result, never silently):
#  - "Has server cipher order? no": Pingora 0.9 builds the rustls ServerConfig itself and does
#    not expose ignore_client_order; the client choosing among the offered suites is what
#    Mozilla's intermediate and modern profiles recommend, and every suite offered is AEAD with
#    forward secrecy.
#  - "neither CRL nor OCSP URI provided": the generated development certificate has no
#    revocation endpoints; a CA-issued certificate naming a responder is stapled (tests/ocsp.rs).
accepted='Has server cipher order\?|neither CRL nor OCSP URI provided'
grep -E "$accepted" "$out" | sed 's/^/accepted: /' || true
bad="$(grep -E 'NOT ok|VULNERABLE|CRITICAL' "$out" | grep -v 'not vulnerable' | grep -Ev "$accepted" || true)"
if [ -n "$bad" ]; then
    echo "testssl findings:"
    echo "$bad"
    exit 1
fi
echo "testssl: no line rated NOT ok, VULNERABLE or CRITICAL beyond the accepted ones above"
