"""victor_db_maintenance on real SQLite files: fragmentation reclaimed, busy results, bad input."""
import functools
import os
import sqlite3
import stat
import time

import module_runner
import pytest

from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_sqlite as lite
from ansible_collections.victor.ops.plugins.module_utils.db_maintenance import DatabaseBusy, MaintenanceError


from ansible_collections.victor.ops.plugins.modules import victor_db_maintenance

# The module's defaults (its argument spec, the one place they are written) for direct calls below.
DEFAULTS = dict((name, spec.get('default')) for name, spec in victor_db_maintenance.argument_spec().items())


def make_fragmented_db(path, rows=600, keep_every=5, wal=True):
    """Insert rows of ~2 KiB, then delete most of them: the file keeps the pages as free pages."""
    conn = sqlite3.connect(str(path))
    if wal:
        conn.execute('PRAGMA journal_mode=WAL')
    conn.execute('CREATE TABLE sessions (id INTEGER PRIMARY KEY, body BLOB)')
    conn.execute('CREATE TABLE "odd ""name" (id INTEGER PRIMARY KEY)')
    conn.executemany('INSERT INTO sessions (body) VALUES (?)', [(b'x' * 2000,) for _row in range(rows)])
    conn.execute('CREATE INDEX sessions_body ON sessions (id, body)')
    conn.execute('INSERT INTO "odd ""name" VALUES (1)')
    conn.commit()
    conn.execute('DELETE FROM sessions WHERE id %% %d != 0' % keep_every)
    conn.commit()
    conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    conn.close()
    return path


# run_module(args, capsys, check_mode=False) -> (failed, result) of victor_db_maintenance
run_module = functools.partial(module_runner.run_module, victor_db_maintenance)


@pytest.fixture(name='fragmented')
def fragmented_fixture(tmp_path):
    return str(make_fragmented_db(tmp_path / 'victor.db'))


def test_stats_report_fragmentation_and_rows(fragmented):
    conn = lite.connect(fragmented, DEFAULTS['busy_timeout'])
    try:
        result = lite.stats(conn, fragmented, DEFAULTS['busy_timeout'], DEFAULTS['row_counts'])
    finally:
        conn.close()
    assert result['tables'] == {'sessions': 120, 'odd "name': 1}
    assert result['freelist_count'] > 0.5 * result['page_count']
    assert result['fragmentation_pct'] == round(100.0 * result['freelist_count'] / result['page_count'], 2)
    assert result['file_size'] == result['page_count'] * result['page_size'] == os.path.getsize(fragmented)
    assert result['journal_mode'] == 'wal'


@pytest.mark.parametrize('mode', ['in_place', 'into'])
def test_vacuum_shrinks_the_file_and_keeps_rows(fragmented, mode, capsys):
    os.chmod(fragmented, 0o640)
    size_before = os.path.getsize(fragmented)
    failed, result = run_module({'engine': 'sqlite', 'path': fragmented, 'operations': ['stats', 'vacuum'],
                                 'vacuum_mode': mode}, capsys)
    assert not failed, result
    assert result['changed'] is True
    vac = result['report']['vacuum']
    assert vac['size_before'] == size_before
    assert vac['size_after'] == os.path.getsize(fragmented) < size_before / 2
    assert vac['reclaimed_bytes'] == size_before - vac['size_after']
    assert result['report']['stats_after']['freelist_count'] == 0
    assert result['report']['stats_after']['tables'] == result['report']['stats']['tables'] == {'sessions': 120, 'odd "name': 1}
    assert stat.S_IMODE(os.stat(fragmented).st_mode) == 0o640
    conn = sqlite3.connect(fragmented)
    assert conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    assert conn.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    conn.close()
    assert not [f for f in os.listdir(os.path.dirname(fragmented)) if '.vacuum-' in f]


def test_second_vacuum_changes_nothing(fragmented, capsys):
    args = {'engine': 'sqlite', 'path': fragmented, 'operations': ['wal_checkpoint', 'analyze', 'optimize', 'vacuum']}
    assert run_module(args, capsys)[1]['changed'] is True
    failed, second = run_module(args, capsys)
    assert not failed and second['changed'] is False, second
    assert 'below the threshold' in second['report']['vacuum']['skipped']


