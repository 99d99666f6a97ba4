# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite maintenance for Victor's state databases (victor.db, cache, project.db).

Every function takes an open connection made by connect(); nothing here calls the
module API, so unit tests drive it directly against real database files. The functions take every
option's value from the caller: defaults live in victor_db_maintenance's argument spec only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sqlite3

try:
    from urllib.parse import quote as _url_quote
except ImportError:  # Python 2: the module targets Python 3 hosts
    from urllib import quote as _url_quote

from ansible_collections.victor.ops.plugins.module_utils.db_maintenance import (
    DatabaseBusy,
    MaintenanceError,
    Timer,
)
from ansible_collections.victor.ops.plugins.module_utils import host_info
from ansible_collections.victor.ops.plugins.module_utils import sqlite_ro

SQLITE_HEADER = b'SQLite format 3\x00'
WRITE_OPERATIONS = ('wal_checkpoint', 'analyze', 'optimize', 'vacuum')
READ_OPERATIONS = ('stats', 'integrity_check', 'quick_check')


def quote_identifier(name):
    """Quote an SQLite identifier ("a""b")."""
    return '"%s"' % name.replace('"', '""')


def _is_busy(exc):
    text = str(exc).lower()
    return 'locked' in text or 'busy' in text


def _busy(path, busy_timeout, what):
    return DatabaseBusy('database is busy: %s stayed locked by another connection for more than %ss (%s)'
                        % (path, busy_timeout, what))


def connect(path, busy_timeout, readonly=False):
    """Open an existing SQLite database with a busy timeout; never creates a file.

    readonly (check mode, read-only operations) opens it through sqlite_ro: nothing is written,
    checkpointed or created, not even -shm.
    """
    if not path:
        raise MaintenanceError('path is required for engine sqlite')
    if not os.path.exists(path):
        raise MaintenanceError('SQLite database %s does not exist' % path)
    if not os.path.isfile(path):
        raise MaintenanceError('SQLite database %s is not a regular file' % path)
    try:
        with open(path, 'rb') as handle:
            header = handle.read(16)
    except (IOError, OSError) as exc:
        raise MaintenanceError('cannot read %s: %s' % (path, exc))
    if header and header != SQLITE_HEADER:
        raise MaintenanceError('%s is not an SQLite database (bad header)' % path)
    try:
        if readonly:
            conn = sqlite_ro.connect_readonly(path, busy_timeout, isolation_level=None)[0]
        else:
            conn = sqlite3.connect('file:%s?mode=rw' % _url_quote(path),
                                   uri=True, timeout=float(busy_timeout), isolation_level=None)
        conn.execute('PRAGMA busy_timeout = %d' % int(float(busy_timeout) * 1000))
    except sqlite3.Error as exc:
        raise MaintenanceError('cannot open %s: %s' % (path, exc))
    return conn


def _files_size(path):
    total = 0
    for suffix in ('', '-wal'):
        try:
            total += os.path.getsize(path + suffix)
        except OSError:
            pass
    return total


def _wal_size(path):
    try:
        return os.path.getsize(path + '-wal')
    except OSError:
        return 0


def _run(conn, path, busy_timeout, statement, params=()):
    try:
        return conn.execute(statement, params).fetchall()
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise _busy(path, busy_timeout, statement)
        raise MaintenanceError('%s failed on %s: %s' % (statement, path, exc))
    except sqlite3.DatabaseError as exc:
        raise MaintenanceError('%s failed on %s: %s' % (statement, path, exc))


def _journal_mode(conn, path, busy_timeout):
    """PRAGMA journal_mode, except that an immutable (check-mode) connection of a WAL file says 'delete'."""
    mode = _run(conn, path, busy_timeout, 'PRAGMA journal_mode')[0][0]
    return 'wal' if sqlite_ro.is_wal(path) else mode


