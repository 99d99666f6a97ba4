"""victor_deploy with service manager "process": no systemd, no root."""
import json


def _pid(host):
    return host.file("/home/dev/victor/run/victor.pid").content_string.strip()


def test_serves_the_deployed_version(host):
    out = host.check_output("curl -sf --max-time 5 http://127.0.0.1:8777/health")
    assert json.loads(out) == {"status": "healthy", "version": "0.9.5"}


def test_pid_file_names_the_server_running_as_dev(host):
    pid = _pid(host)
    assert host.check_output("ps -o user= -p %s", pid).strip() == "dev"
    cmdline = host.file("/proc/%s/cmdline" % pid).content_string.replace("\0", " ")
    assert "/home/dev/victor/current/bin/victor serve" in cmdline
    assert "--port 8777" in cmdline


def test_no_systemd_and_no_root_files(host):
    assert "systemd" not in host.file("/proc/1/cmdline").content_string
    assert host.check_output("find /home/dev/victor -not -user dev | wc -l") == "0"
    assert not host.file("/etc/systemd/system/victor-api.service").exists


def test_log_file_written_and_state_in_root(host):
    assert host.file("/home/dev/victor/log/victor-serve.log").size > 0
    assert host.file("/home/dev/victor/state/.victor").is_directory
    assert host.file("/home/dev/victor/victor.env").mode == 0o600


def test_fact_file_in_root(host):
    fact = json.loads(host.file("/home/dev/victor/facts.d/victor_deploy.fact").content_string)
    assert fact["current"] == "0.9.5"
    assert fact["method"] == "pip"


def test_decoy_with_victor_in_its_name_survived(host):
    decoy = host.file("/root/decoy.pid").content_string.strip()
    assert host.run("kill -0 %s", decoy).rc == 0
