#!/usr/bin/env bash
# Create the tool venv once per machine, keyed by requirements-dev.txt and the interpreter,
# under ${XDG_CACHE_HOME:-~/.cache}/victor-ops/, and point .venv at it: a fresh clone (CI)
# reuses it instead of reinstalling ~60 packages. A real .venv directory is left alone.
set -euo pipefail
PYTHON=${PYTHON:-python3}
cache_root=${VICTOR_OPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/victor-ops}
key=$( { "$PYTHON" -c 'import sys; print(sys.version)'; cat requirements-dev.txt; } | sha256sum | cut -c1-16)
if [ -d .venv ] && [ ! -L .venv ]; then
  if [ "$(cat .venv/.installed 2>/dev/null)" = "$key" ]; then echo "venv: .venv up to date"; exit 0; fi
  echo "venv: .venv is a directory of an older requirements-dev.txt: updating it in place"
  target=.venv
else
  target="$cache_root/venv-$key"
fi
if [ "$(cat "$target/.installed" 2>/dev/null)" != "$key" ]; then
  echo "venv: installing requirements-dev.txt into $target"
  mkdir -p "$(dirname "$target")"
  "$PYTHON" -m venv "$target"
  "$target/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 \
    | { grep -v "is ignored: it is neither" || true; }
  echo "$key" > "$target/.installed"
else
  echo "venv: reusing $target"
fi
[ "$target" = .venv ] || ln -sfn "$target" .venv
