"""Make `ansible_collections.victor.ops` importable in pytest.

`make unit` runs pytest from .cache/collections/ansible_collections/victor/ops with
ANSIBLE_COLLECTIONS_PATH set, but Python itself does not read that variable: put its
entries (and this checkout's .cache/collections) on sys.path.
"""
import os
import sys
from pathlib import Path

# In CI a skipped test is a failure: tests/strict_skips.py's hooks, here for every pytest tier (unit,
# functional, integration, awx; molecule/conftest.py loads them for the testinfra verifiers). pytest
# put this directory on sys.path to import this file.
from strict_skips import (  # noqa: F401 pylint: disable=unused-import
    pytest_collectreport, pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary)

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
