# shellcheck shell=bash
# Source this to get the same environment as `make` targets: . scripts/env.sh
_victor_ops_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$_victor_ops_root/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$_victor_ops_root/.cache/collections"
export MOLECULE_GLOB='molecule/*/molecule.yml'
export VICTOR_OPS_WHEELHOUSE="${VICTOR_OPS_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/victor-ops/wheelhouse}"
export PY_COLORS=0 ANSIBLE_FORCE_COLOR=0
