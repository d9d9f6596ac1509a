"""Offline checks of the deployment files, run by scripts/check-deploy.sh (which installs what this
needs: PyYAML and kubernetes-validate, with its bundled Kubernetes JSON schemas).

  dockerfile   base images pinned by exact tag, a non-root USER and a HEALTHCHECK in the final
               stage, and a .dockerignore that keeps build output and key material out
  schemas      every manifest under examples/k8s against the Kubernetes schemas, strict (unknown
               fields are errors), for the oldest and the newest Kubernetes the example supports
  hardening    what a schema cannot say: the gateway's pods stay non-root, read-only and without
               capabilities, probes hit the admin listener, the Service never exposes it, the
               termination grace period covers the gateway's drain, and so on
  monitoring   examples/k8s/monitoring (ServiceMonitor, PrometheusRule: the Prometheus Operator's
               CRDs, checked against the subset of their schemas the example uses, strict), agreeing
               with the rest: the ServiceMonitor finds the metrics Service, which finds the pods'
               admin port; the PrometheusRule holds exactly examples/prometheus/rules.yml
  gateway      `portcullis check` on the ConfigMaps and Secrets exactly as the Deployment mounts
               them, when a portcullis binary is at hand (placeholders are swapped for throwaway
               values and a throwaway certificate)

Prints one line per finding and exits 1 if there is any.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "examples" / "k8s"
MONITORING = K8S / "monitoring"
RULES = ROOT / "examples" / "prometheus" / "rules.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# The oldest Kubernetes the example supports (the preStop sleep action is on by default from
# 1.30) and the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
ADMIN_PORT = 9901
PLACEHOLDER = "REPLACE_ME"
# Mount points are re-rooted under a temporary folder for `portcullis check`.
MOUNT_PREFIXES = ("/etc/portcullis/", "/var/lib/portcullis/")

findings: list[str] = []


def finding(where: str, message: str) -> None:
    findings.append(f"{where}: {message}")


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    out: list[tuple[int, str, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, args = buf.partition(" ")
        out.append((start, word.upper(), args.strip()))
        buf = ""
    if buf:
        word, _, args = buf.partition(" ")
        out.append((start, word.upper(), args.strip()))
    return out


def check_dockerfile() -> None:
    where = rel(DOCKERFILE)
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    stages: list[str] = []
    final: list[tuple[int, str, str]] = []
    for line, word, args in instructions:
        if word == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            image = parts[0] if parts else ""
            if len(parts) >= 3 and parts[1].lower() == "as":
                stages.append(parts[2].lower())
            final = []
            if image.lower() in stages or image == "scratch":
                continue
            name, _, digest = image.partition("@")
            tag = name.rsplit("/", 1)[-1].partition(":")[2]
            if not tag and not digest:
                finding(f"{where}:{line}", f"base image {image!r} has no tag: pin it")
            elif tag == "latest":
                finding(f"{where}:{line}", f"base image {image!r} uses 'latest': pin a version")
            elif not digest and not re.search(r"\d+\.\d+", tag):
                finding(
                    f"{where}:{line}",
                    f"base image {image!r}: tag {tag!r} moves; pin an exact version "
                    "(e.g. 12.11-slim) or a digest",
                )
        else:
            final.append((line, word, args))
    users = [(line, args) for line, word, args in final if word == "USER"]
    if not users:
        finding(where, "the final stage sets no USER: the gateway would run as root")
    else:
        line, user = users[-1]
        name = user.split(":")[0]
        if name in ("root", "0"):
            finding(f"{where}:{line}", f"the final stage runs as {user!r}; use a non-root user")
    # An AUTH_PROVIDER baked into the image would override the provider of every policy run in
    # it (a mounted policy's `jwt` silently becomes the worker token, or worse `local`).
    for line, word, args in final:
        if word == "ENV" and re.search(r"(^|\s)AUTH_PROVIDER[=\s]", args):
            finding(
                f"{where}:{line}",
                "the image sets AUTH_PROVIDER: it would override every mounted policy's provider",
            )
    checks = [(line, args) for line, word, args in final if word == "HEALTHCHECK"]
    if not checks:
        finding(where, "the final stage has no HEALTHCHECK")
    elif checks[-1][1].strip().upper() == "NONE":
        finding(f"{where}:{checks[-1][0]}", "HEALTHCHECK NONE disables the health check")

    if not DOCKERIGNORE.is_file():
        finding(rel(DOCKERIGNORE), "missing: the whole tree, keys included, goes into the build context")
        return
    entries = {
        e.strip().rstrip("/")
        for e in DOCKERIGNORE.read_text().splitlines()
        if e.strip() and not e.startswith("#")
    }
    for needed in ("target", "certs", "data", ".git", "**/*.key"):
        if needed not in entries:
            finding(rel(DOCKERIGNORE), f"does not exclude {needed!r}")


# --- Kubernetes manifests ---------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """Refuses duplicate keys, which PyYAML would silently resolve to the last one."""


def _mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_manifests() -> dict[Path, list[dict]]:
    files = sorted(
        p for folder in (K8S, MONITORING) for p in folder.iterdir() if p.suffix in (".yaml", ".yml")
    )
    if not files:
        finding(rel(K8S), "no manifests")
    docs: dict[Path, list[dict]] = {}
    for f in files:
        try:
            loaded = [d for d in yaml.load_all(f.read_text(), Loader=StrictLoader) if d is not None]
        except yaml.YAMLError as e:
            finding(rel(f), f"not valid YAML: {e}")
            continue
        for i, d in enumerate(loaded):
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                finding(f"{rel(f)} document {i + 1}", "not a Kubernetes object (kind/apiVersion)")
        docs[f] = [d for d in loaded if isinstance(d, dict)]
    return docs


def name_of(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def check_schemas(docs: dict[Path, list[dict]]) -> None:
    for f, items in docs.items():
        for doc in items:
            if doc.get("kind") == "Kustomization":
                continue
            if doc.get("apiVersion") == "monitoring.coreos.com/v1":
                schema = MONITORING_SCHEMAS.get(doc.get("kind"))
                if schema is None:
                    finding(f"{rel(f)} {name_of(doc)}", "no schema for this monitoring kind")
                    continue
                for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
                    path = ".".join(str(p) for p in e.path) or "(top)"
                    finding(f"{rel(f)} {name_of(doc)}", f"monitoring.coreos.com/v1: {path}: {e.message}")
                continue
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(str(p) for p in e.path) or "(top)"
                    finding(f"{rel(f)} {name_of(doc)}", f"Kubernetes {version}: {path}: {e.message}")
                except kubernetes_validate.SchemaNotFoundError:
                    finding(
                        f"{rel(f)} {name_of(doc)}",
                        f"Kubernetes {version} has no {doc.get('apiVersion')} {doc.get('kind')}",
                    )


def check_kustomization(docs: dict[Path, list[dict]]) -> None:
    for folder in (K8S, MONITORING):
        check_kustomization_in(folder, {f: d for f, d in docs.items() if f.parent == folder})


def check_kustomization_in(folder: Path, docs: dict[Path, list[dict]]) -> None:
    k = folder / "kustomization.yaml"
    if k not in docs:
        finding(rel(folder), "no kustomization.yaml")
        return
    listed = set()
    for doc in docs[k]:
        for r in doc.get("resources") or []:
            listed.add(r)
            if not (folder / r).is_file():
                finding(rel(k), f"resource {r!r} does not exist")
    for f in docs:
        # secret.yaml stays out so that re-applying never resets real secrets to placeholders.
        if f.name not in listed and f.name not in ("kustomization.yaml", "secret.yaml"):
            finding(rel(k), f"{f.name} is not among the resources")
        if f.name == "secret.yaml" and f.name in listed:
            finding(rel(k), "lists secret.yaml: re-applying would reset the secrets to placeholders")


def all_docs(docs: dict[Path, list[dict]]):
    for f, items in docs.items():
        for d in items:
            yield f, d


def check_hardening(docs: dict[Path, list[dict]]) -> None:
    workloads = [
        (f, d)
        for f, d in all_docs(docs)
        if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")
    ]
    if not workloads:
        finding(rel(K8S), "no Deployment")
    config = gateway_config(docs)
    for f, d in workloads:
        where = f"{rel(f)} {name_of(d)}"
        pod = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
        psc = pod.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                finding(where, f"{flag} is set")
        if pod.get("automountServiceAccountToken") is not False:
            finding(where, "automountServiceAccountToken should be false: the gateway never calls the API")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for c in pod.get("containers") or []:
            cw = f"{where} container {c.get('name')}"
            csc = c.get("securityContext") or {}
            if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                finding(cw, "runAsNonRoot is not true")
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            if uid in (None, 0):
                finding(cw, "runAsUser is unset or 0 (the image's user is 10001)")
            seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                finding(cw, "seccompProfile is not RuntimeDefault")
            if csc.get("allowPrivilegeEscalation") is not False:
                finding(cw, "allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                finding(cw, "privileged")
            if csc.get("readOnlyRootFilesystem") is not True:
                finding(cw, "readOnlyRootFilesystem is not true")
            caps = csc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                finding(cw, "capabilities do not drop ALL")
            if caps.get("add"):
                finding(cw, f"adds capabilities {caps['add']}")
            image = str(c.get("image", ""))
            if "@" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
                finding(cw, f"image {image!r} is not pinned to a version")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        finding(cw, f"resources.{kind}.{r} is not set")
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                port = ports.get(get.get("port"), get.get("port"))
                if get.get("path") != path or port != ADMIN_PORT:
                    finding(cw, f"{probe} must be httpGet {path} on the admin port {ADMIN_PORT}")
            env = {e.get("name"): e for e in c.get("env") or []}
            admin = (env.get("PORTCULLIS_ADMIN_ADDR") or {}).get("value", "")
            if admin.startswith("127.") or admin.startswith("[::1]"):
                finding(cw, "PORTCULLIS_ADMIN_ADDR is loopback: the kubelet's probes cannot reach it")
            token = env.get("PORTCULLIS_WORKER_TOKEN") or {}
            if "value" in token:
                finding(cw, "PORTCULLIS_WORKER_TOKEN is written in clear: take it from a Secret")
            if not token and not env.get("PORTCULLIS_TOKEN_FILE"):
                finding(cw, "no PORTCULLIS_WORKER_TOKEN: the gateway would generate one per pod")
            mounts = {m.get("mountPath"): m for m in c.get("volumeMounts") or []}
            for m in mounts.values():
                v = volumes.get(m.get("name")) or {}
                if m.get("subPath") and any(k in v for k in ("configMap", "secret", "projected")):
                    finding(cw, f"{m.get('mountPath')}: subPath mounts never see updates; mount the folder")
            data_dir = (env.get("PORTCULLIS_DATA_DIR") or {}).get("value")
            if data_dir and (data_dir not in mounts or m_readonly(mounts[data_dir])):
                finding(cw, f"the data folder {data_dir} is not a writable volume (the root filesystem is read-only)")
            # Shutdown: preStop sleep, then unready_seconds, then the drain, then ~2 s of runtime
            # shutdown must all fit before SIGKILL.
            grace_env = (env.get("PORTCULLIS_GRACE_SECONDS") or {}).get("value")
            grace = int(grace_env) if grace_env else config.get("shutdown", {}).get("grace_seconds", 20)
            unready = min(config.get("shutdown", {}).get("unready_seconds", 2), grace)
            pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
            need = pre + unready + grace + 2
            have = pod.get("terminationGracePeriodSeconds", 30)
            if have < need:
                finding(
                    where,
                    f"terminationGracePeriodSeconds {have} < preStop {pre} + unready {unready} + "
                    f"grace {grace} + 2: the kubelet would kill the gateway mid-drain",
                )
    for f, d in all_docs(docs):
        where = f"{rel(f)} {name_of(d)}"
        if d.get("kind") == "Service":
            spec = d.get("spec") or {}
            ports = spec.get("ports") or []
            admin = [p for p in ports if p.get("port") == ADMIN_PORT or p.get("targetPort") in (ADMIN_PORT, "admin")]
            # The admin listener may only be named by a headless Service that carries nothing
            # else (endpoints for a ServiceMonitor): no virtual IP, no load balancer.
            headless = spec.get("clusterIP") == "None" and spec.get("type", "ClusterIP") == "ClusterIP"
            if admin and not (headless and len(ports) == 1):
                finding(where, f"exposes the admin listener ({ADMIN_PORT}); only a headless Service with no other port may name it")
        if d.get("kind") == "NetworkPolicy":
            for rule in (d.get("spec") or {}).get("ingress") or []:
                ports = [p.get("port") for p in rule.get("ports") or []]
                if (not ports or ADMIN_PORT in ports or "admin" in ports) and not rule.get("from"):
                    finding(where, f"admits everyone to the admin port {ADMIN_PORT}")
        if d.get("kind") == "Secret":
            for k, v in ((d.get("data") or {}) | (d.get("stringData") or {})).items():
                if PLACEHOLDER not in str(v):
                    finding(where, f"key {k!r} is not a {PLACEHOLDER} placeholder: no real secret in the repository")


def _strict(properties: dict, required: list[str] | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_METADATA = _strict({"name": _STR, "namespace": _STR, "labels": _LABELS, "annotations": _LABELS}, ["name"])
_SELECTOR = _strict({"matchLabels": _LABELS, "matchExpressions": {"type": "array"}})
# The subset of the Prometheus Operator's CRD schemas (monitoring.coreos.com/v1, operator 0.8x)
# that the example uses, with the CRDs' types and enums; anything else is a finding, as unknown
# fields are for the built-in kinds.
MONITORING_SCHEMAS = {
    "ServiceMonitor": _strict(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": _strict(
                {
                    "selector": _SELECTOR,
                    "namespaceSelector": _strict({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}),
                    "jobLabel": _STR,
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": _strict(
                            {
                                "port": _STR,
                                "path": {"type": "string", "pattern": "^/"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                                "relabelings": {
                                    "type": "array",
                                    "items": _strict(
                                        {
                                            "sourceLabels": {"type": "array", "items": _STR},
                                            "targetLabel": _STR,
                                            "regex": _STR,
                                            "replacement": _STR,
                                            "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"]},
                                        }
                                    ),
                                },
                            },
                            ["port"],
                        ),
                    },
                },
                ["selector", "endpoints"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    "PrometheusRule": _strict(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": _strict(
                {
                    "groups": {
                        "type": "array",
                        "items": _strict(
                            {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": _strict(
                                        {
                                            "alert": _STR,
                                            "record": _STR,
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": _LABELS,
                                            "annotations": _LABELS,
                                        },
                                        ["expr"],
                                    ),
                                },
                            },
                            ["name", "rules"],
                        ),
                    }
                },
                ["groups"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
}


def _selects(selector: dict, labels: dict) -> bool:
    want = (selector or {}).get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def check_monitoring(docs: dict[Path, list[dict]]) -> None:
    """The ServiceMonitor reaches the admin port of the gateway's pods; the rules are rules.yml."""
    services = [d for _, d in all_docs(docs) if d.get("kind") == "Service"]
    pods = [
        ((d.get("spec") or {}).get("template") or {})
        for _, d in all_docs(docs)
        if d.get("kind") == "Deployment"
    ]
    monitors = [(f, d) for f, d in all_docs(docs) if d.get("kind") == "ServiceMonitor"]
    rules = [(f, d) for f, d in all_docs(docs) if d.get("kind") == "PrometheusRule"]
    if not monitors:
        finding(rel(MONITORING), "no ServiceMonitor")
    if not rules:
        finding(rel(MONITORING), "no PrometheusRule")
    for f, m in monitors:
        where = f"{rel(f)} {name_of(m)}"
        spec = m.get("spec") or {}
        matched = [s for s in services if _selects(spec.get("selector"), (s.get("metadata") or {}).get("labels") or {})]
        if len(matched) != 1:
            finding(where, f"selects {len(matched)} Services; it should select exactly the metrics Service")
            continue
        svc = matched[0]
        for ep in spec.get("endpoints") or []:
            port = next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("name") == ep.get("port")), None)
            if port is None:
                finding(where, f"endpoint port {ep.get('port')!r} is not a port of {name_of(svc)}")
                continue
            if ep.get("path", "/metrics") != "/metrics":
                finding(where, f"scrapes {ep.get('path')}, the gateway serves /metrics")
            target = port.get("targetPort")
            reached = False
            for tpl in pods:
                if not _selects({"matchLabels": (svc.get("spec") or {}).get("selector")}, (tpl.get("metadata") or {}).get("labels") or {}):
                    continue
                for c in (tpl.get("spec") or {}).get("containers") or []:
                    for cp in c.get("ports") or []:
                        if cp.get("name") == "admin" and target in ("admin", cp.get("containerPort")):
                            reached = True
            if not reached:
                finding(where, f"{name_of(svc)} port {port.get('name')} does not reach a gateway container's admin port")
    expected = yaml.safe_load(RULES.read_text())
    for f, r in rules:
        if (r.get("spec") or {}) != expected:
            finding(f"{rel(f)} {name_of(r)}", f"spec differs from {rel(RULES)} (copy the groups over)")


