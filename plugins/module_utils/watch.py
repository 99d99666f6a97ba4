# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The watch period after a deploy: poll /health and count the error lines Victor logs.

A breach is either max_health_failures failed polls in a row (one blip is tolerated) or
max_errors error lines appended to the log since the watch began. The log is read from the
offset it had at the start, so errors of the previous release are not counted; a log that
shrank was rotated and is read from its beginning.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time

from ansible_collections.victor.ops.plugins.module_utils.health import CRIT, DEFAULT_LOG_PATTERN, MAX_LINE, check_http

MAX_PERIOD = 24 * 3600  # a watch of more than a day is a typo
MAX_READ = 16 * 1024 * 1024  # bytes of new log read per poll; more is counted from its tail
# What every poll asks besides url, path, timeout and expected_version. victor_watch has no options for
# these (its documentation says so): a 200 answer, https certificates verified against the system's CAs,
# the environment's http(s)_proxy honoured, no extra headers, no latency grading.
POLL_REQUEST = dict(headers={}, validate_certs=True, ca_path=None, use_proxy=True, expected_status=[200],
                    latency_warn_ms=None, latency_crit_ms=None)


def watch_argument_spec():
    """victor_watch's options; the defaults are written here only (the module's DOCUMENTATION repeats them)."""
    return dict(
        url=dict(type='str', required=True),
        path=dict(type='str', default='/health'),
        expected_version=dict(type='str', default=''),
        period=dict(type='int', required=True),
        interval=dict(type='int', default=10),
        timeout=dict(type='float', default=5.0),
        max_health_failures=dict(type='int', default=3),
        log_path=dict(type='path'),
        log_patterns=dict(type='list', elements='str', default=[DEFAULT_LOG_PATTERN]),
        max_errors=dict(type='int', default=20),
    )


def log_patterns(params):
    """The log_patterns to count: an empty (or absent) list means the argument spec's default."""
    return params.get('log_patterns') or watch_argument_spec()['log_patterns']['default']


def validate(params):
    """Problems with the arguments, as clear sentences (empty when they are fine)."""
    problems = []
    if not 1 <= params['period'] <= MAX_PERIOD:
        problems.append('period must be between 1 and %d seconds, got %s' % (MAX_PERIOD, params['period']))
    if not 1 <= params['interval'] <= max(1, params['period']):
        problems.append('interval must be between 1 second and the period (%s s), got %s' % (params['period'], params['interval']))
    if params['max_health_failures'] < 1:
        problems.append('max_health_failures must be at least 1, got %s' % params['max_health_failures'])
    if params['max_errors'] < 1:
        problems.append('max_errors must be at least 1, got %s' % params['max_errors'])
    if not 0 < params['timeout'] <= 60:
        problems.append('timeout must be greater than 0 and at most 60 seconds, got %s' % params['timeout'])
    for pattern in params.get('log_patterns') or []:
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append('log_patterns: %r is not a regular expression (%s)' % (pattern, exc))
    return problems


class LogFollower:
    """Error lines appended to a log since the follower was created."""

    def __init__(self, path, patterns):
        self.path = path
        self.regexes = [re.compile(p) for p in patterns]
        self.offset = self._size()
        self.partial = b''
        self.errors = 0
        self.newest = []

    def _size(self):
        try:
            return os.path.getsize(self.path) if self.path else 0
        except OSError:
            return 0  # not there yet: everything it will hold is new

    def poll(self):
        """Count the error lines written since the last poll; returns the total so far."""
        if not self.path:
            return self.errors
        size = self._size()
        if size < self.offset:  # rotated or truncated: the new file is all new
            self.offset, self.partial = 0, b''
        if size > self.offset:
            start = max(self.offset, size - MAX_READ)
            try:
                with open(self.path, 'rb') as stream:
                    stream.seek(start)
                    data = stream.read(size - start)
            except (OSError, IOError):
                return self.errors
            self.offset = start + len(data)
            lines = (self.partial + data).split(b'\n')
            self.partial = lines.pop()  # an unfinished last line is counted once it is complete
            for raw in lines:
                line = raw.decode('utf-8', 'replace')
                if any(r.search(line) for r in self.regexes):
                    self.errors += 1
                    self.newest = (self.newest + [line[:MAX_LINE]])[-5:]
        return self.errors


def health_poll(url, path, expected_version, timeout, fetch=None):
    """(ok, message) of one GET of the health path: healthy status and, if given, the version."""
    kwargs = dict(POLL_REQUEST, timeout=timeout, expected_version=expected_version or None)
    if fetch is not None:
        kwargs['fetch'] = fetch
    checks = check_http(url, path, **kwargs)
    bad = [c for c in checks if c['status'] == CRIT or (c['name'].startswith(('http:', 'version:')) and c['status'] != 'ok')]
    if bad:
        return False, '; '.join(c['message'] for c in bad)
    return True, 'healthy' + (' at version %s' % expected_version if expected_version else '')


def watch(params, clock=time.monotonic, sleep=time.sleep, fetch=None):
    """Watch for params['period'] seconds; stop at the first breach. Returns the module's result."""
    follower = LogFollower(params.get('log_path'), log_patterns(params))
    started = clock()
    polls = failures_in_row = health_failures = 0
    reason = ''
    last = ''
    while True:
        polls += 1
        ok, last = health_poll(params['url'], params['path'], params.get('expected_version'), params['timeout'], fetch)
        if ok:
            failures_in_row = 0
        else:
            failures_in_row += 1
            health_failures += 1
        errors = follower.poll()
        if failures_in_row >= params['max_health_failures']:
            reason = '%s failed %d polls in a row (last: %s)' % (params['path'], failures_in_row, last)
        elif errors >= params['max_errors']:
            reason = '%d error lines in %s since the watch began (limit %d)' % (errors, params['log_path'], params['max_errors'])
        elapsed = clock() - started
        if reason or elapsed >= params['period']:
            break
        sleep(min(params['interval'], params['period'] - elapsed))
    return dict(breached=bool(reason), reason=reason, polls=polls, health_failures=health_failures,
                errors=follower.errors, error_lines=follower.newest, last_health=last, seconds=round(clock() - started, 1))
