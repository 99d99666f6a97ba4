"""Real PostgreSQL and Redis servers on 127.0.0.1 for the integration tests (sys.path: tests/conftest.py)."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


SUPER_PASSWORD = 'super-secret-pw'
VICTOR_PASSWORD = 'victor-secret-pw'


def _pg_bin(name):
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/%s' % name))
    if not found:
        pytest.skip('PostgreSQL server binaries are not installed (apt-get install postgresql)')
    return found[-1]


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _as_owner(argv):
    return ['runuser', '-u', 'postgres', '--'] + argv if os.geteuid() == 0 else argv


@pytest.fixture(scope='session', name='pg_cluster')
def cluster_fixture():
    """Throwaway PostgreSQL cluster on 127.0.0.1:<free port>; roles postgres (superuser) and victor; stopped by pg_ctl."""
    pytest.importorskip('psycopg')
    workdir = tempfile.mkdtemp(prefix='victor-pg-')
    data = os.path.join(workdir, 'data')
    pwfile = os.path.join(workdir, 'pw')
    with open(pwfile, 'w', encoding='utf-8') as handle:
        handle.write(SUPER_PASSWORD + '\n')
    if os.geteuid() == 0:
        shutil.chown(workdir, 'postgres', 'postgres')
        shutil.chown(pwfile, 'postgres', 'postgres')
    port = _free_port()
    subprocess.run(_as_owner([_pg_bin('initdb'), '-D', data, '-U', 'postgres', '--pwfile', pwfile,
                              '--auth-host=scram-sha-256', '--auth-local=scram-sha-256']),
                   check=True, capture_output=True)
    options = ('-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c autovacuum=off '
               '-c max_connections=30 -c shared_preload_libraries=pg_stat_statements' % (port, workdir))
    subprocess.run(_as_owner([_pg_bin('pg_ctl'), '-D', data, '-o', options, '-l', os.path.join(workdir, 'log'), '-w', '-t', '60', 'start']),
                   check=True, capture_output=True)
    info = {'host': '127.0.0.1', 'port': port, 'workdir': workdir}
    try:
        admin = _connect(info, 'postgres', 'postgres', SUPER_PASSWORD)
        admin.execute("CREATE ROLE victor LOGIN PASSWORD '%s'" % VICTOR_PASSWORD)
        admin.execute('CREATE DATABASE victor OWNER victor')
        admin.execute('CREATE DATABASE other OWNER victor')
        admin.execute('CREATE DATABASE victor_pss OWNER victor')
        admin.close()
        pss = _connect(info, 'victor_pss', 'postgres', SUPER_PASSWORD)
        pss.execute('CREATE EXTENSION pg_stat_statements')
        pss.close()
        yield info
    finally:
        subprocess.run(_as_owner([_pg_bin('pg_ctl'), '-D', data, '-m', 'fast', '-w', 'stop']), check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _connect(info, dbname, user, password):
    import psycopg  # pylint: disable=import-outside-toplevel
    return psycopg.connect(host=info['host'], port=info['port'], dbname=dbname, user=user, password=password,
                           autocommit=True, connect_timeout=10)


REDIS_PASSWORD = 'cache-secret-pw'


@pytest.fixture(scope='session', name='redis_server')
def redis_server_fixture():
    """redis-server on 127.0.0.1:<free port> with a password, no persistence; stopped by its pid."""
    redis = pytest.importorskip('redis')
    binary = shutil.which('redis-server')
    if not binary:
        pytest.skip('redis-server is not installed (apt-get install redis-server)')
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix='victor-redis-')
    proc = subprocess.Popen([binary, '--bind', '127.0.0.1', '--port', str(port), '--save', '', '--appendonly', 'no',
                             '--dir', workdir, '--requirepass', REDIS_PASSWORD],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host='127.0.0.1', port=port, password=REDIS_PASSWORD)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    try:
        yield {'port': port, 'client': client, 'password': REDIS_PASSWORD}
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


# Ordered steps (modules marked `pytestmark = pytest.mark.ordered_steps`, e.g. test_deploy_docker.py):
# each step builds on the state the steps before it left, so once one fails the later ones would
# only fail again under their own names. They are not run; each is reported as an xfail naming the
# step that failed (not a skip: a skip means a missing service or tool, and fails CI on its own).
# The failed step keeps the run red. A step whose setup fails (a module fixture that deploys, say)
# errors under its own name and stops the later ones the same way: they would only repeat its error.
_FIRST_FAILED_STEP = {}


def pytest_configure(config):
    config.addinivalue_line('markers', 'ordered_steps: the tests of this module are steps in file order; a failed '
                                       'step stops the later ones')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker('ordered_steps'):
        _FIRST_FAILED_STEP.setdefault(item.module.__name__, (item.name, report.when))


def pytest_runtest_setup(item):
    failed = _FIRST_FAILED_STEP.get(item.module.__name__) if item.get_closest_marker('ordered_steps') else None
    if failed:
        name, when = failed
        pytest.xfail('not run: the earlier step %s failed%s and this step builds on it'
                     % (name, ' in its setup (a fixture it needs)' if when == 'setup' else ''))