def m_readonly(mount: dict) -> bool:
    return bool(mount.get("readOnly"))


def gateway_config(docs: dict[Path, list[dict]]) -> dict:
    """portcullis.toml from the ConfigMap that the Deployment mounts, parsed (or {})."""
    for f, d in all_docs(docs):
        if d.get("kind") == "ConfigMap" and "portcullis.toml" in (d.get("data") or {}):
            try:
                return tomllib.loads(d["data"]["portcullis.toml"])
            except tomllib.TOMLDecodeError as e:
                finding(f"{rel(f)} {name_of(d)}", f"portcullis.toml: {e}")
    return {}


# --- portcullis check on the mounted files ----------------------------------------------------


def binary_for(what: str) -> tuple[str | None, str]:
    """The binary, or None and the report line (a finding under CI=true, where it must exist)."""
    binary = find_binary()
    if binary:
        return binary, ""
    if os.environ.get("CI") == "true":
        finding(what, "no portcullis binary (build it first, or set PORTCULLIS_BIN)")
        return None, "  missing"
    return None, "  skipped: no portcullis binary (build it, or set PORTCULLIS_BIN)"


def find_binary() -> str | None:
    explicit = os.environ.get("PORTCULLIS_BIN")
    if explicit:
        return explicit
    for p in (ROOT / "target" / "debug" / "portcullis", ROOT / "target" / "release" / "portcullis"):
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which("portcullis")


