"""The staging and production example inventories parse, decrypt and match the roles.

`ansible-inventory --list --export` parses each inventory without the vault password, the
way an AWX inventory sync imports it (secrets are inline vault strings and stay
encrypted); the ad-hoc `debug` module (no connection to the hosts) renders the templated
variables with the example (demo) vault password file, the way a job with a Vault
credential does. Variables named after a role must be options of that role's
argument spec, so a renamed or misspelled variable fails here instead of being ignored.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORIES = ("staging", "production")
GROUPS = ("victor_api", "victor_lb", "victor_db")
# Variables read by playbooks rather than by a role's argument spec.
PLAYBOOK_VARS = {"victor_deploy_serial"}


def _tool(name):
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    assert found, name
    return found


def _env():
    env = dict(os.environ)
    env.update({"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_DEPRECATION_WARNINGS": "0", "ANSIBLE_NOCOLOR": "1"})
    return env


def _inventory(name, vault=True):
    cmd = [_tool("ansible-inventory"), "-i", str(ROOT / "inventories" / name), "--list", "--export"]
    if vault:
        cmd += ["--vault-password-file", str(ROOT / "inventories" / name / "vault-password.example")]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)


def _plain_group_vars(name):
    result = {}
    for path in sorted((ROOT / "inventories" / name / "group_vars").glob("*/*.yml")):
        if path.name == "vault.yml":
            continue
        result[path] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return result


def _role_options():
    options = {}
    for spec in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
        data = yaml.safe_load(spec.read_text(encoding="utf-8"))["argument_specs"]
        role = spec.parent.parent.name
        options[role] = {}
        for entry in data.values():
            options[role].update(entry.get("options") or {})
    return options


@pytest.fixture(scope="module", params=INVENTORIES)
def listed(request):
    result = _inventory(request.param)
    assert result.returncode == 0, result.stderr
    return request.param, json.loads(result.stdout)


def test_groups_exist_and_have_hosts(listed):
    _name, data = listed
    for group in GROUPS:
        assert data[group]["hosts"], group
    assert sorted(data["victor"]["children"]) == sorted(GROUPS)


def _vault_vars(data):
    return data["all"]["vars"]


def test_secrets_stay_encrypted_in_the_import(listed):
    """What AWX stores after an inventory sync: every vault_ value still encrypted."""
    _name, data = listed
    secrets = {k: v for k, v in _vault_vars(data).items() if k.startswith("vault_")}
    assert "vault_victor_db_password" in secrets
    for key, value in secrets.items():
        assert isinstance(value, dict) and value["__ansible_vault"].startswith("$ANSIBLE_VAULT;1.1;AES256\n"), key


@pytest.mark.parametrize("name", INVENTORIES)
def test_import_needs_no_vault_password(name):
    result = _inventory(name, vault=False)
    assert result.returncode == 0, result.stderr
    assert "EXAMPLE" not in result.stdout


def _debug(name, var, vault=True):
    env = _env()
    env.update({"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"})
    cmd = [_tool("ansible"), "-i", str(ROOT / "inventories" / name), "victor_api", "-m", "ansible.builtin.debug", "-a", "var=" + var]
    if vault:
        cmd += ["--vault-password-file", str(ROOT / "inventories" / name / "vault-password.example")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize("name", INVENTORIES)
def test_secrets_decrypt_only_with_the_example_password(name):
    with_password = _debug(name, "vault_victor_db_password")
    assert with_password.returncode == 0, with_password.stdout + with_password.stderr
    hosts = json.loads(with_password.stdout)["plays"][0]["tasks"][0]["hosts"]
    assert {r["vault_victor_db_password"] for r in hosts.values()} == {"EXAMPLE-%s-postgres-password" % name}
    without = _debug(name, "vault_victor_db_password", vault=False)
    assert "EXAMPLE-%s-postgres-password" % name not in without.stdout
    assert "vault" in (without.stdout + without.stderr).lower()


@pytest.mark.parametrize("name", INVENTORIES)
def test_no_secret_in_plain_text_and_every_vault_reference_is_defined(name):
    defined = {k for k in _vault_vars(json.loads(_inventory(name).stdout)) if k.startswith("vault_")}
    for path, data in _plain_group_vars(name).items():
        assert not [k for k in data if k.startswith("vault_")], path
        text = path.read_text(encoding="utf-8")
        for ref in re.findall(r"\b(vault_[a-z0-9_]+)", text):
            assert ref in defined, (path, ref)


@pytest.mark.parametrize("name", INVENTORIES)
def test_role_variables_are_options_of_the_role(name):
    options = _role_options()
    assert options, "no role argument specs found"
    checked = 0
    for path, data in _plain_group_vars(name).items():
        for key in data:
            role = next((r for r in options if key.startswith(r + "_")), None)
            if role is None or key in PLAYBOOK_VARS:
                continue
            checked += 1
            assert key in options[role], "%s: %s is not an option of role %s" % (path, key, role)
            spec = options[role][key]
            if "choices" in spec and isinstance(data[key], str) and "{{" not in data[key]:
                assert data[key] in spec["choices"], (path, key)
    assert checked > 0


@pytest.mark.parametrize("name", INVENTORIES)
def test_required_role_options_are_set_for_the_group_that_runs_the_role(name):
    """A role's required options must be set in the inventory, or a job fails on validation."""
    group_of_role = {"victor_deploy": "victor_api", "victor_health": "victor_api", "victor_maintenance": "victor_api",
                     "victor_logrotate": "victor_api", "victor_backup": "victor_api", "victor_restore": "victor_api",
                     "victor_nginx_lb": "victor_lb"}
    for spec in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
        role = spec.parent.parent.name
        group = group_of_role.get(role)
        if group is None:
            continue
        options = yaml.safe_load(spec.read_text(encoding="utf-8"))["argument_specs"]["main"].get("options") or {}
        data = yaml.safe_load((ROOT / "inventories" / name / "group_vars" / group / "main.yml").read_text(encoding="utf-8"))
        for option, spec in options.items():
            if spec.get("required"):
                assert data.get(option) not in (None, ""), (name, role, option)


