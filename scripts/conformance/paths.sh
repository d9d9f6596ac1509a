#!/usr/bin/env bash
# Path-bypass conformance, run by .ci/run: ffuf (Debian) sends a bypass wordlist for every
# blocked prefix to a gateway whose policy routes everything else to the in-process worker. A
# request the gateway does not refuse itself (400 bad path, 403 blocked) has reached the upstream:
# that is a finding. The wordlist is made here, independently of the gateway's own corpus
# (src/policy/paths.rs), from the usual 403-bypass spellings.
# PORTCULLIS_BIN names the binary (default target/debug/portcullis, built when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/conformance/lib.sh
. scripts/conformance/lib.sh
command -v ffuf >/dev/null 2>&1 || apt_install ffuf

work=$(mktemp -d)
mkdir -p "$work/policies"
PREFIXES=(terminal .git .env debug/pprof actuator server-status)
cat >"$work/policies/p.toml" <<'TOML'
[blocked]
paths = ["/.git", "/.env", "/debug/pprof", "/actuator", "/server-status"]

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "everything"
path_prefix = "/"
upstream = "worker"
public = true
TOML

python3 - "$work/words.txt" "${PREFIXES[@]}" <<'PY'
import sys, urllib.parse
out, prefixes = sys.argv[1], sys.argv[2:]
words = set()
def enc(s, every=False):
    return "".join(f"%{ord(c):02x}" if every or c in "./" else c for c in s)
for p in prefixes:
    head, _, tail = p.partition("/")
    last = p.split("/")[-1]
    variants = [
        p, p + "/", p + "/x", p + "/.", p + "//", p + "/./", p + "/x/..", p + "/..;/", p + ";", p + ";/",
        p + ";x=1", p + "%20", p + "%09", p + "%00", p + "%0a", p + "%0d", p + "%23", p + "%3f",
        p + "%2f", p + "%2F", p + "..%2f", p + "%252f", p + "/%2e", p + "/%2e%2e", p + ".json", p + "~",
        p + "/*", p + "#", p + "?", p + "?x", p + "\\", p + "%5c", p + "%5C",
        "/" + p, "//" + p, "./" + p, "/./" + p, ";/" + p, ".;/" + p, "..;/" + p, "x/../" + p,
        "x/..;/" + p, "x/%2e%2e/" + p, "x/%2e%2e%2f" + p, "%2e/" + p, "%2e%2e/" + p, "%2f" + p,
        "%2F" + p, "%252e/" + p, "%252e%252e/" + p, "%c0%ae/" + p, "%c0%ae%c0%ae/" + p,
        "%e0%80%ae/" + p, "x%5c..%5c" + p, "x\\..\\" + p, "%5c" + p, enc(p), enc(p, True),
        enc(p, True).upper(), "%25" + enc(p, True)[1:], p.upper(), p.capitalize(), p.swapcase(),
        "".join(c.upper() if i % 2 else c for i, c in enumerate(p)),
        "".join(chr(0xFF00 + ord(c) - 0x20) if c.isalpha() else c for c in p),
        p.replace("/", "//"), p.replace("/", "/./"), p.replace("/", "%2f"), p.replace("/", ";/"),
        p.replace(".", "%2e"), p.replace(".", "%252e"), p.replace(".", "%u002e"),
    ]
    for v in variants:
        if v and "\n" not in v and " " not in v:
            words.add(v)
with open(out, "w") as f:
    f.write("\n".join(sorted(words)) + "\n")
print(f"{len(words)} bypass attempts for {len(prefixes)} blocked prefixes")
PY

start_gateway "$work" PORTCULLIS_POLICY_DIR="$work/policies"
port=$GATEWAY_PORT
# The control: an ordinary path goes through to the worker.
control=$(curl -sk -o /dev/null -w '%{http_code}' "https://localhost:$port/v1/models" --resolve "localhost:$port:127.0.0.1")
[ "$control" = 200 ] || { echo "paths conformance: the control request got $control, not 200"; exit 1; }

echo "== ffuf $(ffuf -V 2>&1 | awk '{print $NF}' | head -1): every response that is not 400/403 is a finding"
ffuf -s -u "https://localhost:$port/FUZZ" -w "$work/words.txt" -mc all -fc 400,403 -t 8 \
    -H "Host: localhost:$port" -o "$work/ffuf.json" -of json >"$work/through.txt" 2>"$work/ffuf.err" || true
total=$(wc -l <"$work/words.txt")
through=$(grep -c . "$work/through.txt" || true)
echo "  $total requests, $through answered by anything but the gateway's 400/403"
if [ "$through" != 0 ]; then
    sed 's/^/  FINDING: /' "$work/through.txt"
    exit 1
fi
echo "paths conformance: ok"
