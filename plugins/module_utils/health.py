# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks for Victor AI hosts: plain functions, each returning check results.

Every check returns one or more results ``{name, status, value, threshold, message}`` with
``status`` one of ok, warn, crit, unknown. ``verdict()`` folds results into healthy,
degraded or unhealthy. Nothing here writes anything; only the standard library is imported
at module level (psycopg is imported when a PostgreSQL check is asked for).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re
import socket
import sqlite3
import ssl
import tempfile
import time

from concurrent.futures import ThreadPoolExecutor

from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit
from urllib.request import HTTPSHandler, ProxyHandler, Request, build_opener

OK, WARN, CRIT, UNKNOWN = 'ok', 'warn', 'crit', 'unknown'
HEALTHY, DEGRADED, UNHEALTHY = 'healthy', 'degraded', 'unhealthy'
STATUS_CODES = {OK: 0, WARN: 1, CRIT: 2, UNKNOWN: 3}
VERDICT_CODES = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
HEALTHY_WORDS = ('healthy', 'ok', 'pass', 'up', 'ready', 'alive')
DEGRADED_WORDS = ('degraded', 'warn', 'warning')
DEFAULT_LOG_PATTERN = r'\b(ERROR|CRITICAL)\b|^Traceback \(most recent call last\)'
LOG_TIMESTAMP = re.compile(r'^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})')
PARTIAL_SUFFIXES = ('.partial', '.part', '.tmp', '.incomplete')
MAX_LINE = 500
MAX_PID_FILE_BYTES = 64  # a pid is at most 7 digits; more is not a pid file


class MissingLibraryError(Exception):
    """A check needs a Python library that is not installed on the node."""

    def __init__(self, library, error):
        super(MissingLibraryError, self).__init__(library)
        self.library = library
        self.error = error


def result(name, status, value=None, threshold=None, message=''):
    """One check result; every check returns these same five keys."""
    return {'name': name, 'status': status, 'value': value, 'threshold': threshold, 'message': message}


def grade_above(value, warn, crit):
    """Status of a value where higher is worse: crit when above crit, warn when above warn."""
    if crit is not None and value > crit:
        return CRIT
    if warn is not None and value > warn:
        return WARN
    return OK


def grade_at_least(value, warn, crit):
    """Status of a count: crit when it reaches crit, warn when it reaches warn."""
    if crit is not None and value >= crit:
        return CRIT
    if warn is not None and value >= warn:
        return WARN
    return OK


def grade_below(value, warn, crit):
    """Status of a value where lower is worse (days left): crit below crit, warn below warn."""
    if crit is not None and value < crit:
        return CRIT
    if warn is not None and value < warn:
        return WARN
    return OK


def verdict(checks):
    """healthy when all ok; unhealthy when any crit; degraded when any warn or unknown."""
    statuses = set(c['status'] for c in checks)
    if CRIT in statuses:
        return UNHEALTHY
    if WARN in statuses or UNKNOWN in statuses:
        return DEGRADED
    return HEALTHY


def worst(verdicts):
    """The worst of several verdicts (healthy when there are none)."""
    return max(verdicts, key=lambda v: VERDICT_CODES[v]) if verdicts else HEALTHY


def should_fail(status, fail_on):
    """Whether the overall status should fail the task for the given fail_on setting."""
    if fail_on == 'never':
        return False
    if fail_on == 'degraded':
        return status in (DEGRADED, UNHEALTHY)
    return status == UNHEALTHY


def summarize(checks):
    """Count of checks per status, always with all four keys."""
    counts = dict((s, 0) for s in STATUS_CODES)
    for check in checks:
        counts[check['status']] += 1
    return counts


# --------------------------------------------------------------------------- validation

THRESHOLD_PAIRS = (
    # (option, warn key, crit key, direction): "above" means crit must be >= warn.
    ('http', 'latency_warn_ms', 'latency_crit_ms', 'above'),
    ('tls', 'warn_days', 'crit_days', 'below'),
    ('disk', 'warn_percent', 'crit_percent', 'above'),
    ('memory', 'warn_percent', 'crit_percent', 'above'),
    ('log', 'warn_count', 'crit_count', 'above'),
    ('backup', 'warn_age_hours', 'crit_age_hours', 'above'),
    ('postgres', 'warn_percent', 'crit_percent', 'above'),
)
PERCENT_OPTIONS = ('disk', 'memory', 'postgres')


