# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The maintenance probes of victor_host_info (role victor_maintenance), read-only:

  logs         entries per severity over the last days, top error messages
  latency      GET a URL count times: p50/p95/max in milliseconds, failures
  capacity     file system of the first path, size of each path (file or tree), growth since
               the previous report's {time, sizes}
  permissions  files/dirs whose mode allows more than the rule's mode

Standard library only; nothing is written.  What victor_health also computes comes from the same code:
log timestamps (health.LOG_TIMESTAMP), the GETs (health.http_get), disk use (node_facts.disk_usage).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import math
import os
import re
import stat
from collections import Counter

from ansible_collections.victor.ops.plugins.module_utils import health
from ansible_collections.victor.ops.plugins.module_utils.node_facts import disk_usage

LEVEL = re.compile(r'\b(CRITICAL|ERROR|WARNING|WARN|INFO|DEBUG)\b')
NUMBERS = re.compile(r'\b\d+(\.\d+)?\b|0x[0-9a-f]+')
LOG_NAME = re.compile(r'\.log(\.\d+)?$')


def logs(directory, days):
    cutoff = datetime.datetime.now() - datetime.timedelta(days=float(days))
    counts = Counter({'CRITICAL': 0, 'ERROR': 0, 'WARNING': 0, 'INFO': 0, 'DEBUG': 0})
    errors = Counter()
    files = []
    first = last = None
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not (os.path.isfile(path) and LOG_NAME.search(name)):
                continue
            if datetime.datetime.fromtimestamp(os.path.getmtime(path)) < cutoff:
                continue
            files.append(path)
            with open(path, 'r', encoding='utf-8', errors='replace') as handle:
                for line in handle:
                    # victor_health's rule: an entry starts with a YYYY-MM-DD HH:MM:SS that is a real time
                    when = health.line_time(line)
                    if when is None or when < cutoff:
                        continue
                    rest = health.LOG_TIMESTAMP.sub('', line, count=1)
                    level = LEVEL.search(rest)
                    severity = level.group(1) if level else 'INFO'
                    severity = 'WARNING' if severity == 'WARN' else severity
                    counts[severity] += 1
                    first = min(first, when) if first else when
                    last = max(last, when) if last else when
                    if severity in ('ERROR', 'CRITICAL'):
                        message = rest[level.end():].strip(' -:\n') if level else rest.strip(' -:\n')
                        errors[NUMBERS.sub('N', message)[:200]] += 1
    return {'directory': directory, 'window_days': float(days), 'files': files, 'counts': dict(counts),
            'total': sum(counts.values()), 'first': first.isoformat() if first else None,
            'last': last.isoformat() if last else None,
            'top_errors': [{'message': m, 'count': c} for m, c in errors.most_common(10)]}


def _percentile(values, pct):
    ordered = sorted(values)
    index = max(0, int(math.ceil(pct / 100.0 * len(ordered))) - 1)  # nearest rank
    return round(ordered[min(index, len(ordered) - 1)], 2)


def latency(url, count, timeout):
    """count GETs of url (victor_health's http_get: a total deadline of timeout seconds each, never a proxy)."""
    timings, failures = [], []
    for _attempt in range(int(count)):
        answer = health.http_get(url, headers={}, timeout=float(timeout), validate_certs=True, ca_path=None, use_proxy=False)
        if answer.error:
            failures.append(answer.error)
        elif answer.code != 200:
            failures.append('HTTP %d' % answer.code)
        else:
            timings.append(answer.elapsed_ms)
    result = {'url': url, 'requests': int(count), 'ok': len(timings), 'failed': len(failures), 'errors': failures[:5]}
    if timings:
        result.update(p50_ms=_percentile(timings, 50), p95_ms=_percentile(timings, 95), max_ms=round(max(timings), 2),
                      mean_ms=round(sum(timings) / len(timings), 2))
    return result


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def capacity(paths, previous=None, filesystem_of=None):
    """paths: {name: path}; the file system of paths[filesystem_of] (default the first) is reported;
    previous: {time, sizes} of the last report."""
    items = list(paths.items())
    if filesystem_of:
        items.sort(key=lambda item: item[0] != filesystem_of)
    result = _capacity(items)
    result['growth'] = _growth(result, previous)
    return result


def _growth(current, previous):
    """Bytes grown per path since the previous report, and the same scaled to 30 days."""
    if not previous or not previous.get('sizes'):
        return {'previous': None, 'bytes': {}, 'bytes_per_30_days': {}, 'days': None}
    then = datetime.datetime.strptime(previous['time'], '%Y-%m-%dT%H:%M:%SZ')
    days = max((datetime.datetime.utcnow() - then).total_seconds() / 86400.0, 1e-6)
    grown, monthly = {}, {}
    for name, size in current['sizes'].items():
        before = previous['sizes'].get(name)
        if isinstance(size, int) and isinstance(before, int):
            grown[name] = size - before
            monthly[name] = int(round((size - before) * 30.0 / days))
    return {'previous': previous['time'], 'days': round(days, 3), 'bytes': grown, 'bytes_per_30_days': monthly}


def _capacity(items):
    sizes = {name: (_size(path) if os.path.exists(path) else None) for name, path in items}
    first = items[0][1]
    while not os.path.exists(first):
        first = os.path.dirname(first) or '/'
    return {'filesystem': dict(disk_usage(first), path=first), 'sizes': sizes, 'paths': dict(items)}


def _check(path, allowed, findings):
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    extra = mode & ~allowed & 0o777
    if extra:
        findings.append({'path': path, 'mode': '%04o' % mode, 'allowed': '%04o' % allowed,
                         'problem': 'mode %04o allows more than %04o' % (mode, allowed)})


def permissions(rules):
    """rules: [{mode: '0600', path: ...}]: files/dirs whose mode allows more than mode."""
    findings, checked, missing = [], 0, []
    for rule in rules:
        path = rule['path']
        allowed = int(str(rule['mode']), 8)
        if not os.path.exists(path):
            missing.append(path)
            continue
        if os.path.isdir(path) and allowed & 0o100 == 0:
            for root, _dirs, names in os.walk(path):
                for name in names:
                    checked += 1
                    _check(os.path.join(root, name), allowed, findings)
        else:
            checked += 1
            _check(path, allowed, findings)
    return {'checked': checked, 'findings': findings, 'missing': missing}
