#!/usr/bin/env bash
# Build shopgate's offline base image, with no image registry: prints its tag on stdout.
#
#   compose/base-image.sh            build (or reuse) and tag shopgate/base:offline
#
# The base is Debian bookworm made by debootstrap from the host's Debian mirror, with python3,
# python3-venv and haproxy, plus a wheelhouse of the images' Python requirements downloaded by
# the host's pip (PIP_NO_INDEX/PIP_FIND_LINKS point at it, so image builds need no network).
# It is the same Debian release and Python minor version as the registry base of the Dockerfile
# (python:3.11-slim-bookworm), so one Dockerfile serves both.
#
# Cached twice, keyed by a hash of the inputs: the rootfs tarball in $SHOPGATE_CACHE_DIR
# (default <repo>/.cache; survives `engine.sh down` and a wiped engine, ~45 s to make, 3 s to
# import), and the tagged image in the engine (instant).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${SHOPGATE_CACHE_DIR:-$REPO/.cache}/images"
PY="${SHOPGATE_PYTHON:-$REPO/.venv/bin/python}"
SUITE=bookworm
PACKAGES=python3,python3-venv,haproxy,ca-certificates
PYTHON_TAG=311             # bookworm's python3 is 3.11: the wheelhouse is for cp311
ROOTFS_FORMAT=1            # bump when the rootfs recipe below changes
OFFLINE_TAG=shopgate/base:offline

say() { echo "base-image: $*" >&2; }
die() { say "$*"; exit 1; }
hash_of() { sha256sum | cut -c1-12; }

[[ -n "${DOCKER_HOST:-}" ]] || eval "$("$REPO/compose/engine.sh" env)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || die "no Docker engine answers at $DOCKER_HOST (run compose/engine.sh up)"

debian_mirror() {
    # First non-security Debian URI of the host's apt sources (one-line or deb822 format).
    local uri
    uri="$({ sed -E 's/\[[^]]*\]//' /etc/apt/sources.list 2>/dev/null | awk '$1 == "deb" {print $2}'
             awk '$1 == "URIs:" {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null
           } | grep -v -- '-security' | grep -E '^https?://' | head -n 1)"
    echo "${uri:-http://deb.debian.org/debian}"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

REQUIREMENTS="$(python3 "$REPO/compose/image-requirements.py" "$REPO/setup.cfg")"
ROOTFS_KEY="$(printf '%s\n' "$ROOTFS_FORMAT" "$SUITE" "$PACKAGES" | hash_of)"
BASE_KEY="$(printf '%s\n' "$ROOTFS_KEY" "$REQUIREMENTS" "$(cat "$REPO/compose/base-image.sh")" | hash_of)"
ROOTFS_IMAGE="shopgate/rootfs:$ROOTFS_KEY"
BASE_IMAGE="shopgate/base:$BASE_KEY"
mkdir -p "$CACHE_DIR"

if image_exists "$BASE_IMAGE"; then
    docker tag "$BASE_IMAGE" "$OFFLINE_TAG"
    say "cached: $BASE_IMAGE"
    echo "$OFFLINE_TAG"
    exit 0
fi

# 1. The Debian rootfs, as a tarball in the cache.
ROOTFS_TAR="$CACHE_DIR/rootfs-$ROOTFS_KEY.tar"
if ! image_exists "$ROOTFS_IMAGE"; then
    if [[ ! -s "$ROOTFS_TAR" ]]; then
        command -v debootstrap >/dev/null || die "debootstrap is missing: install it (make system-test does)"
        [[ "$(id -u)" == 0 ]] || die "debootstrap needs root"
        mirror="$(debian_mirror)"
        work="$CACHE_DIR/rootfs-$ROOTFS_KEY.d"
        rm -rf "$work"
        say "debootstrap $SUITE ($PACKAGES) from $mirror — about a minute, once"
        started=$SECONDS
        if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1; then
            tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
            die "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"
        fi
        # What an image never needs: package lists and archives, docs, man pages.
        rm -rf "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/* "$work"/usr/share/doc/* \
               "$work"/usr/share/man/* "$work"/usr/share/info/* "$work"/var/log/*.log "$work"/debootstrap
        tar -C "$work" --numeric-owner -cf "$ROOTFS_TAR.part" .
        mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
        rm -rf "$work"
        find "$CACHE_DIR" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$ROOTFS_KEY.tar" -delete
        say "rootfs made in $((SECONDS - started)) s ($(du -h "$ROOTFS_TAR" | cut -f1))"
    fi
    say "importing $ROOTFS_TAR"
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$ROOTFS_IMAGE" >/dev/null
fi

# 2. The wheelhouse, downloaded by the host's pip for bookworm's cp311 on this architecture.
WHEELS="$CACHE_DIR/wheels-$BASE_KEY"
if [[ ! -f "$WHEELS/.complete" ]]; then
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    arch="$(uname -m)"
    platforms=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch" --platform any)
    for minor in $(seq 36 -1 5); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
    say "downloading wheels: $(echo "$REQUIREMENTS" | tr '\n' ' ')"
    printf '%s\n' "$REQUIREMENTS" > "$WHEELS.requirements.txt"
    if ! "$PY" -m pip download --quiet --disable-pip-version-check -d "$WHEELS" --only-binary=:all: \
            --python-version 3.11 --implementation cp --abi "cp$PYTHON_TAG" "${platforms[@]}" \
            -r "$WHEELS.requirements.txt" 2> >(grep -v 'is ignored: it is neither' >&2); then
        die "pip download of the image requirements failed"
    fi
    rm -f "$WHEELS.requirements.txt"
    touch "$WHEELS/.complete"
    find "$CACHE_DIR" -maxdepth 1 -name 'wheels-*' ! -name "wheels-$BASE_KEY" -exec rm -rf {} +
fi

# 3. The base: rootfs + wheelhouse; pip inside image builds installs from it, offline.
say "building $BASE_IMAGE"
holder="$(docker create "$ROOTFS_IMAGE" true)"
trap 'docker rm -f "$holder" >/dev/null 2>&1 || true' EXIT
docker cp "$WHEELS/." "$holder:/opt/wheels"
docker commit --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheels PIP_DISABLE_PIP_VERSION_CHECK=1' \
    --change 'CMD ["/bin/bash"]' "$holder" "$BASE_IMAGE" >/dev/null
docker tag "$BASE_IMAGE" "$OFFLINE_TAG"
# Older bases (other keys) go; images built on them keep their layers.
docker images shopgate/base --format '{{.Tag}}' | grep -vx -e "$BASE_KEY" -e offline | sed 's|^|shopgate/base:|' \
    | xargs -r docker rmi >/dev/null 2>&1 || true
say "built $BASE_IMAGE (tagged $OFFLINE_TAG)"
echo "$OFFLINE_TAG"
