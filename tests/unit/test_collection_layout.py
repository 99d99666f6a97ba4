"""Collection-level promises that users and ansible-doc rely on."""
import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _yaml(path):
    return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))


def _roles():
    return sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())


def test_galaxy_identity():
    galaxy = _yaml("galaxy.yml")
    assert (galaxy["namespace"], galaxy["name"]) == ("victor", "ops")
    assert galaxy["license"] == ["GPL-3.0-or-later"]


def test_released_changelog_matches_galaxy_version():
    releases = _yaml("changelogs/changelog.yaml")["releases"]
    assert _yaml("galaxy.yml")["version"] in releases


def test_requires_ansible_has_no_upper_bound():
    requires = _yaml("meta/runtime.yml")["requires_ansible"]
    assert requires.startswith(">=") and "<" not in requires


def test_action_group_members_exist():
    groups = _yaml("meta/runtime.yml").get("action_groups", {})
    for members in groups.values():
        for module in members:
            assert (ROOT / "plugins" / "modules" / (module + ".py")).is_file(), module


def test_every_role_has_argument_specs_and_readme():
    roles = _roles()
    assert roles
    for role in roles:
        # main, or one entry point per task (victor_runbook: one per runbook, no main)
        entry_points = _yaml(role / "meta" / "argument_specs.yml")["argument_specs"]
        assert entry_points, role.name
        assert (role / "README.md").is_file(), role.name
        for entry in entry_points.values():
            for name in entry.get("options", {}):
                assert name.startswith(role.name + "_"), (role.name, name)


def test_role_defaults_are_declared_in_argument_specs():
    for role in _roles():
        defaults_file = role / "defaults" / "main.yml"
        if not defaults_file.is_file():
            continue
        defaults = yaml.safe_load(defaults_file.read_text(encoding="utf-8")) or {}
        # declared by an entry point of the role (main, or the one that uses it: rollback, restore_kubernetes ...)
        entry_points = _yaml(role / "meta" / "argument_specs.yml")["argument_specs"].values()
        specs = set().union(*(entry.get("options", {}) for entry in entry_points))
        assert sorted(set(defaults) - specs) == [], role.name


def _module_string(path, name):
    """The module's top-level string constant `name` (EXAMPLES, DOCUMENTATION ...)."""
    for node in ast.parse(path.read_text(encoding='utf-8')).body:
        if isinstance(node, ast.Assign) and [getattr(t, 'id', None) for t in node.targets] == [name]:
            return node.value.value
    raise AssertionError('%s has no %s' % (path.name, name))


def _fqcn_collections_used():
    """Collections named by FQCN in roles, playbooks, molecule and the modules' EXAMPLES (module calls, lookups, filters)."""
    # a module key (`community.docker.docker_container:`), or a quoted / piped plugin name
    pattern = re.compile(r'''(?:^\s*-?\s*|['"(|]\s*)([a-z_]+\.[a-z_]+)\.[a-z0-9_]+\b''', re.MULTILINE)
    texts = [path.read_text(encoding='utf-8') for top in ('roles', 'playbooks', 'molecule') for path in (ROOT / top).rglob('*.yml')]
    texts += [_module_string(path, 'EXAMPLES') for path in (ROOT / 'plugins' / 'modules').glob('*.py')]
    found = set()
    for text in texts:
        for namespace_name in pattern.findall(text):
            if namespace_name.split('.')[0] in ('community', 'kubernetes', 'awx', 'amazon', 'ansible'):
                found.add(namespace_name)
    return found - {'ansible.builtin', 'ansible.legacy'}


def test_galaxy_dependencies_cover_every_collection_the_content_uses():
    galaxy = yaml.safe_load((ROOT / 'galaxy.yml').read_text(encoding='utf-8'))
    declared = set(galaxy['dependencies'])
    missing = _fqcn_collections_used() - declared
    assert not missing, 'used by FQCN but not in galaxy.yml dependencies: %s' % sorted(missing)