def validate_params(params):
    """Problems with the module parameters that argument_spec cannot express, as messages."""
    errors = []
    for option, warn_key, crit_key, direction in THRESHOLD_PAIRS:
        sub = params.get(option)
        if not sub:
            continue
        warn, crit = sub.get(warn_key), sub.get(crit_key)
        for key, value in ((warn_key, warn), (crit_key, crit)):
            if value is not None and value < 0:
                errors.append('%s.%s must not be negative (got %s)' % (option, key, value))
            if option in PERCENT_OPTIONS and value is not None and value > 100:
                errors.append('%s.%s is a percentage, 0-100 (got %s)' % (option, key, value))
        if warn is None or crit is None:
            continue
        if direction == 'above' and warn > crit:
            errors.append('%s.%s (%s) must not be greater than %s.%s (%s)' % (option, warn_key, warn, option, crit_key, crit))
        if direction == 'below' and warn < crit:
            errors.append('%s.%s (%s) must not be smaller than %s.%s (%s)' % (option, warn_key, warn, option, crit_key, crit))
    for option in ('http', 'fleet'):
        sub = params.get(option) or {}
        timeout = sub.get('timeout')
        if timeout is not None and timeout <= 0:
            errors.append('%s.timeout must be greater than 0 (got %s)' % (option, timeout))
    http = params.get('http') or {}
    if http.get('url'):
        problem = url_problem(http['url'])
        if problem:
            errors.append('http.url: %s' % problem)
    if http.get('ca_path'):
        problem = ca_bundle_problem(http['ca_path'])
        if problem:
            errors.append('http.ca_path: %s' % problem)
    for path in http.get('paths') or []:
        if not path.startswith('/'):
            errors.append("http.paths entries must start with '/' (got %r)" % path)
    fleet = params.get('fleet') or {}
    if fleet and (fleet.get('max_workers') or 0) < 1:
        errors.append('fleet.max_workers must be at least 1 (got %s)' % fleet.get('max_workers'))
    log = params.get('log') or {}
    if log:
        if log.get('window_minutes') is not None and log['window_minutes'] <= 0:
            errors.append('log.window_minutes must be greater than 0 (got %s)' % log['window_minutes'])
        if log.get('last_lines') is not None and log['last_lines'] <= 0:
            errors.append('log.last_lines must be greater than 0 (got %s)' % log['last_lines'])
        for pattern in log.get('patterns') or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                errors.append('log.patterns: %r is not a valid regular expression: %s' % (pattern, exc))
    return errors


