#!/usr/bin/env bash
# ansible-test must run inside a real directory ending in ansible_collections/victor/ops
# (it resolves symlinks), so the collection's files (tracked plus new, not ignored) are
# copied to a private .cache/sanity.XXXXXX/ansible_collections/victor/ops per run (so two
# runs can go at once) and tested there.
# Its pip bootstrap URL is unreachable here, so a stand-in get_pip script (ensurepip + pip
# from PyPI) is put where ansible-test looks first.
set -euo pipefail
root=$(pwd)
mkdir -p "$root/.cache"
workdir=$(mktemp -d "$root/.cache/sanity.XXXXXX")
trap 'rm -rf "$workdir"' EXIT
dest="$workdir/ansible_collections/victor/ops"
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar -c --null -T - | tar -x -C "$dest"
# A repository of its own, so ansible-test does not see the copy as ignored files of ours.
git -C "$dest" init -q && git -C "$dest" add -A

cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
cat > "$cache/get_pip_24_2.py.$$" <<'PY'
"""Stand-in for the get-pip bootstrap: ensurepip, then the requested pip from PyPI."""
import ensurepip
import subprocess
import sys

ensurepip.bootstrap()
requirement = next((a for a in sys.argv[1:] if a.startswith("pip")), "pip==24.2")
subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                       "--cert", "/etc/ssl/certs/ca-certificates.crt", requirement])
PY
mv -f "$cache/get_pip_24_2.py.$$" "$cache/get_pip_24_2.py"
# In CI (CI set to anything but false/0/no, as tests/strict_skips.py reads it) a sanity test skipped
# for a missing tool fails the run: ansible-test only warns 'Required program "shellcheck" not found.'
# and skips the test, and the run would be green without having checked the shell scripts.
in_ci() {
  case "$(printf '%s' "${CI:-}" | tr '[:upper:]' '[:lower:]')" in '' | false | 0 | no) [ "${VICTOR_OPS_STRICT_SKIPS:-}" = 1 ] ;; *) true ;; esac
}
if in_ci && ! command -v shellcheck > /dev/null; then
  echo 'sanity: FAILED: shellcheck is not installed, ansible-test would skip the shellcheck test (in CI a skip is a failure; tests/host-packages.txt)' >&2
  exit 1
fi
cd "$dest"
out="$workdir/ansible-test.out"
rc=0
"$root/.venv/bin/ansible-test" sanity --python 3.11 --requirements --color no "$@" 2>&1 | tee "$out" || rc=$?
if in_ci && grep -E 'Required program "[^"]+" not found|Skipping sanity test' "$out" > "$workdir/skipped"; then
  echo 'sanity: FAILED: sanity tests were skipped (in CI a skip is a failure):' >&2
  sed 's/^/  /' "$workdir/skipped" >&2
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
