#!/usr/bin/env python
"""Time playbooks/disaster_recovery.yml end to end against the manual runbook, on one state dir.

    python bench/dr_bench.py                           # the issue's size: 1 GiB DB + 256 MiB logs
    python bench/dr_bench.py --db-mib 256 --log-mib 64

One run:
  1. builds a Victor state dir with bench/backup_bench.py's build_state (same data);
  2. starts a systemd container from victor-ops/victor:0.9.5 (container victor-ops-drbench
     on a docker network victor-ops-drbench-net, both created here and removed at the end),
     deploys Victor there with victor.ops.victor_deploy (connection community.docker.docker),
     puts the state dir in as /var/lib/victor/.victor and plants a marker row;
  3. takes a full backup with playbooks/backup.yml (local storage) and, Victor stopped, a
     raw-pipeline archive of the same state (backup_bench.raw_pipeline: sqlite3 .backup +
     tar -I 'zstd -T0');
  4. deletes the state dir, then times `ansible-playbook playbooks/disaster_recovery.yml`
     until it returns (its last task waits for a healthy /health); checks the marker row and
     the row count;
  5. deletes the state dir again, then times the manual runbook: stop, `zstd -d | tar -x`
     of the raw archive, chown, start, curl /health until healthy; same checks;
  6. prints both times, the ratio, PASS/FAIL against the 120 s goal and /proc/loadavg.

Run from the collection root after `. scripts/env.sh` (ansible-playbook on PATH, the
collection on ANSIBLE_COLLECTIONS_PATH).  Needs the docker engine and the local image.
"""
import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAME = "victor-ops-drbench"
NETWORK = NAME + "-net"
IMAGE = "victor-ops/victor:0.9.5"
STATE = "/var/lib/victor/.victor"
GOAL = 120.0

INVENTORY = """all:
  children:
    victor_api:
      hosts:
        %(name)s:
          ansible_connection: community.docker.docker
          ansible_python_interpreter: /usr/bin/python3
      vars:
        victor_deploy_version: "0.9.5"
        victor_deploy_source: wheelhouse
        victor_deploy_wheelhouse_dir: /wheelhouse
        victor_backup_storage: local
        victor_restore_storage: local
        victor_backup_schedule_enabled: false
"""

SETUP = """- name: Deploy Victor and install the backup programs (not timed)
  hosts: victor_api
  gather_facts: false
  tasks:
    - name: Deploy victor-ai 0.9.5
      ansible.builtin.include_role:
        name: victor.ops.victor_deploy
    - name: Install zstd and age
      ansible.builtin.include_role:
        name: victor.ops.victor_backup
        tasks_from: packages.yml
"""


