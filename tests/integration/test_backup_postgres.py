"""victor_backup with a real PostgreSQL on 127.0.0.1 (conftest.py's pg_cluster: initdb + pg_ctl, stopped by pg_ctl).

Run: . scripts/env.sh && cd .cache/collections/ansible_collections/victor/ops && python -m pytest -q tests/integration/test_backup_postgres.py
"""
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import tarfile

import pytest

import backup_calls as bc
from ansible.module_utils.testing import patch_module_args

from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError, MANIFEST_SUFFIX
from ansible_collections.victor.ops.plugins.module_utils.backup_store import LocalStore
from ansible_collections.victor.ops.plugins.module_utils import backup_postgres as bp
from ansible_collections.victor.ops.plugins.modules import victor_backup
from ansible_collections.victor.ops.plugins.filter.postgres_url_options import postgres_url_options

psycopg = pytest.importorskip('psycopg')

SUPER_PASSWORD = 'super-secret-pw'  # conftest.py's cluster
OWNER_PASSWORD = 'ckpt:p@ss/w\\rd'  # characters that need escaping in a URL and in a pgpass file


def _connect(info, dbname, user='postgres', password=SUPER_PASSWORD):
    return psycopg.connect(host=info['host'], port=info['port'], dbname=dbname, user=user, password=password,
                           autocommit=True, connect_timeout=10)


def _url(info, password=OWNER_PASSWORD, database='checkpoints'):
    from urllib.parse import quote
    return 'postgresql://ckpt:%s@%s:%d/%s' % (quote(password, safe=''), info['host'], info['port'], database)


def _options(info, password=OWNER_PASSWORD, database='checkpoints'):
    """The connection options, as the roles make them from Victor's URL (the victor.ops.postgres_url_options filter)."""
    return postgres_url_options(_url(info, password, database))


@pytest.fixture(name='pg')
def pg_fixture(pg_cluster):
    admin = _connect(pg_cluster, 'postgres')
    admin.execute('DROP DATABASE IF EXISTS checkpoints')
    if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'ckpt'").fetchone():
        admin.execute("CREATE ROLE ckpt LOGIN PASSWORD '%s'" % OWNER_PASSWORD.replace("'", "''"))
    admin.execute('CREATE DATABASE checkpoints OWNER ckpt')
    conn = _connect(pg_cluster, 'checkpoints', 'ckpt', OWNER_PASSWORD)
    conn.execute('CREATE TABLE checkpoints (id serial PRIMARY KEY, thread text, state jsonb)')
    conn.execute("INSERT INTO checkpoints (thread, state) SELECT 't' || g, jsonb_build_object('step', g) FROM generate_series(1, 3000) g")
    yield pg_cluster, conn
    conn.close()
    admin.close()


@pytest.fixture(name='state')
def state_fixture(tmp_path):
    state = tmp_path / 'state'
    state.mkdir()
    db = sqlite3.connect(str(state / 'victor.db'))
    db.execute('CREATE TABLE t (v TEXT)')
    db.execute("INSERT INTO t VALUES ('marker')")
    db.commit()
    db.close()
    (state / 'profiles.yaml').write_text('default:\n  provider: ollama\n')
    return state


def _rows(conn):
    return conn.execute('SELECT count(*) FROM checkpoints').fetchone()[0]


