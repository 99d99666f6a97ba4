"""Make `ansible_collections.victor.ops` importable in pytest.

`make unit` runs pytest from .cache/collections/ansible_collections/victor/ops with
ANSIBLE_COLLECTIONS_PATH set, but Python itself does not read that variable: put its
entries (and this checkout's .cache/collections) on sys.path.
"""
import os
import sys
from pathlib import Path

_ROOTS = [p for p in os.environ.get('ANSIBLE_COLLECTIONS_PATH', '').split(os.pathsep) if p]
_ROOTS.append(str(Path(__file__).resolve().parents[1] / '.cache' / 'collections'))
for _root in _ROOTS:
    if (Path(_root) / 'ansible_collections').is_dir() and _root not in sys.path:
        sys.path.insert(0, _root)

# Ansible's collection finder, installed before any test imports ansible_collections.*, so every
# import goes through it (as in ansible-playbook): tests that template with victor.ops filters
# need it, and a finder installed later would not know the packages imported before it.
try:
    from ansible.plugins.loader import init_plugin_loader as _init_plugin_loader
except ImportError:  # environments without ansible-core (sanity's) do not need it
    pass
else:
    _init_plugin_loader([r for r in _ROOTS if (Path(r) / 'ansible_collections').is_dir()])

# Hypothesis profiles. `make unit` (and CI) use "ci": the same examples every run, so a red build
# is reproducible and not a lottery. `make fuzz` uses "fuzz": fresh random examples, many more.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # sanity and integration environments need not have it
    pass
else:
    _hypothesis_settings.register_profile('ci', max_examples=300, derandomize=True, print_blob=True)
    _hypothesis_settings.register_profile('fuzz', max_examples=5000, print_blob=True)


# In CI (CI=true, or VICTOR_OPS_STRICT_SKIPS=1) a skipped test is a failure: a test that skips
# because PostgreSQL, docker, age or root is missing proves nothing, and a green run must not
# hide that. Locally a skip stays a skip, so a partial machine can still run what it has.
def _strict_skips():
    return os.environ.get('VICTOR_OPS_STRICT_SKIPS', '') == '1' or os.environ.get('CI', '').lower() == 'true'


_SKIPPED = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, 'wasxfail'):
        _SKIPPED.append('%s: %s' % (report.nodeid, report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr))


def pytest_collectreport(report):
    if report.skipped:
        _SKIPPED.append('%s: %s' % (report.nodeid, report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr))


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and _strict_skips() and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED and _strict_skips():
        terminalreporter.write_line('')
        terminalreporter.write_line('FAILED: %d test(s) skipped in CI (a missing service or tool is a failure here):'
                                    % len(_SKIPPED), red=True)
        for line in _SKIPPED:
            terminalreporter.write_line('  ' + line)
