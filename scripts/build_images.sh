#!/usr/bin/env bash
# Build the local test images once (no registry is reachable): a debootstrapped Debian 12
# base, the systemd managed-node image on top, that image with a victor-ai venv baked in, and
# one with the previous release too (rolling-upgrade scenarios skip pip that way).
# Each image carries a label with the hash of its inputs; it is rebuilt only when they change.
set -euo pipefail
export DOCKER_BUILDKIT=0
WHEELHOUSE=${VICTOR_OPS_WHEELHOUSE:-.cache/wheelhouse}
BASE=victor-ops/debian12:base
SYSTEMD=victor-ops/debian12-systemd:latest
VICTOR_VERSION=${VICTOR_OPS_IMAGE_VICTOR_VERSION:-0.9.5}
VICTOR=victor-ops/victor:${VICTOR_VERSION}
PREVIOUS_VERSION=${VICTOR_OPS_IMAGE_PREVIOUS_VERSION:-0.9.4}
VICTOR_TWO=victor-ops/victor:${PREVIOUS_VERSION}-${VICTOR_VERSION}

label_of() { docker image inspect --format '{{ index .Config.Labels "victor-ops.inputs" }}' "$1" 2>/dev/null || true; }

if docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "images: $BASE present"
else
  command -v debootstrap >/dev/null 2>&1 || {
    echo "images: installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  rootfs=$(mktemp -d /tmp/victor-ops-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "images: debootstrap Debian 12 (bookworm, minbase) into $rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/tmp/victor-ops-debootstrap.log 2>&1 \
    || { tail -n 20 /tmp/victor-ops-debootstrap.log >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$BASE" >/dev/null
  echo "images: imported $BASE"
fi

build() {  # build IMAGE DOCKERFILE CONTEXT HASH [build args...]
  local image=$1 dockerfile=$2 context=$3 hash=$4; shift 4
  if [ "$(label_of "$image")" = "$hash" ]; then
    echo "images: $image up to date"
    return
  fi
  echo "images: building $image"
  docker build --quiet --label "victor-ops.inputs=$hash" -t "$image" -f "$dockerfile" "$@" "$context" >/dev/null
}

systemd_hash=$(sha256sum tests/images/systemd/Dockerfile | cut -c1-16)
build "$SYSTEMD" tests/images/systemd/Dockerfile tests/images/systemd "$systemd_hash"

[ -f "$WHEELHOUSE/.complete-$VICTOR_VERSION" ] || { echo "images: wheelhouse for $VICTOR_VERSION missing; run make wheelhouse" >&2; exit 1; }
victor_hash=$( (cat tests/images/victor/Dockerfile; echo "$systemd_hash $VICTOR_VERSION"; ls "$WHEELHOUSE") | sha256sum | cut -c1-16)
build "$VICTOR" tests/images/victor/Dockerfile "$WHEELHOUSE" "$victor_hash" --build-arg "VICTOR_VERSION=$VICTOR_VERSION"
[ -f "$WHEELHOUSE/.complete-$PREVIOUS_VERSION" ] || { echo "images: wheelhouse for $PREVIOUS_VERSION missing; run make wheelhouse" >&2; exit 1; }
two_hash=$(echo "$victor_hash $PREVIOUS_VERSION" | sha256sum | cut -c1-16)
build "$VICTOR_TWO" tests/images/victor/Dockerfile "$WHEELHOUSE" "$two_hash" \
  --build-arg "BASE_IMAGE=$VICTOR" --build-arg "VICTOR_VERSION=$PREVIOUS_VERSION"
docker image ls --format '  {{.Repository}}:{{.Tag}} {{.Size}}' 'victor-ops/*'