@pytest.mark.parametrize("name", INVENTORIES)
def test_group_vars_cover_the_roles_each_group_runs(name):
    """Every role a group runs (and that exists here) has its main variables in that group's vars."""
    runs = {"victor_api": ["victor_deploy", "victor_health", "victor_maintenance", "victor_logrotate"], "victor_lb": ["victor_nginx_lb"]}
    for group, roles in runs.items():
        data = yaml.safe_load((ROOT / "inventories" / name / "group_vars" / group / "main.yml").read_text(encoding="utf-8"))
        for role in roles:
            if (ROOT / "roles" / role).is_dir():
                assert len([k for k in data if k.startswith(role + "_")]) >= 3, (name, group, role)


@pytest.mark.parametrize("name", INVENTORIES)
def test_cross_group_wiring_renders(name):
    result = _debug(name, "victor_maintenance_postgres_host")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(_inventory(name).stdout)
    hosts = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]
    assert {r["victor_maintenance_postgres_host"] for r in hosts.values()} == {listed["victor_db"]["hosts"][0]}
    port = _debug(name, "victor_maintenance_postgres_port")
    assert {str(r["victor_maintenance_postgres_port"]) for r in json.loads(port.stdout)["plays"][0]["tasks"][0]["hosts"].values()} == {"5432"}


@pytest.mark.parametrize("name", INVENTORIES)
def test_templated_variables_render_through_the_vault(name):
    result = _debug(name, "victor_deploy_environment")
    assert result.returncode == 0, result.stdout + result.stderr
    hosts = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]
    listed = json.loads(_inventory(name).stdout)
    db_host = listed["victor_db"]["hosts"][0]
    assert sorted(hosts) == sorted(listed["victor_api"]["hosts"])
    for res in hosts.values():
        rendered = res["victor_deploy_environment"]
        assert rendered["ANTHROPIC_API_KEY"] == "sk-ant-EXAMPLE-%s-not-a-real-key" % name
        assert rendered["VICTOR_CHECKPOINT_DB_URL"] == (
            "postgresql://victor:EXAMPLE-%s-postgres-password@%s:5432/victor" % (name, db_host))
