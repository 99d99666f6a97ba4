# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL maintenance for Victor's database: vacuum, analyze, reindex, bloat, locks, pools.

psycopg (3) is imported lazily: callers check HAS_PSYCOPG and report missing_required_lib.
Identifiers always go through psycopg.sql; values through query parameters.
The functions take every option's value from the caller: defaults live in victor_db_maintenance's
argument spec only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.victor.ops.plugins.module_utils.db_maintenance import MaintenanceError, Timer
from ansible_collections.victor.ops.plugins.module_utils.postgres_common import connection_problems, libpq_params
from ansible_collections.victor.ops.plugins.module_utils.redact import redact

try:
    import psycopg
    from psycopg import sql
    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the managed node
    psycopg = None
    sql = None
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = _exc

WRITE_OPERATIONS = ('vacuum', 'analyze', 'reindex', 'clear_locks')


def option_problems(params):
    """Problems of the PostgreSQL/Redis options argument_spec cannot express (shared by both engines)."""
    problems = connection_problems(params)
    threshold = params.get('lock_threshold')
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        problems.append('lock_threshold must be a number of seconds, 0 or more (got %s)' % threshold)
    for key in ('min_dead_tuples', 'redis_db'):
        if (params.get(key) or 0) < 0:
            problems.append('%s must not be negative (got %s)' % (key, params[key]))
    for key in ('slow_query_limit', 'scan_count'):
        if params.get(key) is not None and params[key] < 1:
            problems.append('%s must be at least 1 (got %s)' % (key, params[key]))
    return problems