def url_problem(url):
    """Why a URL cannot be checked, or None when it is a usable http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return 'malformed URL %r: %s' % (url, exc)
    if parts.scheme not in ('http', 'https'):
        return 'URL %r must start with http:// or https://' % url
    if not parts.hostname:
        return 'URL %r has no host' % url
    if port == 0:
        return 'URL %r has port 0' % url
    return None


# --------------------------------------------------------------------------- HTTP and TLS

_OPENERS = {}


def ca_bundle_problem(path):
    """Why a CA bundle cannot be loaded (missing, a directory, no PEM certificates), or None."""
    try:
        _ssl_context(True, path)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return 'cannot load CA bundle %r: %s' % (path, exc.strerror or exc)
    return None


def _ssl_context(validate_certs, ca_path):
    if validate_certs:
        context = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def join_url(base, path):
    """base URL + path, without doubled slashes."""
    return base.rstrip('/') + path if path else base


def _opener(url, validate_certs, ca_path, use_proxy):
    """One urllib opener per TLS/proxy setting: loading a CA store costs ~10 ms, so fleets share it."""
    https = url[:6].lower() == 'https:'
    key = (https, bool(validate_certs), ca_path, bool(use_proxy))
    opener = _OPENERS.get(key)
    if opener is None:
        handlers = [HTTPSHandler(context=_ssl_context(validate_certs, ca_path))] if https else []
        if not use_proxy:
            handlers.append(ProxyHandler({}))
        opener = _OPENERS[key] = build_opener(*handlers)
    return opener


def http_get(url, headers=None, timeout=10.0, validate_certs=True, ca_path=None, use_proxy=True):
    """GET url; returns (status code or None, body text, elapsed ms, error message or None)."""
    start = time.monotonic()
    try:
        opener = _opener(url, validate_certs, ca_path, use_proxy)
        request = Request(url, headers=dict(headers or {}), method='GET')
        response = opener.open(request, timeout=timeout)
        try:
            body = response.read(1024 * 1024)
            code = response.getcode()
        finally:
            response.close()
        return code, body.decode('utf-8', 'replace'), (time.monotonic() - start) * 1000.0, None
    except HTTPError as exc:
        try:
            body = exc.read(1024 * 1024).decode('utf-8', 'replace')
        except Exception:  # pylint: disable=broad-except
            body = ''
        return exc.code, body, (time.monotonic() - start) * 1000.0, None
    except URLError as exc:
        return None, '', (time.monotonic() - start) * 1000.0, 'cannot reach %s: %s' % (url, exc.reason)
    except (socket.timeout, TimeoutError):
        return None, '', (time.monotonic() - start) * 1000.0, 'no answer from %s within %ss' % (url, timeout)
    except (OSError, ValueError, ssl.SSLError) as exc:
        return None, '', (time.monotonic() - start) * 1000.0, 'request to %s failed: %s' % (url, exc)
    except Exception as exc:  # pylint: disable=broad-except
        # http.client raises assorted exceptions (BadStatusLine, InvalidURL ...) on broken peers.
        return None, '', (time.monotonic() - start) * 1000.0, 'request to %s failed: %s: %s' % (url, type(exc).__name__, exc)


def _word_status(word):
    word = str(word).lower()
    if word in HEALTHY_WORDS:
        return OK
    if word in DEGRADED_WORDS:
        return WARN
    return CRIT


def check_http(base_url, path='/health', headers=None, timeout=10.0, validate_certs=True, ca_path=None,
               use_proxy=True, expected_status=None, expected_version=None, latency_warn_ms=500, latency_crit_ms=2000,
               fetch=http_get):
    """GET one path: its status code and JSON status, the version, the latency, the components."""
    url = join_url(base_url, path)
    label = path or '/'
    expected_status = list(expected_status or [200])
    problem = url_problem(url)
    if problem:
        return [result('http:%s' % label, CRIT, None, expected_status, problem)]
    code, body, elapsed, error = fetch(url, headers=headers, timeout=timeout, validate_certs=validate_certs,
                                       ca_path=ca_path, use_proxy=use_proxy)
    latency_threshold = {'warn': latency_warn_ms, 'crit': latency_crit_ms}
    if error:
        return [result('http:%s' % label, CRIT, None, expected_status, error),
                result('latency:%s' % label, UNKNOWN, None, latency_threshold, 'no response to time')]
    results = []
    document = None
    try:
        document = json.loads(body) if body else None
    except ValueError:
        document = None
    if code not in expected_status:
        detail = ' '.join(body.split())[:200]
        results.append(result('http:%s' % label, CRIT, code, expected_status,
                              'GET %s answered %s, expected %s%s' % (url, code, expected_status, (': ' + detail) if detail else '')))
    elif isinstance(document, dict) and 'status' in document:
        word_status = _word_status(document['status'])
        results.append(result('http:%s' % label, word_status, code, expected_status,
                              'GET %s answered %s with status %r' % (url, code, document['status'])))
    else:
        results.append(result('http:%s' % label, OK, code, expected_status, 'GET %s answered %s' % (url, code)))
    elapsed = round(elapsed, 1)
    results.append(result('latency:%s' % label, grade_above(elapsed, latency_warn_ms, latency_crit_ms), elapsed,
                          latency_threshold, '%s ms (warn above %s ms, crit above %s ms)' % (elapsed, latency_warn_ms, latency_crit_ms)))
    if expected_version:
        version = document.get('version') if isinstance(document, dict) else None
        if version is None:
            results.append(result('version:%s' % label, CRIT, None, expected_version, '%s reports no version' % url))
        else:
            results.append(result('version:%s' % label, OK if str(version) == str(expected_version) else CRIT, version,
                                  expected_version, 'running %s, expected %s' % (version, expected_version)))
    if isinstance(document, dict) and isinstance(document.get('connected'), bool):
        # Victor's /status: {"connected": true, "provider": "ollama", ...} (runbook 000's provider connectivity)
        provider = document.get('provider') or 'provider'
        results.append(result('provider:%s' % label, OK if document['connected'] else CRIT, provider, 'connected',
                              '%s %s' % (provider, 'connected' if document['connected'] else 'not connected')))
    components = document.get('components') if isinstance(document, dict) else None
    if isinstance(components, dict) and components:
        bad = dict((k, v) for k, v in components.items() if _word_status(v.get('status') if isinstance(v, dict) else v) != OK)
        status = max([_word_status(v.get('status') if isinstance(v, dict) else v) for v in components.values()],
                     key=lambda s: STATUS_CODES[s])
        results.append(result('components:%s' % label, status, components, None,
                              ('not healthy: %s' % ', '.join(sorted(bad))) if bad else 'all %d components healthy' % len(components)))
    return results


def _decode_der_not_after(der):
    """notAfter of a DER certificate, using the ssl module's own decoder (no third-party library)."""
    handle, path = tempfile.mkstemp(suffix='.pem')
    try:
        with os.fdopen(handle, 'w') as stream:
            stream.write(ssl.DER_cert_to_PEM_cert(der))
        decoded = ssl._ssl._test_decode_cert(path)  # pylint: disable=protected-access
        return decoded.get('notAfter')
    finally:
        os.unlink(path)


