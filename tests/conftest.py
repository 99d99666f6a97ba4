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

# Hypothesis profiles. `make unit` (and CI) use "ci": the same examples every run, so a red build
# is reproducible and not a lottery. `make fuzz` uses "fuzz": fresh random examples, many more.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # sanity and integration environments need not have it
    pass
else:
    _hypothesis_settings.register_profile('ci', max_examples=300, derandomize=True, print_blob=True)
    _hypothesis_settings.register_profile('fuzz', max_examples=5000, print_blob=True)