def test_threshold_skips_vacuum(fragmented, capsys):
    failed, result = run_module({'engine': 'sqlite', 'path': fragmented, 'operations': ['vacuum'],
                                 'vacuum_min_fragmentation': 99.0}, capsys)
    assert not failed and result['changed'] is False
    assert os.path.getsize(fragmented) == result['report']['vacuum']['size_before']


def test_check_mode_writes_nothing(fragmented, capsys):
    with open(fragmented, 'rb') as handle:
        before = handle.read()
    failed, result = run_module({'engine': 'sqlite', 'path': fragmented,
                                 'operations': ['wal_checkpoint', 'analyze', 'vacuum']}, capsys, check_mode=True)
    assert not failed
    assert result['changed'] is True
    assert result['report']['vacuum']['would_run'] is True
    assert result['report']['vacuum']['estimated_reclaim_bytes'] > 0
    with open(fragmented, 'rb') as handle:
        assert handle.read() == before


def test_integrity_and_quick_check_ok(fragmented, capsys):
    failed, result = run_module({'engine': 'sqlite', 'path': fragmented, 'operations': ['integrity_check', 'quick_check']}, capsys)
    assert not failed and result['changed'] is False
    assert result['report']['integrity_check']['ok'] is True
    assert result['report']['quick_check']['messages'] == ['ok']


def test_wal_checkpoint_truncates_the_wal(tmp_path, capsys):
    path = str(tmp_path / 'w.db')
    writer = sqlite3.connect(path)
    writer.execute('PRAGMA journal_mode=WAL')
    writer.execute('PRAGMA wal_autocheckpoint=0')
    writer.execute('CREATE TABLE t (v TEXT)')
    writer.executemany('INSERT INTO t VALUES (?)', [('y' * 500,) for _row in range(200)])
    writer.commit()
    wal_before = os.path.getsize(path + '-wal')
    assert wal_before > 0
    failed, result = run_module({'engine': 'sqlite', 'path': path, 'operations': ['wal_checkpoint']}, capsys)
    writer.close()
    assert not failed and result['changed'] is True
    assert result['report']['wal_checkpoint']['wal_size_before'] == wal_before
    assert result['report']['wal_checkpoint']['wal_size_after'] == 0


def _hold_lock(path, statement):
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute(statement)
    return holder


def test_locked_database_gives_busy_result_not_a_hang(fragmented, capsys):
    holder = _hold_lock(fragmented, 'BEGIN IMMEDIATE')
    try:
        started = time.monotonic()
        failed, result = run_module({'engine': 'sqlite', 'path': fragmented, 'operations': ['vacuum'], 'busy_timeout': 0.5}, capsys)
        elapsed = time.monotonic() - started
    finally:
        holder.execute('ROLLBACK')
        holder.close()
    assert failed
    assert result['busy'] is True
    assert result['msg'].startswith('database is busy: %s' % fragmented)
    assert elapsed < 5


def test_busy_with_on_busy_skip_does_not_fail(tmp_path, capsys):
    path = str(make_fragmented_db(tmp_path / 'rollback.db', wal=False))
    holder = _hold_lock(path, 'BEGIN EXCLUSIVE')
    try:
        failed, result = run_module({'engine': 'sqlite', 'path': path, 'operations': ['stats'], 'busy_timeout': 0.3,
                                     'on_busy': 'skip'}, capsys)
    finally:
        holder.execute('ROLLBACK')
        holder.close()
    assert not failed
    assert result['busy'] is True and result['changed'] is False
    assert 'database is busy' in result['msg']


def test_vacuum_into_refuses_to_swap_under_an_open_connection(fragmented):
    reader = sqlite3.connect(fragmented)
    reader.execute('SELECT count(*) FROM sessions').fetchone()
    size = os.path.getsize(fragmented)
    try:
        with pytest.raises(DatabaseBusy, match='database is busy'):
            lite.run_operations(fragmented, ['vacuum'], busy_timeout=0.5, check_mode=False, vacuum_mode='into',
                                min_fragmentation=DEFAULTS['vacuum_min_fragmentation'], row_counts=DEFAULTS['row_counts'])
    finally:
        reader.close()
    assert os.path.getsize(fragmented) == size
    assert not [f for f in os.listdir(os.path.dirname(fragmented)) if '.vacuum-' in f]