def run_module(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            victor_backup.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    return exc.value.code != 0 or bool(result.get('failed')), result, out


def test_backup_drop_restore_and_revert_through_the_module(pg, state, tmp_path, capsys, monkeypatch):
    info, conn = pg
    calls = []
    real_run = subprocess.run

    def spy(argv, **kwargs):
        env = kwargs.get('env') or {}
        passfile = env.get('PGPASSFILE')
        mode = oct(os.stat(passfile).st_mode & 0o777) if passfile and os.path.exists(passfile) else None
        calls.append((list(argv), dict(env), mode))
        return real_run(argv, **kwargs)  # pylint: disable=subprocess-run-check

    monkeypatch.setattr(bp.subprocess, 'run', spy)
    common = dict({'source': str(state), 'repository': str(tmp_path / 'repo')}, **_options(info))
    failed, result, out = run_module(dict(common, state='create', _ansible_check_mode=True), capsys)
    assert not failed and result['files'] == ['profiles.yaml', 'victor.db', '.victor-backup-postgres/checkpoints.pgdump']
    assert not calls and not os.path.exists(str(tmp_path / 'repo'))  # check mode: no pg_dump, nothing written
    failed, result, out = run_module(dict(common, state='create'), capsys)
    assert not failed, result
    dbs = [d for d in result['manifest']['databases'] if d.get('engine') == 'postgresql']
    assert len(dbs) == 1
    entry = dbs[0]
    assert entry['path'] == '.victor-backup-postgres/checkpoints.pgdump'
    assert entry['database'] == 'checkpoints' and entry['server_version'].startswith('15.')
    assert entry['url'] == 'postgresql://ckpt@127.0.0.1:%d/checkpoints' % info['port']
    record = [f for f in result['manifest']['files'] if f['path'] == entry['path']][0]
    assert entry['size'] == record['size'] > 0 and entry['sha256'] == record['sha256']
    assert OWNER_PASSWORD not in out
    manifest_text = open(os.path.join(str(tmp_path / 'repo'), result['manifest']['id'] + MANIFEST_SUFFIX)).read()
    assert OWNER_PASSWORD not in manifest_text and 'ckpt:' not in manifest_text
    # the password went only into a 0600 PGPASSFILE, never into argv or the environment
    assert calls and all(OWNER_PASSWORD not in ' '.join(argv) for argv, _env, _mode in calls)
    pg_calls = [c for c in calls if os.path.basename(c[0][0]) == 'pg_dump']
    assert pg_calls and all(mode == '0o600' for _argv, _env, mode in pg_calls)
    assert all(OWNER_PASSWORD not in json.dumps(env) for _argv, env, _mode in pg_calls)
    assert not [n for n in os.listdir(str(tmp_path / 'repo')) if n.startswith('.victor-backup-pg-')]

    failed, result, _out = run_module(dict(common, state='verify'), capsys)
    assert not failed, result
    assert result['verification']['databases']['.victor-backup-postgres/checkpoints.pgdump'] == 'ok'

    conn.execute('DROP TABLE checkpoints')
    conn.execute('CREATE TABLE later (id int)')
    failed, result, _out = run_module(dict(common, state='restore', target=str(state)), capsys)
    assert not failed, result
    assert _rows(conn) == 3000
    assert conn.execute("SELECT state->>'step' FROM checkpoints WHERE thread = 't42'").fetchone() == ('42',)
    assert not os.path.exists(str(state / '.victor-backup-postgres'))  # the dump never lands in the state dir
    safety_dump = result['postgres']['safety_dump']
    assert os.path.getsize(safety_dump) > 0 and safety_dump.startswith(result['safety_copy'])
    # revert: pg_restore --clean of the pre-restore dump puts back what it holds
    conn.execute('DELETE FROM checkpoints WHERE id > 100')
    safety = str(tmp_path / 'safety-2')
    failed, result, _out = run_module(dict(common, state='restore', target=str(state), safety_copy=safety), capsys)
    assert not failed, result
    assert _rows(conn) == 3000
    failed, result, _out = run_module(dict(common, state='revert', target=str(state), safety_copy=safety), capsys)
    assert not failed, result
    assert _rows(conn) == 100
    assert not os.path.exists(str(state / '.victor-backup-postgres')) and not os.path.exists(safety)
    assert sqlite3.connect(str(state / 'victor.db')).execute('SELECT v FROM t').fetchone() == ('marker',)


def test_failed_pg_restore_leaves_database_unchanged_and_puts_files_back(pg, state, tmp_path):
    info, conn = pg
    store = LocalStore(str(tmp_path / 'repo'))
    source = bp.PostgresSource(_options(info))
    manifest = bc.create_backup(store, str(state), str(tmp_path / 'work'), bc.Tools(), postgres=[source])
    conn.execute('DELETE FROM checkpoints WHERE id > 10')
    conn.execute('CREATE VIEW recent AS SELECT * FROM checkpoints')  # blocks DROP TABLE checkpoints: pg_restore fails
    (state / 'profiles.yaml').write_text('changed: true\n')
    with pytest.raises(BackupError) as exc:
        bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state), postgres=source)
    message = str(exc.value)
    assert 'pg_restore into postgresql://ckpt@127.0.0.1:%d/checkpoints failed' % info['port'] in message
    assert 'database is unchanged' in message and 'previous files were put back' in message
    assert OWNER_PASSWORD not in message
    assert _rows(conn) == 10
    assert (state / 'profiles.yaml').read_text() == 'changed: true\n'
    assert not [n for n in os.listdir(str(tmp_path)) if 'before-restore' in n]


