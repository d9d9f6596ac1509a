#!/usr/bin/env bash
# Dependency audit, run by .ci/run:
#   - bans, licenses and sources against deny.toml (cargo-deny);
#   - RustSec advisories from an offline snapshot of the advisory database: nothing is fetched
#     from the network. The snapshot is PORTCULLIS_ADVISORY_DB (a RustSec advisory-db checkout,
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

# The advisories check reads the snapshot through a file:// URL into a scratch folder.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 - "$scratch" "$db" <<'PY'
import sys, pathlib
scratch, db = sys.argv[1], sys.argv[2]
text = pathlib.Path("deny.toml").read_text()
extra = f'db-path = "{scratch}/dbs"\ndb-urls = ["file://{db}"]\n'
text = text.replace("[advisories]\n", "[advisories]\n" + extra, 1)
pathlib.Path(scratch, "deny.toml").write_text(text)
PY
cargo deny --log-level warn check --config "$scratch/deny.toml" advisories
echo "audit: ok"
