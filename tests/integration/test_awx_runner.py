"""Run the AWX job templates the way AWX runs them: ansible_runner.run() on a private_data_dir.

The job template definitions come from playbooks/vars/awx_configure.yml (playbook, survey
defaults as extra vars, the variables AWX injects), the inventory and env/ files are laid
out as AWX lays them out, and the target is real: a systemd container of the
victor-ops/victor:0.9.5 image (no published port; the connection is docker exec).
Sequence: "Victor deploy" (brings Victor up), "Victor daily health check" (healthy; run
twice, the second run changes nothing; and as a check job, --check), "Victor monthly
maintenance" (backup, vacuum, reports). Assertions are on the runner's status, rc, stats
and events.

Needs a docker engine and the images of `make images`; about 5-8 minutes.
    cd .cache/collections/ansible_collections/victor/ops && pytest -q tests/integration/test_awx_runner.py
"""
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import ansible_runner
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VARS = yaml.safe_load((ROOT / "playbooks" / "vars" / "awx_configure.yml").read_text(encoding="utf-8"))
IMAGE = "victor-ops/victor:0.9.5"
WHEELHOUSE = os.environ.get("VICTOR_OPS_WHEELHOUSE", str(ROOT / ".cache" / "wheelhouse"))


def _docker(*args, check=True):
    return subprocess.run(["docker"] + list(args), capture_output=True, text=True, check=check)


def _template(name):
    return next(t for t in VARS["victor_awx_job_templates"] if t["name"] == name)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    assert shutil.which("docker"), "docker client needed"
    assert _docker("image", "inspect", IMAGE, check=False).returncode == 0, "run `make images` first"
    name = "victor-ops-awx-runner-%s" % uuid.uuid4().hex[:8]
    _docker("run", "-d", "--name", name, "--hostname", name, "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "-v", "%s:/wheelhouse:ro" % WHEELHOUSE,
            "--stop-signal", "SIGRTMIN+3", IMAGE, "/lib/systemd/systemd")
    try:
        # victor_backup (monthly maintenance) compresses with zstd, as bindep.txt says.
        _docker("exec", name, "bash", "-c",
                "for i in $(seq 30); do systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded' && break; sleep 1; done;"
                " apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null")
        yield {"name": name, "work": tmp_path_factory.mktemp("awx")}
    finally:
        _docker("rm", "-f", name, check=False)


def _job(target, template_name, extra=None, cmdline=None):
    """One AWX job: a fresh private_data_dir with inventory/, env/extravars, env/envvars."""
    template = _template(template_name)
    work = target["work"]
    pdd = work / ("job-%s" % uuid.uuid4().hex[:8])
    (pdd / "inventory").mkdir(parents=True)
    (pdd / "env").mkdir()
    inventory = {"all": {"children": {"victor_api": {
        "hosts": {target["name"]: {"ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3"}},
        "vars": {
            "victor_deploy_source": "wheelhouse",
            "victor_deploy_wheelhouse_dir": "/wheelhouse",
            "victor_health_report_dir": str(work / "health-reports"),
            "victor_maintenance_report_dir": str(work / "maintenance-reports"),
            "victor_maintenance_perf_requests": 10,
            "victor_maintenance_pip_args": ["--no-index", "--find-links", "/wheelhouse"],
            "victor_runbook_report_dir": str(work / "runbook-reports"),
        }}}}}
    (pdd / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
    # What AWX sends: the survey answers (here the defaults, as AWX types them) plus the
    # variables it injects into every job.
    extravars = {q["variable"]: q["default"] for q in template.get("survey") or [] if "default" in q}
    extravars.update({"awx_job_id": 4242, "awx_job_template_name": template_name, "awx_user_name": "runner-test"})
    extravars.update(extra or {})
    (pdd / "env" / "extravars").write_text(yaml.safe_dump(extravars), encoding="utf-8")
    envvars = {"ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(ROOT.parent.parent.parent)),
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars), encoding="utf-8")
    runner = ansible_runner.run(private_data_dir=str(pdd), project_dir=str(ROOT), playbook=template["playbook"],
                                cmdline=cmdline, quiet=True, timeout=template.get("timeout") or 1800)
    events = list(runner.events)
    return runner, events


def _host_stat(runner, key, host):
    return (runner.stats or {}).get(key, {}).get(host, 0)


def _task_results(events, task):
    return [e["event_data"].get("res", {}) for e in events
            if e.get("event") == "runner_on_ok" and e.get("event_data", {}).get("task") == task]


def _target_changes(events):
    """Tasks that changed the target itself (reports delegated to the controller excluded)."""
    changed = []
    for event in events:
        data = event.get("event_data", {})
        res = data.get("res") or {}
        if event.get("event") == "runner_on_ok" and res.get("changed"):
            if (res.get("_ansible_delegated_vars") or {}).get("ansible_connection") != "local":
                changed.append(data.get("task"))
    return changed


