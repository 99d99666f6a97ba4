"""In CI a skipped test is a failure: a test that skips because PostgreSQL, docker, age, a tool or
root is missing proves nothing, and a green run must not hide that. Locally a skip stays a skip, so
a partial machine can still run what it has.

CI is any non-empty CI other than false/0/no (GitHub and GitLab set CI=true, some set CI=1; .ci/run
exports CI=true), or VICTOR_OPS_STRICT_SKIPS=1. An xfail is not a skip (an ordered step not run
because an earlier one failed is an xfail, and that earlier failure keeps the run red).

Loaded by tests/conftest.py for every pytest tier (unit, functional, integration, awx) and by
molecule/conftest.py for the molecule scenarios' testinfra verifiers.
"""
import os

_SKIPPED = []


def in_ci(environ=None):
    environ = os.environ if environ is None else environ
    ci = environ.get('CI', '').strip().lower()
    return environ.get('VICTOR_OPS_STRICT_SKIPS', '') == '1' or ci not in ('', 'false', '0', 'no')


def _reason(report):
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, 'wasxfail'):
        _SKIPPED.append('%s: %s' % (report.nodeid, _reason(report)))


def pytest_collectreport(report):
    if report.skipped:
        _SKIPPED.append('%s: %s' % (report.nodeid, _reason(report)))


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and in_ci() and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED and in_ci():
        terminalreporter.write_line('')
        terminalreporter.write_line('FAILED: %d test(s) skipped in CI (a missing service or tool is a failure here):'
                                    % len(_SKIPPED), red=True)
        for line in _SKIPPED:
            terminalreporter.write_line('  ' + line)
