"""Every pytest tier runs with tests/conftest.py, which brings the CI skip hooks (tests/strict_skips.py):
each tier's collection registers it, and the real file makes a skip fail the run under CI=true."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ('CI', 'VICTOR_OPS_STRICT_SKIPS', 'PYTEST_ADDOPTS')}
    env.update(extra)
    return env


@pytest.mark.parametrize('tier', ['unit', 'functional', 'integration', 'awx'])
def test_each_tier_registers_the_top_conftest(tier):
    """As make runs a tier: pytest from the checkout on tests/<tier> (only collecting here)."""
    proc = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q', '--trace-config', '-p', 'no:cacheprovider',
                           'tests/' + tier], cwd=str(ROOT), env=_env(), capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "PLUGIN registered: <module 'conftest' from '%s'>" % (TESTS / 'conftest.py') in out, out[-3000:]


def test_the_real_conftest_fails_a_skip_in_ci(tmp_path):
    tests = tmp_path / 'tests'
    (tests / 'tier').mkdir(parents=True)
    shutil.copy(TESTS / 'conftest.py', tests / 'conftest.py')
    shutil.copy(TESTS / 'strict_skips.py', tests / 'strict_skips.py')
    (tests / 'tier' / 'test_tool.py').write_text("import pytest\n\n\ndef test_tool():\n    pytest.skip('frobnicate is not installed')\n")
    args = [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', 'tests/tier']
    ci = subprocess.run(args, cwd=str(tmp_path), env=_env(CI='true'), capture_output=True, text=True, timeout=300, check=False)
    assert ci.returncode == 1 and 'FAILED: 1 test(s) skipped in CI' in ci.stdout, ci.stdout + ci.stderr
    local = subprocess.run(args, cwd=str(tmp_path), env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert local.returncode == 0 and '1 skipped' in local.stdout, local.stdout + local.stderr
