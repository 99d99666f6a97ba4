#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: victor_db_maintenance
short_description: Maintain Victor's SQLite, PostgreSQL and Redis stores
version_added: "0.1.0"
description:
  - Runs maintenance operations on one of Victor's data stores, in the order given, and returns
    structured results (sizes before and after, durations, the statements run).
  - C(sqlite) (Victor's default, C(victor.db), the cache database, C(project.db)) -
    O(operations) from C(stats), C(integrity_check), C(quick_check), C(wal_checkpoint) (TRUNCATE),
    C(analyze), C(optimize) (PRAGMA optimize) and C(vacuum) (in place, or VACUUM INTO a copy that is
    checked and swapped in). A busy timeout bounds every wait; a database locked by another connection
    gives a clear C(database is busy) result instead of a hang. C(clear_locks) (run first) ends the
    processes outside the systemd unit O(service) that hold the database or its C(-wal)/C(-shm) open
    (SIGTERM, then SIGKILL after O(lock_grace) seconds; never the unit's own processes).
  - C(postgresql) - C(stats) (dead tuples and sizes per table), C(vacuum) (VACUUM (ANALYZE)), C(analyze),
    C(reindex) (table or database, CONCURRENTLY where the server supports it), C(locks) (blocked and
    blocking sessions with their queries), C(clear_locks) (terminates sessions of this database that have
    been idle in transaction for longer than O(lock_threshold), or that block another session of it with a
    transaction open for longer than O(lock_threshold); never its own session, never superusers, never
    roles the login role may not signal; the runbook database_connection_failed uses the same rule),
    C(slow_queries) (from pg_stat_statements, with a clear message when the extension is missing) and C(pool_stats) (connections used against max_connections).
  - C(redis) - C(stats) (hit rate, memory, evictions from INFO) and C(clear) (keys matching O(pattern),
    removed with SCAN and UNLINK, never KEYS).
  - Connects with the collection's one set of connection options (O(login_host), O(login_db) ...); a PostgreSQL
    URL such as Victor's C(VICTOR_CHECKPOINT_DB_URL) becomes these options with the C(victor.ops.postgres_url_options)
    filter (the runbook database_connection_failed does so).
  - Read-only operations never report C(changed). Writing operations report C(changed) only when they
    wrote something (a vacuum below the fragmentation threshold, an ANALYZE that left statistics equal,
    or an empty WAL do not).
author:
  - victor.ops maintainers (@victor-ops)
requirements:
  - Python 3 with the sqlite3 standard module for O(engine=sqlite).
  - psycopg 3 (Debian C(python3-psycopg)) for O(engine=postgresql).
  - redis-py (Debian C(python3-redis)) for O(engine=redis).
extends_documentation_fragment:
  - victor.ops.attributes
  - victor.ops.postgres
attributes:
  check_mode:
    support: full
    details:
      - Nothing is written; each writing operation returns C(would_run) and the statements it would run.
      - SQLite databases are opened read-only in a way that cannot checkpoint the WAL or create C(-wal)/C(-shm)
        (C(mode=ro&readonly_shm=1), or C(immutable=1) when there is no C(-wal)); so are runs of only
        C(stats), C(integrity_check) and C(quick_check).
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: >-
      Vacuums run only above the fragmentation or dead-tuple thresholds and ANALYZE reports changed only when
      statistics moved, so a second run right after the first changes nothing; REINDEX and explicit table
      vacuums always run.
options:
  engine:
    description: Which store to maintain.
    type: str
    required: true
    choices: [sqlite, postgresql, redis]
  operations:
    description:
      - Operations to run, in this order. Each must be supported by O(engine) (see the description).
    type: list
    elements: str
    required: true
    choices: [analyze, clear, clear_locks, integrity_check, locks, optimize, pool_stats, quick_check, reindex,
              slow_queries, stats, vacuum, wal_checkpoint]
  path:
    description: SQLite database file (must exist; the module never creates one). Required for O(engine=sqlite).
    type: path
  busy_timeout:
    description: Seconds SQLite waits for a lock held by another connection before giving up with a busy result.
    type: float
    default: 5.0
  on_busy:
    description:
      - What a busy SQLite database does. C(fail) fails the task with C(database is busy); C(skip) returns
        O(ignore:busy=true) and C(changed=false) without failing, for runs that must go on.
    type: str
    default: fail
    choices: [fail, skip]
  vacuum_mode:
    description:
      - C(in_place) runs VACUUM. C(into) runs VACUUM INTO a temporary file, checks it with quick_check and
        swaps it in; this needs every other connection closed (stop the service first) and fails as busy otherwise.
    type: str
    default: in_place
    choices: [in_place, into]
  vacuum_min_fragmentation:
    description: SQLite VACUUM runs only when free pages make up at least this percentage of the file (and there is at least one).
    type: float
    default: 0.0
  row_counts:
    description: Whether SQLite C(stats) counts the rows of every table.
    type: bool
    default: true
  login_host:
    description:
      - PostgreSQL host (see the connection options below), or the Redis host (default C(127.0.0.1)).
      - Mutually exclusive with O(login_unix_socket).
  login_port:
    description:
      - Port of PostgreSQL or Redis, 1 to 65535.
      - Unset, each driver takes its own default (PostgreSQL 5432, Redis 6379); hence no default here (the other modules
        that connect to PostgreSQL default to 5432).
    default: null
  login_user:
    description: PostgreSQL role, or Redis ACL user.
  login_password:
    description:
      - PostgreSQL or Redis password; passed to the driver, never on a command line, never logged.
  login_db:
    description:
      - PostgreSQL database (Victor's). C(clear_locks), C(locks) and C(reindex) act only on this database.
      - Renamed from C(database) before any release of this module; C(database) stays an alias.
  connect_timeout:
    description:
      - Seconds to wait for a PostgreSQL or Redis connection, 1 to 3600 (libpq would wait forever at 0).
      - For Redis also the longest wait for each reply; a timed-out command is not retried.
  tables:
    description:
      - PostgreSQL tables (C(table) or C(schema.table)) for C(vacuum), C(analyze) and C(reindex).
      - Without it C(vacuum) picks every table with at least O(min_dead_tuples) dead tuples and C(analyze) the whole database.
    type: list
    elements: str
    default: []
  min_dead_tuples:
    description: PostgreSQL C(vacuum) without O(tables) runs on tables with at least this many dead tuples.
    type: int
    default: 1
  reindex_scope:
    description: PostgreSQL C(reindex) of O(tables) (C(table)) or of the whole O(login_db) (C(database)).
    type: str
    default: table
    choices: [table, database]
  concurrently:
    description: Use REINDEX CONCURRENTLY when the server supports it (PostgreSQL 12 and later).
    type: bool
    default: true
  lock_threshold:
    description:
      - Seconds a session may stay idle in transaction, or block others with its transaction open, before
        C(clear_locks) terminates it.
      - Must be 0 or more.
      - The runbook database_connection_failed (role C(victor.ops.victor_runbook)) passes its
        C(victor_runbook_pg_lock_threshold) here; that variable's default is this one.
    type: float
    default: 300
  service:
    description: systemd unit of Victor's API; SQLite C(clear_locks) never signals its processes.
    type: str
    default: victor-api
  lock_grace:
    description: Seconds a process gets after SIGTERM before SIGKILL (SQLite C(clear_locks); 0 or more).
    type: float
    default: 5
  slow_query_limit:
    description: How many statements C(slow_queries) returns.
    type: int
    default: 10
  redis_db:
    description: Redis database number.
    type: int
    default: 0
  redis_tls:
    description: Connect to Redis with TLS.
    type: bool
    default: false
  pattern:
    description: Redis key pattern for C(clear) (SCAN MATCH syntax, e.g. C(victor:cache:*)). Required for C(clear).
    type: str
  scan_count:
    description: COUNT hint for SCAN and the UNLINK batch size.
    type: int
    default: 500
seealso:
  - name: SQLite VACUUM
    description: What VACUUM and VACUUM INTO do.
    link: https://www.sqlite.org/lang_vacuum.html
  - name: PostgreSQL routine vacuuming
    description: Why dead tuples need VACUUM.
    link: https://www.postgresql.org/docs/current/routine-vacuuming.html
"""

EXAMPLES = r"""
- name: Check, checkpoint, analyze and vacuum Victor's SQLite database
  victor.ops.victor_db_maintenance:
    engine: sqlite
    path: /var/lib/victor/.victor/victor.db
    operations: [stats, quick_check, wal_checkpoint, analyze, vacuum]
    vacuum_min_fragmentation: 10
    on_busy: skip

- name: Vacuum tables with dead tuples and list slow queries
  victor.ops.victor_db_maintenance:
    engine: postgresql
    login_host: db.internal
    login_user: victor
    login_password: "{{ vault_victor_db_password }}"
    login_db: victor
    operations: [stats, vacuum, slow_queries, pool_stats]

- name: Terminate sessions blocking Victor for more than 10 minutes (check mode lists them)
  victor.ops.victor_db_maintenance:
    engine: postgresql
    login_host: db.internal
    login_user: postgres
    login_password: "{{ vault_postgres_password }}"
    login_db: victor
    operations: [locks, clear_locks]
    lock_threshold: 600

- name: Reindex two tables concurrently
  victor.ops.victor_db_maintenance:
    engine: postgresql
    login_host: db.internal
    login_db: victor
    login_user: victor
    operations: [reindex]
    tables: [public.conversations, public.messages]

- name: Cache statistics and clearing Victor's response cache
  victor.ops.victor_db_maintenance:
    engine: redis
    login_host: 127.0.0.1
    operations: [stats, clear]
    pattern: "victor:cache:*"
"""

RETURN = r"""
engine:
  description: The engine the operations ran on.
  returned: always
  type: str
  sample: sqlite
operations:
  description: The operations run, in order (duplicates removed).
  returned: always
  type: list
  elements: str
  sample: [stats, vacuum]
busy:
  description: True when an SQLite database stayed locked past O(busy_timeout) (with O(on_busy=skip) the task does not fail).
  returned: always
  type: bool
  sample: false
msg:
  description: A one-line summary, or why the database was busy.
  returned: always
  type: str
  sample: "sqlite: 2 operations on /var/lib/victor/.victor/victor.db"
report:
  description:
    - One entry per operation with its own keys, each with C(duration) in seconds and C(changed).
    - SQLite C(stats) (and C(stats_after) when writing operations followed it) has C(file_size), C(wal_size),
      C(page_count), C(freelist_count), C(fragmentation_pct), C(reclaimable_bytes), C(journal_mode) and C(tables)
      (rows per table). C(vacuum) has C(size_before), C(size_after), C(reclaimed_bytes), C(fragmentation_pct_before)
      and C(_after), or C(skipped). C(wal_checkpoint) has C(wal_size_before) and C(wal_size_after). C(integrity_check)
      and C(quick_check) have C(ok) and C(messages).
    - PostgreSQL C(stats) has C(database_size) and C(tables) (C(live_tuples), C(dead_tuples), C(dead_pct), sizes,
      last vacuum/analyze times); C(vacuum), C(analyze), C(reindex) have C(queries); C(locks) has C(blocked) and
      C(blocking); SQLite C(clear_locks) has C(holders), C(terminated), C(killed) (and C(would_terminate) in check mode);
      PostgreSQL C(clear_locks) has C(sessions) (each with its C(reason)), C(terminated), C(spared_superusers),
      C(spared_other_roles) (and C(would_terminate) in check mode); C(slow_queries) has C(available), C(queries) and
      C(message) when unavailable; C(pool_stats) has
      C(max_connections), C(used), C(used_pct), C(by_state), C(by_database).
    - Redis C(stats) has C(hit_rate_pct), C(used_memory), C(evicted_keys), C(keys); C(clear) has C(matched) and
      C(removed) (C(would_remove) in check mode).
  returned: always
  type: dict
  sample:
    stats:
      file_size: 1200128
      page_count: 293
      freelist_count: 210
      fragmentation_pct: 71.67
      tables: {sessions: 120}
      duration: 0.002
      changed: false
    vacuum:
      mode: in_place
      size_before: 1200128
      size_after: 339968
      reclaimed_bytes: 860160
      changed: true
      duration: 0.031
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.victor.ops.plugins.module_utils.db_maintenance import (
    ALL_OPERATIONS,
    DatabaseBusy,
    MaintenanceError,
    check_numbers,
    check_operations,
)
from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_postgres as pg
from ansible_collections.victor.ops.plugins.module_utils.postgres_common import postgres_common_argument_spec
from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_redis as rd
from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_sqlite as lite


def argument_spec():
    spec = postgres_common_argument_spec()
    spec['login_port']['default'] = None  # PostgreSQL 5432, Redis 6379: each driver's own default
    spec.update(
        engine=dict(type='str', required=True, choices=['sqlite', 'postgresql', 'redis']),
        operations=dict(type='list', elements='str', required=True, choices=ALL_OPERATIONS),
        path=dict(type='path'),
        busy_timeout=dict(type='float', default=5.0),
        on_busy=dict(type='str', default='fail', choices=['fail', 'skip']),
        vacuum_mode=dict(type='str', default='in_place', choices=['in_place', 'into']),
        vacuum_min_fragmentation=dict(type='float', default=0.0),
        row_counts=dict(type='bool', default=True),
        tables=dict(type='list', elements='str', default=[]),
        min_dead_tuples=dict(type='int', default=1),
        reindex_scope=dict(type='str', default='table', choices=['table', 'database']),
        concurrently=dict(type='bool', default=True),
        lock_threshold=dict(type='float', default=300),
        service=dict(type='str', default='victor-api'),
        lock_grace=dict(type='float', default=5.0),
        slow_query_limit=dict(type='int', default=10),
        redis_db=dict(type='int', default=0),
        redis_tls=dict(type='bool', default=False),
        pattern=dict(type='str'),
        scan_count=dict(type='int', default=500),
    )
    return spec


def _run(module, operations):
    p = module.params
    check_numbers(p)
    if p['engine'] == 'sqlite':
        if not p['path']:
            raise MaintenanceError('path is required for engine sqlite')
        cleared = {}
        if 'clear_locks' in operations:  # first: the other operations need the lock it frees
            cleared['clear_locks'] = lite.clear_locks(p['path'], p['service'], p['lock_grace'], module.check_mode)
            operations = [op for op in operations if op != 'clear_locks']
        changed, results = lite.run_operations(p['path'], operations, p['busy_timeout'], module.check_mode, p['vacuum_mode'],
                                               p['vacuum_min_fragmentation'], p['row_counts']) if operations else (False, {})
        results.update(cleared)
        return changed or bool(cleared.get('clear_locks', {}).get('changed')), results
    problems = pg.option_problems(p)
    if problems:
        raise MaintenanceError('; '.join(problems))
    if p['engine'] == 'postgresql':
        if not pg.HAS_PSYCOPG:
            module.fail_json(msg=missing_required_lib('psycopg (Debian package python3-psycopg)'),
                             exception=str(pg.PSYCOPG_IMPORT_ERROR))
        return pg.run_operations(p, operations, module.check_mode, p['tables'], p['reindex_scope'], p['concurrently'],
                                 p['min_dead_tuples'], p['lock_threshold'], p['slow_query_limit'])
    if not rd.HAS_REDIS:
        module.fail_json(msg=missing_required_lib('redis (Debian package python3-redis)'), exception=str(rd.REDIS_IMPORT_ERROR))
    if 'clear' in operations and not p['pattern']:
        raise MaintenanceError("clear needs a pattern (use '*' explicitly to clear the whole database)")
    params = dict(host=p['login_host'], port=p['login_port'], password=p['login_password'], db=p['redis_db'],
                  user=p['login_user'], tls=p['redis_tls'], connect_timeout=p['connect_timeout'])
    return rd.run_operations(params, operations, module.check_mode, p['pattern'], p['scan_count'])


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    engine = module.params['engine']
    target = module.params['path'] or module.params['login_db'] or module.params['login_host'] or engine
    base = dict(changed=False, engine=engine, operations=module.params['operations'], busy=False, report={})
    try:
        operations = check_operations(engine, module.params['operations'])
        base['operations'] = operations
        changed, results = _run(module, operations)
    except DatabaseBusy as exc:
        base['report'] = getattr(exc, 'results', {})
        base['busy'] = True
        if module.params['on_busy'] == 'skip':
            module.exit_json(msg=str(exc), **base)
        module.fail_json(msg=str(exc), **base)
    except MaintenanceError as exc:
        base['report'] = getattr(exc, 'results', {})
        module.fail_json(msg=str(exc), **base)
    base.update(changed=changed, report=results)
    module.exit_json(msg='%s: %d operation(s) on %s%s' % (engine, len(operations), target, ' (check mode)' if module.check_mode else ''),
                     **base)


if __name__ == '__main__':
    main()
