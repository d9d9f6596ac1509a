#!/usr/bin/env bash
# Monitoring conformance, run by .ci/run: Prometheus' own promtool lints the live `/metrics` of a
# gateway that has served, refused and failed requests (every labelled family populated), checks
# the alerting rules in examples/prometheus/ and runs their unit tests, and checks every query of
# the Grafana dashboard in examples/grafana/ against the same live metrics (names, PromQL).
# PORTCULLIS_BIN names the binary (default target/debug/portcullis, built when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/conformance/lib.sh
. scripts/conformance/lib.sh
command -v promtool >/dev/null 2>&1 || apt_install prometheus

work=$(mktemp -d)
start_gateway "$work"
base="https://localhost:$GATEWAY_PORT"
ca="$work/certs/dev-ca.pem"
req() { curl -s -o /dev/null --cacert "$ca" --resolve "localhost:$GATEWAY_PORT:127.0.0.1" "$@"; }
req "$base/v1/models"                                  # proxied
req "$base/terminal"                                   # blocked
req "$base/nowhere"                                    # no route
req -H 'Origin: https://evil.example' -X POST "$base/v1/models"   # method refused
req --http2 "$base/health"
metrics="$work/metrics.txt"
curl -sf "http://127.0.0.1:$GATEWAY_ADMIN/metrics" >"$metrics"
grep -q '^portcullis_security_events_total{event="blocked_path"} 1$' "$metrics" \
    || { echo "metrics: the blocked request was not counted" >&2; exit 1; }
echo "metrics: promtool check metrics ($(grep -c '^# TYPE' "$metrics") families)"
promtool check metrics <"$metrics"
promtool check rules examples/prometheus/rules.yml
(cd examples/prometheus && promtool test rules rules_test.yml)
python3 scripts/conformance/dashboard.py examples/grafana/portcullis-security.json "$metrics" "$work/dashboard-rules.yml"
promtool check rules "$work/dashboard-rules.yml"
echo "metrics: ok"