def _rewrite_dump(store, manifest, mutate):
    """Rebuild the archive with the dump changed by mutate, and a manifest whose sha256s match it."""
    path = os.path.join(store.path, manifest['archive']['name'])
    raw = subprocess.run(['zstd', '-d', '-c', path], capture_output=True, check=True).stdout
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(raw)) as src, tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isreg() else None
            if member.name.endswith('.pgdump'):
                data = mutate(data)
                member.size = len(data)
                for record in manifest['files']:
                    if record['path'] == member.name:
                        record.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    compressed = subprocess.run(['zstd', '-q', '-c'], input=out.getvalue(), capture_output=True, check=True).stdout
    with open(path, 'wb') as handle:
        handle.write(compressed)
    manifest['archive'].update(size=len(compressed), sha256=hashlib.sha256(compressed).hexdigest())
    store.put_manifest(manifest)


def test_flipped_bytes_fail_verify_and_restore_changes_nothing(pg, state, tmp_path):
    info, conn = pg
    store = LocalStore(str(tmp_path / 'repo'))
    source = bp.PostgresSource(_options(info))
    manifest = bc.create_backup(store, str(state), str(tmp_path / 'work'), bc.Tools(), postgres=[source], scope='database')
    assert sorted(f['path'] for f in manifest['files']) == ['.victor-backup-postgres/checkpoints.pgdump', 'victor.db']
    assert bc.verify_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(tmp_path / 'v0'))['ok']
    # 1. a byte flipped in the archive: the archive sha256 catches it
    path = os.path.join(store.path, manifest['archive']['name'])
    with open(path, 'r+b') as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 1]))
    result = bc.verify_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(tmp_path / 'v1'), record=False)
    assert not result['ok']
    # 2. a flipped byte in the dump's header with matching sha256s: pg_restore --list catches it
    manifest = bc.create_backup(store, str(state), str(tmp_path / 'work'), bc.Tools(), postgres=[source], scope='database')
    _rewrite_dump(store, manifest, lambda data: data[:1] + bytes([data[1] ^ 0x20]) + data[2:])
    result = bc.verify_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(tmp_path / 'v2'), record=False)
    assert not result['ok'] and 'pg_restore --list rejects' in ' '.join(result['problems'])
    conn.execute('DELETE FROM checkpoints WHERE id > 5')
    with pytest.raises(BackupError, match='PostgreSQL dump in backup .* is unusable, nothing was changed'):
        bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state), scope='database', postgres=source)
    assert _rows(conn) == 5
    # 3. a truncated dump (its catalogue still reads): the full read catches it
    manifest = bc.create_backup(store, str(state), str(tmp_path / 'work'), bc.Tools(), postgres=[source], scope='database')
    _rewrite_dump(store, manifest, lambda data: data[:-200])
    result = bc.verify_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(tmp_path / 'v3'), record=False)
    assert not result['ok'] and 'pg_restore' in ' '.join(result['problems'])


@pytest.mark.parametrize('make_options, message', [
    (lambda info: _options(info, password='wrong-password-123'), 'password authentication failed'),
    (lambda info: _options(info, database='missing_db'), 'database "missing_db" does not exist'),
    (lambda info: dict(_options(info, password='wrong-password-123'), login_port=1),
     'pg_dump of postgresql://ckpt@127.0.0.1:1/checkpoints failed'),
    (lambda info: dict(_options(info, password='wrong-password-123'), login_port=70000), 'login_port must be 1-65535'),
    (lambda info: dict(_options(info, password='wrong-password-123'), login_unix_socket='/run/postgresql'),
     'login_host and login_unix_socket are mutually exclusive'),
    (lambda info: dict(_options(info, password='wrong-password-123'), connect_timeout=0), 'connect_timeout must be 1-3600'),
])
def test_bad_options_or_credentials_fail_clearly_without_the_password(pg, state, tmp_path, capsys, make_options, message):
    info, _conn = pg
    args = dict({'source': str(state), 'repository': str(tmp_path / 'repo')}, **make_options(info))
    failed, result, out = run_module(args, capsys)
    assert failed
    assert message in result['msg']
    assert 'wrong-password-123' not in out and OWNER_PASSWORD not in out
    assert LocalStore(str(tmp_path / 'repo')).list_manifests() == ([], [])


