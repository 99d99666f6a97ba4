#!/usr/bin/env bash
# Download victor-ai[api] wheels for the containers' Python (Debian 12: 3.11.2), once.
set -euo pipefail
WHEELHOUSE=${VICTOR_OPS_WHEELHOUSE:-.cache/wheelhouse}
VERSIONS=${VICTOR_OPS_VICTOR_VERSIONS:-0.9.4 0.9.5}
PIP=${PIP:-.venv/bin/pip}
mkdir -p "$WHEELHOUSE"
for version in $VERSIONS; do
  stamp="$WHEELHOUSE/.complete-$version"
  if [ -f "$stamp" ]; then
    echo "wheelhouse: victor-ai $version already there"
    continue
  fi
  echo "wheelhouse: downloading victor-ai[api]==$version for Python 3.11.2"
  "$PIP" download --quiet --disable-pip-version-check -d "$WHEELHOUSE" \
    --python-version 3.11.2 --only-binary=:all: "victor-ai[api]==$version"
  touch "$stamp"
done
echo "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
