"""The molecule scenarios' testinfra verifiers: in CI a skipped test is a failure, as in every pytest
tier (tests/strict_skips.py). Molecule runs pytest from molecule/<scenario> with --confcutdir=..
(verifier options in .config/molecule/config.yml), so pytest loads this file; tests/conftest.py is
not on the scenarios' path."""
import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location('victor_ops_strict_skips', Path(__file__).resolve().parents[1] / 'tests' / 'strict_skips.py')
_STRICT = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_STRICT)

pytest_collectreport = _STRICT.pytest_collectreport
pytest_runtest_logreport = _STRICT.pytest_runtest_logreport
pytest_sessionfinish = _STRICT.pytest_sessionfinish
pytest_terminal_summary = _STRICT.pytest_terminal_summary
