"""victor_deploy life cycle: the state after deploy 0.9.4, upgrade, rollback, failed deploy, keep=2 redeploy."""
import json


def _health(host):
    return json.loads(host.check_output("curl -sf --max-time 5 http://127.0.0.1:8765/health"))


def test_serves_the_last_deployed_version(host):
    assert _health(host) == {"status": "healthy", "version": "0.9.5"}


def test_current_link_is_relative_and_points_at_release(host):
    link = host.file("/opt/victor/current")
    assert link.is_symlink
    assert host.check_output("readlink /opt/victor/current") == "releases/0.9.5"


def test_keep_two_pruned_all_but_current_and_previous(host):
    releases = sorted(host.check_output("ls -1 /opt/victor/releases").split())
    assert releases == ["0.9.4", "0.9.5"]


def test_fact_records_current_and_previous(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/victor_deploy.fact").content_string)
    assert fact["current"] == "0.9.5"
    assert fact["previous"] == "0.9.4"
    assert fact["history"][-2:] == ["0.9.4", "0.9.5"]
    assert fact["deployed_by"]
    assert fact["deployed_at"].endswith("Z")
    assert host.file("/etc/ansible/facts.d/victor_deploy.fact").mode == 0o644


def test_marker_row_survived_everything(host):
    out = host.check_output(
        "runuser -u victor -- sqlite3 /var/lib/victor/.victor/victor.db "
        "\"SELECT value FROM victor_ops_marker WHERE name = 'lifecycle'\"")
    assert out == "written-on-0.9.4"


def test_service_runs_hardened_as_victor(host):
    pid = host.check_output("systemctl show -p MainPID --value victor-api")
    assert host.check_output("ps -o user= -p %s", pid).strip() == "victor"
    props = host.check_output(
        "systemctl show -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp -p ReadWritePaths victor-api")
    for expected in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                     "ReadWritePaths=/var/lib/victor"):
        assert expected in props


def test_env_file_is_private(host):
    env = host.file("/etc/victor/victor.env")
    assert env.mode == 0o600
    assert env.user == "root"


def test_service_enabled_and_state_private_to_victor(host):
    # Carried over from the single-deploy scenario this one replaces.
    assert host.service("victor-api").is_enabled
    assert host.file("/opt/victor/releases/0.9.5/.victor-release").content_string.strip() == "0.9.5"
    state = host.file("/var/lib/victor/.victor")
    assert state.is_directory
    assert state.user == "victor"
    assert host.file("/var/lib/victor").mode == 0o750
