#!/usr/bin/env bash
# TLS conformance, run by .ci/run: sslyze (PyPI) checks the HTTPS listener against Mozilla's
# "intermediate" configuration, with a certificate from a throwaway CA it is told to trust (a
# 90-day ECDSA P-256 leaf, as an ACME CA issues). OCSP stapling is checked with
# `openssl s_client -status` in tests/ocsp.rs. Fails when sslyze reports non-compliance.
# PORTCULLIS_BIN names the binary (default target/debug/portcullis, built when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SSLYZE_VERSION=6.3.1
tools="${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/sslyze-venv"
want="sslyze==$SSLYZE_VERSION"

apt_install() {
    [ "$(id -u)" = 0 ] || { echo "tls conformance: please install: $*" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}
command -v python3 >/dev/null 2>&1 || apt_install python3
command -v openssl >/dev/null 2>&1 || apt_install openssl
if [ "$(cat "$tools/.installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$tools"
    python3 -m venv "$tools" >/dev/null 2>&1 || { rm -rf "$tools"; apt_install python3-venv; python3 -m venv "$tools"; }
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$want"
    echo "$want" >"$tools/.installed"
fi

BIN="${PORTCULLIS_BIN:-$ROOT/target/debug/portcullis}"
[ -x "$BIN" ] || cargo build --locked --bin portcullis
work=$(mktemp -d)
mkdir -p "$work/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=Conformance CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$work/certs/localhost.key" -out "$work/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$work/ext"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 90 -extfile "$work/ext" -out "$work/certs/localhost.crt" 2>/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin=$(free_port)
(cd "$work" && PORTCULLIS_HTTPS_ADDR="127.0.0.1:$port" PORTCULLIS_ADMIN_ADDR="127.0.0.1:$admin" \
    PORTCULLIS_HTTP_ADDR=off PORTCULLIS_CERT_DIR="$work/certs" exec "$BIN" serve >gateway.log 2>&1) &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/gateway.log"; exit 1; }
    sleep 0.1
done

echo "== sslyze $SSLYZE_VERSION --mozilla_config intermediate"
status=0
"$tools/bin/sslyze" --mozilla_config intermediate --certinfo_ca_file "$work/ca.pem" \
    "localhost:$port{127.0.0.1}" >"$work/sslyze.txt" 2>&1 || status=1
sed -n '/COMPLIANCE AGAINST/,$p' "$work/sslyze.txt" | sed 's/^/  /'
awk '/Cipher Suites:$/ {p=$2" "$3} /server (accepted|rejected)/ {sub(/^ +/, ""); print "  " p ": " $0}' "$work/sslyze.txt"
if ! grep -q 'OK - Compliant' "$work/sslyze.txt"; then
    status=1
fi
[ "$status" = 0 ] && echo "TLS conformance: ok" || { echo "TLS conformance: FAILED"; cat "$work/sslyze.txt" | tail -40; }
exit "$status"
