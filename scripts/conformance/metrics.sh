#!/usr/bin/env bash
# Monitoring conformance, run by .ci/run: Prometheus' own promtool lints the live `/metrics` of a
# gateway that has served, refused and failed requests (every labelled family populated), checks
# the alerting rules in examples/prometheus/ and runs their unit tests, and checks every query of
# the Grafana dashboard in examples/grafana/ against the same live metrics (names, PromQL). The
# OpenMetrics exposition (what Prometheus asks for) is parsed by the strict OpenMetrics parser of
# the Python prometheus-client, with tracing on, and must carry the client's trace id as an
# exemplar on a latency bucket.
# PORTCULLIS_BIN names the binary (default target/debug/portcullis, built when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/conformance/lib.sh
. scripts/conformance/lib.sh
command -v promtool >/dev/null 2>&1 || apt_install prometheus
tools="${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/openmetrics-venv"
ensure_venv "$tools" prometheus-client==0.26.0 PyYAML==6.0.3

work=$(mktemp -d)
# Tracing on, towards a collector that is not there (exports fail; requests do not notice), so
# latency buckets get exemplars.
start_gateway "$work" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(free_port)"
base="https://localhost:$GATEWAY_PORT"
ca="$work/certs/dev-ca.pem"
req() { curl -s -o /dev/null --cacert "$ca" --resolve "localhost:$GATEWAY_PORT:127.0.0.1" "$@"; }
req "$base/v1/models"                                  # proxied
req "$base/terminal"                                   # blocked
req "$base/nowhere"                                    # no route
req -H 'Origin: https://evil.example' -X POST "$base/v1/models"   # method refused
req --http2 "$base/health"
trace_id=0af7651916cd43dd8448eb211c80319c
req -H "traceparent: 00-$trace_id-b7ad6b7169203331-01" "$base/whoami"
metrics="$work/metrics.txt"
curl -sf "http://127.0.0.1:$GATEWAY_ADMIN/metrics" >"$metrics"
grep -q '^portcullis_security_events_total{event="blocked_path"} 1$' "$metrics" \
    || { echo "metrics: the blocked request was not counted" >&2; exit 1; }
echo "metrics: promtool check metrics ($(grep -c '^# TYPE' "$metrics") families)"
promtool check metrics <"$metrics"
promtool check rules examples/prometheus/rules.yml
(cd examples/prometheus && promtool test rules rules_test.yml)
# The Prometheus Operator's copy: the PrometheusRule's groups, as promtool reads a rule file.
"$tools/bin/python" -c 'import sys, yaml; print(yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"]))' \
    examples/k8s/monitoring/prometheusrule.yaml >"$work/prometheusrule.yml"
promtool check rules "$work/prometheusrule.yml"
python3 scripts/conformance/dashboard.py examples/grafana/portcullis-security.json "$metrics" "$work/dashboard-rules.yml"
promtool check rules "$work/dashboard-rules.yml"
curl -sf -H 'Accept: application/openmetrics-text; version=1.0.0' \
    "http://127.0.0.1:$GATEWAY_ADMIN/metrics" >"$work/openmetrics.txt"
"$tools/bin/python" - "$work/openmetrics.txt" "$trace_id" <<'PY'
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text, trace_id = open(sys.argv[1]).read(), sys.argv[2]
families = list(text_string_to_metric_families(text))
exemplars = [
    s for f in families for s in f.samples
    if s.name == "portcullis_request_duration_seconds_bucket" and s.exemplar
    and s.exemplar.labels.get("trace_id") == trace_id
]
if not exemplars:
    sys.exit(f"metrics: no latency bucket carries the exemplar trace_id={trace_id}")
print(f"metrics: OpenMetrics parsed strictly ({len(families)} families); exemplar on "
      f"{exemplars[0].name}{{route={exemplars[0].labels['route']!r},le={exemplars[0].labels['le']!r}}}")
PY
echo "metrics: ok"
