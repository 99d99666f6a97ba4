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
# moto's S3 server for the disaster-recovery scenario, in a subfolder so victor-ai installs
# from the wheelhouse never pick up moto's dependency versions.
MOTO=${VICTOR_OPS_MOTO_REQUIREMENT:-moto[server]==5.2.5}
if [ -f "$WHEELHOUSE/moto/.complete" ] && [ "$(cat "$WHEELHOUSE/moto/.complete")" = "$MOTO" ]; then
  echo "wheelhouse: $MOTO already there"
else
  echo "wheelhouse: downloading $MOTO for Python 3.11.2"
  "$PIP" download --quiet --disable-pip-version-check -d "$WHEELHOUSE/moto" \
    --python-version 3.11.2 --only-binary=:all: "$MOTO"
  echo "$MOTO" > "$WHEELHOUSE/moto/.complete"
fi
echo "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
