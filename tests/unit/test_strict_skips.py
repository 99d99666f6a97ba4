"""In CI a skipped test fails the run (tests/strict_skips.py, loaded by tests/conftest.py for every
pytest tier and by molecule/conftest.py for the testinfra verifiers); outside CI a skip stays a skip."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import strict_skips  # pylint: disable=import-error
import yaml

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
SKIPPING = textwrap.dedent('''
    import pytest

    def test_passes():
        pass

    def test_needs_a_tool():
        pytest.skip('frobnicate is not installed')

    @pytest.mark.xfail(reason='known', strict=True)
    def test_known_bug():
        assert False
''')

# tests/conftest.py's import of the hooks, as it is written there
IMPORT_LINE = re.search(r'^from strict_skips import \(.*?\)$', (TESTS / 'conftest.py').read_text(encoding='utf-8'),
                        re.MULTILINE | re.DOTALL).group(0) + '\n'


def _env(ci):
    env = {k: v for k, v in os.environ.items() if k not in ('CI', 'VICTOR_OPS_STRICT_SKIPS', 'PYTEST_ADDOPTS')}
    env['PYTEST_DISABLE_PLUGIN_AUTOLOAD'] = '1'  # hypothesis, testinfra: not needed, a second per run
    if ci is not None:
        env['CI'] = ci
    return env


def _pytest(args, cwd, ci):
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-rs'] + args, cwd=str(cwd), env=_env(ci),
                          capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(name='tier')
def tier_fixture(tmp_path):
    """A tier laid out as tests/<tier>, its conftest.py importing the hooks as tests/conftest.py does
    (the real one also sets up ansible's collection loader: a second or so per run; the functional
    tier runs it, tests/functional/test_strict_skips_tiers.py)."""
    tests = tmp_path / 'tests'
    (tests / 'tier').mkdir(parents=True)
    shutil.copy(TESTS / 'strict_skips.py', tests / 'strict_skips.py')
    (tests / 'conftest.py').write_text(IMPORT_LINE)
    (tests / 'tier' / 'test_tool.py').write_text(SKIPPING)
    return tmp_path


@pytest.mark.parametrize('ci, strict', [('true', True), ('TRUE', True), ('1', True), ('yes', True), ('gitlab', True),
                                        (None, False), ('', False), ('false', False), ('False', False), ('0', False), ('no', False)])
def test_ci_is_any_value_but_empty_false_0_or_no(ci, strict):
    assert strict_skips.in_ci({} if ci is None else {'CI': ci}) is strict
    assert strict_skips.in_ci({'VICTOR_OPS_STRICT_SKIPS': '1'}) is True


@pytest.mark.parametrize('ci', ['true', '1'])
def test_a_skip_fails_the_run_in_ci(tier, ci):
    code, out = _pytest(['-p', 'no:cacheprovider', 'tests/tier'], tier, ci)
    assert code == 1, out
    assert '1 passed, 1 skipped, 1 xfailed' in out, out
    assert 'FAILED: 1 test(s) skipped in CI (a missing service or tool is a failure here):' in out, out
    assert 'tests/tier/test_tool.py::test_needs_a_tool: Skipped: frobnicate is not installed' in out, out


@pytest.mark.parametrize('ci', [None, 'false'])
def test_a_skip_stays_a_skip_outside_ci(tier, ci):
    code, out = _pytest(['-p', 'no:cacheprovider', 'tests/tier'], tier, ci)
    assert code == 0, out
    assert '1 passed, 1 skipped, 1 xfailed' in out and 'skipped in CI' not in out, out


def test_a_run_without_skips_passes_in_ci(tier):
    (tier / 'tests' / 'tier' / 'test_tool.py').write_text('def test_passes():\n    pass\n')
    code, out = _pytest(['-p', 'no:cacheprovider', 'tests/tier'], tier, 'true')
    assert code == 0 and '1 passed' in out, out


def test_this_run_has_the_hooks(request):
    """The tier running this test registered tests/conftest.py with strict_skips' hooks."""
    conftests = [p for p in request.config.pluginmanager.get_plugins()
                 if getattr(p, '__file__', None) and Path(p.__file__).resolve() == (TESTS / 'conftest.py').resolve()]
    assert len(conftests) == 1, conftests
    for hook in ('pytest_collectreport', 'pytest_runtest_logreport', 'pytest_sessionfinish', 'pytest_terminal_summary'):
        assert getattr(conftests[0], hook).__module__ == 'strict_skips', hook


def test_a_skip_fails_a_molecule_verifier_in_ci(tmp_path):
    """The verifier's pytest as molecule runs it: from molecule/<scenario>, with the options of
    .config/molecule/config.yml (plus molecule's own -p no:cacheprovider), on the scenario's tests/."""
    shutil.copy(TESTS / 'strict_skips.py', (tmp_path / 'tests').mkdir() or tmp_path / 'tests' / 'strict_skips.py')
    scenario = tmp_path / 'molecule' / 'victor_probe'
    (scenario / 'tests').mkdir(parents=True)
    shutil.copy(ROOT / 'molecule' / 'conftest.py', tmp_path / 'molecule' / 'conftest.py')
    (scenario / 'tests' / 'test_probe.py').write_text(SKIPPING)
    options = dict(p='no:cacheprovider')
    options.update(yaml.safe_load((ROOT / '.config' / 'molecule' / 'config.yml').read_text(encoding='utf-8'))['verifier']['options'])
    args = []
    for key, value in sorted(options.items()):  # molecule.util.dict2args
        args += [('-' if len(key) == 1 else '--') + key.replace('_', '-')] + ([] if value is True else [str(value)])
    args.append(str(scenario / 'tests'))
    code, out = _pytest(args, scenario, 'true')
    assert code == 1 and 'FAILED: 1 test(s) skipped in CI' in out, out
    code, out = _pytest(args, scenario, None)
    assert code == 0 and '1 passed, 1 skipped, 1 xfailed' in out, out
