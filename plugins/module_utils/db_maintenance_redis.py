# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis cache maintenance: hit-rate/memory/eviction stats and clear-by-pattern with SCAN + UNLINK (never KEYS).

The functions take every option's value from the caller: defaults live in victor_db_maintenance's argument
spec, except the Redis host and port, whose options (login_host, login_port) PostgreSQL shares; unset, they
are DEFAULT_HOST and DEFAULT_PORT (the module's documentation says so).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.victor.ops.plugins.module_utils.db_maintenance import MaintenanceError, Timer
from ansible_collections.victor.ops.plugins.module_utils.redact import redact

try:
    import redis
    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the managed node
    redis = None
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = _exc

DEFAULT_HOST = '127.0.0.1'
DEFAULT_PORT = 6379


def connect(host, port, password, db, user, tls, connect_timeout):
    """A client whose every wait (connect, each reply) ends after connect_timeout seconds, without retries.

    redis-py 6+ retries a timed-out command 3 times with backoff by default, which would
    multiply the wait: a server that accepts and never answers must fail in connect_timeout.
    """
    host, port = host or DEFAULT_HOST, int(port or DEFAULT_PORT)
    kwargs = {}
    try:
        from redis.backoff import NoBackoff  # pylint: disable=import-outside-toplevel
        from redis.retry import Retry  # pylint: disable=import-outside-toplevel
        kwargs['retry'] = Retry(NoBackoff(), 0)
    except ImportError:  # redis-py 3 has no retries to switch off
        pass
    client = redis.Redis(host=host, port=port, db=int(db), username=user or None,
                         password=password or None, ssl=bool(tls), socket_timeout=float(connect_timeout),
                         socket_connect_timeout=float(connect_timeout), **kwargs)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise MaintenanceError(redact('cannot connect to Redis at %s:%s: %s' % (host, port, exc), [password]))
    return client


def stats(client):
    """Hit rate, memory, evictions and keys from INFO."""
    info = client.info()
    hits = int(info.get('keyspace_hits', 0))
    misses = int(info.get('keyspace_misses', 0))
    return {
        'redis_version': info.get('redis_version'),
        'keyspace_hits': hits,
        'keyspace_misses': misses,
        'hit_rate_pct': round(100.0 * hits / (hits + misses), 2) if hits + misses else None,
        'used_memory': int(info.get('used_memory', 0)),
        'used_memory_human': info.get('used_memory_human'),
        'maxmemory': int(info.get('maxmemory', 0)),
        'maxmemory_policy': info.get('maxmemory_policy'),
        'evicted_keys': int(info.get('evicted_keys', 0)),
        'expired_keys': int(info.get('expired_keys', 0)),
        'connected_clients': int(info.get('connected_clients', 0)),
        'keys': client.dbsize(),
    }


def clear(client, pattern, check_mode, scan_count):
    """Delete keys matching pattern with SCAN + UNLINK in batches; check mode only counts them."""
    if not pattern:
        raise MaintenanceError("clear needs a pattern (use '*' explicitly to clear the whole database)")
    matched = 0
    removed = 0
    batch = []
    for key in client.scan_iter(match=pattern, count=int(scan_count)):
        matched += 1
        if check_mode:
            continue
        batch.append(key)
        if len(batch) >= int(scan_count):
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    result = {'pattern': pattern, 'matched': matched, 'removed': removed, 'changed': (matched if check_mode else removed) > 0}
    if check_mode:
        result['would_remove'] = matched
    return result


def run_operations(conn_params, operations, check_mode, pattern, scan_count):
    """Run the operations in order on one client (conn_params: connect()'s arguments); returns (changed, results)."""
    client = connect(**conn_params)
    results = {}
    changed = False
    try:
        for operation in operations:
            with Timer() as timer:
                try:
                    result = stats(client) if operation == 'stats' else clear(client, pattern, check_mode, scan_count)
                except redis.RedisError as exc:
                    error = MaintenanceError(redact('%s failed: %s' % (operation, exc), [conn_params.get('password')]))
                    error.results = results
                    raise error
            result['duration'] = timer.seconds
            result.setdefault('changed', False)
            changed = changed or result['changed']
            results[operation] = result
    finally:
        client.close()
    return changed, results