def reroot(text: str, root: Path) -> str:
    for prefix in MOUNT_PREFIXES:
        text = text.replace(prefix, f"{root}{prefix}")
    return text


def throwaway_pair(folder: Path) -> tuple[str, str]:
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "365", "-subj", "/CN=gateway.example.com",
            "-addext", "subjectAltName=DNS:gateway.example.com",
            "-keyout", str(folder / "k.pem"), "-out", str(folder / "c.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return (folder / "c.pem").read_text(), (folder / "k.pem").read_text()


def secret_values(doc: dict, scratch: Path) -> dict[str, str]:
    import base64

    values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    values.update(doc.get("stringData") or {})
    if doc.get("type") == "kubernetes.io/tls":
        values["tls.crt"], values["tls.key"] = throwaway_pair(scratch)
    for k, v in values.items():
        if PLACEHOLDER in v:
            values[k] = secrets.token_urlsafe(36)
    return values


def check_gateway(docs: dict[Path, list[dict]]) -> str:
    binary, report = binary_for("gateway")
    if not binary:
        return report
    if not shutil.which("openssl"):
        finding("gateway", "openssl is needed for a throwaway certificate")
        return "  missing openssl"
    config_maps = {d["metadata"]["name"]: d for _, d in all_docs(docs) if d.get("kind") == "ConfigMap"}
    secret_docs = {d["metadata"]["name"]: d for _, d in all_docs(docs) if d.get("kind") == "Secret"}
    deployments = [(f, d) for f, d in all_docs(docs) if d.get("kind") == "Deployment"]
    results = []
    with tempfile.TemporaryDirectory(prefix="portcullis-deploy-") as tmp:
        root = Path(tmp) / "pod"
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        secret_data = {n: secret_values(d, scratch) for n, d in secret_docs.items()}
        for f, dep in deployments:
            where = f"{rel(f)} {name_of(dep)}"
            pod = dep["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod.get("volumes") or []}
            c = pod["containers"][0]
            # What the kubelet would mount, re-rooted under the temporary folder.
            for m in c.get("volumeMounts") or []:
                target = Path(f"{root}{m['mountPath']}")
                target.mkdir(parents=True, exist_ok=True)
                v = volumes.get(m["name"]) or {}
                sources = []
                if "configMap" in v:
                    sources.append(("configMap", v["configMap"]))
                if "secret" in v:
                    sources.append(("secret", {**v["secret"], "name": v["secret"]["secretName"]}))
                for s in (v.get("projected") or {}).get("sources") or []:
                    sources += [(k, s[k]) for k in ("configMap", "secret") if k in s]
                for kind, src in sources:
                    data = (
                        (config_maps.get(src["name"]) or {}).get("data")
                        if kind == "configMap"
                        else secret_data.get(src["name"])
                    )
                    if data is None:
                        finding(where, f"volume {m['name']}: {kind} {src['name']!r} is not among the manifests")
                        continue
                    items = src.get("items") or [{"key": k, "path": k} for k in data]
                    for it in items:
                        if it["key"] not in data:
                            finding(where, f"volume {m['name']}: {src['name']} has no key {it['key']!r}")
                            continue
                        out = target / it["path"]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text(reroot(data[it["key"]], root))
            env = {"PATH": "/usr/bin:/bin", "HOME": str(root / "home")}
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = reroot(str(e["value"]), root)
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
                if ref:
                    value = (secret_data.get(ref.get("name")) or {}).get(ref.get("key"))
                    if value is None:
                        finding(where, f"env {e['name']}: no Secret key {ref.get('name')}/{ref.get('key')}")
                    else:
                        env[e["name"]] = value
            run = subprocess.run(
                [binary, "check"], env=env, capture_output=True, text=True, timeout=60
            )
            if run.returncode != 0:
                detail = (run.stderr.strip() or run.stdout.strip()).replace(str(root), "")
                finding(where, f"`portcullis check` refuses the mounted configuration:\n{detail}")
            else:
                # The summary lines; the route table is `portcullis check`'s to show.
                keep = ("config:", "policy:", "certificate", "ok")
                results += [
                    "  " + line.replace(str(root), "")
                    for line in run.stdout.splitlines()
                    if line.startswith(keep)
                ]
    return "\n".join(results)


def check_image_policy() -> str:
    """`portcullis check` on the image's own policy folder with the image's environment.

    The folder is `policies/` after the Dockerfile's RUN steps on /etc/portcullis/policies (run
    here on a copy), so the check sees what `docker run` would serve. It must pass, and the
    unmodified `policies/` under the same environment must be refused (a development provider
    on every interface): that proves the check can tell the two apart.
    """
    binary, report = binary_for("image")
    if not binary:
        return report
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    start = max(i for i, (_, word, _) in enumerate(instructions) if word == "FROM")
    final = instructions[start + 1 :]
    image_env: dict[str, str] = {}
    for _, word, args in final:
        if word == "ENV":
            for assignment in shlex.split(args):
                name, _, value = assignment.partition("=")
                image_env[name] = value
    with tempfile.TemporaryDirectory(prefix="portcullis-image-") as tmp:
        root = Path(tmp)
        results = []
        for label, edited in (("image", True), ("unedited policies/", False)):
            work = root / label.replace("/", "").replace(" ", "-")
            shutil.copytree(ROOT / "policies", work / "etc/portcullis/policies")
            (work / "var/lib/portcullis/certs").mkdir(parents=True)
            (work / "var/lib/portcullis/data").mkdir(parents=True)
            if edited:
                for line, word, args in final:
                    if word == "RUN" and "/etc/portcullis/policies" in args:
                        run = subprocess.run(
                            ["sh", "-c", reroot(args, work)], capture_output=True, text=True
                        )
                        if run.returncode != 0:
                            finding(f"{rel(DOCKERFILE)}:{line}", f"RUN fails on policies/: {run.stderr}")
            env = {"PATH": "/usr/bin:/bin", "HOME": str(work / "home")}
            env.update({k: reroot(v, work) for k, v in image_env.items()})
            check = subprocess.run(
                [binary, "check"], env=env, cwd=work, capture_output=True, text=True, timeout=60
            )
            if edited and check.returncode != 0:
                detail = (check.stderr.strip() or check.stdout.strip()).replace(str(work), "")
                finding(rel(DOCKERFILE), f"`portcullis check` refuses the image's policy:\n{detail}")
            elif not edited and check.returncode == 0:
                finding(
                    rel(DOCKERFILE),
                    "`portcullis check` accepts the unedited default policy on every interface: "
                    "the development provider is not refused off loopback",
                )
            else:
                results.append(f"  {label}: {'ok' if edited else 'refused, as it must be'}")
    return "\n".join(results)


def main() -> int:
    check_dockerfile()
    docs = load_manifests()
    check_schemas(docs)
    check_kustomization(docs)
    check_hardening(docs)
    check_monitoring(docs)
    count = sum(len(v) for v in docs.values())
    print(
        f"manifests: {count} objects in {len(docs)} files, Kubernetes schemas "
        f"{', '.join(KUBERNETES_VERSIONS)} (kubernetes-validate {kubernetes_validate.__version__}, strict)"
    )
    print("portcullis check on the image's policy, with the image's environment:")
    print(check_image_policy())
    report = check_gateway(docs)
    print("portcullis check on the mounted configuration:")
    print(report if report else "  (no Deployment)")
    for f in findings:
        print(f"FINDING {f}", file=sys.stderr)
    if findings:
        print(f"{len(findings)} finding(s)", file=sys.stderr)
        return 1
    print("deployment files: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
