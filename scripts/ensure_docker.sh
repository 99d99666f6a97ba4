#!/usr/bin/env bash
# Make a docker engine reachable: reuse a running one, else install Debian's docker.io
# and start dockerd in the background (its pid in /run/victor-ops-dockerd.pid).
set -euo pipefail

if docker info >/dev/null 2>&1; then
  echo "docker: using the running engine ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "docker: no engine is reachable and Debian's docker.io cannot be installed here" >&2
    echo "        (needs root and apt-get). Start a docker engine and run again." >&2
    exit 1
  fi
  echo "docker: installing Debian's docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "docker: dockerd is installed but not running, and starting it needs root." >&2
  exit 1
fi

echo "docker: starting dockerd (log: /var/log/victor-ops-dockerd.log)"
nohup dockerd --pidfile /run/victor-ops-dockerd.pid >/var/log/victor-ops-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "docker: engine ready ($(docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 1
done
echo "docker: dockerd did not become ready within 60 s; last log lines:" >&2
tail -n 20 /var/log/victor-ops-dockerd.log >&2
exit 1
