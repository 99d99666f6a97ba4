"""victor.ops.victor_backup (run.yml) on localhost with real age: encrypted backups are verified (issue 14 item 5).

The identity reaches the node as a no_log variable; the module writes it 0600 to a private
temp file for age -i. Without an identity the role refuses before any backup is taken. (A wrong identity is
covered through the module in tests/unit/test_backup_hardening.py.)
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not shutil.which("age") or not shutil.which("age-keygen") or not shutil.which("zstd"),
                                reason="age and zstd are needed (Debian packages age, zstd)")

PLAY = """
- name: Take a backup with the role's run tasks
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Back up and verify
      ansible.builtin.include_role:
        name: victor.ops.victor_backup
        tasks_from: run.yml
"""


def keygen(path):
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    text = path.read_text()
    public = [line.split(": ")[1] for line in text.splitlines() if line.startswith("# public key: ")][0]
    return public, text


def playbook(tmp_path, extra):
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "vars.json").write_text(json.dumps(dict(extra, ansible_python_interpreter=sys.executable)))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return subprocess.run([str(BIN / "ansible-playbook"), "-v", "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
                           "-e", "@" + str(tmp_path / "vars.json")], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


@pytest.fixture(name="setup")
def setup_fixture(tmp_path):
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    (state / "profiles.yaml").write_text("default: {}\n")
    (state / "logs" / "victor.log").write_text("line\n" * 100)
    public, secret = keygen(tmp_path / "key.txt")
    base = {"victor_backup_source": str(state), "victor_backup_repository": str(tmp_path / "repo"),
            "victor_backup_age_recipients": [public], "victor_backup_victor_venv": str(tmp_path / "no-venv")}
    return tmp_path, base, secret


def manifests(repo):
    return [json.loads(p.read_text()) for p in Path(repo).glob("*.manifest.json")]


def test_encrypted_backup_is_verified_with_the_identity_from_a_no_log_variable(setup):
    tmp_path, base, secret = setup
    run = playbook(tmp_path, dict(base, victor_backup_age_identity=secret))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "TASK [victor.ops.victor_backup : Verify the backup just taken]" in run.stdout
    listed = manifests(base["victor_backup_repository"])
    assert len(listed) == 1 and listed[0]["encrypted"] is True and listed[0]["verified"]["ok"] is True
    secret_line = secret.strip().splitlines()[-1]
    assert secret_line not in run.stdout and secret_line not in run.stderr


def test_encrypted_backup_without_an_identity_is_refused_before_anything_is_taken(setup):
    tmp_path, base, _secret = setup
    run = playbook(tmp_path, base)
    assert run.returncode != 0
    assert "give the identity that decrypts them" in run.stdout
    assert not os.path.exists(base["victor_backup_repository"]) or manifests(base["victor_backup_repository"]) == []
