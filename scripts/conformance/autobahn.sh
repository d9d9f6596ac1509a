#!/usr/bin/env bash
# WebSocket conformance, run by .ci/run: the Autobahn testsuite's fuzzing client (wstest, PyPI
# `autobahntestsuite`) talks to a WebSocket echo server (bench/tools/ws_echo.rs, on
# tokio-tungstenite) *through* the gateway over TLS, so the gateway's frame parser and budgets sit
# in the path of every case. Any case whose result is not OK, NON-STRICT or INFORMATIONAL, or
# whose close was not clean, is a finding.
#
#   CASES  comma-separated case patterns (default "1.*,...,10.*"; CI runs these)
#          AUTOBAHN_FULL=1 runs every case the suite has, compression (12.*, 13.*) included.
#   PORTCULLIS_BIN  the gateway binary (default target/debug/portcullis, built when missing)
#
# wstest needs Python 2.7, which Debian no longer packages. The script uses `python2.7` from PATH
# or a pyenv-installed 2.7; without either it stops and says so.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/conformance/lib.sh
. scripts/conformance/lib.sh

py2=
# A pyenv shim on PATH exists even when no 2.7 is selected, so each candidate must run.
for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 "$(command -v python2.7 || true)"; do
    if [ -z "$py2" ] && [ -x "$p" ] && "$p" -c 'import sys' 2>/dev/null; then py2=$p; fi
done
[ -n "$py2" ] || { echo "autobahn: needs Python 2.7 (python2.7 on PATH or under pyenv)"; exit 2; }

venv="$HOME/.cache/portcullis/autobahn-py27"
want="autobahntestsuite==25.10.1"
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    "$py2" -m virtualenv --version >/dev/null 2>&1 ||
        "$py2" -m pip install --quiet --disable-pip-version-check --user 'virtualenv<20.16'
    "$py2" -m virtualenv --quiet "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "$want"
    echo "$want" >"$venv/.installed"
fi

[ -x target/debug/examples/ws_echo ] || cargo build --locked --quiet --example ws_echo
work=$(mktemp -d)
mkdir -p "$work/policies" "$work/reports"
echo_port=$(free_port)
target/debug/examples/ws_echo --listen "127.0.0.1:$echo_port" 2>"$work/echo.log" &
echo_pid=$!

# Budgets generous enough for the suite's 16 MiB messages and its ping and fragment floods; the
# gateway still parses and meters every frame.
cat >"$work/policies/p.toml" <<TOML
[websocket]
bytes_per_second = 1073741824
messages_per_second = 100000
max_message_bytes = 67108864

[[upstreams]]
name = "echo"
kind = "external"
addresses = ["127.0.0.1:$echo_port"]
health_check_interval_seconds = 0

[[routes]]
name = "echo"
path_prefix = "/echo"
upstream = "echo"
public = true
websocket = true
TOML

start_gateway "$work" PORTCULLIS_POLICY_DIR="$work/policies"
# shellcheck disable=SC2064 # expand now
trap "kill $echo_pid $GATEWAY_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf '$work'" EXIT

if [ "${AUTOBAHN_FULL:-0}" = 1 ]; then
    cases='"*"'
else
    cases=$(echo "${CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*}" | sed 's/[^,][^,]*/"&"/g')
fi
cat >"$work/spec.json" <<JSON
{
  "outdir": "$work/reports",
  "servers": [{"agent": "portcullis", "url": "wss://127.0.0.1:$GATEWAY_PORT/echo"}],
  "cases": [$cases],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON

echo "== Autobahn testsuite $("$venv/bin/pip" show autobahntestsuite 2>/dev/null | awk '/^Version/{print $2}') (fuzzing client) -> gateway -> tungstenite echo: cases $cases"
start=$(date +%s)
(cd "$work" && "$venv/bin/wstest" -m fuzzingclient -s spec.json >wstest.log 2>&1) || {
    tail -30 "$work/wstest.log"
    exit 1
}
echo "  ran in $(($(date +%s) - start)) s"

python3 - "$work/reports/index.json" <<'PY'
import json, sys
from collections import Counter
index = json.load(open(sys.argv[1]))
results = index["portcullis"]
ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts, bad = Counter(), []
for case, r in sorted(results.items(), key=lambda kv: [int(x) for x in kv[0].split(".")]):
    counts[r["behavior"]] += 1
    clean = r.get("behaviorClose") in ok
    if r["behavior"] not in ok or not clean:
        bad.append(f"{case}: behavior {r['behavior']}, close {r.get('behaviorClose')}")
print(f"  {len(results)} cases: " + ", ".join(f"{n} {b}" for b, n in sorted(counts.items())))
for b in bad:
    print("  FINDING: " + b)
if bad:
    sys.exit(1)
print("autobahn conformance: ok")
PY