def check_tls(url, warn_days=30, crit_days=7, timeout=10.0, validate_certs=True, ca_path=None, now=None):
    """Days until the server certificate of an https URL expires."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 443
    name = 'tls:%s:%s' % (host, port)
    threshold = {'warn_days': warn_days, 'crit_days': crit_days}
    try:
        context = _ssl_context(validate_certs, ca_path)
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                not_after = tls.getpeercert().get('notAfter') if validate_certs else None
                if not not_after:
                    der = tls.getpeercert(binary_form=True)
                    not_after = _decode_der_not_after(der) if der else None
    except ssl.SSLCertVerificationError as exc:
        return result(name, CRIT, None, threshold, 'certificate of %s:%s is not trusted: %s' % (host, port, exc.verify_message or exc))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return result(name, CRIT, None, threshold, 'TLS handshake with %s:%s failed: %s' % (host, port, exc))
    if not not_after:
        return result(name, UNKNOWN, None, threshold, 'no certificate expiry date from %s:%s' % (host, port))
    expires = ssl.cert_time_to_seconds(not_after)
    days = round((expires - (now if now is not None else time.time())) / 86400.0, 1)
    return result(name, grade_below(days, warn_days, crit_days), days, threshold,
                  'certificate expires %s, in %s days' % (not_after, days))


# --------------------------------------------------------------------------- service

def check_service(name='victor-api', manager='systemd', pid_file=None, run_command=None, systemctl=None):
    """The unit is active (systemd) or the pid in pid_file is alive (process)."""
    if manager == 'process':
        label = 'service:%s' % (pid_file or name)
        if not pid_file:
            return result(label, UNKNOWN, None, 'running', 'service.pid_file is needed with manager=process')
        try:
            with open(pid_file) as stream:
                pid = int(stream.read(MAX_PID_FILE_BYTES).strip() or '0')  # bounded: pid_file may be a device
        except FileNotFoundError:
            return result(label, CRIT, 'stopped', 'running', 'pid file %s does not exist' % pid_file)
        except ValueError:
            return result(label, CRIT, 'stopped', 'running', 'pid file %s holds no pid' % pid_file)
        except OSError as exc:
            return result(label, UNKNOWN, None, 'running', 'cannot read pid file %s: %s' % (pid_file, exc.strerror))
        if pid <= 0:
            return result(label, CRIT, 'stopped', 'running', 'pid file %s holds no pid' % pid_file)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return result(label, CRIT, 'stopped', 'running', 'pid %s from %s is not running' % (pid, pid_file))
        except PermissionError:
            pass
        return result(label, OK, 'running', 'running', 'pid %s is running' % pid)
    label = 'service:%s' % name
    if not systemctl or run_command is None:
        return result(label, UNKNOWN, None, 'active', 'systemctl not found; is systemd the service manager?')
    rc, out, err = run_command([systemctl, 'is-active', name])
    state = (out or '').strip().splitlines()[-1] if (out or '').strip() else 'unknown'
    if state == 'active':
        return result(label, OK, state, 'active', 'unit %s is active' % name)
    if state in ('activating', 'reloading'):
        return result(label, WARN, state, 'active', 'unit %s is %s' % (name, state))
    detail = ' '.join((err or '').split())
    return result(label, CRIT, state, 'active', 'unit %s is %s (rc=%s)%s' % (name, state, rc, (': ' + detail) if detail else ''))


# --------------------------------------------------------------------------- resources

def disk_usage_percent(path):
    """Used percentage of the file system holding path, as df computes it."""
    stat = os.statvfs(path)
    used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    available = stat.f_bavail * stat.f_frsize
    if used + available == 0:
        return 0.0
    return round(used * 100.0 / (used + available), 1)


def check_disk(paths, warn_percent=85, crit_percent=95, usage=disk_usage_percent):
    """One result per path: used percentage of its file system."""
    results = []
    threshold = {'warn': warn_percent, 'crit': crit_percent}
    for path in paths:
        name = 'disk:%s' % path
        try:
            percent = usage(path)
        except FileNotFoundError:
            results.append(result(name, UNKNOWN, None, threshold, 'path %s does not exist' % path))
            continue
        except OSError as exc:
            results.append(result(name, UNKNOWN, None, threshold, 'cannot stat %s: %s' % (path, exc.strerror or exc)))
            continue
        results.append(result(name, grade_above(percent, warn_percent, crit_percent), percent, threshold,
                              '%s%% used (warn above %s%%, crit above %s%%)' % (percent, warn_percent, crit_percent)))
    return results


def memory_usage_percent(meminfo='/proc/meminfo'):
    """Used memory percentage from /proc/meminfo (MemTotal - MemAvailable)."""
    values = {}
    with open(meminfo) as stream:
        for line in stream:
            key, _sep, rest = line.partition(':')
            fields = rest.split()
            if fields and fields[0].isdigit():
                values[key.strip()] = int(fields[0])
    total = values.get('MemTotal')
    available = values.get('MemAvailable')
    if available is None and total is not None:
        available = values.get('MemFree', 0) + values.get('Buffers', 0) + values.get('Cached', 0)
    if not total:
        raise ValueError('no MemTotal in %s' % meminfo)
    return round((total - available) * 100.0 / total, 1)


def check_memory(warn_percent=80, crit_percent=95, meminfo='/proc/meminfo'):
    """Used memory percentage against thresholds."""
    threshold = {'warn': warn_percent, 'crit': crit_percent}
    try:
        percent = memory_usage_percent(meminfo)
    except (OSError, ValueError) as exc:
        return result('memory', UNKNOWN, None, threshold, 'cannot read memory usage: %s' % exc)
    return result('memory', grade_above(percent, warn_percent, crit_percent), percent, threshold,
                  '%s%% used (warn above %s%%, crit above %s%%)' % (percent, warn_percent, crit_percent))


# --------------------------------------------------------------------------- log errors

def _tail_lines(path, max_bytes):
    size = os.path.getsize(path)
    with open(path, 'rb') as stream:
        if size > max_bytes:
            stream.seek(size - max_bytes)
            stream.readline()  # drop the partial first line
        data = stream.read()
    return data.decode('utf-8', 'replace').splitlines()


def _line_time(line):
    match = LOG_TIMESTAMP.match(line)
    if not match:
        return None
    try:
        return datetime.datetime.strptime(match.group(1) + ' ' + match.group(2), '%Y-%m-%d %H:%M:%S')
    except ValueError:
        return None


def check_log(path, window_minutes=None, last_lines=None, patterns=None, warn_count=1, crit_count=50,
              newest=5, max_bytes=50 * 1024 * 1024, now=None):
    """Lines matching ERROR/CRITICAL/Traceback within the last window_minutes or last_lines.

    In window mode a line's time is its leading ``YYYY-MM-DD HH:MM:SS`` (Victor's log format,
    local time); lines without one (traceback bodies) take the time of the line before.
    """
    name = 'log:%s' % path
    threshold = {'warn': warn_count, 'crit': crit_count}
    regexes = [re.compile(p) for p in (patterns or [DEFAULT_LOG_PATTERN])]
    if os.path.exists(path) and not os.path.isfile(path):
        return result(name, UNKNOWN, None, threshold, 'log %s is not a regular file' % path), []
    try:
        lines = _tail_lines(path, max_bytes)
    except FileNotFoundError:
        return result(name, UNKNOWN, None, threshold, 'log %s does not exist' % path), []
    except (OSError, IOError) as exc:
        return result(name, UNKNOWN, None, threshold, 'cannot read log %s: %s' % (path, getattr(exc, 'strerror', None) or exc)), []
    if last_lines:
        scope = lines[-last_lines:]
        scope_text = 'last %d lines' % last_lines
    else:
        window_minutes = window_minutes or 1440
        since = (now or datetime.datetime.now()) - datetime.timedelta(minutes=window_minutes)
        scope = []
        current = None
        for line in lines:
            stamp = _line_time(line)
            if stamp is not None:
                current = stamp
            if current is not None and current >= since:
                scope.append(line)
        scope_text = 'last %d minutes' % window_minutes
    matches = [line for line in scope if any(r.search(line) for r in regexes)]
    count = len(matches)
    shown = [line[:MAX_LINE] for line in matches[-newest:]] if newest else []
    return result(name, grade_at_least(count, warn_count, crit_count), count, threshold,
                  '%d error lines in the %s (warn at %s, crit at %s)' % (count, scope_text, warn_count, crit_count)), shown


# --------------------------------------------------------------------------- backups

def newest_backup(path, pattern='*', complete_marker=None):
    """(path, mtime) of the newest complete backup under path, or (None, None)."""
    import fnmatch
    best = (None, None)
    for entry in os.listdir(path):
        if not fnmatch.fnmatch(entry, pattern) or entry.startswith('.'):
            continue
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            stamp_path = os.path.join(full, complete_marker) if complete_marker else full
            if complete_marker and not os.path.isfile(stamp_path):
                continue
        elif os.path.isfile(full):
            if entry.endswith(PARTIAL_SUFFIXES) or os.path.getsize(full) == 0:
                continue
            stamp_path = full
        else:
            continue
        mtime = os.path.getmtime(stamp_path)
        if best[1] is None or mtime > best[1]:
            best = (full, mtime)
    return best


def check_backup(path, pattern='*', complete_marker=None, warn_age_hours=26, crit_age_hours=50, now=None):
    """Age in hours of the newest complete backup in a directory."""
    name = 'backup:%s' % path
    threshold = {'warn': warn_age_hours, 'crit': crit_age_hours}
    try:
        found, mtime = newest_backup(path, pattern, complete_marker)
    except FileNotFoundError:
        return result(name, CRIT, None, threshold, 'backup directory %s does not exist' % path)
    except OSError as exc:
        return result(name, UNKNOWN, None, threshold, 'cannot list %s: %s' % (path, exc.strerror or exc))
    if found is None:
        return result(name, CRIT, None, threshold, 'no complete backup matching %r in %s' % (pattern, path))
    age = round(((now if now is not None else time.time()) - mtime) / 3600.0, 1)
    return result(name, grade_above(age, warn_age_hours, crit_age_hours), age, threshold,
                  'newest backup %s is %s hours old' % (os.path.basename(found), age))


# --------------------------------------------------------------------------- databases

def check_sqlite(path, missing_ok=False, timeout=5.0):
    """PRAGMA quick_check on a database opened read-only (never creates or changes it)."""
    name = 'sqlite:%s' % path
    if not os.path.exists(path):
        if missing_ok:
            return result(name, OK, 'absent', 'ok', 'database %s does not exist yet (missing_ok)' % path)
        return result(name, CRIT, 'absent', 'ok', 'database %s does not exist' % path)
    if not os.path.isfile(path):
        return result(name, CRIT, None, 'ok', '%s is not a regular file' % path)
    connection = None
    try:
        connection = sqlite3.connect('file:%s?mode=ro' % quote(os.path.abspath(path)), uri=True, timeout=timeout)
        rows = [row[0] for row in connection.execute('PRAGMA quick_check').fetchall()]
    except sqlite3.Error as exc:
        return result(name, CRIT, None, 'ok', 'cannot check %s: %s' % (path, exc))
    finally:
        if connection is not None:
            connection.close()
    if rows == ['ok']:
        return result(name, OK, 'ok', 'ok', 'quick_check ok')
    return result(name, CRIT, rows[:5], 'ok', 'quick_check found %d problems: %s' % (len(rows), '; '.join(rows[:3])))


def import_psycopg():
    """psycopg (3), or MissingLibraryError; imported only when a PostgreSQL check runs."""
    try:
        import psycopg  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise MissingLibraryError('psycopg', exc)
    return psycopg


def check_postgres(host=None, port=5432, dbname='postgres', user=None, password=None, sslmode='prefer',
                   connect_timeout=5, warn_percent=80, crit_percent=90, psycopg=None):
    """Connect, SELECT 1, and connections in use versus max_connections."""
    driver = psycopg or import_psycopg()
    target = '%s:%s/%s' % (host or 'local socket', port, dbname)
    threshold = {'warn': warn_percent, 'crit': crit_percent}
    kwargs = dict(port=port, dbname=dbname, sslmode=sslmode, connect_timeout=connect_timeout)
    for key, value in (('host', host), ('user', user), ('password', password)):
        if value:
            kwargs[key] = value
    try:
        with driver.connect(**kwargs) as connection:
            with connection.cursor() as cursor:
                cursor.execute('SELECT 1')
                cursor.fetchone()
                cursor.execute("SELECT count(*) FILTER (WHERE backend_type = 'client backend'), current_setting('max_connections')::int"
                               " FROM pg_stat_activity")
                used, maximum = cursor.fetchone()
    except Exception as exc:  # pylint: disable=broad-except
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [result('postgres:connect', CRIT, None, 'SELECT 1', 'cannot query %s: %s' % (target, message)),
                result('postgres:connections', UNKNOWN, None, threshold, 'not connected')]
    percent = round(used * 100.0 / maximum, 1) if maximum else 0.0
    return [result('postgres:connect', OK, 1, 'SELECT 1', 'connected to %s' % target),
            result('postgres:connections', grade_above(percent, warn_percent, crit_percent), percent, threshold,
                   '%s of %s connections used (%s%%)' % (used, maximum, percent))]


# --------------------------------------------------------------------------- orchestration

def http_options(http):
    """Keyword arguments of check_http from the module's http option (defaults filled in)."""
    http = http or {}
    headers = dict((str(k), str(v)) for k, v in (http.get('headers') or {}).items())
    if http.get('bearer_token'):
        headers['Authorization'] = 'Bearer %s' % http['bearer_token']
    return dict(headers=headers, timeout=http.get('timeout') or 10.0,
                validate_certs=http.get('validate_certs', True) is not False, ca_path=http.get('ca_path'),
                use_proxy=http.get('use_proxy', True) is not False, expected_status=http.get('expected_status') or [200],
                latency_warn_ms=http.get('latency_warn_ms', 500), latency_crit_ms=http.get('latency_crit_ms', 2000))