def test_restore_without_url_refuses_and_files_only_is_possible(pg, state, tmp_path, capsys):
    info, _conn = pg
    common = {'source': str(state), 'repository': str(tmp_path / 'repo')}
    failed, result, _out = run_module(dict(common, **_options(info)), capsys)
    assert not failed, result
    failed, result, _out = run_module(dict(common, state='restore'), capsys)
    assert failed and 'give login_db (and the connection options) to restore it' in result['msg']
    failed, result, _out = run_module(dict(common, state='restore', postgres_restore=False), capsys)
    assert not failed and result['postgres'] is None
    assert sorted(os.listdir(str(state))) == ['profiles.yaml', 'victor.db']


def test_timer_cli_dumps_postgres_from_its_config(pg, state, tmp_path, capsys):
    from ansible_collections.victor.ops.plugins.module_utils import backup_cli
    info, conn = pg
    config = tmp_path / 'backup.json'
    config.write_text(json.dumps({'source': str(state), 'repository': str(tmp_path / 'repo'), 'postgres': _options(info)}))
    assert backup_cli.main(['--config', str(config), 'create', '--scope', 'database']) == 0
    assert backup_cli.main(['--config', str(config), 'verify']) == 0
    out = capsys.readouterr().out
    assert '.victor-backup-postgres/checkpoints.pgdump' in out and OWNER_PASSWORD not in out
    manifest = LocalStore(str(tmp_path / 'repo')).list_manifests()[0][0]
    assert [d['database'] for d in manifest['databases'] if d.get('engine') == 'postgresql'] == ['checkpoints']
    conn.execute('TRUNCATE checkpoints')
    bc.restore_backup(LocalStore(str(tmp_path / 'repo')), [manifest], manifest, bc.Tools(), str(state), scope='database',
                      postgres=bp.PostgresSource(_options(info)))
    assert _rows(conn) == 3000
    config.write_text(json.dumps({'source': str(state), 'repository': str(tmp_path / 'repo'),
                                  'postgres': _options(info, password='wrong-password-123')}))
    assert backup_cli.main(['--config', str(config), 'create']) == 1
    err = capsys.readouterr().err
    assert 'password authentication failed' in err and 'wrong-password-123' not in err


def test_url_without_password_uses_the_users_pgpass(pg, state, tmp_path, monkeypatch):
    info, _conn = pg
    home = tmp_path / 'home'
    home.mkdir()
    pgpass = home / '.pgpass'
    pgpass.write_text('127.0.0.1:%d:checkpoints:ckpt:%s\n' % (info['port'], OWNER_PASSWORD.replace('\\', '\\\\').replace(':', '\\:')))
    os.chmod(str(pgpass), 0o600)
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.setenv('PGPASSWORD', 'inherited-wrong')  # scrubbed: only the options and ~/.pgpass count
    source = bp.PostgresSource({'login_host': '127.0.0.1', 'login_port': info['port'], 'login_user': 'ckpt', 'login_db': 'checkpoints'})
    store = LocalStore(str(tmp_path / 'repo'))
    manifest = bc.create_backup(store, str(state), str(tmp_path / 'work'), bc.Tools(), postgres=[source], scope='database')
    assert [d['database'] for d in manifest['databases'] if d.get('engine') == 'postgresql'] == ['checkpoints']
    pgpass.unlink()
    with pytest.raises(BackupError, match='no password supplied|password authentication failed'):
        bc.create_backup(store, str(state), str(tmp_path / 'work'), bc.Tools(), postgres=[source], scope='database')
