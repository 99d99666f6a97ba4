"""victor_staging: staging provisioned by playbooks/provision_staging.yml, checked from outside.

Runs after side_effect (the PostgreSQL lock fault and the runbook database_connection_failed).
"""
import glob
import json
import os
import urllib.parse
import uuid

import pytest
import testinfra

DB = "victor-ops-staging-db"
APIS = ["victor-ops-staging-api1", "victor-ops-staging-api2"]
LB = "victor-ops-staging-lb"
ENV_FILE = "/etc/victor/victor.env"
PASSWORD = "m0lecule p@ss:w/rd"
EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
testinfra_hosts = [LB]

# Runs on an API node: reads Victor's environment file, then logs in with psql using the
# URL's parts; the password goes through PGPASSWORD, never argv.
PSQL_FROM_ENV = r"""
import json, os, subprocess, sys, urllib.parse
env = {}
for line in open(%(env_file)r):
    if '=' in line and not line.startswith('#'):
        key, value = line.rstrip('\n').split('=', 1)
        env[key] = json.loads(value) if value.startswith('"') else value
url = urllib.parse.urlsplit(env['VICTOR_CHECKPOINT_DB_URL'])
password = urllib.parse.unquote(url.password) + %(suffix)r
proc = subprocess.run(['psql', '-h', url.hostname, '-p', str(url.port or 5432), '-U', urllib.parse.unquote(url.username),
                       '-d', url.path[1:], '-w', '-AtF', ',', '-c',
                       'SELECT current_user, current_database(), inet_server_port()'],
                      env=dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT='5'), capture_output=True, text=True)
print(json.dumps({'rc': proc.returncode, 'out': proc.stdout.strip(), 'err': proc.stderr.strip()}))
"""


