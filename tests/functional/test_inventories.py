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


# --- Each example inventory, local included, yields a plan that works (issue 14) ------------
# One ansible-playbook run per inventory: every role a group runs validates the inventory's
# (templated) variables against its meta/argument_specs.yml, then every victor_* variable of
# every host is rendered for the checks below. The local inventory renders against a fake
# VICTOR_LOCAL_ROOT whose port file says 12345, as `make demo` leaves it when 8765 is taken.
ALL_INVENTORIES = ("local",) + INVENTORIES
ROLES_OF_GROUP = {
    "victor_api": ["victor_deploy", "victor_health", "victor_maintenance", "victor_logrotate", "victor_backup", "victor_restore"],
    "victor_lb": ["victor_nginx_lb"],
    "victor_db": ["victor_postgresql"],
}
PLAN_PLAYBOOK = """
- name: Validate and render {group}
  hosts: {group}
  gather_facts: false
  tasks:
    - name: Validate the variables of a role this group runs
      ansible.builtin.validate_argument_spec:
        argument_spec: "{{{{ (lookup('ansible.builtin.file', '{roles}/' ~ item ~ '/meta/argument_specs.yml') | from_yaml).argument_specs.main.options }}}}"
      loop: {role_list}
      when: query('ansible.builtin.varnames', '^' ~ item ~ '_') | length > 0  # the roles this inventory configures
    - name: Render every victor_ variable
      vars:
        names: "{{{{ query('ansible.builtin.varnames', '^victor_') }}}}"
      ansible.builtin.debug:
        msg: "{{{{ dict(names | zip(query('ansible.builtin.vars', *names))) }}}}"
"""