def test_requirements_yml_and_execution_environment_list_the_galaxy_dependencies():
    galaxy = set(yaml.safe_load((ROOT / 'galaxy.yml').read_text(encoding='utf-8'))['dependencies'])
    requirements = {c['name'] for c in yaml.safe_load((ROOT / 'requirements.yml').read_text(encoding='utf-8'))['collections']}
    ee = yaml.safe_load((ROOT / 'execution-environment.yml').read_text(encoding='utf-8'))
    ee_collections = {c['name'] for c in ee['dependencies']['galaxy']['collections']}
    assert requirements == galaxy
    assert ee_collections == galaxy


_MODULE_UTILS = 'ansible_collections.victor.ops.plugins.module_utils'


def _module_utils_imports(name):
    """The plugins/module_utils files name imports, wherever the import statement is (also in a function body)."""
    tree = ast.parse((ROOT / 'plugins' / 'module_utils' / name).read_text(encoding='utf-8'))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == _MODULE_UTILS:
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith(_MODULE_UTILS + '.'):
            found.add(node.module[len(_MODULE_UTILS) + 1:].split('.')[0])
        elif isinstance(node, ast.Import):
            found.update(a.name[len(_MODULE_UTILS) + 1:].split('.')[0] for a in node.names if a.name.startswith(_MODULE_UTILS + '.'))
    return {n + '.py' for n in found}


def _module_utils_closure(start):
    """start and every plugins/module_utils file it imports, directly or not."""
    found, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(_module_utils_imports(name))
    return found


@pytest.mark.parametrize('role, variable', [('victor_backup', '__victor_backup_module_utils'),
                                            ('victor_deploy', '__victor_deploy_k8s_backup_modules')])
def test_backup_cli_copies_are_exactly_what_it_imports(role, variable):
    # the timers (systemd) and the Kubernetes CronJob run backup_cli.py from a copy of these files:
    # one missing breaks the scheduled backups at run time, one extra is a file left behind on the node
    copied = yaml.safe_load((ROOT / 'roles' / role / 'vars' / 'main.yml').read_text(encoding='utf-8'))[variable]
    assert len(copied) == len(set(copied))
    assert sorted(copied) == sorted(_module_utils_closure('backup_cli.py'))


def test_backup_module_utils_import_no_cycle():
    """The backup files import each other one way (no lazy import to dodge a cycle)."""
    names = sorted(p.name for p in (ROOT / 'plugins' / 'module_utils').glob('*.py'))
    graph = dict((n, _module_utils_imports(n)) for n in names)
    for name in names:
        assert name not in set().union(*(_module_utils_closure(d) for d in graph[name])), '%s imports itself through a cycle' % name


_PRIVATE_REF = re.compile(r"\b(__victor_\w+)")
_PRIVATE_DEFS = (
    re.compile(r"^\s*(?:-\s+)?(__victor_\w+)\s*:", re.M),  # a key of vars:, set_fact:, vars/main.yml
    re.compile(r"^\s*(?:register|loop_var|index_var)\s*:\s*(__victor_\w+)\s*$", re.M),
    re.compile(r"\{%-?\s*(?:set|for)\s+(__victor_\w+)"),  # Jinja set / for
)


def test_every_private_variable_used_is_defined_somewhere():
    """A __victor_* name read by a task or template and set nowhere fails only at run time
    (a merge once dropped __victor_health_backup from vars/main.yml)."""
    used, defined = {}, set()
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        if path.suffix not in (".yml", ".yaml", ".j2") or not path.is_file() or parts[0] in (".cache", ".venv", ".git", "tests"):
            continue
        text = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#"))
        for pattern in _PRIVATE_DEFS:
            defined.update(pattern.findall(text))
        for name in _PRIVATE_REF.findall(text):
            used.setdefault(name, str(path.relative_to(ROOT)))
    assert len(used) > 100, "the scan found the collection's private variables"
    assert {name: where for name, where in used.items() if name not in defined} == {}