def check_endpoint(url, paths, options, expected_version=None, tls=None, fetch=http_get):
    """All HTTP checks of one base URL (each path, plus the certificate for https)."""
    checks = []
    for index, path in enumerate(paths or ['/health']):
        checks.extend(check_http(url, path, expected_version=expected_version if index == 0 else None, fetch=fetch, **options))
    if tls is not None and url.lower().startswith('https://') and not url_problem(url):
        checks.append(check_tls(url, tls.get('warn_days', 30), tls.get('crit_days', 7), timeout=options['timeout'],
                                validate_certs=options['validate_certs'], ca_path=options['ca_path']))
    return checks


def check_fleet(endpoints, http=None, tls=None, max_workers=50, fetch=http_get):
    """Check many endpoints concurrently; one entry per endpoint, in the given order."""
    options = http_options(http)
    default_paths = (http or {}).get('paths') or ['/health']
    default_version = (http or {}).get('expected_version')

    def one(endpoint):
        url = endpoint['url']
        checks = check_endpoint(url, endpoint.get('paths') or default_paths, options,
                                endpoint.get('expected_version') or default_version, tls, fetch)
        return {'name': endpoint.get('name') or url, 'url': url, 'status': verdict(checks), 'checks': checks}

    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(endpoints)))) as pool:
        return list(pool.map(one, endpoints))