def test_corrupt_database_fails_integrity_check(tmp_path, capsys):
    path = str(tmp_path / 'c.db')
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)')
    conn.execute('CREATE INDEX tv ON t (v)')
    conn.executemany('INSERT INTO t (v) VALUES (?)', [('v%05d' % i,) for i in range(2000)])
    conn.commit()
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tv'").fetchone()[0]
    page_size = conn.execute('PRAGMA page_size').fetchone()[0]
    conn.close()
    with open(path, 'r+b') as handle:  # break the index root page's cell pointers
        handle.seek((root - 1) * page_size + 12)
        handle.write(b'\x00\x20' * 16)
    failed, result = run_module({'engine': 'sqlite', 'path': path, 'operations': ['quick_check', 'integrity_check']}, capsys)
    assert failed
    assert 'quick_check of %s found problems' % path in result['msg']
    assert result['report']['quick_check']['ok'] is False
    assert 'out of range' in result['report']['quick_check']['messages'][0]


@pytest.mark.parametrize('args, message', [
    ({'engine': 'sqlite', 'operations': ['stats']}, 'path is required for engine sqlite'),
    ({'engine': 'sqlite', 'path': '/nonexistent/victor.db', 'operations': ['stats']}, 'SQLite database /nonexistent/victor.db does not exist'),
    ({'engine': 'sqlite', 'path': '/tmp', 'operations': ['stats']}, 'is not a regular file'),
    ({'engine': 'sqlite', 'path': '__FRAG__', 'operations': ['reindex']}, "operation 'reindex' is not supported for engine sqlite"),
    ({'engine': 'redis', 'operations': ['vacuum']}, "operation 'vacuum' is not supported for engine redis"),
    ({'engine': 'sqlite', 'path': '__FRAG__', 'operations': ['defrag']}, 'value of operations must be one or more of'),
    ({'engine': 'mysql', 'operations': ['stats']}, 'value of engine must be one of'),
    ({'engine': 'sqlite', 'path': '__FRAG__', 'operations': []}, 'operations must name at least one operation'),
    ({'engine': 'sqlite', 'path': '__FRAG__', 'operations': ['stats'], 'busy_timeout': 0}, 'busy_timeout must be greater than 0'),
])
def test_bad_input_fails_clearly(args, message, fragmented, capsys):
    if args.get('path') == '__FRAG__':
        args = dict(args, path=fragmented)
    failed, result = run_module(args, capsys)
    assert failed
    assert message in result['msg']
    assert 'Traceback' not in result['msg'] and 'exception' not in result


def test_not_a_database_file(tmp_path, capsys):
    path = tmp_path / 'notes.txt'
    path.write_text('this is not sqlite, but it is long enough to have a header\n')
    failed, result = run_module({'engine': 'sqlite', 'path': str(path), 'operations': ['stats']}, capsys)
    assert failed and 'is not an SQLite database' in result['msg']


def test_quote_identifier():
    assert lite.quote_identifier('a"b') == '"a""b"'


def test_missing_file_is_never_created(tmp_path):
    with pytest.raises(MaintenanceError):
        lite.connect(str(tmp_path / 'absent.db'), DEFAULTS['busy_timeout'])
    assert not (tmp_path / 'absent.db').exists()


def _files(path):
    """(size, mtime_ns, content) of the database and its side files; None when absent."""
    result = {}
    for suffix in ('', '-wal', '-shm'):
        try:
            info = os.stat(path + suffix)
        except OSError:
            result[suffix] = None
            continue
        with open(path + suffix, 'rb') as handle:
            result[suffix] = (info.st_size, info.st_mtime_ns, handle.read())
    return result


_WRITER = '''
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
conn.executemany("INSERT INTO t (body) VALUES (?)", [(b"x" * 1000,)] * 500)
conn.commit()
if sys.argv[2] == "hold":
    print("ready", flush=True)
    sys.stdin.read()  # Victor: another process keeps the database open
else:
    import os
    os._exit(0)  # a writer that crashed: -wal and -shm stay behind
'''