def _host(name):
    return testinfra.get_host("ansible://" + name, ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def _python(host, script):
    cmd = host.run("python3 -c %s", script)
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def _pg(sql):
    """A query as the postgres superuser on the db container (local socket, peer auth)."""
    return _host(DB).check_output("runuser -u postgres -- psql -d postgres -AtF, -c %s", sql)


def test_requests_through_the_load_balancer_reach_both_healthy_nodes(host):
    # nginx does not log /health (access_log off there), so the upstream of each request is
    # read from the log lines of /docs (FastAPI's page, 200) tagged with a unique query.
    # (Not interleaved with /health: least_conn takes turns on ties, so every second request
    # would always land on the same node.)
    for _attempt in range(10):
        body = host.check_output("curl -sf --max-time 10 http://127.0.0.1/health")
        assert json.loads(body) == {"status": "healthy", "version": "0.9.5"}
    tag = uuid.uuid4().hex
    for i in range(20):
        code = host.check_output("curl -s -o /dev/null -w '%%{http_code}' --max-time 10 %s", "http://127.0.0.1/docs?probe=%s-%d" % (tag, i))
        assert code == "200"
    lines = [line for line in host.file("/var/log/nginx/access.log").content_string.splitlines() if tag in line]
    assert len(lines) == 20
    served = {line.split("upstream=")[1].split()[0] for line in lines}
    addresses = {host.check_output("getent hosts %s", api).split()[0] + ":8765" for api in APIS}
    assert served == addresses, (served, addresses)
    assert all("upstream_status=200" in line for line in lines)


@pytest.mark.parametrize("api", APIS)
def test_backups_are_scheduled_as_systemd_timers(api):
    node = _host(api)
    timers = node.check_output("systemctl list-timers --all --no-legend --no-pager 'victor-backup-*'")
    for name in ("victor-backup-incremental.timer", "victor-backup-database.timer"):
        assert name in timers, timers
        assert node.service(name).is_enabled
        assert node.check_output("systemctl is-active %s", name) == "active"
        next_run = node.check_output("systemctl show %s -p NextElapseUSecRealtime --value", name)
        assert next_run not in ("", "0", "n/a"), (name, next_run)
    # the first backup of a new node, so the health check's backup recency is green; it holds
    # a pg_dump of the shared database next to the SQLite snapshots, and no password
    paths = node.check_output("ls /var/backups/victor/*.manifest.json").split()
    manifests = [node.file(path).content_string for path in paths]
    dumps = [db for text in manifests for db in json.loads(text)["databases"] if db.get("engine") == "postgresql"]
    assert dumps and all(db["sha256"] and db["size"] > 0 for db in dumps), manifests
    assert not any("p@ss" in text for text in manifests)


def test_health_report_is_green():
    reports = sorted(glob.glob(os.path.join(EPHEMERAL, "health-reports", "victor-health-*.json")))
    assert reports, "no health report written"
    with open(reports[-1], encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["status"] == "healthy", json.dumps(report, indent=1)[:4000]
    assert sorted(report["hosts"]) == APIS
    for name, result in report["hosts"].items():
        assert result["status"] == "healthy", (name, result)
        checks = json.dumps(result)
        assert "postgres" in checks and "backup:" in checks, (name, checks[:2000])


@pytest.mark.parametrize("api", APIS)
def test_env_file_holds_the_postgres_url_with_mode_0600_and_victor_gets_it(api):
    node = _host(api)
    env_file = node.file(ENV_FILE)
    assert env_file.mode == 0o600
    assert env_file.user == "root"
    url = "postgresql://victor:%s@%s:5432/victor" % (urllib.parse.quote(PASSWORD, safe=""), DB)
    assert 'VICTOR_CHECKPOINT_DB_URL="%s"' % url in env_file.content_string
    pid = node.check_output("systemctl show victor-api -p MainPID --value")
    # root lacks CAP_SYS_PTRACE in these containers: read it as the process's own user
    environ = node.check_output("runuser -u victor -- cat /proc/%s/environ | tr '\\0' '\\n'", pid)
    assert "VICTOR_CHECKPOINT_DB_URL=" + url in environ.splitlines()


@pytest.mark.parametrize("api", APIS)
def test_api_node_logs_in_to_postgres_with_the_env_file_credentials(api):
    node = _host(api)
    good = _python(node, PSQL_FROM_ENV % {"env_file": ENV_FILE, "suffix": ""})
    assert good["rc"] == 0, good
    assert good["out"] == "victor,victor,5432"
    # the server does check the password (scram-sha-256 in pg_hba.conf, no trust)
    bad = _python(node, PSQL_FROM_ENV % {"env_file": ENV_FILE, "suffix": "-wrong"})
    assert bad["rc"] != 0 and "password authentication failed" in bad["err"], bad


def _fault():
    with open(os.path.join(EPHEMERAL, "pg-fault.json"), encoding="utf-8") as handle:
        rows = json.load(handle)
    return {row["db"]: row["blocker_pid"] for row in rows}


def _bundles(api):
    """The bundles of the node's runs, in order: check mode, real, real again; on the first
    node also the last check-mode run (the idle transaction, nothing blocked)."""
    paths = sorted(glob.glob(os.path.join(EPHEMERAL, "runbook-reports", "database_connection_failed-%s-*.json" % api)))
    assert len(paths) == (4 if api == APIS[0] else 3), paths
    bundles = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            bundles.append(json.load(handle))
    return bundles


def test_runbook_ended_the_blocking_session_only_in_victors_database():
    pids = _fault()
    alive = set(_pg("SELECT pid FROM pg_stat_activity").split())
    assert str(pids["victor"]) not in alive
    assert str(pids["victor_decoy"]) in alive, "the blocker in another database must be spared"
    # the blocked session in Victor's database got its lock and finished; the decoy's still waits
    waiting = _pg("SELECT application_name FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0")
    assert waiting.split() == ["molecule-decoy-waiter"]


@pytest.mark.parametrize("api", APIS)
def test_runbook_bundle_names_the_terminated_pid_and_health_is_back(api):
    pids = _fault()
    bundle = _bundles(api)[1]
    assert bundle["check_mode"] is False
    assert bundle["healthy"] is True
    assert bundle["actions"]["pg_terminated"] == [pids["victor"]]
    assert bundle["actions"]["restarted"] is True
    # ended by victor_db_maintenance clear_locks' rule, with the threshold the side_effect set
    assert bundle["actions"]["pg_lock_threshold"] == 5
    assert [row["pid"] for row in bundle["actions"]["pg_sessions_to_end"]] == [pids["victor"]]
    assert "idle in transaction" in bundle["actions"]["pg_sessions_to_end"][0]["reason"]
    before, after = bundle["diagnostics"]["before"]["postgresql"], bundle["diagnostics"]["after"]["postgresql"]
    assert before["pg_isready"]["accepting"] and before["connect"]["ok"]
    assert before["blocked_count"] == 1 and before["blocking_pids"] == [pids["victor"]]
    # locks (victor_db_maintenance) names the waiter, what it waits on and its blocker, idle in
    # its transaction (the module reports no lock modes: the former SQL's AccessExclusiveLock)
    blocked, blocking = before["locks"]["blocked"], before["locks"]["blocking"]
    assert [row["blocked_by"] for row in blocked] == [[pids["victor"]]] and "runbook_probe" in blocked[0]["query"]
    assert [(row["pid"], row["state"]) for row in blocking] == [(pids["victor"], "idle in transaction")]
    # pool_stats: the locker, the waiter and the runbook's own session in Victor's database
    assert before["pool"]["max_connections"] == 100 and before["pool"]["by_database"]["victor"] >= 3
    assert after["connect"]["ok"] and after["blocked_count"] == 0
    assert "m0lecule" not in json.dumps(bundle)
    assert _host(api).check_output("curl -s http://127.0.0.1:8765/health") == '{"status":"healthy","version":"0.9.5"}'


@pytest.mark.parametrize("api", APIS)
def test_runbook_second_run_does_nothing(api):
    """Second run: nothing blocked in Victor's database (the decoy database still is)."""
    bundle = _bundles(api)[2]
    assert bundle["check_mode"] is False
    assert bundle["healthy"] is True
    assert bundle["actions"]["pg_terminated"] == [] and bundle["actions"]["pg_sessions_to_end"] == []
    assert bundle["actions"]["restarted"] is False
    assert bundle["diagnostics"]["before"]["postgresql"]["blocked_count"] == 0


@pytest.mark.parametrize("api", APIS)
def test_runbook_in_check_mode_listed_the_blocker_without_ending_it(api):
    pids = _fault()
    bundle = _bundles(api)[0]
    assert bundle["check_mode"] is True
    assert [row["pid"] for row in bundle["actions"]["pg_sessions_to_end"]] == [pids["victor"]]
    assert bundle["actions"]["pg_terminated"] == []
    assert bundle["diagnostics"]["before"]["postgresql"]["blocking_pids"] == [pids["victor"]]
    assert bundle["diagnostics"]["after"]["postgresql"]["blocked_count"] == 1


def test_runbook_check_mode_lists_an_idle_transaction_that_blocks_nobody():
    """The runbook applies victor_db_maintenance clear_locks' rule and no rule of its own: a
    session idle in its transaction longer than the threshold is listed although nothing is
    blocked (a runbook that cleared only when something was blocked would list nothing)."""
    with open(os.path.join(EPHEMERAL, "pg-idler.json"), encoding="utf-8") as handle:
        idler = json.load(handle)["pid"]
    bundle = _bundles(APIS[0])[3]
    assert bundle["check_mode"] is True and bundle["healthy"] is True
    assert bundle["diagnostics"]["before"]["postgresql"]["blocked_count"] == 0
    assert [row["pid"] for row in bundle["actions"]["pg_sessions_to_end"]] == [idler]
    assert bundle["actions"]["pg_sessions_to_end"][0]["reason"].startswith("idle in transaction")
    assert bundle["actions"]["pg_terminated"] == []
    assert str(idler) in _pg("SELECT pid FROM pg_stat_activity").split(), "check mode must not end it"
