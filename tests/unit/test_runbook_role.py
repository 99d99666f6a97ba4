"""victor_runbook: one place for each default, one lock-clearing implementation.

The role's defaults/main.yml, its argument specs and its README state the same defaults; the
PostgreSQL lock threshold defaults to victor_db_maintenance's own; no runbook file carries
lock SQL (victor_db_maintenance is the one implementation); the runbook playbooks are thin
wrappers over the role; and the role's variables resolve as a play would resolve them
(Ansible's Templar with the victor.ops filters).
"""
import re
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.victor.ops.plugins.modules import victor_db_maintenance

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "victor_runbook"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
SPECS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))["argument_specs"]
PLAYBOOKS = sorted((ROOT / "playbooks" / "runbooks").glob("*.yml"))
# read by the playbooks' hosts: before the role loads, so not a role default
PLAY_LEVEL = {"victor_runbook_hosts": "victor_api"}


def _options():
    """(entry point, variable, spec) of every option of every entry point."""
    return [(entry, name, spec) for entry, data in SPECS.items() for name, spec in data["options"].items()]


@pytest.mark.parametrize("entry, name, spec", _options(), ids=["%s:%s" % option[:2] for option in _options()])
def test_every_option_has_the_default_of_defaults_main(entry, name, spec):
    assert "default" in spec, "%s: %s has no default in the argument spec" % (entry, name)
    expected = PLAY_LEVEL[name] if name in PLAY_LEVEL else DEFAULTS.get(name, "<missing from defaults/main.yml>")
    assert spec["default"] == expected, (entry, name)


def test_every_default_is_an_option_of_some_entry_point():
    options = {option[1] for option in _options()}
    assert sorted(set(DEFAULTS) - options) == []


def test_readme_lists_every_option_with_its_literal_default():
    readme = (ROLE / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        match = re.match(r"\| `(victor_runbook_\w+)` \| (\w+) \| ([^|]*) \|", line)
        if match:
            rows.setdefault(match.group(1), []).append((match.group(2), match.group(3)))
    for entry, name, spec in _options():
        assert name in rows, "%s is not in the README" % name
        for kind, default in rows[name]:
            assert kind == spec["type"], (name, kind)
            if "{{" not in str(spec["default"]):
                literal = str(spec["default"]).lower() if isinstance(spec["default"], bool) else str(spec["default"])
                assert "`%s`" % literal in default, (name, default)


def test_lock_threshold_default_is_the_modules():
    module_default = victor_db_maintenance.argument_spec()["lock_threshold"]["default"]
    assert DEFAULTS["victor_runbook_pg_lock_threshold"] == module_default
    assert SPECS["database_connection_failed"]["options"]["victor_runbook_pg_lock_threshold"]["type"] == \
        victor_db_maintenance.argument_spec()["lock_threshold"]["type"]


LOCK_SQL = re.compile(r"pg_locks|pg_blocking_pids|pg_terminate_backend|pg_cancel_backend|pg_stat_activity", re.I)


def test_no_lock_sql_outside_victor_db_maintenance():
    """The runbook once had its own lock queries; victor_db_maintenance (module_utils/
    db_maintenance_postgres.py) is the one implementation. Prose may name the rule, not run SQL."""
    found = []
    for path in sorted(ROLE.rglob("*")) + sorted((ROOT / "playbooks").rglob("*")):
        if path.is_file() and path.suffix in (".yml", ".yaml", ".j2", ".py", ".sh", ".sql"):
            found += ["%s:%d" % (path.relative_to(ROOT), n) for n, line in
                      enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if LOCK_SQL.search(line)]
    assert found == []


def test_runbook_tasks_use_victor_db_maintenance_for_postgresql():
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROLE / "tasks").glob("*.yml")))
    assert "community.postgresql." not in text
    clear = yaml.safe_load((ROLE / "tasks" / "database_connection_failed.yml").read_text(encoding="utf-8"))
    steps = [t for t in clear[2]["block"] if (t.get("victor.ops.victor_db_maintenance") or {}).get("engine") == "postgresql"]
    assert [s["victor.ops.victor_db_maintenance"]["operations"] for s in steps] == [["clear_locks"]]
    # the module's rule alone decides: no condition on the runbook's own lock findings
    assert not any("blocked" in str(c) for c in steps[0]["when"]), steps[0]["when"]
    assert steps[0]["victor.ops.victor_db_maintenance"]["lock_threshold"] == "{{ victor_runbook_pg_lock_threshold }}"