def load_backup_bench():
    """bench/backup_bench.py as a module (its state generator and raw pipeline)."""
    collections = ROOT / ".cache" / "collections"
    if collections.is_dir() and str(collections) not in sys.path:
        sys.path.insert(0, str(collections))
    spec = importlib.util.spec_from_file_location("backup_bench", str(HERE / "backup_bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv, check=True, **kwargs):
    return subprocess.run(argv, check=check, **kwargs)


def in_container(script, check=True):
    """Run a shell script in the container as root; returns its stdout."""
    return run(["docker", "exec", NAME, "bash", "-c", script], check=check, stdout=subprocess.PIPE, universal_newlines=True).stdout


def playbook(inventory, path, log):
    """Run a playbook, its output to log; raise with the log's tail on failure."""
    env = dict(os.environ, ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT="8")
    with open(str(log), "w") as handle:
        proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(path)], stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        sys.stderr.write("".join(log.read_text().splitlines(True)[-40:]))
        raise RuntimeError("%s failed (rc %d), log: %s" % (path, proc.returncode, log))


def loadavg():
    return Path("/proc/loadavg").read_text().strip()


def check_state(marker, rows):
    """Victor healthy, the marker row and every generated row back."""
    health = in_container("curl -fsS http://127.0.0.1:8765/health", check=False).strip()
    found = in_container("runuser -u victor -- sqlite3 %s/victor.db "
                         "\"SELECT count(*) FROM ops_dr_marker WHERE name = '%s'; SELECT count(*) FROM messages;\"" % (STATE, marker),
                         check=False).split()
    ok = '"healthy"' in health and found == ["1", str(rows)]
    return ok, "health %s, marker rows %s, messages %s (want 1, %d)" % (health or "none", found[:1] or "?", found[1:] or "?", rows)


def refuse_existing():
    for kind, name in (("container", NAME), ("network", NETWORK)):
        if run(["docker", kind, "inspect", name], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            raise RuntimeError("docker %s %s exists (a previous run?): remove it first" % (kind, name))


def start_container(base, wheelhouse):
    run(["docker", "network", "create", NETWORK], stdout=subprocess.DEVNULL)
    run(["docker", "run", "-d", "--name", NAME, "--hostname", NAME, "--network", NETWORK,
         "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp", "--stop-signal", "SIGRTMIN+3",
         "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "-v", "%s:/wheelhouse:ro" % wheelhouse,
         "-v", "%s:/var/lib/victor" % (base / "home"), "-v", "%s:/var/backups/victor" % (base / "repo"),
         "-v", "%s:/var/backups/raw:ro" % (base / "raw"), IMAGE, "/lib/systemd/systemd"], stdout=subprocess.DEVNULL)
    for _try in range(60):
        if in_container("systemctl is-system-running 2>/dev/null || true").strip() in ("running", "degraded"):
            return
        time.sleep(1)
    raise RuntimeError("systemd in %s did not come up" % NAME)


def wait_healthy(timeout=180):
    in_container("for i in $(seq %d); do curl -fsS http://127.0.0.1:8765/health 2>/dev/null | grep -q healthy && exit 0; sleep 1; done; exit 1"
                 % timeout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-mib", type=int, default=1024)
    parser.add_argument("--log-mib", type=int, default=256)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir, removed)")
    args = parser.parse_args()
    bb = load_backup_bench()
    refuse_existing()
    wheelhouse = os.environ.get("VICTOR_OPS_WHEELHOUSE") or str(ROOT / ".cache" / "wheelhouse")
    base = Path(tempfile.mkdtemp(prefix="victor-dr-bench-", dir=args.dir))
    created = False
    try:
        for sub in ("home", "repo", "raw", "logs"):
            (base / sub).mkdir()
        seed = base / "seed"
        started = time.monotonic()
        rows = bb.build_state(seed / ".victor", args.db_mib, args.log_mib)
        print("state: %.0f MiB (%d rows), built in %.1f s; loadavg %s"
              % (bb.du(str(seed)) / bb.MIB, rows, time.monotonic() - started, loadavg()))
        inventory = base / "inventory.yml"
        inventory.write_text(INVENTORY % {"name": NAME})
        setup = base / "setup.yml"
        setup.write_text(SETUP)
        created = True
        started = time.monotonic()
        start_container(base, wheelhouse)
        playbook(inventory, setup, base / "logs" / "setup.log")
        # swap the generated state in for the fresh one (same host filesystem: a rename)
        in_container("systemctl stop victor-api && rm -rf %s" % STATE)
        os.rename(str(seed / ".victor"), str(base / "home" / ".victor"))
        marker = "dr-bench-" + uuid.uuid4().hex[:8]
        in_container("chown -R victor:victor %s && systemctl start victor-api" % STATE)
        wait_healthy()
        in_container("runuser -u victor -- sqlite3 %s/victor.db "
                     "\"CREATE TABLE IF NOT EXISTS ops_dr_marker (name TEXT PRIMARY KEY); INSERT INTO ops_dr_marker VALUES ('%s');\"" % (STATE, marker))
        print("container %s up, Victor deployed and healthy on the generated state in %.1f s" % (NAME, time.monotonic() - started))

        t_backup = bb.timed(lambda: playbook(inventory, ROOT / "playbooks" / "backup.yml", base / "logs" / "backup.log"))[0]
        print("playbooks/backup.yml (full, local, verified): %.1f s; loadavg %s" % (t_backup, loadavg()))
        in_container("systemctl stop victor-api")
        t_raw = bb.timed(lambda: bb.raw_pipeline(base / "home" / ".victor", base / "raw", "dr"))[0]
        print("raw pipeline archive of the same state (Victor stopped): %.1f s, %.0f MiB"
              % (t_raw, os.path.getsize(str(base / "raw" / "raw-dr.tar.zst")) / bb.MIB))

        in_container("rm -rf %s" % STATE)  # the disaster (Victor already stopped)
        t_dr = bb.timed(lambda: playbook(inventory, ROOT / "playbooks" / "disaster_recovery.yml", base / "logs" / "dr.log"))[0]
        load_dr = loadavg()
        dr_ok, dr_detail = check_state(marker, rows)
        print("disaster_recovery.yml: %.1f s; %s; loadavg %s" % (t_dr, dr_detail, load_dr))
        print("  slowest tasks (profile_tasks):")
        for line in (base / "logs" / "dr.log").read_text().splitlines():
            if re.search(r" -{2,} *[0-9.]+s$", line.rstrip()):
                print("    " + line.strip())

        in_container("systemctl stop victor-api && rm -rf %s %s.before-restore-*" % (STATE, STATE))  # the same disaster again
        manual = ("set -e; systemctl stop victor-api; mkdir -p {s}; zstd -d -c /var/backups/raw/raw-dr.tar.zst | tar -x -C {s}; "
                  "chown -R victor:victor {s}; systemctl start victor-api; "
                  "until curl -fsS http://127.0.0.1:8765/health 2>/dev/null | grep -q healthy; do sleep 0.5; done").format(s=STATE)
        t_manual = bb.timed(lambda: in_container("timeout 600 bash -c '%s'" % manual))[0]
        load_manual = loadavg()
        manual_ok, manual_detail = check_state(marker, rows)
        print("manual runbook (stop, zstd -d | tar -x, chown, start, curl /health): %.1f s; %s; loadavg %s" % (t_manual, manual_detail, load_manual))

        verdict = "PASS" if dr_ok and t_dr <= GOAL else "FAIL"
        print("\n%-64s %9s" % ("disaster recovery, state dir deleted -> Victor healthy", "seconds"))
        print("%-64s %9.1f" % ("ours: ansible-playbook playbooks/disaster_recovery.yml", t_dr))
        print("%-64s %9.1f" % ("manual: zstd -d | tar -x of the raw archive, start, curl", t_manual))
        print("ratio ours / manual = %.2f; goal ours <= %.0f s: %s%s" % (t_dr / t_manual, GOAL, verdict, "" if dr_ok else " (state not back: %s)" % dr_detail))
        print("manual runbook state check: %s" % ("ok" if manual_ok else "FAILED"))
        print("loadavg now: %s" % loadavg())
        return 0 if verdict == "PASS" else 1
    finally:
        if created:
            run(["docker", "rm", "-f", NAME], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run(["docker", "network", "rm", NETWORK], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(str(base), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
