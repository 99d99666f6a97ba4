#!/usr/bin/env bash
# Debian packages the tests use on the host (the controller), listed in
# tests/host-packages.txt, installed once.
set -euo pipefail
mapfile -t packages < <(grep -v -e '^#' -e '^[[:space:]]*$' tests/host-packages.txt | sort -u)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "host packages: all present (${packages[*]})"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "host packages: missing ${missing[*]}; install them (needs root) and run again" >&2
  exit 1
fi
echo "host packages: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
