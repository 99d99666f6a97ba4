"""playbooks/awx_configure.yml itself, run by ansible-playbook: it passes --syntax-check and runs up
to its first controller call (the configuration's data is checked in tests/unit/test_awx_configure.py,
a real AWX in tests/awx/)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name):
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    assert found, name
    return found


# ---------------------------------------------------------------- the playbook


def _env(**extra):
    env = dict(os.environ)
    env.update({"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"})
    env.pop("CONTROLLER_HOST", None)
    env.pop("CONTROLLER_OAUTH_TOKEN", None)
    env.update(extra)
    return env


def test_awx_configure_syntax_check():
    result = subprocess.run([_tool("ansible-playbook"), "--syntax-check", str(ROOT / "playbooks" / "awx_configure.yml")],
                            capture_output=True, text=True, env=_env(), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_awx_configure_validates_then_needs_a_controller():
    """Without a controller it stops at the assert with a clear message."""
    result = subprocess.run([_tool("ansible-playbook"), str(ROOT / "playbooks" / "awx_configure.yml")],
                            capture_output=True, text=True, env=_env(), check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ok: [localhost]" in result.stdout  # the argument spec validation passed
    assert "Set CONTROLLER_HOST and CONTROLLER_OAUTH_TOKEN" in result.stdout


def test_awx_configure_reaches_the_controller_api():
    """With a controller set it gets past validation and calls the API (a closed local port)."""
    result = subprocess.run([_tool("ansible-playbook"), str(ROOT / "playbooks" / "awx_configure.yml")],
                            capture_output=True, text=True, check=False,
                            env=_env(CONTROLLER_HOST="http://127.0.0.1:9", CONTROLLER_OAUTH_TOKEN="not-a-token"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TASK [Create the organization]" in result.stdout
    assert "127.0.0.1" in result.stdout
    assert "not-a-token" not in result.stdout
