#!/usr/bin/env bash
# The compose scale demo (make compose-demo): private engine up, offline base image (cached),
# then compose/scale_demo.py — stack up, steady load through the gateway, products 1 -> 5 -> 1,
# URLs and figures printed, stack down. Exit status 0 only with 0 failed requests.
# Options are scale_demo.py's: --real, --rate N, --hold SECONDS, --keep.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SHOPGATE_PYTHON:-$REPO/.venv/bin/python}"

started_engine=0
if ! "$REPO/compose/engine.sh" status >/dev/null 2>&1; then
    started_engine=1
fi
eval "$("$REPO/compose/engine.sh" up)"
stop_engine() {
    # An engine this script started is stopped again (by its pid), whatever happened; with --keep it stays.
    if [[ $started_engine == 1 && " $* " != *" --keep "* ]]; then "$REPO/compose/engine.sh" down; fi
}
trap 'stop_engine "$@"' EXIT
if [[ " $* " != *" --real "* ]]; then
    "$REPO/compose/base-image.sh" >/dev/null
fi
"$PY" "$REPO/compose/${SHOPGATE_COMPOSE_DEMO:-scale_demo.py}" "$@"   # ha-demo.sh: ha_demo.py
