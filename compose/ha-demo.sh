#!/usr/bin/env bash
# The HA demo (make compose-ha-demo): the same engine and base image steps as scale-demo.sh, then
# compose/ha_demo.py — two gateways behind the L4 balancer; graceful stop, controller SIGKILL and
# container SIGKILL under load; figures printed, stack down. Options: --rate N, --hold SECONDS, --keep.
set -euo pipefail
SHOPGATE_COMPOSE_DEMO=ha_demo.py exec "$(dirname "${BASH_SOURCE[0]}")/scale-demo.sh" "$@"
