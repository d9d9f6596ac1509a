"""Checks a Grafana dashboard against a live gateway, for scripts/conformance/metrics.sh.

    python3 dashboard.py DASHBOARD.json METRICS.txt RULES_OUT.yml

- the dashboard's shape: a uid and title, every panel with a Prometheus datasource and targets
  with an expression (rows excepted);
- every metric an expression names is one the gateway exports (a sample, or a family declared
  with # TYPE: some families have no samples until their event happens), so a renamed metric
  breaks this check rather than a panel;
- writes every expression, with Grafana's variables given values, as a recording rule to
  RULES_OUT.yml, for `promtool check rules` to parse as PromQL.
"""

import json
import re
import sys

dashboard_path, metrics_path, rules_out = sys.argv[1:4]
dash = json.load(open(dashboard_path))
problems = []
for key in ("uid", "title", "panels", "schemaVersion"):
    if key not in dash:
        problems.append(f"the dashboard has no {key!r}")

known = set()
for line in open(metrics_path):
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split()[:4]
        known.add(name)
        if kind == "histogram":
            known.update(name + s for s in ("_bucket", "_sum", "_count"))
    elif line and not line.startswith("#"):
        known.add(re.split(r"[{ ]", line, maxsplit=1)[0])

exprs = []
for var in (dash.get("templating") or {}).get("list") or []:
    q = var.get("definition")
    if q:
        for name in re.findall(r"\bportcullis_[a-z0-9_]+", q):
            if name not in known:
                problems.append(f"variable {var.get('name')}: {name} is not among the gateway's metrics")
for panel in dash.get("panels") or []:
    if panel.get("type") == "row":
        continue
    title = panel.get("title", f"panel {panel.get('id')}")
    if (panel.get("datasource") or {}).get("type") != "prometheus":
        problems.append(f"{title}: no Prometheus datasource")
    targets = panel.get("targets") or []
    if not targets:
        problems.append(f"{title}: no targets")
    for t in targets:
        expr = t.get("expr")
        if not expr:
            problems.append(f"{title} {t.get('refId')}: no expression")
            continue
        for name in re.findall(r"\bportcullis_[a-z0-9_]+", expr):
            if name not in known:
                problems.append(f"{title} {t.get('refId')}: {name} is not among the gateway's metrics")
        promql = expr.replace("$__rate_interval", "5m").replace("$job", ".+")
        exprs.append((f"dashboard:panel{panel.get('id')}_{t.get('refId')}", promql))

with open(rules_out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for record, e in exprs:
        f.write(f"      - record: {record}\n        expr: {json.dumps(e)}\n")

for p in problems:
    print(f"dashboard: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"dashboard: {len(exprs)} queries over {len(known)} exported names")
