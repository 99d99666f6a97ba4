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
