"""victor_deploy: the deployed release is the one serving /health."""
import json


def _health(host):
    out = host.check_output("curl -sf --max-time 5 http://127.0.0.1:8765/health")
    return json.loads(out)


def test_health_reports_deployed_version(host):
    assert _health(host) == {"status": "healthy", "version": "0.9.5"}


def test_current_link_points_at_release(host):
    link = host.file("/opt/victor/current")
    assert link.is_symlink
    assert link.linked_to == "/opt/victor/releases/0.9.5"
    assert host.file("/opt/victor/releases/0.9.5/.victor-release").content_string.strip() == "0.9.5"


def test_service_runs_as_victor_user(host):
    service = host.service("victor-api")
    assert service.is_running
    assert service.is_enabled
    pid = host.check_output("systemctl show -p MainPID --value victor-api")
    assert host.check_output("ps -o user= -p %s", pid).strip() == "victor"


def test_env_file_is_private(host):
    env = host.file("/etc/victor/victor.env")
    assert env.mode == 0o600
    assert env.user == "root"


def test_state_lives_in_state_dir(host):
    state = host.file("/var/lib/victor/.victor")
    assert state.is_directory
    assert state.user == "victor"
    assert host.file("/var/lib/victor").mode == 0o750
