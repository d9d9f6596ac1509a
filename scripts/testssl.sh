#!/usr/bin/env bash
# Runs testssl.sh (Debian package `testssl.sh`) against a gateway started on its embedded
# defaults on 127.0.0.1, serving a certificate shaped like a public CA's (issuer in the chain, an
# OCSP responder in its AIA, answered on loopback, so the staple is real), and fails when any
# line is rated NOT ok, VULNERABLE or CRITICAL. Slow (minutes): kept out of the default test run.
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
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
    [ -n "${responder:-}" ] && kill "$responder" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# A site certificate as a public CA would issue it: chain with the issuer, and an OCSP responder
# in its AIA. The responder is `openssl ocsp` (offline mode) behind a loopback HTTP server, so the
# gateway staples real responses.
ocsp_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
pki="$work/pki"
mkdir -p "$pki" "$work/certs"
cat >"$pki/openssl.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
authorityInfoAccess = OCSP;URI:http://127.0.0.1:$ocsp_port/
CNF
(
    cd "$pki"
    export OPENSSL_CONF="$pki/openssl.cnf"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -subj "/CN=Portcullis testssl CA" -days 30 -extensions ca -out ca.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key 2>/dev/null
    openssl req -new -key leaf.key -subj "/CN=localhost" -out leaf.csr
    serial="7$(openssl rand -hex 15 | tr a-f A-F)"
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial "0x$serial" -days 30 \
        -extfile openssl.cnf -extensions leaf -out leaf.pem 2>/dev/null
    printf 'V\t491231235959Z\t\t%s\tunknown\t/CN=localhost\n' "$serial" >index.txt
)
cat "$pki/leaf.pem" "$pki/ca.pem" >"$work/certs/site.crt"
cp "$pki/leaf.key" "$work/certs/site.key"
python3 - "$ocsp_port" "$pki" <<'PY' &
import http.server, subprocess, sys, os
port, pki = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        req = self.rfile.read(int(self.headers.get("content-length", 0)))
        open(os.path.join(pki, "req.der"), "wb").write(req)
        subprocess.run(["openssl", "ocsp", "-index", "index.txt", "-CA", "ca.pem", "-rsigner", "ca.pem",
                        "-rkey", "ca.key", "-reqin", "req.der", "-respout", "resp.der", "-ndays", "1"],
                       cwd=pki, check=True, capture_output=True)
        body = open(os.path.join(pki, "resp.der"), "rb").read()
        self.send_response(200)
        self.send_header("content-type", "application/ocsp-response")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
responder=$!
sleep 0.5

(cd "$work" && exec env PORTCULLIS_HTTPS_ADDR="127.0.0.1:$port" PORTCULLIS_ADMIN_ADDR="127.0.0.1:$admin" \
    PORTCULLIS_HTTP_ADDR=off PORTCULLIS_TLS_MIN_VERSION="${MIN_TLS:-1.2}" PORTCULLIS_DEFAULT_CERT=site \
    "$OLDPWD/target/release/portcullis" serve >"$work/gateway.log" 2>&1) &
pid=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
    sleep 0.1
done

out="bench/results/$(date +%F)-testssl${MIN_TLS:+-tls$MIN_TLS}.txt"
mkdir -p bench/results
testssl --quiet --color 0 --warnings off --add-ca "$pki/ca.pem" \
    --ip 127.0.0.1 "https://localhost:$port/" | tee "$out.full" >/dev/null || true
# Keep the verdicts: section titles and every rated line.
grep -E '^ (Testing|Start|Done)|(not offered|offered|OK|ok|NOT ok|VULNERABLE|CRITICAL|HIGH|MEDIUM|LOW|supported)' "$out.full" \
    | sed -e 's/[[:space:]]\+$//' >"$out"
rm -f "$out.full"
echo "summary written to $out"
# No finding is accepted: the server's cipher order wins (`ignore_client_order`, set through the
# vendored listener).
bad="$(grep -E 'NOT ok|VULNERABLE|CRITICAL' "$out" | grep -v 'not vulnerable' || true)"
if [ -n "$bad" ]; then
    echo "testssl findings:"
    echo "$bad"
    exit 1
fi
echo "testssl: no line rated NOT ok, VULNERABLE or CRITICAL"