def run_checks(params, run_command=None, systemctl=None, fetch=http_get):
    """Run every check the parameters ask for; returns (checks, log_lines, endpoints)."""
    checks, log_lines, endpoints = [], [], []
    http = params.get('http')
    if http and http.get('url'):
        checks.extend(check_endpoint(http['url'], http.get('paths') or ['/health'], http_options(http),
                                     http.get('expected_version'), params.get('tls'), fetch))
    service = params.get('service')
    if service:
        checks.append(check_service(service.get('name') or 'victor-api', service.get('manager') or 'systemd',
                                    service.get('pid_file'), run_command, systemctl))
    disk = params.get('disk')
    if disk:
        checks.extend(check_disk(disk.get('paths') or ['/'], disk.get('warn_percent'), disk.get('crit_percent')))
    memory = params.get('memory')
    if memory:
        checks.append(check_memory(memory.get('warn_percent'), memory.get('crit_percent')))
    log = params.get('log')
    if log:
        check, log_lines = check_log(log['path'], log.get('window_minutes'), log.get('last_lines'), log.get('patterns'),
                                     log.get('warn_count'), log.get('crit_count'), log.get('newest', 5))
        checks.append(check)
    backup = params.get('backup')
    if backup:
        checks.append(check_backup(backup['path'], backup.get('pattern') or '*', backup.get('complete_marker'),
                                   backup.get('warn_age_hours'), backup.get('crit_age_hours')))
    sqlite = params.get('sqlite')
    if sqlite:
        for path in sqlite.get('paths') or []:
            checks.append(check_sqlite(path, bool(sqlite.get('missing_ok'))))
    postgres = params.get('postgres')
    if postgres:
        checks.extend(check_postgres(postgres.get('host'), postgres.get('port') or 5432, postgres.get('dbname') or 'postgres',
                                     postgres.get('user'), postgres.get('password'), postgres.get('sslmode') or 'prefer',
                                     postgres.get('connect_timeout') or 5, postgres.get('warn_percent'), postgres.get('crit_percent')))
    fleet = params.get('fleet')
    if fleet:
        endpoints = check_fleet(fleet.get('endpoints') or [], http, params.get('tls'), fleet.get('max_workers') or 50, fetch)
    return checks, log_lines, endpoints


