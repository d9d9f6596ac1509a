# Shared by the conformance scripts (sourced): installing what they need on a fresh machine and
# starting a gateway on free loopback ports.

apt_install() {
    [ "$(id -u)" = 0 ] || { echo "conformance: please install: $*" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

# ensure_venv DIR REQUIREMENT...: a Python virtual environment in DIR holding exactly these.
ensure_venv() {
    local dir=$1
    shift
    command -v python3 >/dev/null 2>&1 || apt_install python3
    if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$*" ]; then
        rm -rf "$dir"
        python3 -m venv "$dir" >/dev/null 2>&1 || { rm -rf "$dir"; apt_install python3-venv; python3 -m venv "$dir"; }
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@"
        echo "$*" >"$dir/.installed"
    fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_gateway WORKDIR [NAME=VALUE...]: runs PORTCULLIS_BIN (default target/debug/portcullis,
# built when missing) in WORKDIR on its embedded defaults plus the given environment; sets
# GATEWAY_PID, GATEWAY_PORT and GATEWAY_ADMIN, waits until it is ready, and stops it (and
# removes WORKDIR) when the script exits.
start_gateway() {
    local work=$1
    shift
    local bin="${PORTCULLIS_BIN:-$PWD/target/debug/portcullis}"
    [ -x "$bin" ] || cargo build --locked --bin portcullis
    GATEWAY_PORT=$(free_port)
    GATEWAY_ADMIN=$(free_port)
    (cd "$work" && exec env PORTCULLIS_HTTPS_ADDR="127.0.0.1:$GATEWAY_PORT" \
        PORTCULLIS_ADMIN_ADDR="127.0.0.1:$GATEWAY_ADMIN" PORTCULLIS_HTTP_ADDR=off "$@" \
        "$bin" serve >gateway.log 2>&1) &
    GATEWAY_PID=$!
    # shellcheck disable=SC2064 # expand now: the values are this gateway's
    trap "kill $GATEWAY_PID 2>/dev/null || true; wait $GATEWAY_PID 2>/dev/null || true; rm -rf '$work'" EXIT
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$GATEWAY_ADMIN/ready" >/dev/null && return 0
        kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$work/gateway.log"; exit 1; }
        sleep 0.1
    done
    echo "conformance: the gateway was not ready in 30 s" >&2
    tail -20 "$work/gateway.log" >&2
    exit 1
}
