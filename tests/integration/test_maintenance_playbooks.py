"""playbooks/weekly_maintenance.yml on inventories/local against a prepared state directory
(no Victor server): a failing step is reported and the run goes on, a locked database is
reported busy instead of hanging, the fragmented database is vacuumed, the report is written.
"""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(name='local_root')
def local_root_fixture(tmp_path):
    root = tmp_path / 'local-victor'
    data = root / 'state' / '.victor'
    (data / 'logs').mkdir(parents=True)
    (data / 'cache').mkdir()
    os.chmod(data, 0o750)
    conn = sqlite3.connect(str(data / 'victor.db'))
    conn.execute('PRAGMA journal_mode=WAL')
    conn.execute('CREATE TABLE sessions (id INTEGER PRIMARY KEY, body BLOB)')
    conn.executemany('INSERT INTO sessions (body) VALUES (?)', [(b'x' * 2000,) for _row in range(1000)])
    conn.commit()
    conn.execute('DELETE FROM sessions WHERE id % 4 != 0')
    conn.commit()
    conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    conn.close()
    os.chmod(data / 'victor.db', 0o644)
    stamp = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(time.time() - 3600))
    (data / 'logs' / 'victor.log').write_text('%s,000 - victor.api - ERROR - boom\n%s,000 - victor.api - INFO - ok\n' % (stamp, stamp))
    (root / 'victor.env').write_text('HOME=%s\n' % (root / 'state'))
    os.chmod(root / 'victor.env', 0o600)
    (root / 'backups').mkdir()
    os.symlink(sys.prefix, str(root / 'current'))  # a venv with python and pip, standing in for the release
    return root


def _weekly(root, *extra):
    env = dict(os.environ, VICTOR_LOCAL_ROOT=str(root), VICTOR_LOCAL_PORT=str(_free_port()), ANSIBLE_FORCE_COLOR='0')
    cmd = [str(BIN / 'ansible-playbook'), '-i', str(ROOT / 'inventories' / 'local'), str(ROOT / 'playbooks' / 'weekly_maintenance.yml'),
           '-e', 'victor_maintenance_perf_requests=2', '-e', 'victor_maintenance_perf_timeout=1',
           '-e', 'victor_maintenance_down_hint='] + list(extra)  # no server here on purpose: no up-front check
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600, check=False)
    reports = sorted((root / 'reports' / 'localhost').glob('weekly-*Z.json'))
    assert reports, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads(reports[-1].read_text())
    return proc, report, {s['name']: s for s in report['steps']}, time.monotonic() - started


def test_failed_step_is_reported_and_the_run_goes_on(local_root):
    size_before = (local_root / 'state' / '.victor' / 'victor.db').stat().st_size
    proc, report, steps, _seconds = _weekly(local_root)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert 'step(s) performance failed' in proc.stdout
    assert [s['name'] for s in report['steps']] == ['logs', 'performance', 'database', 'cache', 'security']
    assert steps['performance']['status'] == 'failed'
    assert 'no successful GET of http://127.0.0.1:' in steps['performance']['summary']
    assert steps['logs']['status'] == 'warn' and steps['logs']['data']['counts']['ERROR'] == 1
    db = steps['database']['data']['sqlite'][str(local_root / 'state' / '.victor' / 'victor.db')]
    assert steps['database']['status'] == 'ok'
    assert db['vacuum']['size_before'] == size_before
    assert db['vacuum']['size_after'] == (local_root / 'state' / '.victor' / 'victor.db').stat().st_size < size_before / 2
    assert db['stats']['tables'] == db['stats_after']['tables'] == {'sessions': 250}
    assert steps['security']['status'] == 'ok', steps['security']
    markdown = Path(str(sorted((local_root / 'reports' / 'localhost').glob('weekly-*Z.md'))[-1])).read_text()
    assert '| performance | FAILED |' in markdown and '| database | OK |' in markdown


def test_locked_database_is_reported_busy(local_root):
    holder = sqlite3.connect(str(local_root / 'state' / '.victor' / 'victor.db'), isolation_level=None)
    holder.execute('BEGIN IMMEDIATE')
    try:
        proc, _report, steps, seconds = _weekly(local_root, '-e', 'victor_maintenance_busy_timeout=1',
                                                '-e', 'victor_maintenance_fail_on_error=false')
    finally:
        holder.execute('ROLLBACK')
        holder.close()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert steps['database']['status'] == 'warn'
    assert steps['database']['data']['busy'] == [str(local_root / 'state' / '.victor' / 'victor.db')]
    assert 'busy: %s' % (local_root / 'state' / '.victor' / 'victor.db') in steps['database']['summary']
    assert steps['security']['status'] == 'ok'  # the steps after it still ran
    assert seconds < 300