def stats(conn, path, busy_timeout, row_counts):
    """File size, pages, free pages, fragmentation % and row counts per table."""
    page_size = _run(conn, path, busy_timeout, 'PRAGMA page_size')[0][0]
    page_count = _run(conn, path, busy_timeout, 'PRAGMA page_count')[0][0]
    freelist = _run(conn, path, busy_timeout, 'PRAGMA freelist_count')[0][0]
    journal_mode = _journal_mode(conn, path, busy_timeout)
    tables = {}
    if row_counts:
        names = _run(conn, path, busy_timeout,
                     "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        for (name,) in names:
            tables[name] = _run(conn, path, busy_timeout, 'SELECT count(*) FROM %s' % quote_identifier(name))[0][0]
    return {
        'path': path,
        'file_size': os.path.getsize(path),
        'wal_size': _wal_size(path),
        'total_size': _files_size(path),
        'page_size': page_size,
        'page_count': page_count,
        'freelist_count': freelist,
        'reclaimable_bytes': freelist * page_size,
        'fragmentation_pct': round(100.0 * freelist / page_count, 2) if page_count else 0.0,
        'journal_mode': journal_mode,
        'tables': tables,
    }


def integrity(conn, path, busy_timeout, quick=False):
    """PRAGMA integrity_check / quick_check: ok is True when SQLite answers just 'ok'."""
    pragma = 'PRAGMA quick_check' if quick else 'PRAGMA integrity_check'
    rows = [row[0] for row in _run(conn, path, busy_timeout, pragma)]
    return {'ok': rows == ['ok'], 'messages': rows[:50]}


def _stat_snapshot(conn, path, busy_timeout):
    exists = _run(conn, path, busy_timeout, "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")[0][0]
    if not exists:
        return None
    return sorted(tuple(str(col) for col in row) for row in _run(conn, path, busy_timeout, 'SELECT tbl, idx, stat FROM sqlite_stat1'))


def wal_checkpoint(conn, path, busy_timeout, check_mode=False):
    """PRAGMA wal_checkpoint(TRUNCATE); changed when the WAL held frames. Busy when readers kept it."""
    before = _wal_size(path)
    mode = _journal_mode(conn, path, busy_timeout)
    result = {'journal_mode': mode, 'wal_size_before': before, 'statement': 'PRAGMA wal_checkpoint(TRUNCATE)'}
    if mode.lower() != 'wal':
        result.update(changed=False, skipped='journal_mode is %s, not wal' % mode, wal_size_after=before)
        return result
    if check_mode:
        result.update(changed=before > 0, would_run=True, wal_size_after=before)
        return result
    busy, log_frames, checkpointed = _run(conn, path, busy_timeout, 'PRAGMA wal_checkpoint(TRUNCATE)')[0]
    if busy:
        raise _busy(path, busy_timeout, 'wal_checkpoint(TRUNCATE) could not finish: other connections are reading or writing')
    result.update(changed=before > 0 or log_frames > 0, log_frames=log_frames, checkpointed_frames=checkpointed,
                  wal_size_after=_wal_size(path))
    return result


def analyze(conn, path, busy_timeout, check_mode=False, optimize=False):
    """ANALYZE or PRAGMA optimize; changed when sqlite_stat1 differs afterwards."""
    statement = 'PRAGMA optimize' if optimize else 'ANALYZE'
    before = _stat_snapshot(conn, path, busy_timeout)
    if check_mode:
        return {'statement': statement, 'would_run': True, 'changed': not optimize or before is None}
    _run(conn, path, busy_timeout, statement)
    after = _stat_snapshot(conn, path, busy_timeout)
    return {'statement': statement, 'changed': before != after, 'stat_rows': len(after or [])}


def vacuum(conn, path, busy_timeout, check_mode, mode, min_fragmentation):
    """VACUUM in place, or VACUUM INTO a temp file and swap it in (needs no other connection).

    Runs only when there are free pages and fragmentation reaches min_fragmentation %.
    Returns (result, conn): the swap reopens the connection on the new file.
    """
    before = stats(conn, path, busy_timeout, row_counts=False)
    result = {'mode': mode, 'size_before': before['file_size'], 'fragmentation_pct_before': before['fragmentation_pct'],
              'freelist_count_before': before['freelist_count']}
    if before['freelist_count'] == 0 or before['fragmentation_pct'] < float(min_fragmentation):
        result.update(changed=False, skipped='fragmentation %.2f%% (%d free pages) is below the threshold %.2f%%'
                      % (before['fragmentation_pct'], before['freelist_count'], float(min_fragmentation)),
                      size_after=before['file_size'])
        return result, conn
    statement = 'VACUUM' if mode == 'in_place' else 'VACUUM INTO ?'
    result['statement'] = statement
    if check_mode:
        result.update(changed=True, would_run=True, size_after=before['file_size'],
                      estimated_reclaim_bytes=before['reclaimable_bytes'])
        return result, conn
    if mode == 'in_place':
        _run(conn, path, busy_timeout, 'VACUUM')
        if before['journal_mode'].lower() == 'wal':
            # In WAL mode the vacuumed pages sit in the WAL until a checkpoint writes them back and truncates.
            result['checkpoint_busy'] = bool(_run(conn, path, busy_timeout, 'PRAGMA wal_checkpoint(TRUNCATE)')[0][0])
    else:
        conn = _vacuum_into_and_swap(conn, path, busy_timeout)
    after = stats(conn, path, busy_timeout, row_counts=False)
    result.update(changed=True, size_after=after['file_size'], fragmentation_pct_after=after['fragmentation_pct'],
                  freelist_count_after=after['freelist_count'], reclaimed_bytes=before['file_size'] - after['file_size'])
    return result, conn


def _vacuum_into_and_swap(conn, path, busy_timeout):
    tmp = '%s.vacuum-%d.tmp' % (path, os.getpid())
    if os.path.exists(tmp):
        os.unlink(tmp)
    try:
        _run(conn, path, busy_timeout, 'VACUUM INTO ?', (tmp,))
        check = sqlite3.connect('file:%s?mode=ro' % _url_quote(tmp), uri=True)
        try:
            verdict = [row[0] for row in check.execute('PRAGMA quick_check').fetchall()]
        finally:
            check.close()
        if verdict != ['ok']:
            raise MaintenanceError('the vacuumed copy %s failed quick_check: %s' % (tmp, '; '.join(verdict[:5])))
        mode = _run(conn, path, busy_timeout, 'PRAGMA journal_mode')[0][0]
        if mode.lower() == 'wal':
            busy = _run(conn, path, busy_timeout, 'PRAGMA wal_checkpoint(TRUNCATE)')[0][0]
            if busy:
                raise _busy(path, busy_timeout, 'cannot swap: other connections use the database')
        conn.close()
        if os.path.exists(path + '-wal') or os.path.exists(path + '-shm'):
            raise _busy(path, busy_timeout, 'cannot swap: another process still has the database open '
                        '(stop the service first, or use vacuum_mode=in_place)')
        if os.path.exists(path + '-journal'):
            raise _busy(path, busy_timeout, 'cannot swap: a rollback journal is present')
        info = os.stat(path)
        os.chmod(tmp, info.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, info.st_uid, info.st_gid)
        if mode.lower() == 'wal':
            fix = sqlite3.connect(tmp, isolation_level=None)
            try:
                fix.execute('PRAGMA journal_mode=WAL')
            finally:
                fix.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return connect(path, busy_timeout)


def run_operations(path, operations, busy_timeout, check_mode, vacuum_mode, min_fragmentation, row_counts):
    """Run the operations in order; returns (changed, results). Raises DatabaseBusy/MaintenanceError.

    When stats is asked for, it is taken before the first and after the last operation.
    """
    readonly = check_mode or all(op in READ_OPERATIONS for op in operations)
    conn = connect(path, busy_timeout, readonly)
    results = {}
    changed = False
    try:
        for operation in operations:
            try:
                result, conn = _one(conn, path, operation, busy_timeout, check_mode, vacuum_mode, min_fragmentation, row_counts, results)
            except MaintenanceError as exc:
                exc.results = results
                raise
            changed = changed or bool(result.get('changed'))
            results[operation] = result
        if 'stats' in operations and operations[-1] != 'stats' and any(op in WRITE_OPERATIONS for op in operations):
            results['stats_after'] = stats(conn, path, busy_timeout, row_counts)
    finally:
        conn.close()
        if not readonly:
            match_owner(path)
    return changed, results


def match_owner(path):
    """When run as root, give -wal/-shm files the database's owner, so Victor (another user) can still write."""
    if os.geteuid() != 0 or not os.path.exists(path):
        return
    info = os.stat(path)
    for suffix in ('-wal', '-shm'):
        try:
            extra = os.stat(path + suffix)
        except OSError:
            continue
        if (extra.st_uid, extra.st_gid) != (info.st_uid, info.st_gid):
            os.chown(path + suffix, info.st_uid, info.st_gid)


def _one(conn, path, operation, busy_timeout, check_mode, vacuum_mode, min_fragmentation, row_counts, results):
    with Timer() as timer:
        if operation == 'stats':
            result = stats(conn, path, busy_timeout, row_counts)
        elif operation in ('integrity_check', 'quick_check'):
            result = integrity(conn, path, busy_timeout, quick=operation == 'quick_check')
            if not result['ok']:
                results[operation] = result
                raise MaintenanceError('%s of %s found problems: %s' % (operation, path, '; '.join(result['messages'][:5])))
        elif operation == 'wal_checkpoint':
            result = wal_checkpoint(conn, path, busy_timeout, check_mode)
        elif operation in ('analyze', 'optimize'):
            result = analyze(conn, path, busy_timeout, check_mode, optimize=operation == 'optimize')
        else:
            result, conn = vacuum(conn, path, busy_timeout, check_mode, vacuum_mode, min_fragmentation)
    result['duration'] = timer.seconds
    return result, conn


def clear_locks(path, service, grace, check_mode=False):
    """SQLite's side of the collection's lock clearing: end the processes outside the systemd unit
    service that hold the database (or its -wal/-shm/-journal) open - SIGTERM, then SIGKILL after
    grace seconds, each re-checked before it is signalled.  The unit's own processes, pid 1 and
    this module are never signalled.  Check mode lists them only."""
    props = host_info.systemctl_show(service)
    unit_pids = set(host_info.pids_in_cgroup(props.get('ControlGroup', '')))
    holders = host_info.foreign_holders(path, unit_pids)
    result = {'service': service, 'unit_pids': sorted(unit_pids), 'holders': holders, 'terminated': [], 'killed': []}
    if check_mode:
        result.update(changed=bool(holders), would_terminate=[h['pid'] for h in holders])
        return result
    cleared = host_info.terminate_foreign_holders(path, unit_pids, grace, holders)
    result.update(terminated=[h['pid'] for h in cleared['terminated']], killed=cleared['killed'], changed=cleared['changed'])
    return result
