"""victor_db_maintenance against a real, throwaway PostgreSQL cluster (Debian's postgresql).

conftest.py's pg_cluster runs initdb/pg_ctl as the `postgres` system user (or the current
user when not root) in a temp dir, listening only on 127.0.0.1 on a free port, and stops it
by pg_ctl.
"""
import functools
import json
import threading
import time

import module_runner
import pytest

from ansible_collections.victor.ops.plugins.modules import victor_db_maintenance

psycopg = pytest.importorskip('psycopg')

# The cluster comes from conftest.py's pg_cluster fixture (same passwords).
SUPER_PASSWORD = 'super-secret-pw'
VICTOR_PASSWORD = 'victor-secret-pw'


@pytest.fixture(name='cluster')
def cluster_fixture(pg_cluster):
    return pg_cluster


def _connect(info, dbname, user, password):
    return psycopg.connect(host=info['host'], port=info['port'], dbname=dbname, user=user, password=password,
                           autocommit=True, connect_timeout=10)


# run_module(args, capsys, check_mode=False) -> (failed, result) of victor_db_maintenance
run_module = functools.partial(module_runner.run_module, victor_db_maintenance)


def _args(cluster, operations, user='victor', password=VICTOR_PASSWORD, database='victor', **extra):
    args = {'engine': 'postgresql', 'login_host': cluster['host'], 'login_port': cluster['port'], 'login_user': user,
            'login_password': password, 'login_db': database, 'operations': operations}
    args.update(extra)
    return args


def _dead_tuples(conn, table):
    row = conn.execute('SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s', (table,)).fetchone()
    return row[0] if row else None


def _wait_dead(conn, table, minimum):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn.execute('SELECT pg_stat_clear_snapshot()')
        if (_dead_tuples(conn, table) or 0) >= minimum:
            return
        time.sleep(0.2)
    raise AssertionError('stats never showed %d dead tuples in %s' % (minimum, table))


@pytest.fixture(name='victor_db')
def victor_db_fixture(cluster):
    conn = _connect(cluster, 'victor', 'victor', VICTOR_PASSWORD)
    conn.execute('DROP TABLE IF EXISTS items, "weird""name"')
    conn.execute('CREATE TABLE items (id serial PRIMARY KEY, body text)')
    conn.execute('CREATE INDEX items_body ON items (body)')
    conn.execute("INSERT INTO items (body) SELECT repeat('x', 200) || g FROM generate_series(1, 5000) g")
    conn.execute('CREATE TABLE "weird""name" (id int)')
    yield conn
    conn.close()


def test_dead_tuples_are_vacuumed_and_a_rerun_changes_nothing(cluster, victor_db, capsys):
    victor_db.execute('DELETE FROM items WHERE id > 1000')
    _wait_dead(victor_db, 'items', 4000)
    failed, result = run_module(_args(cluster, ['stats', 'vacuum']), capsys)
    assert not failed, result
    stats = {t['table']: t for t in result['report']['stats']['tables']}
    assert stats['public.items']['dead_tuples'] == 4000
    assert stats['public.items']['live_tuples'] == 1000
    assert stats['public.items']['dead_pct'] == 80.0
    vac = result['report']['vacuum']
    assert result['changed'] is True
    assert vac['tables'] == ['public.items']
    assert vac['queries'] == ['VACUUM (ANALYZE) "public"."items"']
    assert vac['dead_tuples_before'] == 4000 and vac['dead_tuples_after'] == 0
    victor_db.execute('SELECT pg_stat_clear_snapshot()')
    assert _dead_tuples(victor_db, 'items') == 0
    failed, second = run_module(_args(cluster, ['vacuum']), capsys)
    assert not failed and second['changed'] is False
    assert second['report']['vacuum']['skipped'] == 'no tables with at least 1 dead tuples'


def test_check_mode_vacuum_leaves_dead_tuples(cluster, victor_db, capsys):
    victor_db.execute('DELETE FROM items WHERE id <= 100')
    _wait_dead(victor_db, 'items', 100)
    failed, result = run_module(_args(cluster, ['vacuum', 'analyze', 'reindex'], tables=['items']), capsys, check_mode=True)
    assert not failed and result['changed'] is True
    assert result['report']['vacuum']['would_run'] is True
    assert result['report']['reindex']['queries'] == ['REINDEX TABLE CONCURRENTLY "items"']
    time.sleep(0.5)
    victor_db.execute('SELECT pg_stat_clear_snapshot()')
    assert _dead_tuples(victor_db, 'items') >= 100


def test_identifiers_are_quoted(cluster, victor_db, capsys):
    failed, result = run_module(_args(cluster, ['vacuum', 'analyze'], tables=['weird"name']), capsys)
    assert not failed, result
    assert result['report']['vacuum']['queries'] == ['VACUUM (ANALYZE) "weird""name"']
    assert result['report']['analyze']['queries'] == ['ANALYZE "weird""name"']


def _index_node(conn, name):
    return conn.execute('SELECT pg_relation_filenode(%s::regclass)', (name,)).fetchone()[0]


