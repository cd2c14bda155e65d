#!/bin/sh
# A gateway container's main process (under tini): `shopgate gateway "$@"`, started again whenever it
# dies (a crash, an OOM kill). The HAProxy it leaves runs on in its own session and the next
# controller adopts it (one HAProxy per state dir), so a controller crash costs no request.
# SIGTERM/SIGINT (docker stop) go to the controller — unready, drained, soft stop — and then this exits.
set -u
child=0
stopping=0
stop() { stopping=1; [ "$child" -gt 0 ] && kill -TERM "$child" 2>/dev/null; }
trap stop TERM INT
while :; do
    python3 -m shopgate gateway "$@" &
    child=$!
    code=0
    wait "$child" || code=$?
    while kill -0 "$child" 2>/dev/null; do   # a trapped signal ends `wait` early: wait for the controller itself
        code=0; wait "$child" || code=$?
    done
    [ "$stopping" = 1 ] && exit "$code"
    echo "gateway-supervised: controller exited with status $code; starting it again in 1s" >&2
    sleep 1
done
