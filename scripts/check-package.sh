#!/usr/bin/env bash
# The package for standalone hosts, built and checked; exits non-zero on any finding:
#   - builds the .deb with cargo-deb (installed at the version pinned below when missing)
#   - installs it into a scratch root (dpkg-deb), then checks the layout, the modes, the
#     conffiles and the maintainer scripts
#   - verifies the systemd unit (`systemd-analyze verify`) and scores its sandbox
#     (`systemd-analyze security`: overall exposure at most 2.0)
#   - starts the packaged binary on the packaged configuration and policy (their absolute paths
#     moved into the scratch root, listeners on free loopback ports, a throwaway certificate):
#     it serves HTTPS, keeps /terminal shut, and a SIGHUP applies a policy edit
#
#   scripts/check-package.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "check-package: installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --quiet
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "check-package: please install systemd" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq systemd >/dev/null
fi

fail() { echo "check-package: $*" >&2; exit 1; }

echo "check-package: cargo deb"
# The package's layout, unit and scripts are what this checks, not the binary's speed: thin LTO
# over four codegen units builds it minutes faster than the release profile's whole-program LTO
# over one (CHECK_PACKAGE_PROFILE=release builds it as released).
if [ "${CHECK_PACKAGE_PROFILE:-fast}" = fast ]; then
    export CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=4
fi
deb=$(cargo deb --locked 2>/dev/null | tail -n 1)
[ -f "$deb" ] || fail "cargo deb made no package ($deb)"
echo "check-package: $deb ($(du -h "$deb" | cut -f1))"

scratch=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$scratch"' EXIT
root="$scratch/root"
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$scratch/DEBIAN"

# Layout and modes.
unit=""
for u in lib/systemd/system/portcullis.service usr/lib/systemd/system/portcullis.service; do
    [ -f "$root/$u" ] && unit="$root/$u"
done
[ -n "$unit" ] || fail "no systemd unit in the package"
[ -x "$root/usr/bin/portcullis" ] || fail "no /usr/bin/portcullis"
for f in etc/portcullis/portcullis.toml etc/portcullis/policies/terminator.toml; do
    [ -f "$root/$f" ] || fail "no /$f"
    [ "$(stat -c %a "$root/$f")" = 640 ] || fail "/$f is not 0640"
    grep -qx "/$f" "$scratch/DEBIAN/conffiles" || fail "/$f is not a conffile"
done
"$root/usr/bin/portcullis" --version | grep -q '^portcullis ' || fail "the binary does not run"

# Maintainer scripts: they parse, make the user, and hand the unit to systemd's helpers.
for s in postinst postrm prerm; do
    [ -f "$scratch/DEBIAN/$s" ] && { sh -n "$scratch/DEBIAN/$s" || fail "$s does not parse"; }
done
grep -q 'adduser --system' "$scratch/DEBIAN/postinst" || fail "postinst makes no user"
grep -q 'deb-systemd-helper' "$scratch/DEBIAN/postinst" || fail "postinst does not enable the unit"
if grep -q 'deb-systemd-invoke start' "$scratch/DEBIAN/postinst"; then
    fail "postinst starts the unit before it has a certificate"
fi

# The unit: valid, and locked down. Verified inside the scratch root, which gets the host's
# own units (the targets it is ordered against) and the `kill` its reload runs.
mkdir -p "$root/usr/lib/systemd/system" "$root/usr/bin"
for d in /lib/systemd/system /usr/lib/systemd/system; do
    [ -d "$d" ] && cp -rn "$d/." "$root/usr/lib/systemd/system/" 2>/dev/null || true
done
[ -e "$root/bin" ] || ln -s usr/bin "$root/bin"
cp "$(type -P kill)" "$root/usr/bin/kill"
systemd-analyze verify --root="$root" --man=no "${unit#"$root"}" || fail "systemd-analyze verify"
security=$(systemd-analyze security --offline=true --root="$root" --threshold=20 "${unit#"$root"}" 2>&1) \
    || { echo "$security" >&2; fail "exposure above 2.0"; }
echo "check-package: $(echo "$security" | grep 'Overall exposure')"
for want in 'AmbientCapabilities=CAP_NET_BIND_SERVICE' 'ExecReload=/bin/kill -HUP $MAINPID' \
    'ProtectSystem=strict' 'NoNewPrivileges=yes' 'PrivateTmp=yes' 'SystemCallFilter=@system-service'; do
    grep -qxF "$want" "$unit" || fail "the unit lacks $want"
done

# The packaged binary on the packaged configuration: paths into the scratch root.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
certs="$scratch/certs"
state="$scratch/state"
mkdir -p "$certs" "$state"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$certs/localhost.key" -out "$certs/localhost.crt" 2>/dev/null
export PORTCULLIS_POLICY_DIR="$root/etc/portcullis/policies"
export PORTCULLIS_CERT_DIR="$certs"
export PORTCULLIS_DATA_DIR="$state"
export PORTCULLIS_TOKEN_FILE="$state/worker-token"
export PORTCULLIS_HTTPS_ADDR="127.0.0.1:$(free_port)"
export PORTCULLIS_HTTP_ADDR="127.0.0.1:$(free_port)"
export PORTCULLIS_ADMIN_ADDR="127.0.0.1:$(free_port)"
export PORTCULLIS_READY_FILE="$scratch/ready.json"
config="$root/etc/portcullis/portcullis.toml"
grep -q '^mode = "production"' "$config" || fail "the packaged configuration is not production"
"$root/usr/bin/portcullis" check --config "$config" >"$scratch/check.log" 2>&1 \
    || { cat "$scratch/check.log" >&2; fail "portcullis check refuses the packaged configuration"; }
"$root/usr/bin/portcullis" serve --config "$config" >"$scratch/serve.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -f "$PORTCULLIS_READY_FILE" ] && break; sleep 0.1; done
[ -f "$PORTCULLIS_READY_FILE" ] || { cat "$scratch/serve.log" >&2; fail "the packaged gateway did not start"; }
https="$PORTCULLIS_HTTPS_ADDR"
get() { curl -s -o /dev/null -w '%{http_code}' --cacert "$certs/localhost.crt" \
    --resolve "localhost:${https##*:}:127.0.0.1" "https://localhost:${https##*:}$1"; }
[ "$(get /terminal)" = 403 ] || fail "/terminal is not refused"
[ "$(get /health)" = 200 ] || fail "/health does not answer"
# A policy edit, applied by SIGHUP (the unit's reload).
sed -i 's|^paths = \["/.git"|paths = ["/private", "/.git"|' "$PORTCULLIS_POLICY_DIR/terminator.toml"
grep -q '"/private"' "$PORTCULLIS_POLICY_DIR/terminator.toml" || fail "the policy edit did not apply"
kill -HUP "$pid"
for _ in $(seq 50); do [ "$(get /private/x)" = 403 ] && break; sleep 0.1; done
[ "$(get /private/x)" = 403 ] || { cat "$scratch/serve.log" >&2; fail "SIGHUP did not apply the edit"; }
kill -TERM "$pid"
wait "$pid" || true
pid=""
echo "check-package: ok"
