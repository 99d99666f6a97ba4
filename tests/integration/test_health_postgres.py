"""victor_health's PostgreSQL check against a real, throw-away PostgreSQL 15 cluster on 127.0.0.1.

Runs as root (the cluster runs as the postgres user) with Debian's postgresql-15 installed:
    cd .cache/collections/ansible_collections/victor/ops && pytest -q tests/integration/test_health_postgres.py
"""
import glob
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from ansible_collections.victor.ops.plugins.module_utils import health

psycopg = pytest.importorskip('psycopg')
BIN = sorted(glob.glob('/usr/lib/postgresql/*/bin'))[-1] if glob.glob('/usr/lib/postgresql/*/bin') else None
PASSWORD = 'health-test-pw'


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _as_postgres(argv, **kwargs):
    return subprocess.run(['runuser', '-u', 'postgres', '--'] + argv, check=True, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope='module')
def cluster():
    if BIN is None or os.geteuid() != 0:
        pytest.fail('needs root and Debian postgresql (apt-get install postgresql)')
    # Not under pytest's tmp dir: the postgres user must be able to reach it.
    base = pathlib.Path(tempfile.mkdtemp(prefix='victor-health-pg-'))
    data = base / 'data'
    pwfile = base / 'pw'
    pwfile.write_text(PASSWORD + '\n')
    shutil.chown(str(base), 'postgres')
    os.chmod(str(base), 0o700)
    shutil.chown(str(pwfile), 'postgres')
    _as_postgres([BIN + '/initdb', '-D', str(data), '-U', 'postgres', '--auth=scram-sha-256', '--pwfile', str(pwfile)])
    port = _free_port()
    proc = subprocess.Popen(['runuser', '-u', 'postgres', '--', BIN + '/postgres', '-D', str(data), '-p', str(port), '-k', str(base),
                             '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=10'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        if subprocess.run([BIN + '/pg_isready', '-h', '127.0.0.1', '-p', str(port)], capture_output=True, check=False).returncode == 0:
            break
        time.sleep(0.3)
    else:
        proc.terminate()
        pytest.fail('PostgreSQL did not start')
    yield port
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(str(base), ignore_errors=True)


def _check(port, **kwargs):
    params = dict((name, spec.get('default')) for name, spec in health.postgres_options().items())  # as the module has them
    params.update(login_host='127.0.0.1', login_port=port, login_user='postgres', login_password=PASSWORD, ssl_mode='disable')
    params.update(kwargs)
    return dict((c['name'], c) for c in health.check_postgres(params))


def test_connects_and_reports_usage(cluster):
    checks = _check(cluster)
    assert checks['postgres:connect']['status'] == 'ok'
    assert checks['postgres:connections']['status'] == 'ok'
    assert checks['postgres:connections']['value'] == 10.0  # this check's own connection: 1 of 10
    assert '1 of 10 connections used' in checks['postgres:connections']['message']


def test_wrong_password_is_crit(cluster):
    checks = _check(cluster, login_password='wrong')
    assert checks['postgres:connect']['status'] == 'crit'
    assert 'password authentication failed' in checks['postgres:connect']['message']
    assert PASSWORD not in checks['postgres:connect']['message']


@pytest.mark.parametrize('held,status', [(8, 'warn'), (9, 'crit')])
def test_connection_usage_thresholds(cluster, held, status):
    connections = [psycopg.connect(host='127.0.0.1', port=cluster, user='postgres', password=PASSWORD, dbname='postgres')
                   for dummy in range(held)]
    try:
        check = _check(cluster)['postgres:connections']
        assert check['value'] == (held + 1) * 10.0
        assert check['status'] == status
    finally:
        for connection in connections:
            connection.close()


def test_unknown_database_is_crit(cluster):
    assert _check(cluster, login_db='nope')['postgres:connect']['status'] == 'crit'