@pytest.mark.parametrize('writer', ['held', 'crashed', 'none'])
@pytest.mark.parametrize('operations, check_mode', [
    (['stats'], True),
    (['stats', 'integrity_check'], False),
    (['stats', 'wal_checkpoint', 'analyze', 'vacuum'], True),
])
def test_read_only_runs_never_write_create_or_checkpoint(tmp_path, capsys, writer, operations, check_mode):
    """Issue 13: a check-mode stats on a WAL database grew victor.db and removed -wal (checkpoint on close)."""
    import subprocess
    import sys
    path = str(tmp_path / 'victor.db')
    proc = subprocess.Popen([sys.executable, '-c', _WRITER, path, 'hold' if writer == 'held' else 'exit'],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if writer == 'held':
            assert proc.stdout.readline().strip() == 'ready'
        else:
            proc.wait()
        if writer == 'none':
            conn = sqlite3.connect(path)  # the last connection closes cleanly: no -wal, no -shm
            conn.execute('SELECT count(*) FROM t').fetchall()
            conn.close()
        before = _files(path)
        assert (before['-wal'] is not None) == (writer != 'none') and sqlite_ro_is_wal(path)
        time.sleep(0.01)  # a write now would move an mtime
        failed, result = run_module({'engine': 'sqlite', 'path': path, 'operations': operations}, capsys, check_mode=check_mode)
        assert not failed, result
        assert result['report']['stats']['tables'] == {'t': 500}  # the WAL's rows are seen
        assert result['report']['stats']['journal_mode'] == 'wal'
        assert _files(path) == before
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait()


def sqlite_ro_is_wal(path):
    from ansible_collections.victor.ops.plugins.module_utils import sqlite_ro
    return sqlite_ro.is_wal(path)


def test_readonly_opener_reports_a_wal_it_cannot_read_without_writing(tmp_path):
    """-wal without -shm: reading the frames would create -shm, so the main file is read and that is said."""
    from ansible_collections.victor.ops.plugins.module_utils import sqlite_ro
    path = str(tmp_path / 'v.db')
    conn = sqlite3.connect(path)
    conn.execute('PRAGMA journal_mode=WAL')
    conn.execute('CREATE TABLE t (x)')
    conn.commit()
    conn.close()
    with open(path + '-wal', 'wb') as handle:
        handle.write(b'\0' * 32)
    ro, info = sqlite_ro.connect_readonly(path)
    try:
        assert ro.execute('SELECT count(*) FROM t').fetchone() == (0,)
    finally:
        ro.close()
    assert info == {'read_mode': 'immutable', 'wal_ignored': True}
    assert not os.path.exists(path + '-shm')


@pytest.mark.parametrize('args, message', [
    ({'busy_timeout': float('nan')}, 'busy_timeout must be a finite number'),
    ({'busy_timeout': -1.0}, 'busy_timeout must be greater than 0'),
    ({'vacuum_min_fragmentation': float('nan')}, 'vacuum_min_fragmentation must be a finite number'),
    ({'vacuum_min_fragmentation': 101.0}, 'percentage'),
    ({'lock_threshold': -5.0}, 'lock_threshold must be at least 0'),
    ({'lock_threshold': float('inf')}, 'lock_threshold must be a finite number'),
    ({'connect_timeout': 0}, 'connect_timeout must be greater than 0'),
    ({'connect_timeout': -1}, 'connect_timeout must be greater than 0'),
    ({'min_dead_tuples': -1}, 'min_dead_tuples must be at least 0'),
])
def test_nan_and_negative_numbers_are_refused(args, message, fragmented, capsys):
    failed, result = run_module(dict({'engine': 'sqlite', 'path': fragmented, 'operations': ['stats']}, **args), capsys)
    assert failed and message in result['msg'], result['msg']


def test_engine_functions_repeat_no_argument_spec_default():
    """Defaults live in victor_db_maintenance's argument spec only: a parameter of the engines' functions that
    carries an option's value has no default of its own (the module passes every value). Parameters that are
    no option (check_mode, readonly, quick, optimize: the module's mode or the operation) may keep theirs."""
    import inspect
    from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_postgres as pg
    from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_redis as rd
    # parameter name -> the option whose value it carries
    options = dict((name, name) for name in victor_db_maintenance.argument_spec())
    options.update(mode='vacuum_mode', min_fragmentation='vacuum_min_fragmentation', scope='reindex_scope',
                   threshold='lock_threshold', limit='slow_query_limit', db='redis_db', tls='redis_tls', host='login_host',
                   port='login_port', user='login_user', password='login_password', grace='lock_grace')
    internal = ('check_mode', 'readonly', 'quick', 'optimize')
    checked = 0
    for module in (lite, pg, rd):
        for function in (f for f in vars(module).values() if inspect.isfunction(f) and f.__module__ == module.__name__):
            for name, parameter in inspect.signature(function).parameters.items():
                if name in options and name not in internal:
                    checked += 1
                    assert parameter.default is inspect.Parameter.empty, (module.__name__, function.__name__, name)
    assert checked > 30, checked