def test_reindex_table_concurrently_and_database(cluster, victor_db, capsys):
    before = _index_node(victor_db, 'items_body')
    failed, result = run_module(_args(cluster, ['reindex'], tables=['public.items']), capsys)
    assert not failed, result
    assert result['report']['reindex']['concurrently'] is True
    assert _index_node(victor_db, 'items_body') != before
    again = _index_node(victor_db, 'items_body')
    failed, result = run_module(_args(cluster, ['reindex'], reindex_scope='database', concurrently=False), capsys)
    assert not failed, result
    assert result['report']['reindex']['queries'] == ['REINDEX DATABASE "victor"']
    assert _index_node(victor_db, 'items_body') != again
    failed, result = run_module(_args(cluster, ['reindex']), capsys)
    assert failed and 'reindex with reindex_scope=table needs tables' in result['msg']


def test_clear_locks_terminates_the_blocker_but_spares_superusers(cluster, victor_db, capsys):
    blocker = _connect(cluster, 'victor', 'victor', VICTOR_PASSWORD)
    blocker.autocommit = False
    blocker.execute('UPDATE items SET body = body WHERE id = 1')  # now idle in transaction holding a row lock
    blocker_pid = blocker.info.backend_pid
    superuser = _connect(cluster, 'victor', 'postgres', SUPER_PASSWORD)
    superuser.autocommit = False
    superuser.execute('UPDATE items SET body = body WHERE id = 2')
    super_pid = superuser.info.backend_pid
    elsewhere = _connect(cluster, 'other', 'victor', VICTOR_PASSWORD)
    elsewhere.autocommit = False
    elsewhere.execute('SELECT 1')
    elsewhere_pid = elsewhere.info.backend_pid
    waiter = _connect(cluster, 'victor', 'victor', VICTOR_PASSWORD)
    outcome = {}

    def blocked_update():
        try:
            waiter.execute('UPDATE items SET body = body WHERE id = 1')
            outcome['ok'] = True
        except psycopg.Error as exc:  # pragma: no cover - reported by the assert below
            outcome['error'] = str(exc)

    thread = threading.Thread(target=blocked_update, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        failed, result = run_module(_args(cluster, ['locks'], user='postgres', password=SUPER_PASSWORD), capsys)
        assert not failed, result
        blocked = result['report']['locks']['blocked']
        assert [(row['pid'], row['blocked_by']) for row in blocked] == [(waiter.info.backend_pid, [blocker_pid])]
        assert result['report']['locks']['blocking'][0]['query'] == 'UPDATE items SET body = body WHERE id = 1'

        args = _args(cluster, ['clear_locks'], user='postgres', password=SUPER_PASSWORD, lock_threshold=1)
        failed, result = run_module(args, capsys, check_mode=True)
        assert not failed, result
        assert result['report']['clear_locks']['would_terminate'] == [blocker_pid]
        assert result['report']['clear_locks']['terminated'] == []
        assert [row['pid'] for row in result['report']['clear_locks']['spared_superusers']] == [super_pid]
        assert thread.is_alive()

        failed, result = run_module(args, capsys)
        assert not failed, result
        assert result['changed'] is True
        assert result['report']['clear_locks']['terminated'] == [blocker_pid]
        thread.join(10)
        assert outcome == {'ok': True}
        assert superuser.execute('SELECT 1').fetchone() == (1,)
        assert elsewhere.execute('SELECT pg_backend_pid()').fetchone() == (elsewhere_pid,)
        with pytest.raises(psycopg.OperationalError):
            blocker.execute('SELECT 1')
        failed, result = run_module(args, capsys)
        assert not failed and result['changed'] is False
    finally:
        for conn in (blocker, superuser, elsewhere, waiter):
            try:
                conn.rollback()
            except psycopg.Error:
                pass
            conn.close()


def _quietly(func, *args):
    try:
        func(*args)
    except psycopg.Error:
        pass  # the session was terminated, as the test wants


def test_clear_locks_rule_blocker_age_and_roles_it_may_not_signal(cluster, victor_db, capsys):
    """The one rule: a blocker whose transaction is older than lock_threshold is ended however
    short the wait it causes; a session of a role the login role may not signal is listed, not touched."""
    admin = _connect(cluster, 'victor', 'postgres', SUPER_PASSWORD)
    admin.execute("DROP ROLE IF EXISTS intruder")
    admin.execute("CREATE ROLE intruder LOGIN PASSWORD 'intruder-pw'")
    admin.execute('GRANT SELECT, UPDATE ON items TO intruder')
    # pg_read_all_stats: Victor's role sees the intruder's session (state, transaction start) but may not signal it
    admin.execute('GRANT pg_read_all_stats TO victor')
    blocker = _connect(cluster, 'victor', 'victor', VICTOR_PASSWORD)
    blocker.autocommit = False
    blocker.execute('UPDATE items SET body = body WHERE id = 1')
    blocker_pid = blocker.info.backend_pid
    foreign = _connect(cluster, 'victor', 'intruder', 'intruder-pw')
    foreign.autocommit = False
    foreign.execute('UPDATE items SET body = body WHERE id = 3')
    time.sleep(1.5)  # both transactions are now older than the threshold
    # the blocker is busy (active, not idle in transaction): only its transaction's age can select it
    busy = threading.Thread(target=lambda: _quietly(blocker.execute, 'SELECT pg_sleep(60)'), daemon=True)
    busy.start()
    waiter = _connect(cluster, 'victor', 'victor', VICTOR_PASSWORD)
    thread = threading.Thread(target=lambda: waiter.execute('UPDATE items SET body = body WHERE id = 1'), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        ready = ("SELECT count(*) FILTER (WHERE cardinality(pg_blocking_pids(pid)) > 0) > 0"
                 " AND bool_or(pid = %s AND state = 'active') FROM pg_stat_activity")
        while not admin.execute(ready, (blocker_pid,)).fetchone()[0]:
            assert time.monotonic() < deadline, 'the waiter never blocked'
            time.sleep(0.1)
        # the waiter has waited far less than the threshold: the blocker's transaction age decides
        args = _args(cluster, ['clear_locks'], lock_threshold=1)  # as Victor's role, not a superuser
        failed, result = run_module(args, capsys)
        assert not failed, result
        report = result['report']['clear_locks']
        assert report['terminated'] == [blocker_pid]
        assert [row['pid'] for row in report['spared_other_roles']] == [foreign.info.backend_pid]
        assert report['spared_superusers'] == []
        assert report['sessions'][0]['state'] == 'active'
        assert 'transaction open for more than 1.0s' in report['sessions'][0]['reason']
        thread.join(10)
        assert not thread.is_alive()
        assert foreign.execute('SELECT 1').fetchone() == (1,)  # never signalled
    finally:
        busy.join(10)
        for conn in (blocker, foreign, waiter):
            try:
                conn.rollback()
            except psycopg.Error:
                pass
            conn.close()
        admin.execute('REVOKE pg_read_all_stats FROM victor')
        admin.execute('REVOKE ALL ON items FROM intruder')
        admin.execute('DROP ROLE intruder')
        admin.close()


def test_slow_queries_missing_extension_and_present(cluster, capsys):
    failed, result = run_module(_args(cluster, ['slow_queries']), capsys)
    assert not failed, result
    slow = result['report']['slow_queries']
    assert slow['available'] is False
    assert 'pg_stat_statements is not installed' in slow['message']
    pss = _connect(cluster, 'victor_pss', 'victor', VICTOR_PASSWORD)
    pss.execute('SELECT count(*) FROM generate_series(1, 200000)')
    pss.close()
    failed, result = run_module(_args(cluster, ['slow_queries'], database='victor_pss', slow_query_limit=3), capsys)
    assert not failed, result
    slow = result['report']['slow_queries']
    assert slow['available'] is True and 0 < len(slow['queries']) <= 3
    assert any('generate_series' in row['query'] for row in slow['queries'])


def test_pool_stats_counts_connections(cluster, capsys):
    extra = [_connect(cluster, 'victor', 'victor', VICTOR_PASSWORD) for _conn in range(3)]
    try:
        failed, result = run_module(_args(cluster, ['pool_stats']), capsys)
    finally:
        for conn in extra:
            conn.close()
    assert not failed, result
    pool = result['report']['pool_stats']
    assert pool['max_connections'] == 30
    assert pool['by_database']['victor'] >= 4
    assert pool['used'] >= 4
    assert pool['used_pct'] == round(100.0 * pool['used'] / (30 - pool['superuser_reserved_connections']), 2)


@pytest.mark.parametrize('override, message', [
    ({'conninfo': 'host=db.internal'}, 'Unsupported parameters for (basic.py) module: conninfo'),
    ({'login_password': 'wrong'}, 'cannot connect to PostgreSQL: '),
    ({'login_db': 'missing_db'}, 'cannot connect to PostgreSQL: '),
    ({'ssl_mode': 'require'}, 'server does not support SSL'),  # the common ssl_mode reaches libpq
    ({'login_unix_socket': '/nonexistent'}, 'login_host and login_unix_socket are mutually exclusive'),
    ({'operations': ['vacuum_db']}, 'value of operations must be one or more of'),
    ({'operations': ['wal_checkpoint']}, "operation 'wal_checkpoint' is not supported for engine postgresql"),
])
def test_bad_input_fails_clearly(cluster, override, message, capsys):
    args = _args(cluster, ['stats'])
    args.update(override)
    failed, result = run_module(args, capsys)
    assert failed
    assert message in result['msg']
    assert VICTOR_PASSWORD not in json.dumps(result) and 'wrong' not in result['msg']


def test_database_stays_an_alias_of_login_db(cluster, capsys):
    args = _args(cluster, ['stats'], database='victor_pss')
    args['database'] = args.pop('login_db')
    failed, result = run_module(args, capsys)
    assert not failed, result
    assert result['report']['stats']['database'] == 'victor_pss'


def test_login_unix_socket_connects_through_the_socket(cluster, capsys):
    args = _args(cluster, ['stats'])
    args.update(login_host=None, login_unix_socket=cluster['workdir'])
    failed, result = run_module(args, capsys)
    assert not failed, result
    assert result['report']['stats']['database'] == 'victor'
