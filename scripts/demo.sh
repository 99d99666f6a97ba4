#!/usr/bin/env bash
# The body of `make demo`: the main job on the embedded local default. No root, no docker,
# no remote host. Deploys victor-ai into a local directory with victor.ops.victor_deploy's
# "process" service manager, starts it, runs playbooks/monthly_maintenance.yml against
# inventories/local, and prints where the report and the backup are. Rerunnable: the
# release, the running server and the chosen port are reused.
#
# Environment (all optional):
#   VICTOR_LOCAL_ROOT        where everything goes (default <checkout>/.cache/local-victor)
#   VICTOR_LOCAL_PORT        port of `victor serve` (default 8765, or a free port when busy; kept in <root>/port)
#   VICTOR_LOCAL_VERSION     victor-ai version (default 0.9.5)
#   VICTOR_LOCAL_PYTHON      interpreter for the release venv (default: the one behind .venv)
#   VICTOR_LOCAL_WHEELHOUSE  install from this wheelhouse and check updates against it instead of PyPI
set -euo pipefail
checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$checkout"

if [ ! -x .venv/bin/ansible-playbook ]; then
  echo "demo: creating the tool venv (.venv) first" >&2
  make --no-print-directory venv collection
fi
# shellcheck disable=SC1091
. scripts/env.sh
mkdir -p "$(dirname "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/victor/ops")"
ln -sfn "$checkout" "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/victor/ops"

export VICTOR_LOCAL_ROOT="${VICTOR_LOCAL_ROOT:-$checkout/.cache/local-victor}"
mkdir -p "$VICTOR_LOCAL_ROOT"
VICTOR_LOCAL_ROOT=$(cd "$VICTOR_LOCAL_ROOT" && pwd)

port_in_use() {
  .venv/bin/python - "$1" <<'PY'
import socket, sys
with socket.socket() as sock:
    sys.exit(0 if sock.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}
if [ -z "${VICTOR_LOCAL_PORT:-}" ]; then
  if [ -s "$VICTOR_LOCAL_ROOT/port" ]; then
    VICTOR_LOCAL_PORT=$(cat "$VICTOR_LOCAL_ROOT/port")
  elif ! port_in_use 8765; then
    VICTOR_LOCAL_PORT=8765
  else
    VICTOR_LOCAL_PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fi
fi
echo "$VICTOR_LOCAL_PORT" > "$VICTOR_LOCAL_ROOT/port"
export VICTOR_LOCAL_PORT
export VICTOR_LOCAL_PYTHON="${VICTOR_LOCAL_PYTHON:-$(.venv/bin/python -c 'import sys; print(sys._base_executable)')}"

echo "demo: deploying victor-ai ${VICTOR_LOCAL_VERSION:-0.9.5} into $VICTOR_LOCAL_ROOT (port $VICTOR_LOCAL_PORT)"
ansible-playbook -i inventories/local playbooks/deploy.yml
echo "demo: running the monthly maintenance"
ansible-playbook -i inventories/local playbooks/monthly_maintenance.yml

summary=$(.venv/bin/python - "$VICTOR_LOCAL_ROOT/reports/localhost" <<'PY'
import glob, json, os, sys
report = sorted(glob.glob(os.path.join(sys.argv[1], "monthly-*Z.json")))[-1]
steps = {s["name"]: s for s in json.load(open(report, encoding="utf-8"))["steps"]}
print(report[:-len(".json")])
print(steps["backup"]["data"].get("path") or steps["backup"]["summary"])
PY
)
report="$(sed -n 1p <<<"$summary").md"
backup=$(sed -n 2p <<<"$summary")
cat <<EOF_SUMMARY

demo: done. Victor is running at http://127.0.0.1:$VICTOR_LOCAL_PORT (pid $(cat "$VICTOR_LOCAL_ROOT/run/victor.pid" 2>/dev/null || echo '?'))
  report:  $report
           ${report%.md}.json
  backup:  $backup
Next, from $checkout with .venv/bin on PATH (ansible.cfg selects inventories/local):
  monthly: ansible-playbook playbooks/monthly_maintenance.yml
  weekly:  ansible-playbook -i inventories/local playbooks/weekly_maintenance.yml
  health:  ansible-playbook -i inventories/local playbooks/daily_health_check.yml
  stop:    kill \$(cat $VICTOR_LOCAL_ROOT/run/victor.pid)
EOF_SUMMARY
