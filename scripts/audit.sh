#!/usr/bin/env bash
# Dependency audit, run by .ci/run:
#   - bans, licenses and sources against deny.toml (cargo-deny);
#   - RustSec advisories from an offline snapshot of the advisory database: nothing is fetched
#     from the network (a crate with a known vulnerability, e.g. smallvec 1.6.0, fails it). The snapshot is PORTCULLIS_ADVISORY_DB (a RustSec advisory-db checkout,
#     a git repository), else the one ../shared/tools/advisory-db prepares next to this checkout.
# Any vulnerability or unsound advisory against Cargo.lock fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "installing cargo-deny 0.20.2 (once)…"
    cargo install --locked --quiet cargo-deny@0.20.2
fi

db="${PORTCULLIS_ADVISORY_DB:-}"
if [ -z "$db" ] && [ -x ../shared/tools/advisory-db ]; then
    db="$(../shared/tools/advisory-db)"
fi
if [ -z "$db" ] || [ ! -d "$db/.git" ]; then
    echo "audit: no advisory database; set PORTCULLIS_ADVISORY_DB to a RustSec advisory-db git checkout" >&2
    exit 1
fi
echo "advisory database: $db ($(cat "$db/SNAPSHOT" 2>/dev/null || git -C "$db" log -1 --format=%cs))"

cargo deny --log-level warn check bans licenses sources

# The advisories check reads the snapshot where cargo-deny keeps its clone of the default RustSec
# URL (a folder named after the URL's hash), offline: nothing is fetched.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/dbs"
ln -s "$db" "$scratch/dbs/advisory-db-3157b0e258782691"
python3 - "$scratch" <<'PY'
import sys, pathlib
scratch = sys.argv[1]
text = pathlib.Path("deny.toml").read_text()
text = text.replace("[advisories]\n", f'[advisories]\ndb-path = "{scratch}/dbs"\n', 1)
pathlib.Path(scratch, "deny.toml").write_text(text)
PY
cargo deny --offline --log-level warn --config "$scratch/deny.toml" check advisories
echo "audit: ok"
