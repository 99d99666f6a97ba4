"""victor_logrotate: logrotate -d accepts the rendered file and rejects a broken one (the file's
content is checked in tests/unit/test_logrotate_template.py, whose renderer this uses)."""
import shutil
import subprocess
from pathlib import Path

import pytest
from test_logrotate_template import _render  # pylint: disable=import-error


@pytest.mark.skipif(shutil.which("logrotate") is None and not Path("/usr/sbin/logrotate").exists(),
                    reason="logrotate is installed by tests/host-packages.txt")
@pytest.mark.parametrize("overrides, valid", [
    ({}, True),
    ({"victor_logrotate_maxsize": "lots"}, False),
])
def test_logrotate_debug_accepts_the_file_and_rejects_a_broken_one(tmp_path, overrides, valid):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "victor.log").write_text("line\n", encoding="utf-8")
    overrides.update(victor_logrotate_log_dir=str(logs), victor_logrotate_user="root", victor_logrotate_group="root")
    conf = tmp_path / "victor-ai"
    conf.write_text(_render(**overrides), encoding="utf-8")
    conf.chmod(0o644)
    binary = shutil.which("logrotate") or "/usr/sbin/logrotate"
    proc = subprocess.run([binary, "-d", "--state", str(tmp_path / "state"), str(conf)],
                          capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0 and "error:" not in output) is valid, output
