"""Inventory values cannot become directives or commands (issue 13): the regression cases of the
issue checked by the real tools, logrotate -f, nginx -t and systemd-analyze verify, on files the
renderers of tests/unit/test_template_injection.py produce."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
# the unit tier's renderers and role-check evaluators (tests/unit is importable: conftest.py)
from test_template_injection import (DEPLOY, DEPLOY_VALID, LOGROTATE, ROLES, _deploy_unit, _logrotate, nginx_directives,  # pylint: disable=import-error
                                     nginx_refusals, nginx_render, refusals, systemd_words, unit_parse)


@pytest.mark.skipif(shutil.which("logrotate") is None and not Path("/usr/sbin/logrotate").exists(),
                    reason="logrotate is installed by tests/host-packages.txt")
def test_logrotate_service_name_with_a_command_is_refused_and_runs_nothing(tmp_path):
    hostile = f"victor-api; touch {tmp_path}/PWNED;"
    assert any("victor_logrotate_service_name" in m
               for m in refusals(LOGROTATE, "main.yml", victor_logrotate_service_name=hostile))
    # Even rendered without the check, the name reaches the freeze helper as one quoted word.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "victor.log").write_text("line\n", encoding="utf-8")
    script = tmp_path / "freeze"
    shutil.copy(ROLES / LOGROTATE / "files" / "victor-logrotate-freeze", script)
    script.chmod(0o755)
    conf = tmp_path / "victor-ai"
    conf.write_text(_logrotate(victor_logrotate_service_name=hostile, victor_logrotate_log_dir=str(logs),
                               victor_logrotate_freeze_script=str(script),
                               victor_logrotate_user="root", victor_logrotate_group="root"), encoding="utf-8")
    conf.chmod(0o644)
    proc = subprocess.run([shutil.which("logrotate") or "/usr/sbin/logrotate", "-f", "--state", str(tmp_path / "state"),
                           str(conf)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert any(p.name.startswith("victor.log-") for p in logs.iterdir()), "logrotate did not rotate: the test proves nothing"
    assert not (tmp_path / "PWNED").exists()


NGINX_ESCAPE = "10.9.9.9:8765; } server { listen 19998; location / { root /etc; autoindex on; } } upstream x { server 10.9.9.9"


def _nginx_t(tmp_path, conf):
    path = tmp_path / "nginx.conf"
    path.write_text(conf, encoding="utf-8")
    return subprocess.run(["nginx", "-t", "-q", "-c", str(path)], capture_output=True, text=True, check=False)


needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None or os.geteuid() != 0,
                                 reason="nginx from tests/host-packages.txt; nginx -t reads /etc/nginx as root")


@needs_nginx
def test_nginx_upstream_address_cannot_open_a_server_block(tmp_path):
    hostvars = {"api-2": {"victor_nginx_lb_address": NGINX_ESCAPE}}
    assert any("victor_nginx_lb_address" in m for m in nginx_refusals(hostvars))
    # the real nginx accepts the configuration for valid values ...
    valid = _nginx_t(tmp_path, nginx_render())
    assert valid.returncode == 0, valid.stderr
    # ... and the escape, rendered without the check, is one (invalid) address, not a server on port 19998
    conf = nginx_render(hostvars)
    assert "listen 19998" not in [f"{d[1]} {' '.join(d[2])}" for d in nginx_directives(conf)]
    assert _nginx_t(tmp_path, conf).returncode != 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze comes with systemd")
def test_deploy_host_cannot_add_exec_start_pre(tmp_path):
    hostile = "127.0.0.1\nExecStartPre=/bin/sh -c 'touch /tmp/PWNED'"
    assert any("victor_deploy_host" in m for m in refusals(DEPLOY, "validate.yml", **DEPLOY_VALID, victor_deploy_host=hostile))
    current = tmp_path / "current"
    (current / "bin").mkdir(parents=True)
    (current / "bin" / "victor").write_text("#!/bin/sh\n", encoding="utf-8")
    (current / "bin" / "victor").chmod(0o755)
    unit = tmp_path / "victor-api.service"
    unit.write_text(_deploy_unit(victor_deploy_host=hostile, victor_deploy_current_link=str(current),
                                 victor_deploy_state_dir=str(tmp_path)), encoding="utf-8")
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and str(unit) not in proc.stderr, proc.stderr
    keys, values = unit_parse(unit.read_text(encoding="utf-8"))
    assert keys == unit_parse(_deploy_unit())[0]
    assert systemd_words(values["ExecStart"][0]) == [f"{current}/bin/victor", "serve", "--host", hostile, "--port", "8765"]
