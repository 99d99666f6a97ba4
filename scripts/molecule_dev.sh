#!/usr/bin/env bash
# Iterate on one molecule scenario without destroying it: converge, then side_effect and verify
# in the order the scenario's test_sequence lists them (victor_staging, victor_deploy_lifecycle and
# victor_deploy_process verify what their side_effect did; victor_nginx_lb runs side_effect after
# verify), each only when the sequence has it; stops at the first failing step.
# A scenario without a test_sequence of its own uses the shared one (converge, verify).
# side_effect changes the converged state (upgrades, faults): to run it again, start from a fresh
# container (make molecule-destroy SCENARIO=...).
# Usage: scripts/molecule_dev.sh SCENARIO
set -euo pipefail
scenario=${1:?usage: scripts/molecule_dev.sh SCENARIO}
config="molecule/$scenario/molecule.yml"
[ -f "$config" ] || { echo "molecule-dev: no scenario $scenario ($config missing)" >&2; exit 2; }
steps=$(python3 - "$config" <<'PY'
import sys

import yaml

data = yaml.safe_load(open(sys.argv[1], encoding="utf-8")) or {}
sequence = (data.get("scenario") or {}).get("test_sequence") or ["converge", "verify"]
steps = [step for step in sequence if step in ("converge", "side_effect", "verify")]
if "converge" not in steps:
    steps.insert(0, "converge")
print(" ".join(dict.fromkeys(steps)))
PY
)
echo "molecule-dev $scenario: $steps (no destroy)"
for step in $steps; do
  command=${step//_/-}  # the test_sequence's side_effect is the command side-effect
  echo "==> molecule $command -s $scenario"
  molecule "$command" -s "$scenario"
done