def _explain(runner, events):
    failed = [e["event_data"].get("res", {}).get("msg") for e in events if e.get("event") == "runner_on_failed"]
    return "status=%s rc=%s failed=%s" % (runner.status, runner.rc, json.dumps(failed)[:2000])


def test_deploy_job_brings_victor_up(target):
    runner, events = _job(target, "Victor deploy")
    assert runner.status == "successful" and runner.rc == 0, _explain(runner, events)
    host = target["name"]
    assert _host_stat(runner, "failures", host) == 0 and _host_stat(runner, "ok", host) > 0
    gate = _task_results(events, "Wait until /health reports healthy and version 0.9.5")
    assert gate and gate[-1]["json"] == {"status": "healthy", "version": "0.9.5"}
    # Victor's state database, as Victor's CLI would create it, for the maintenance job.
    _docker("exec", host, "runuser", "-u", "victor", "--", "python3", "-c",
            "import sqlite3; c = sqlite3.connect('/var/lib/victor/.victor/victor.db'); c.execute('PRAGMA journal_mode=WAL');"
            " c.execute('CREATE TABLE IF NOT EXISTS runner_probe(x)'); c.commit()")


def test_daily_health_job_reports_healthy_and_changes_nothing(target):
    for attempt in (1, 2):
        runner, events = _job(target, "Victor daily health check")
        assert runner.status == "successful" and runner.rc == 0, _explain(runner, events)
        checks = _task_results(events, "Run the health checks")
        assert len(checks) == 1 and checks[0]["status"] == "healthy", checks
        names = {c["name"] for c in checks[0]["checks"]}
        assert any(n.startswith("http:") for n in names) and any(n.startswith("service") for n in names), names
        assert _target_changes(events) == [], "attempt %d changed the host" % attempt
    reports = list((target["work"] / "health-reports").rglob("*.json"))
    assert reports, "the health report must be written on the controller"


def test_daily_health_as_a_check_job(target):
    runner, events = _job(target, "Victor daily health check", cmdline="--check")
    assert runner.status == "successful" and runner.rc == 0, _explain(runner, events)
    assert _task_results(events, "Run the health checks")[0]["status"] == "healthy"


def test_daily_health_job_fails_when_victor_is_down(target):
    host = target["name"]
    _docker("exec", host, "systemctl", "stop", "victor-api")
    try:
        runner, events = _job(target, "Victor daily health check")
        assert runner.status == "failed" and runner.rc != 0
        assert _task_results(events, "Run the health checks")[0]["status"] == "unhealthy"
        assert _host_stat(runner, "failures", "localhost") + _host_stat(runner, "failures", host) >= 1
    finally:
        _docker("exec", host, "systemctl", "start", "victor-api")
        _docker("exec", host, "bash", "-c",
                "for i in $(seq 90); do curl -fsS http://127.0.0.1:8765/health && exit 0; sleep 1; done; exit 1")


def test_runbook_job_restores_the_api_and_publishes_artifacts(target):
    """The API server down runbook as an AWX job: the bundle comes back as job artifacts."""
    host = target["name"]
    _docker("exec", host, "bash", "-c",
            "kill -TERM $(systemctl show victor-api -p MainPID --value);"
            " for i in $(seq 60); do systemctl is-active -q victor-api || exit 0; sleep 0.5; done; exit 1")
    runner, events = _job(target, "Victor runbook - API server down")
    assert runner.status == "successful" and runner.rc == 0, _explain(runner, events)
    stats = [e for e in events if e.get("event") == "playbook_on_stats"]
    artifacts = stats[-1]["event_data"]["artifact_data"]["victor_runbook"][host]
    assert artifacts["healthy"] is True and artifacts["actions"] == {"restarted": True}
    bundle = json.loads(Path(artifacts["report"]).read_text(encoding="utf-8"))
    assert bundle["awx_job_id"] == 4242 and bundle["awx_user_name"] == "runner-test"
    assert bundle["diagnostics"]["before"]["health"]["ok"] is False
    assert bundle["diagnostics"]["after"]["health"]["body"]["status"] == "healthy"


def test_monthly_maintenance_job_with_survey_defaults(target):
    host = target["name"]
    runner, events = _job(target, "Victor monthly maintenance")
    assert runner.status == "successful" and runner.rc == 0, _explain(runner, events)
    assert _host_stat(runner, "failures", host) == 0 and _target_changes(events), "maintenance changes the host"
    reports = sorted((target["work"] / "maintenance-reports").rglob("monthly-*.json"))
    assert reports, "the monthly report must be written on the controller"
    steps = {s["name"]: s for s in json.loads(reports[-1].read_text(encoding="utf-8"))["steps"]}
    assert steps["backup"]["status"] == "ok", steps["backup"]
    listing = _docker("exec", host, "bash", "-c", "ls -1 /var/backups/victor")
    assert listing.stdout.strip(), "a backup must exist on the host"
    health = _docker("exec", host, "curl", "-fsS", "http://127.0.0.1:8765/health")
    assert json.loads(health.stdout)["status"] == "healthy"
