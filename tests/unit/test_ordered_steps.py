"""Ordered integration steps (tests/integration/conftest.py, marker ordered_steps): the first failing
step fails under its own name, the later ones are not run and say which step stopped them, the run is red."""
import os
import subprocess
import sys
import textwrap

CONFTEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration', 'conftest.py')


def test_a_failed_step_stops_the_later_steps_and_names_itself(tmp_path):
    (tmp_path / 'conftest.py').write_text(textwrap.dedent('''
        import importlib.util
        _spec = importlib.util.spec_from_file_location('itest_conftest', %r)
        _module = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_module)
        pytest_configure = _module.pytest_configure
        pytest_runtest_makereport = _module.pytest_runtest_makereport
        pytest_runtest_setup = _module.pytest_runtest_setup
    ''' % os.path.abspath(CONFTEST)))
    (tmp_path / 'test_steps.py').write_text(textwrap.dedent('''
        import pytest
        pytestmark = pytest.mark.ordered_steps

        def test_first():
            pass

        def test_deploy():
            assert False, 'deploy broke'

        def test_upgrade():
            pass

        def test_rollback():
            pass
    '''))
    (tmp_path / 'test_independent.py').write_text('def test_other():\n    pass\n')
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-rfxXs', '-p', 'no:cacheprovider', '--strict-markers', str(tmp_path)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # red
    assert 'FAILED test_steps.py::test_deploy' in out, out
    for later in ('test_upgrade', 'test_rollback'):
        assert 'XFAIL at setup of test_steps.py::%s - not run: the earlier step test_deploy failed' % later in out, out
    assert '1 failed, 2 passed, 2 xfailed' in out, out  # test_first and the unmarked module still pass
