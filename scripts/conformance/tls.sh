#!/usr/bin/env bash
# TLS conformance, run by .ci/run: sslyze (PyPI) checks the HTTPS listener against Mozilla's
# "intermediate" configuration, with a certificate from a throwaway CA it is told to trust (a
# 90-day ECDSA P-256 leaf, as an ACME CA issues). OCSP stapling is checked with
# `openssl s_client -status` in tests/ocsp.rs. Fails when sslyze reports non-compliance.
# PORTCULLIS_BIN names the binary (default target/debug/portcullis, built when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
SSLYZE_VERSION=6.3.1
tools="${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/sslyze-venv"
want="sslyze==$SSLYZE_VERSION"

# shellcheck source=scripts/conformance/lib.sh
. scripts/conformance/lib.sh
command -v openssl >/dev/null 2>&1 || apt_install openssl
ensure_venv "$tools" "$want"

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

start_gateway "$work" PORTCULLIS_CERT_DIR="$work/certs"
port=$GATEWAY_PORT

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