def test_no_inline_defaults_of_public_variables():
    """Defaults live in defaults/main.yml, not as `victor_runbook_x | default(N)` in vars/ or tasks/."""
    pattern = re.compile(r"\bvictor_runbook_\w+\s*\|\s*default\(")
    found = []
    for path in sorted((ROLE / "vars").glob("*.yml")) + sorted((ROLE / "tasks").glob("*.yml")):
        found += ["%s:%d" % (path.name, n) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                  if pattern.search(line) and "victor_runbook_postgres_url | default('', true)" not in line]
    assert found == []


@pytest.mark.parametrize("path", PLAYBOOKS, ids=[p.stem for p in PLAYBOOKS])
def test_runbook_playbooks_are_thin_wrappers(path):
    plays = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert len(plays) == 2 and plays[0]["ansible.builtin.import_playbook"] == "../check_targets.yml"
    play = plays[1]
    assert set(play) <= {"name", "hosts", "gather_facts", "become", "tasks"}, sorted(play)  # no module_defaults, no vars
    assert play["hosts"] == "{{ victor_runbook_hosts | default('victor_api') }}"
    assert [t["ansible.builtin.import_role"] for t in play["tasks"]] == [
        {"name": "victor.ops.victor_runbook", "tasks_from": path.stem}]
    assert "__victor_runbook" not in path.read_text(encoding="utf-8")


def _trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    return value


def _resolve(names, **inventory):
    """Role variables as a play resolves them (defaults < inventory < vars/)."""
    variables = _trusted(dict(DEFAULTS))
    variables.update(inventory)
    for part in ("main.yml", "database_connection_failed.yml"):
        variables.update(_trusted(yaml.safe_load((ROLE / "vars" / part).read_text(encoding="utf-8"))))
    templar = Templar(loader=DataLoader(), variables=variables)
    return {name: templar.template(variables[name]) for name in names}


def test_postgres_url_becomes_the_modules_login_options():
    url = "postgresql://victor:m0lecule%20p%40ss%3Aw%2Frd@db.internal:6432/victor?sslmode=require"
    got = _resolve(["__victor_runbook_pg_enabled", "__victor_runbook_pg", "__victor_runbook_pg_host",
                    "__victor_runbook_pg_port", "__victor_runbook_pg_connect_timeout"],
                   victor_deploy_environment={"VICTOR_CHECKPOINT_DB_URL": url})
    assert got["__victor_runbook_pg_enabled"] is True
    assert got["__victor_runbook_pg"] == {"login_host": "db.internal", "login_port": 6432, "login_user": "victor",
                                          "login_password": "m0lecule p@ss:w/rd", "login_db": "victor",
                                          "ssl_mode": "require"}
    assert (got["__victor_runbook_pg_host"], got["__victor_runbook_pg_port"]) == ("db.internal", 6432)
    assert int(got["__victor_runbook_pg_connect_timeout"]) == 5


def test_an_explicit_empty_url_skips_postgresql():
    got = _resolve(["__victor_runbook_pg_enabled", "__victor_runbook_pg"], victor_runbook_postgres_url="",
                   victor_deploy_environment={"VICTOR_CHECKPOINT_DB_URL": "postgresql://victor@db/victor"})
    assert got == {"__victor_runbook_pg_enabled": False, "__victor_runbook_pg": {}}


@pytest.mark.parametrize("deploy_method, docker", [(None, False), ("pip", False), ("docker", True), ("compose", False)])
def test_method_follows_the_deploy_role(deploy_method, docker):
    inventory = {"victor_deploy_method": deploy_method} if deploy_method else {}
    assert _resolve(["__victor_runbook_docker"], **inventory)["__victor_runbook_docker"] is docker


def test_deploy_values_are_the_fallbacks():
    got = _resolve(["__victor_runbook_service_name", "__victor_runbook_api_port", "__victor_runbook_db_path"],
                   victor_deploy_service_name="victor-blue", victor_deploy_port=9000, victor_deploy_state_dir="/srv/v")
    assert got == {"__victor_runbook_service_name": "victor-blue", "__victor_runbook_api_port": 9000,
                   "__victor_runbook_db_path": "/srv/v/.victor/victor.db"}
