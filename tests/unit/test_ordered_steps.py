"""Ordered integration steps (tests/integration/conftest.py, marker ordered_steps): the first failing
step fails under its own name (or errors, when its setup, a module fixture, fails), the later ones are
not run and say which step stopped them, the run is red."""
import os
import subprocess
import sys
import textwrap

CONFTEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration', 'conftest.py')


def _run_steps(tmp_path, steps):
    """pytest on test_steps.py (steps) beside test_independent.py, with the hooks of the integration conftest."""
    (tmp_path / 'conftest.py').write_text(textwrap.dedent('''
        import importlib.util
        _spec = importlib.util.spec_from_file_location('itest_conftest', %r)
        _module = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_module)
        pytest_configure = _module.pytest_configure
        pytest_runtest_makereport = _module.pytest_runtest_makereport
        pytest_runtest_setup = _module.pytest_runtest_setup
    ''' % os.path.abspath(CONFTEST)))
    (tmp_path / 'test_steps.py').write_text(textwrap.dedent(steps))
    (tmp_path / 'test_independent.py').write_text('def test_other():\n    pass\n')
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-rfExXs', '-p', 'no:cacheprovider', '--strict-markers', str(tmp_path)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_failed_step_stops_the_later_steps_and_names_itself(tmp_path):
    returncode, out = _run_steps(tmp_path, '''
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
    ''')
    assert returncode == 1, out  # red
    assert 'FAILED test_steps.py::test_deploy' in out, out
    for later in ('test_upgrade', 'test_rollback'):
        assert 'XFAIL at setup of test_steps.py::%s - not run: the earlier step test_deploy failed' % later in out, out
    assert '1 failed, 2 passed, 2 xfailed' in out, out  # test_first and the unmarked module still pass


def test_a_failed_setup_errors_under_its_own_name_and_stops_the_later_steps(tmp_path):
    """A module fixture that fails (the deploy of test_docker_day2.py): the step that asked for it first
    errors under its own name, the later ones are not run and say which step stopped them."""
    returncode, out = _run_steps(tmp_path, '''
        import pytest
        pytestmark = pytest.mark.ordered_steps
        DEPLOYS = []

        @pytest.fixture(scope='module')
        def deployed():
            DEPLOYS.append(1)
            raise RuntimeError('deploy broke')

        def test_health(deployed):
            pass

        def test_backup(deployed):
            pass

        def test_restore():
            assert len(DEPLOYS) == 1  # not run either: it builds on the steps before it
    ''')
    assert returncode == 1, out  # red
    assert 'ERROR test_steps.py::test_health - RuntimeError: deploy broke' in out, out
    assert out.count('RuntimeError: deploy broke') == 2, out  # the error and its summary line, not repeated per step
    assert 'ERROR at setup of test_backup' not in out and 'ERROR at setup of test_restore' not in out, out
    for later in ('test_backup', 'test_restore'):
        assert ('XFAIL at setup of test_steps.py::%s - not run: the earlier step test_health failed in its setup' % later) in out, out
    assert '1 passed, 2 xfailed, 1 error' in out, out  # the unmarked module still passes