def connect(options):
    """Autocommit connection (VACUUM and REINDEX CONCURRENTLY refuse transactions).

    options: the common connection options (postgres_common), the only way this module connects.
    """
    kwargs = libpq_params(options)
    kwargs.update(autocommit=True, application_name='victor_db_maintenance')
    if 'connect_timeout' in kwargs:
        kwargs['connect_timeout'] = int(kwargs['connect_timeout'])
    secrets = [options.get('login_password')]
    try:
        return psycopg.connect('', **kwargs)
    except psycopg.ProgrammingError as exc:
        raise MaintenanceError('invalid PostgreSQL connection string: %s' % redact(_first_line(exc), secrets))
    except psycopg.Error as exc:
        raise MaintenanceError('cannot connect to PostgreSQL: %s' % redact(_first_line(exc), secrets))


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _rows(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        if cur.description is None:
            return []
        names = [col.name for col in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def _render(conn, query):
    return query.as_string(conn) if hasattr(query, 'as_string') else query


def _table_ident(name):
    """'schema.table' or 'table' -> a quoted sql.Identifier."""
    parts = name.split('.', 1)
    return sql.Identifier(*parts)


def _interval_seconds(value):
    return round(value.total_seconds(), 3) if value is not None else None


def table_stats(conn):
    """Live/dead tuples, dead %, sizes and last (auto)vacuum/analyze per user table."""
    rows = _rows(conn, """
        SELECT schemaname || '.' || relname AS table, n_live_tup AS live_tuples, n_dead_tup AS dead_tuples,
               CASE WHEN n_live_tup + n_dead_tup > 0
                    THEN round(100.0 * n_dead_tup / (n_live_tup + n_dead_tup), 2) ELSE 0 END AS dead_pct,
               pg_total_relation_size(relid) AS total_bytes, pg_relation_size(relid) AS table_bytes,
               last_vacuum, last_autovacuum, last_analyze, last_autoanalyze
        FROM pg_stat_user_tables ORDER BY n_dead_tup DESC, schemaname, relname""")
    for row in rows:
        row['dead_pct'] = float(row['dead_pct'])
        for key in ('last_vacuum', 'last_autovacuum', 'last_analyze', 'last_autoanalyze'):
            row[key] = row[key].isoformat() if row[key] is not None else None
    size = _rows(conn, 'SELECT current_database() AS database, pg_database_size(current_database()) AS size_bytes')[0]
    return {'database': size['database'], 'database_size': size['size_bytes'], 'tables': rows,
            'dead_tuples_total': sum(r['dead_tuples'] for r in rows)}


def _targets(conn, tables, min_dead_tuples):
    if tables:
        return list(tables), 'listed tables'
    rows = _rows(conn, "SELECT schemaname || '.' || relname AS t FROM pg_stat_user_tables WHERE n_dead_tup >= %s "
                       "ORDER BY n_dead_tup DESC", (int(min_dead_tuples),))
    return [row['t'] for row in rows], 'tables with at least %d dead tuples' % int(min_dead_tuples)


def vacuum(conn, tables, min_dead_tuples, check_mode=False):
    """VACUUM (ANALYZE) the listed tables, or every table with at least min_dead_tuples dead tuples."""
    targets, why = _targets(conn, tables, min_dead_tuples)
    queries = [sql.SQL('VACUUM (ANALYZE) ') + _table_ident(t) for t in targets]
    result = {'selected': why, 'tables': targets, 'queries': [_render(conn, q) for q in queries]}
    before = {r['table']: r['dead_tuples'] for r in table_stats(conn)['tables']}
    result['dead_tuples_before'] = sum(before.get(t, 0) for t in targets)
    if not queries:
        result.update(changed=False, skipped='no %s' % why)
        return result
    if _run_queries(conn, queries, result, check_mode):
        after = {r['table']: r['dead_tuples'] for r in table_stats(conn)['tables']}
        result['dead_tuples_after'] = sum(after.get(t, 0) for t in targets)
    return result


def analyze(conn, tables, check_mode=False):
    queries = [sql.SQL('ANALYZE ') + _table_ident(t) for t in tables] if tables else [sql.SQL('ANALYZE')]
    result = {'queries': [_render(conn, q) for q in queries]}
    _run_queries(conn, queries, result, check_mode)
    return result


def server_version(conn):
    return conn.info.server_version


def reindex(conn, tables, scope, concurrently, check_mode=False):
    """REINDEX TABLE each listed table, or the current DATABASE; CONCURRENTLY from PostgreSQL 12."""
    use_concurrently = bool(concurrently) and server_version(conn) >= 120000
    keyword = sql.SQL(' CONCURRENTLY ') if use_concurrently else sql.SQL(' ')
    if scope == 'database':
        dbname = _rows(conn, 'SELECT current_database() AS d')[0]['d']
        queries = [sql.SQL('REINDEX DATABASE') + keyword + sql.Identifier(dbname)]
    else:
        if not tables:
            raise MaintenanceError('reindex with reindex_scope=table needs tables')
        queries = [sql.SQL('REINDEX TABLE') + keyword + _table_ident(t) for t in tables]
    result = {'scope': scope, 'concurrently': use_concurrently, 'queries': [_render(conn, q) for q in queries]}
    _run_queries(conn, queries, result, check_mode)
    return result


def _run_queries(conn, queries, result, check_mode):
    """Run the write queries (or only say they would run); True when they ran."""
    result['changed'] = True
    if check_mode:
        result['would_run'] = True
        return False
    for query in queries:
        _execute(conn, query)
    return True


def _execute(conn, query):
    try:
        with conn.cursor() as cur:
            cur.execute(query)
    except psycopg.Error as exc:
        raise MaintenanceError('%s failed: %s' % (_render(conn, query), _first_line(exc)))


LOCKS_QUERY = """
    SELECT a.pid, a.usename AS user, a.state, left(a.query, 500) AS query,
           extract(epoch FROM now() - coalesce(a.query_start, a.backend_start))::float AS waiting_seconds,
           pg_blocking_pids(a.pid) AS blocked_by
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND cardinality(pg_blocking_pids(a.pid)) > 0
    ORDER BY a.pid"""

SESSION_QUERY = """
    SELECT a.pid, a.usename AS user, a.application_name, a.state, left(a.query, 500) AS query,
           coalesce(r.rolsuper, false) AS superuser,
           coalesce(pg_has_role(a.usesysid, 'MEMBER') OR pg_has_role('pg_signal_backend', 'MEMBER'), false) AS signalable,
           extract(epoch FROM now() - a.state_change)::float AS state_seconds,
           extract(epoch FROM now() - a.xact_start)::float AS xact_seconds
    FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
    WHERE a.pid = ANY(%s)"""


def locks(conn):
    """Blocked sessions of the current database with the pids (and queries) blocking them."""
    blocked = _rows(conn, LOCKS_QUERY)
    blocker_pids = sorted({pid for row in blocked for pid in row['blocked_by']})
    blockers = _rows(conn, SESSION_QUERY + ' ORDER BY a.pid', (blocker_pids,)) if blocker_pids else []
    for row in blocked:
        row['waiting_seconds'] = round(row['waiting_seconds'] or 0.0, 3)
    return {'blocked': blocked, 'blocking': blockers, 'blocked_count': len(blocked)}


def clear_locks(conn, threshold, check_mode=False):
    """End the sessions that hold up this database: the one rule of the collection (the runbook
    database_connection_failed calls this too).

    A session is ended when it is in the current database, is not our own, and either has been
    idle in transaction for longer than threshold seconds, or blocks another session of this
    database while its own transaction has been open for longer than threshold seconds.
    Spared (listed, never signalled): superusers' sessions, and sessions of roles the login
    role may not signal (neither a member of their role nor of pg_signal_backend).  Check
    mode lists them only.
    """
    threshold = float(threshold)
    idle = _rows(conn, """
        SELECT a.pid FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
          AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
          AND now() - a.state_change > make_interval(secs => %s)""", (threshold,))
    blockers = _rows(conn, """
        SELECT DISTINCT b.pid, w.pid AS blocked_pid FROM pg_stat_activity w
        CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid) JOIN pg_stat_activity b ON b.pid = bp.pid
        WHERE w.datname = current_database() AND b.datname = current_database() AND b.pid <> pg_backend_pid()
          AND now() - coalesce(b.xact_start, b.query_start, b.backend_start) > make_interval(secs => %s)
        ORDER BY b.pid, w.pid""", (threshold,))
    reasons = {}
    for row in idle:
        reasons[row['pid']] = 'idle in transaction for more than %ss' % threshold
    for row in blockers:
        reasons.setdefault(row['pid'], 'blocks pid %d, transaction open for more than %ss' % (row['blocked_pid'], threshold))
    candidates = _rows(conn, SESSION_QUERY + ' AND a.datname = current_database() ORDER BY a.pid',
                       (sorted(reasons),)) if reasons else []
    selected, spared, foreign = [], [], []
    for row in candidates:
        row['reason'] = reasons[row['pid']]
        row['state_seconds'] = round(row['state_seconds'] or 0.0, 3)
        row['xact_seconds'] = round(row['xact_seconds'] or 0.0, 3)
        if row['superuser']:
            spared.append(row)
        elif not row['signalable']:
            foreign.append(row)
        else:
            selected.append(row)
    result = {'threshold': threshold, 'sessions': selected, 'spared_superusers': spared, 'spared_other_roles': foreign,
              'terminated': []}
    if check_mode:
        result.update(changed=bool(selected), would_terminate=[row['pid'] for row in selected])
        return result
    for row in selected:
        done = _rows(conn, 'SELECT pg_terminate_backend(%s) AS ok', (row['pid'],))[0]['ok']
        if done:
            result['terminated'].append(row['pid'])
    result['changed'] = bool(result['terminated'])
    return result


def slow_queries(conn, limit):
    """Top queries by total time from pg_stat_statements, or a clear message when it is missing."""
    installed = _rows(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'")
    if not installed:
        return {'available': False, 'queries': [],
                'message': 'pg_stat_statements is not installed in this database: add it to shared_preload_libraries, '
                           'restart PostgreSQL and run CREATE EXTENSION pg_stat_statements'}
    try:
        rows = _rows(conn, """
            SELECT left(query, 500) AS query, calls, round(total_exec_time::numeric, 3)::float AS total_ms,
                   round(mean_exec_time::numeric, 3)::float AS mean_ms, rows
            FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            ORDER BY total_exec_time DESC LIMIT %s""", (int(limit),))
    except psycopg.Error as exc:
        return {'available': False, 'queries': [], 'message': 'pg_stat_statements is installed but unusable: %s' % _first_line(exc)}
    return {'available': True, 'version': installed[0]['extversion'], 'queries': rows}


def pool_stats(conn):
    """Connections used vs max_connections, per state and per database."""
    settings = _rows(conn, "SELECT current_setting('max_connections')::int AS max_connections, "
                           "current_setting('superuser_reserved_connections')::int AS reserved")[0]
    per_state = _rows(conn, "SELECT coalesce(state, 'background') AS state, count(*) AS count FROM pg_stat_activity "
                            "WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1")
    per_db = _rows(conn, "SELECT datname AS database, count(*) AS count FROM pg_stat_activity "
                         "WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1")
    used = sum(row['count'] for row in per_state)
    usable = settings['max_connections'] - settings['reserved']
    return {'max_connections': settings['max_connections'], 'superuser_reserved_connections': settings['reserved'],
            'used': used, 'available': usable - used, 'used_pct': round(100.0 * used / usable, 2) if usable > 0 else 100.0,
            'by_state': {row['state']: row['count'] for row in per_state},
            'by_database': {row['database']: row['count'] for row in per_db}}


def run_operations(options, operations, check_mode, tables, reindex_scope, concurrently, min_dead_tuples, lock_threshold,
                   slow_query_limit):
    """Run the operations in order on one connection (options: the module's parameters); returns (changed, results)."""
    conn = connect(options)
    results = {}
    changed = False
    try:
        for operation in operations:
            with Timer() as timer:
                try:
                    if operation == 'stats':
                        result = table_stats(conn)
                    elif operation == 'vacuum':
                        result = vacuum(conn, tables, min_dead_tuples, check_mode)
                    elif operation == 'analyze':
                        result = analyze(conn, tables, check_mode)
                    elif operation == 'reindex':
                        result = reindex(conn, tables, reindex_scope, concurrently, check_mode)
                    elif operation == 'locks':
                        result = locks(conn)
                    elif operation == 'clear_locks':
                        result = clear_locks(conn, lock_threshold, check_mode)
                    elif operation == 'slow_queries':
                        result = slow_queries(conn, slow_query_limit)
                    else:
                        result = pool_stats(conn)
                except MaintenanceError as exc:
                    exc.results = results
                    raise
                except psycopg.Error as exc:
                    error = MaintenanceError('%s failed: %s' % (operation, _first_line(exc)))
                    error.results = results
                    raise error
            result['duration'] = timer.seconds
            result.setdefault('changed', False)
            changed = changed or result['changed']
            results[operation] = result
    finally:
        conn.close()
    return changed, results