def health_argument_spec():
    """The victor_health module's options (kept here so tests and docs share one definition)."""
    return dict(
        http=dict(type='dict', options=dict(
            url=dict(type='str'),
            paths=dict(type='list', elements='str', default=['/health']),
            headers=dict(type='dict', no_log=True, default={}),
            bearer_token=dict(type='str', no_log=True),
            expected_status=dict(type='list', elements='int', default=[200]),
            expected_version=dict(type='str'),
            timeout=dict(type='float', default=10.0),
            validate_certs=dict(type='bool', default=True),
            ca_path=dict(type='path'),
            use_proxy=dict(type='bool', default=True),
            latency_warn_ms=dict(type='float', default=500),
            latency_crit_ms=dict(type='float', default=2000),
        )),
        tls=dict(type='dict', options=dict(
            warn_days=dict(type='int', default=30),
            crit_days=dict(type='int', default=7),
        )),
        service=dict(type='dict', options=dict(
            name=dict(type='str', default='victor-api'),
            manager=dict(type='str', default='systemd', choices=['systemd', 'process']),
            pid_file=dict(type='path'),
        )),
        disk=dict(type='dict', options=dict(
            paths=dict(type='list', elements='path', default=['/']),
            warn_percent=dict(type='float', default=85),
            crit_percent=dict(type='float', default=95),
        )),
        memory=dict(type='dict', options=dict(
            warn_percent=dict(type='float', default=80),
            crit_percent=dict(type='float', default=95),
        )),
        log=dict(type='dict', options=dict(
            path=dict(type='path', required=True),
            window_minutes=dict(type='int'),
            last_lines=dict(type='int'),
            patterns=dict(type='list', elements='str'),
            warn_count=dict(type='int', default=1),
            crit_count=dict(type='int', default=50),
            newest=dict(type='int', default=5),
        ), mutually_exclusive=[['window_minutes', 'last_lines']]),
        backup=dict(type='dict', options=dict(
            path=dict(type='path', required=True),
            pattern=dict(type='str', default='*'),
            complete_marker=dict(type='str'),
            warn_age_hours=dict(type='float', default=26),
            crit_age_hours=dict(type='float', default=50),
        )),
        sqlite=dict(type='dict', options=dict(
            paths=dict(type='list', elements='path', required=True),
            missing_ok=dict(type='bool', default=False),
        )),
        postgres=dict(type='dict', options=dict(
            host=dict(type='str'),
            port=dict(type='int', default=5432),
            dbname=dict(type='str', default='postgres'),
            user=dict(type='str'),
            password=dict(type='str', no_log=True),
            sslmode=dict(type='str', default='prefer', choices=['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']),
            connect_timeout=dict(type='int', default=5),
            warn_percent=dict(type='float', default=80),
            crit_percent=dict(type='float', default=90),
        )),
        fleet=dict(type='dict', options=dict(
            endpoints=dict(type='list', elements='dict', required=True, options=dict(
                url=dict(type='str', required=True),
                name=dict(type='str'),
                paths=dict(type='list', elements='str'),
                expected_version=dict(type='str'),
            )),
            max_workers=dict(type='int', default=50),
        )),
        fail_on=dict(type='str', default='unhealthy', choices=['unhealthy', 'degraded', 'never']),
    )