def test_weekly_with_postgresql_and_redis(local_root, pg_cluster, redis_server, tmp_path):
    import psycopg  # pylint: disable=import-outside-toplevel
    admin = psycopg.connect(host=pg_cluster['host'], port=pg_cluster['port'], dbname='postgres', user='postgres',
                            password='super-secret-pw', autocommit=True)
    admin.execute('DROP DATABASE IF EXISTS victor_role')
    admin.execute('CREATE DATABASE victor_role OWNER victor')  # its own database: other tests' tables stay out
    admin.close()
    conn = psycopg.connect(host=pg_cluster['host'], port=pg_cluster['port'], dbname='victor_role', user='victor',
                           password='victor-secret-pw', autocommit=True)
    conn.execute('DROP TABLE IF EXISTS conversations')
    conn.execute('CREATE TABLE conversations (id serial PRIMARY KEY, body text)')
    conn.execute("INSERT INTO conversations (body) SELECT 'm' || g FROM generate_series(1, 3000) g")
    conn.execute('DELETE FROM conversations WHERE id > 500')
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn.execute('SELECT pg_stat_clear_snapshot()')
        dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'conversations'").fetchone()[0]
        if dead >= 2500:
            break
        time.sleep(0.2)
    client = redis_server['client']
    client.flushdb()
    client.mset({'victor:cache:%d' % i: 'v' for i in range(100)})
    client.mset({'victor:session:%d' % i: 'v' for i in range(5)})
    extra = tmp_path / 'extra.json'
    extra.write_text(json.dumps({
        'victor_maintenance_postgres_enabled': True, 'victor_maintenance_postgres_host': pg_cluster['host'],
        'victor_maintenance_postgres_port': pg_cluster['port'], 'victor_maintenance_postgres_user': 'victor',
        'victor_maintenance_postgres_password': 'victor-secret-pw', 'victor_maintenance_postgres_database': 'victor_role',
        'victor_maintenance_redis_enabled': True, 'victor_maintenance_redis_port': redis_server['port'],
        'victor_maintenance_redis_password': redis_server['password'], 'victor_maintenance_redis_clear_pattern': 'victor:cache:*',
        'victor_maintenance_fail_on_error': False}))
    try:
        proc, _report, steps, _seconds = _weekly(local_root, '-e', '@%s' % extra)
    finally:
        conn.close()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'victor-secret-pw' not in proc.stdout and redis_server['password'] not in proc.stdout
    pg = steps['database']['data']['postgresql']
    assert pg['vacuum']['tables'] == ['public.conversations']
    assert pg['vacuum']['dead_tuples_before'] >= 2500 and pg['vacuum']['dead_tuples_after'] == 0
    assert pg['slow_queries']['available'] is False and pg['pool_stats']['used'] >= 1
    assert '; PostgreSQL: 1 table(s) vacuumed' in steps['database']['summary']
    redis = steps['cache']['data']['redis']
    assert redis['clear']['removed'] == 100 and client.dbsize() == 5
    assert 'cleared 100 keys' in steps['cache']['summary'] and 'Redis hit rate' in steps['cache']['summary']


def test_check_mode_changes_nothing_on_the_host(local_root):
    db = local_root / 'state' / '.victor' / 'victor.db'
    before = db.read_bytes()
    old_log = local_root / 'state' / '.victor' / 'logs' / 'old.log.1'
    old_log.write_text('old\n')
    os.utime(old_log, (time.time() - 200 * 86400,) * 2)
    env = dict(os.environ, VICTOR_LOCAL_ROOT=str(local_root), VICTOR_LOCAL_PORT=str(_free_port()), ANSIBLE_FORCE_COLOR='0')
    cmd = [str(BIN / 'ansible-playbook'), '-i', str(ROOT / 'inventories' / 'local'), str(ROOT / 'playbooks' / 'monthly_maintenance.yml'),
           '--check', '-e', 'victor_maintenance_perf_requests=1', '-e', 'victor_maintenance_fail_on_error=false',
           '-e', 'victor_maintenance_down_hint=',
           '-e', 'victor_maintenance_backup_enabled=false', '-e', '{"victor_maintenance_pip_args": ["--no-index"]}']
    proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    reports = sorted((local_root / 'reports' / 'localhost').glob('monthly-*Z-check.json'))
    assert len(reports) == 1
    steps = {s['name']: s for s in json.loads(reports[0].read_text())['steps']}
    assert steps['cleanup']['data']['removed'] == [str(old_log)]
    assert steps['cleanup']['summary'].startswith('would remove 1 log file(s)')
    assert steps['backup']['status'] == 'skipped'
    assert old_log.exists()
    assert db.read_bytes() == before
    assert not list((local_root / 'reports' / 'localhost').glob('monthly-*Z.json'))  # a check report never counts as previous


@pytest.mark.parametrize('inventory, playbook, extra, group', [
    ('localhost,', 'weekly_maintenance.yml', [], 'victor_api'),          # a wrong -i: no victor_api group at all
    (str(ROOT / 'inventories' / 'local'), 'daily_health_check.yml', ['-e', 'victor_health_hosts=victor_lb'], 'victor_lb'),
])
def test_empty_target_group_fails_naming_it(tmp_path, inventory, playbook, extra, group):
    """Never "skipping: no hosts matched" with rc 0: the play fails, names the group and says how to choose an inventory."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR='0', VICTOR_LOCAL_ROOT=str(tmp_path))
    proc = subprocess.run([str(BIN / 'ansible-playbook'), '-i', inventory, str(ROOT / 'playbooks' / playbook)] + extra,
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "No host in group '%s'" % group in proc.stdout
    assert 'Choose the inventory with -i' in proc.stdout
    assert 'no hosts matched' not in proc.stdout