@pytest.fixture(scope="module", name="plan")
def plan_fixture(tmp_path_factory):
    """{inventory: {"rc", "output", "hosts": {host: {var: rendered value}}}}; local root with a port file."""
    local_root = tmp_path_factory.mktemp("local-victor")
    (local_root / "port").write_text("12345\n")
    plans = {}
    for name in ALL_INVENTORIES:
        groups = [g for g in ROLES_OF_GROUP if g in json.loads(_inventory(name, vault=False).stdout)]
        playbook = tmp_path_factory.mktemp("plan") / "plan.yml"
        text = ""
        for group in groups:
            text += PLAN_PLAYBOOK.format(group=group, roles=ROOT / "roles", role_list=json.dumps(ROLES_OF_GROUP[group]))
        playbook.write_text("---" + text)
        env = _env()
        env.update({"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                    "VICTOR_LOCAL_ROOT": str(local_root)})
        for var in ("VICTOR_LOCAL_PORT", "VICTOR_LOCAL_VERSION", "VICTOR_LOCAL_WHEELHOUSE"):
            env.pop(var, None)
        cmd = [_tool("ansible-playbook"), "-i", str(ROOT / "inventories" / name), str(playbook)]
        if name != "local":
            cmd += ["--vault-password-file", str(ROOT / "inventories" / name / "vault-password.example")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT), check=False)
        hosts = {}
        if proc.stdout.startswith("{"):
            for play in json.loads(proc.stdout)["plays"]:
                for host, res in play["tasks"][-1]["hosts"].items():
                    hosts[host] = res.get("msg", {})
        plans[name] = {"rc": proc.returncode, "output": proc.stdout[-5000:] + proc.stderr[-2000:], "hosts": hosts,
                       "root": local_root}
    return plans


def _api_hosts(plan, name):
    hosts = {h: v for h, v in plan[name]["hosts"].items() if "victor_deploy_version" in v}
    assert hosts, plan[name]["output"]
    return hosts


@pytest.mark.parametrize("name", ALL_INVENTORIES)
def test_every_role_accepts_the_inventory(plan, name):
    """Each role's argument spec validates the templated values of the inventory (types, choices, required)."""
    assert plan[name]["rc"] == 0, plan[name]["output"]


@pytest.mark.parametrize("name", ALL_INVENTORIES)
def test_every_role_sees_the_same_victor(plan, name):
    """Health, maintenance and backup read the state the deploy role writes, at the port it serves on."""
    for host, var in _api_hosts(plan, name).items():
        data_dir = var["victor_deploy_state_dir"] + "/.victor"
        assert var["victor_health_state_dir"] == data_dir, host
        assert var["victor_backup_source"] == data_dir, host
        assert var["victor_maintenance_state_dir"] == var["victor_deploy_state_dir"], host
        port = ":%s" % var["victor_deploy_port"]
        assert var["victor_health_url"].endswith(port) and var["victor_maintenance_url"].endswith(port), host
        names = {var.get(r + "_service_name", "victor-api") for r in ("victor_deploy", "victor_health", "victor_maintenance")}
        assert len(names) == 1, (host, names)
        assert var.get("victor_health_service_manager", "systemd") == var.get("victor_deploy_service_manager", "systemd"), host
        assert var["victor_health_disk_paths"], host


@pytest.mark.parametrize("name", ALL_INVENTORIES)
def test_monthly_backup_follows_the_backup_settings(plan, name):
    """The monthly backup is victor_backup's run.yml: its repository is the one maintenance sizes and audits."""
    for host, var in _api_hosts(plan, name).items():
        # the role default is victor_backup_repository
        assert var.get("victor_maintenance_backup_dir", var["victor_backup_repository"]) == var["victor_backup_repository"], host
        if var.get("victor_health_backup_dir"):
            assert var["victor_health_backup_dir"] == var["victor_backup_repository"], host
    task = yaml.safe_load((ROOT / "roles/victor_maintenance/tasks/steps/backup_create.yml").read_text(encoding="utf-8"))
    assert task[0]["ansible.builtin.include_role"]["name"] == "victor.ops.victor_backup"
    assert task[0]["ansible.builtin.include_role"]["tasks_from"] == "run.yml"
    assert not [t for t in task if "victor.ops.victor_backup" in t]  # no second, differently configured backup call


@pytest.mark.parametrize("name", ALL_INVENTORIES)
def test_weekly_vacuum_is_not_refused_while_victor_runs(plan, name):
    """VACUUM INTO swaps the file and is refused while Victor holds it open: only with the service stopped."""
    for host, var in _api_hosts(plan, name).items():
        if var.get("victor_maintenance_vacuum_mode", "in_place") == "into":
            assert var.get("victor_maintenance_stop_service") is True, host
            assert var.get("victor_deploy_service_manager", "systemd") == "systemd", host


@pytest.mark.parametrize("name", INVENTORIES)
def test_load_balancer_keeps_a_client_on_its_node(plan, name):
    """Victor 0.9.x keeps sessions on the node (docs/staging.md): ip_hash, not least_conn."""
    lbs = {h: v for h, v in plan[name]["hosts"].items() if "victor_nginx_lb_method" in v}
    assert lbs
    versions = {v["victor_deploy_version"] for v in _api_hosts(plan, name).values()}
    assert all(v.startswith("0.9.") for v in versions), versions  # revisit when sessions are shared
    assert {v["victor_nginx_lb_method"] for v in lbs.values()} == {"ip_hash"}


def test_local_inventory_describes_the_process_managed_demo(plan):
    """What `make demo` runs: pid file, state and logs under VICTOR_LOCAL_ROOT, the port from its port file."""
    root = str(plan["local"]["root"])
    var = _api_hosts(plan, "local")["localhost"]
    assert var["victor_deploy_service_manager"] == "process"
    assert var["victor_health_service_manager"] == "process"
    assert var["victor_health_pid_file"] == root + "/run/victor.pid"
    assert var["victor_deploy_state_dir"] == root + "/state"
    assert str(var["victor_deploy_port"]) == "12345"
    assert var["victor_health_url"] == var["victor_maintenance_url"] == "http://127.0.0.1:12345"
    assert var["victor_health_log_path"] == root + "/state/.victor/logs/victor.log"
    assert var["victor_health_disk_paths"] == [root]
    assert var["victor_backup_repository"].startswith(root + "/") and var["victor_health_report_dir"].startswith(root + "/")
    assert "make demo" in var["victor_maintenance_down_hint"]


def _plays(path):
    return yaml.safe_load(path.read_text(encoding="utf-8")) or []


def test_every_playbook_checks_its_target_groups_first():
    """A playbook whose group is empty must fail naming it (playbooks/check_targets.yml), not skip with rc 0:
    every playbook imports the check first, for exactly the host patterns of its plays."""
    checked = 0
    for path in sorted((ROOT / "playbooks").glob("*.yml")) + sorted((ROOT / "playbooks" / "runbooks").glob("*.yml")):
        plays = _plays(path)
        if path.name in ("check_targets.yml", "deploy_strategy.yml") or all(p.get("hosts") == "localhost" for p in plays):
            continue  # deploy_strategy.yml is only imported (after the check) by deploy.yml and rollback.yml
        first = plays[0]
        assert first.get("ansible.builtin.import_playbook", "").endswith("check_targets.yml"), path
        targets = set(p["hosts"] for p in plays[1:] if "hosts" in p) - {"localhost"}
        if any(p.get("ansible.builtin.import_playbook") == "deploy_strategy.yml" for p in plays):
            targets.discard("victor_lb")  # needed by blue_green only, which deploy_strategy.yml checks
        assert sorted(set(first["vars"]["victor_ops_target_groups"])) == sorted(targets), path
        checked += 1
    assert checked >= 15
