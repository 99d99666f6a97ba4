# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pieces of victor_db_maintenance: errors, timing, the per-engine operation lists."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import time

SQLITE_OPERATIONS = ('stats', 'integrity_check', 'quick_check', 'wal_checkpoint', 'analyze', 'optimize', 'vacuum', 'clear_locks')
POSTGRES_OPERATIONS = ('stats', 'vacuum', 'analyze', 'reindex', 'locks', 'clear_locks', 'slow_queries', 'pool_stats')
REDIS_OPERATIONS = ('stats', 'clear')

ENGINE_OPERATIONS = {
    'sqlite': SQLITE_OPERATIONS,
    'postgresql': POSTGRES_OPERATIONS,
    'redis': REDIS_OPERATIONS,
}

ALL_OPERATIONS = sorted(set(SQLITE_OPERATIONS) | set(POSTGRES_OPERATIONS) | set(REDIS_OPERATIONS))


class MaintenanceError(Exception):
    """A failure with a message meant for the user (no traceback)."""


class DatabaseBusy(MaintenanceError):
    """The database stayed locked by someone else for longer than the busy timeout."""


def check_operations(engine, operations):
    """Return the operations in run order, or raise MaintenanceError naming the first unsupported one."""
    supported = ENGINE_OPERATIONS.get(engine)
    if supported is None:
        raise MaintenanceError("unknown engine '%s' (supported: %s)" % (engine, ', '.join(sorted(ENGINE_OPERATIONS))))
    if not operations:
        raise MaintenanceError('operations must name at least one operation')
    for operation in operations:
        if operation not in supported:
            raise MaintenanceError("operation '%s' is not supported for engine %s (supported: %s)"
                                   % (operation, engine, ', '.join(supported)))
    seen = []
    for operation in operations:
        if operation not in seen:
            seen.append(operation)
    return seen


# option: (smallest allowed, whether the smallest itself is allowed); None values are not checked
NUMBER_LIMITS = {
    'busy_timeout': (0, False),
    'vacuum_min_fragmentation': (0, True),
    'lock_threshold': (0, True),
    'connect_timeout': (0, False),
    'min_dead_tuples': (0, True),
    'slow_query_limit': (0, False),
    'scan_count': (0, False),
    'lock_grace': (0, True),
    'redis_db': (0, True),
    'login_port': (0, False),
}


def check_numbers(params):
    """Refuse NaN, infinities and out-of-range numbers by option name (a NaN compares false everywhere)."""
    for name, (low, inclusive) in sorted(NUMBER_LIMITS.items()):
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            raise MaintenanceError('%s must be a finite number, got %s' % (name, value))
        if value < low or (value == low and not inclusive):
            raise MaintenanceError('%s must be %s %s, got %s' % (name, 'at least' if inclusive else 'greater than', low, value))
    if params.get('vacuum_min_fragmentation') is not None and params['vacuum_min_fragmentation'] > 100:
        raise MaintenanceError('vacuum_min_fragmentation is a percentage (0-100), got %s' % params['vacuum_min_fragmentation'])
    if params.get('login_port') is not None and params['login_port'] > 65535:
        raise MaintenanceError('login_port must be 1-65535, got %s' % params['login_port'])


class Timer:
    """Context manager measuring wall time in seconds (rounded to ms)."""

    def __init__(self):
        self.started = None
        self.seconds = 0.0

    def __enter__(self):
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = round(time.monotonic() - self.started, 3)
        return False
