# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks for Victor AI hosts: plain functions, each returning check results.

Every check returns one or more results ``{name, status, value, threshold, message}`` with
``status`` one of ok, warn, crit, unknown. ``verdict()`` folds results into healthy,
degraded or unhealthy. Nothing here writes anything; only the standard library is imported
at module level (psycopg is imported when a PostgreSQL check is asked for).

What an HTTP server answers is not trusted: every request has a total deadline, follows
redirects only to http(s) and never carries the caller's headers to another origin, reads
at most MAX_BODY bytes and parses JSON no deeper than MAX_JSON_DEPTH. Every error text that
may hold a secret goes through redact.redact().
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import datetime
import http.client
import json
import math
import os
import re
import socket
import sqlite3
import ssl
import stat
import tempfile
import threading
import time

from concurrent.futures import ThreadPoolExecutor

from urllib.error import HTTPError, URLError
from urllib.parse import urljoin, urlsplit
from urllib.request import HTTPHandler, HTTPRedirectHandler, HTTPSHandler, ProxyHandler, Request, build_opener

from ansible_collections.victor.ops.plugins.module_utils.node_facts import disk_usage, memory_usage
from ansible_collections.victor.ops.plugins.module_utils.postgres_common import (
    connection_problems,
    libpq_params,
    postgres_common_argument_spec,
)
from ansible_collections.victor.ops.plugins.module_utils.redact import redact, url_has_credentials
from ansible_collections.victor.ops.plugins.module_utils import sqlite_ro

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
PID_MAX = 4194304  # Linux's largest pid_max (2**22)
MAX_BODY = 1024 * 1024  # bytes of an HTTP answer read; a longer answer is a crit check
MAX_JSON_DEPTH = 64  # deeper JSON is refused before anything recurses into it
MAX_REDIRECTS = 5
MAX_TIMEOUT = 3600.0  # seconds; http.timeout (postgres.connect_timeout: postgres_common)
MAX_WINDOW_MINUTES = 10 * 366 * 24 * 60  # ten years: log.window_minutes beyond is a typo
# systemd unit names: ASCII letters, digits, ":-_.\\@"; never a leading '-' (it would read as an option)
UNIT_NAME = re.compile(r'^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]{0,254}$')
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


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


def _number_problem(name, value, minimum=None, maximum=None, above=False):
    """Why a number option is unusable (not finite, below minimum, above maximum), or None."""
    if value is None:
        return None
    if not math.isfinite(value):
        return '%s must be a finite number (got %s)' % (name, value)
    if minimum is not None and (value <= minimum if above else value < minimum):
        return '%s must be %s %s (got %s)' % (name, 'greater than' if above else 'at least', minimum, value)
    if maximum is not None and value > maximum:
        return '%s must be at most %s (got %s)' % (name, maximum, value)
    return None


def header_problems(headers, bearer_token=None):
    """Header names that are not tokens, values with line breaks or control characters; values never shown."""
    errors = []
    for name, value in (headers or {}).items():
        if not HEADER_NAME.match(str(name)):
            errors.append('http.headers: %r is not a valid header name' % str(name)[:40])
        elif re.search(r'[\x00-\x08\x0a-\x1f\x7f]', str(value)):
            errors.append('http.headers: the value of %s holds a line break or control character (value not shown)' % name)
    if bearer_token is not None and re.search(r'[\x00-\x20\x7f]', str(bearer_token)):
        errors.append('http.bearer_token holds whitespace, a line break or a control character (value not shown)')
    return errors


def validate_params(params):
    """Problems with the module parameters that argument_spec cannot express, as messages (never quoting a secret)."""
    errors = []
    for option, warn_key, crit_key, direction in THRESHOLD_PAIRS:
        sub = params.get(option)
        if not sub:
            continue
        warn, crit = sub.get(warn_key), sub.get(crit_key)
        for key, value in ((warn_key, warn), (crit_key, crit)):
            if value is None:
                continue
            if not math.isfinite(value):
                errors.append('%s.%s must be a finite number (got %s)' % (option, key, value))
            elif value < 0:
                errors.append('%s.%s must not be negative (got %s)' % (option, key, value))
            elif option in PERCENT_OPTIONS and value > 100:
                errors.append('%s.%s is a percentage, 0-100 (got %s)' % (option, key, value))
        if warn is None or crit is None or not (math.isfinite(warn) and math.isfinite(crit)):
            continue
        if direction == 'above' and warn > crit:
            errors.append('%s.%s (%s) must not be greater than %s.%s (%s)' % (option, warn_key, warn, option, crit_key, crit))
        if direction == 'below' and warn < crit:
            errors.append('%s.%s (%s) must not be smaller than %s.%s (%s)' % (option, warn_key, warn, option, crit_key, crit))
    http = params.get('http') or {}
    errors.append(_number_problem('http.timeout', http.get('timeout'), 0, MAX_TIMEOUT, above=True))
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
    errors.extend(header_problems(http.get('headers'), http.get('bearer_token')))
    fleet = params.get('fleet') or {}
    if fleet and (fleet.get('max_workers') or 0) < 1:
        errors.append('fleet.max_workers must be at least 1 (got %s)' % fleet.get('max_workers'))
    for index, endpoint in enumerate(fleet.get('endpoints') or []):
        if url_has_credentials(endpoint.get('url')):
            errors.append('fleet.endpoints[%d].url: %s' % (index, CREDENTIALS_IN_URL))
    service = complete('service', params['service']) if params.get('service') else {}
    if service and service['manager'] == 'systemd' and not UNIT_NAME.match(service['name']):
        errors.append('service.name %r is not a systemd unit name (ASCII letters, digits, ":-_.@" and backslash, not starting with "-")'
                      % service['name'][:80])
    log = params.get('log') or {}
    if log:
        errors.append(_number_problem('log.window_minutes', log.get('window_minutes'), 0, MAX_WINDOW_MINUTES, above=True))
        errors.append(_number_problem('log.last_lines', log.get('last_lines'), 0, above=True))
        errors.append(_number_problem('log.newest', log.get('newest'), 0))
        for pattern in log.get('patterns') or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                errors.append('log.patterns: %r is not a valid regular expression: %s' % (pattern, exc))
    postgres = params.get('postgres') or {}
    if postgres:
        errors.extend(connection_problems(postgres, 'postgres.'))
    return [e for e in errors if e]


CREDENTIALS_IN_URL = ("user:password@ in a URL is refused (it would be shown in results and logs): "
                      "give credentials with http.headers or http.bearer_token")


def url_problem(url):
    """Why a URL cannot be checked, or None when it is a usable http(s) URL; never quotes a password."""
    if url_has_credentials(url):
        return CREDENTIALS_IN_URL
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

_CONTEXTS = {}
_CONTEXTS_LOCK = threading.Lock()
Answer = collections.namedtuple('Answer', 'code body elapsed_ms error content_type')


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


def _shared_context(validate_certs, ca_path):
    """One SSL context per setting: loading a CA store costs ~10 ms, so fleets share it (contexts are thread-safe).

    The lock keeps a fleet's first hundred threads from each loading the store at once.
    """
    key = (bool(validate_certs), ca_path)
    with _CONTEXTS_LOCK:
        if key not in _CONTEXTS:
            _CONTEXTS[key] = _ssl_context(validate_certs, ca_path)
        return _CONTEXTS[key]


def join_url(base, path):
    """base URL + path, without doubled slashes."""
    return base.rstrip('/') + path if path else base


class Deadline:
    """A total time limit for one request and its redirects.

    Socket timeouts bound each wait, not the sum: a server sending a byte every half second
    never trips them. A timer shuts the request's sockets down when the time is up, which
    ends any read in progress; ``expired`` then says why the answer is missing or cut.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def remaining(self):
        left = self.end - time.monotonic()
        if left <= 0 or self.expired:
            self.expired = True
            raise socket.timeout('deadline passed')
        return left

    def register(self, sock):
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shutdown(sock)
        return sock

    def _expire(self):
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under an SSLSocket
        except OSError:
            pass


def _deadline_connection(base, deadline):
    """An http.client connection class whose sockets connect within, and are registered with, the deadline."""
    class Connection(base):
        def __init__(self, *args, **kwargs):
            kwargs['timeout'] = deadline.remaining()
            super(Connection, self).__init__(*args, **kwargs)
            create = self._create_connection

            def create_connection(address, timeout=None, source_address=None):
                return deadline.register(create(address, min(timeout or deadline.seconds, deadline.remaining()), source_address))
            self._create_connection = create_connection
    return Connection


class _DeadlineHTTPHandler(HTTPHandler):
    def __init__(self, deadline):
        HTTPHandler.__init__(self)
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_deadline_connection(http.client.HTTPConnection, self.deadline), req)


class _DeadlineHTTPSHandler(HTTPSHandler):
    def __init__(self, deadline, validate_certs, ca_path):
        HTTPSHandler.__init__(self)
        self.deadline = deadline
        self.tls = (validate_certs, ca_path)

    def https_open(self, req):
        # the context only when an https URL is met: plain-http fleets never load a CA store
        return self.do_open(_deadline_connection(http.client.HTTPSConnection, self.deadline), req,
                            context=_shared_context(*self.tls))


class RedirectRefused(URLError):
    """A redirect to a scheme other than http(s)."""


def origin(url):
    """(scheme, host, port) of a URL, the unit a credential belongs to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or '').lower(), parts.port or {'http': 80, 'https': 443}.get(scheme)


class _SafeRedirectHandler(HTTPRedirectHandler):
    """Follows redirects to http(s) only; the caller's headers (tokens, API keys) never leave their origin."""

    max_redirections = MAX_REDIRECTS

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get('location') or headers.get('uri')
        scheme = urlsplit(urljoin(req.full_url, location)).scheme.lower() if location else 'http'
        if scheme not in ('http', 'https'):
            fp.close()
            raise RedirectRefused('redirected (%s) to a %s URL; only http and https redirects are followed' % (code, scheme))
        return HTTPRedirectHandler.http_error_302(self, req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = HTTPRedirectHandler.redirect_request(self, req, fp, code, msg, headers, newurl)
        if new is not None and origin(newurl) != origin(req.full_url):
            new.headers.clear()  # Authorization, X-Api-Key and every other header the caller gave
        return new


def http_get(url, headers, timeout, validate_certs, ca_path, use_proxy):
    """GET url within timeout seconds in total; an Answer (code, body, elapsed ms, error or None, content type).

    The arguments are the http option's (http_options()); their defaults live in the argument spec only.
    """
    start = time.monotonic()
    secrets = list((headers or {}).values())

    def failed(message):
        return Answer(None, '', (time.monotonic() - start) * 1000.0, redact(message, secrets), '')

    deadline = Deadline(timeout)
    try:
        with deadline:
            handlers = [_DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline, validate_certs, ca_path),
                        _SafeRedirectHandler()]
            if not use_proxy:
                handlers.append(ProxyHandler({}))
            opener = build_opener(*handlers)
            try:
                response = opener.open(Request(url, headers=dict(headers or {}), method='GET'), timeout=deadline.remaining())
            except HTTPError as exc:
                response = exc  # an error status is an answer too; its body is read the same bounded way
            code = response.getcode()
            content_type = response.headers.get('Content-Type', '') if response.headers is not None else ''
            if getattr(response, 'fp', None) is None:
                body = b''
            else:
                try:
                    body = response.read(MAX_BODY + 1)
                finally:
                    response.close()
            if deadline.expired:
                raise socket.timeout('deadline passed')
    except RedirectRefused as exc:
        return failed('GET %s was %s' % (url, exc.reason))
    except (socket.timeout, TimeoutError):
        return failed('no answer from %s within %ss' % (url, timeout))
    except URLError as exc:
        if isinstance(exc.reason, (socket.timeout, TimeoutError)) or deadline.expired:
            return failed('no answer from %s within %ss' % (url, timeout))
        return failed('cannot reach %s: %s' % (url, exc.reason))
    except Exception as exc:  # pylint: disable=broad-except
        # http.client raises assorted exceptions (BadStatusLine, InvalidURL ...) on broken peers.
        if deadline.expired:
            return failed('no answer from %s within %ss' % (url, timeout))
        return failed('request to %s failed: %s: %s' % (url, type(exc).__name__, exc))
    elapsed = (time.monotonic() - start) * 1000.0
    if len(body) > MAX_BODY:
        return Answer(code, '', elapsed, 'answer of %s is larger than %d bytes' % (url, MAX_BODY), content_type)
    return Answer(code, body.decode('utf-8', 'replace'), elapsed, None, content_type)


def json_depth_exceeds(document, limit=MAX_JSON_DEPTH):
    """Whether parsed JSON nests deeper than limit (checked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def parse_json(body):
    """(document, problem): the JSON answer, or why it is not usable (invalid, nested too deep)."""
    if not body or not body.strip():
        return None, 'an empty body'
    try:
        document = json.loads(body)
    except RecursionError:
        return None, 'JSON nested too deeply'
    except ValueError as exc:
        return None, 'invalid JSON (%s)' % exc
    if json_depth_exceeds(document):
        return None, 'JSON nested deeper than %d levels' % MAX_JSON_DEPTH
    return document, None


def _json_expected(path, content_type):
    """Victor's /health always answers JSON; other paths when their Content-Type says so."""
    media = (content_type or '').split(';')[0].strip().lower()
    return media == 'application/json' or media.endswith('+json') or is_health_path(path)


def is_health_path(path):
    return (path or '').split('?')[0].rstrip('/').endswith('/health')


def _word_status(word):
    word = str(word).lower()
    if word in HEALTHY_WORDS:
        return OK
    if word in DEGRADED_WORDS:
        return WARN
    return CRIT


def check_http(base_url, path, headers, timeout, validate_certs, ca_path, use_proxy, expected_status, expected_version,
               latency_warn_ms, latency_crit_ms, fetch=http_get):
    """GET one path: its status code and JSON status, the version, the latency, the components.

    The arguments are the http option's (http_options()); latency thresholds of None grade no latency.
    """
    url = join_url(base_url, path)
    label = path or '/'
    expected_status = list(expected_status)
    problem = url_problem(url)
    if problem:
        return [result('http:%s' % label, CRIT, None, expected_status, problem)]
    answer = fetch(url, headers=headers, timeout=timeout, validate_certs=validate_certs, ca_path=ca_path, use_proxy=use_proxy)
    code, body, elapsed, error = answer.code, answer.body, answer.elapsed_ms, answer.error
    latency_threshold = {'warn': latency_warn_ms, 'crit': latency_crit_ms}
    if error:
        return [result('http:%s' % label, CRIT, None, expected_status, error),
                result('latency:%s' % label, UNKNOWN, None, latency_threshold, 'no response to time')]
    results = []
    document, json_problem = parse_json(body)
    if code not in expected_status:
        detail = ' '.join(body.split())[:200]
        results.append(result('http:%s' % label, CRIT, code, expected_status,
                              'GET %s answered %s, expected %s%s' % (url, code, expected_status, (': ' + detail) if detail else '')))
    elif json_problem and _json_expected(path, answer.content_type):
        results.append(result('http:%s' % label, CRIT, code, expected_status,
                              'GET %s answered %s with %s where JSON was expected' % (url, code, json_problem)))
    elif isinstance(document, dict) and 'status' in document:
        word_status = _word_status(document['status'])
        results.append(result('http:%s' % label, word_status, code, expected_status,
                              'GET %s answered %s with status %r' % (url, code, document['status'])))
    elif is_health_path(path):
        results.append(result('http:%s' % label, CRIT, code, expected_status,
                              'GET %s answered %s without a JSON status field' % (url, code)))
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


def check_tls(url, warn_days, crit_days, timeout, validate_certs, ca_path, now=None):
    """Days until the server certificate of an https URL expires."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 443
    name = 'tls:%s:%s' % (host, port)
    threshold = {'warn_days': warn_days, 'crit_days': crit_days}
    deadline = Deadline(timeout)
    try:
        context = _shared_context(validate_certs, ca_path)
        with deadline, deadline.register(socket.create_connection((host, port), timeout=timeout)) as sock:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                not_after = tls.getpeercert().get('notAfter') if validate_certs else None
                if not not_after:
                    der = tls.getpeercert(binary_form=True)
                    not_after = _decode_der_not_after(der) if der else None
    except ssl.SSLCertVerificationError as exc:
        return result(name, CRIT, None, threshold, 'certificate of %s:%s is not trusted: %s' % (host, port, exc.verify_message or exc))
    except (OSError, ssl.SSLError, ValueError) as exc:
        if deadline.expired:
            return result(name, CRIT, None, threshold, 'no TLS handshake with %s:%s within %ss' % (host, port, timeout))
        return result(name, CRIT, None, threshold, 'TLS handshake with %s:%s failed: %s' % (host, port, exc))
    if not not_after:
        return result(name, UNKNOWN, None, threshold, 'no certificate expiry date from %s:%s' % (host, port))
    expires = ssl.cert_time_to_seconds(not_after)
    days = round((expires - (now if now is not None else time.time())) / 86400.0, 1)
    return result(name, grade_below(days, warn_days, crit_days), days, threshold,
                  'certificate expires %s, in %s days' % (not_after, days))


# --------------------------------------------------------------------------- service

def read_pid_file(path):
    """The pid in a pid file; ValueError (saying why) when it holds none. Never blocks on a FIFO or device."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError('is not a regular file')
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_NOCTTY', 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise ValueError('is not a regular file')
        text = os.read(fd, MAX_PID_FILE_BYTES + 1).decode('ascii', 'replace').strip()
    finally:
        os.close(fd)
    if not text.isdigit() or len(text) > len(str(PID_MAX)) or not 0 < int(text) <= PID_MAX:
        raise ValueError('holds no pid')
    return int(text)


def check_service(name, manager, pid_file, run_command=None, systemctl=None):
    """The unit is active (systemd) or the pid in pid_file is alive (process)."""
    if manager == 'process':
        label = 'service:%s' % (pid_file or name)
        if not pid_file:
            return result(label, UNKNOWN, None, 'running', 'service.pid_file is needed with manager=process')
        try:
            pid = read_pid_file(pid_file)
        except FileNotFoundError:
            return result(label, CRIT, 'stopped', 'running', 'pid file %s does not exist' % pid_file)
        except ValueError as exc:
            return result(label, CRIT, 'stopped', 'running', 'pid file %s %s' % (pid_file, exc))
        except OSError as exc:
            return result(label, UNKNOWN, None, 'running', 'cannot read pid file %s: %s' % (pid_file, exc.strerror or exc))
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
    if not UNIT_NAME.match(name or ''):
        return result(label, CRIT, None, 'active', 'service name %r is not a systemd unit name' % (name or '')[:80])
    rc, out, err = run_command([systemctl, 'is-active', '--', name])  # '--': a name is never read as an option
    state = (out or '').strip().splitlines()[-1] if (out or '').strip() else 'unknown'
    if state == 'active':
        return result(label, OK, state, 'active', 'unit %s is active' % name)
    if state in ('activating', 'reloading'):
        return result(label, WARN, state, 'active', 'unit %s is %s' % (name, state))
    detail = ' '.join((err or '').split())
    return result(label, CRIT, state, 'active', 'unit %s is %s (rc=%s)%s' % (name, state, rc, (': ' + detail) if detail else ''))


# --------------------------------------------------------------------------- resources

def disk_usage_percent(path):
    """Used percentage of the file system holding path, as df computes it (node_facts.disk_usage)."""
    return disk_usage(path)['used_pct']


def check_disk(paths, warn_percent, crit_percent, usage=disk_usage_percent):
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


def memory_usage_percent(meminfo):
    """Used memory percentage from /proc/meminfo (node_facts.memory_usage: MemTotal - MemAvailable)."""
    return memory_usage(meminfo)['used_percent']


def check_memory(warn_percent, crit_percent, meminfo='/proc/meminfo'):
    """Used memory percentage against thresholds."""
    threshold = {'warn': warn_percent, 'crit': crit_percent}
    try:
        percent = memory_usage_percent(meminfo)
    except (OSError, ValueError) as exc:
        return result('memory', UNKNOWN, None, threshold, 'cannot read memory usage: %s' % exc)
    return result('memory', grade_above(percent, warn_percent, crit_percent), percent, threshold,
                  '%s%% used (warn above %s%%, crit above %s%%)' % (percent, warn_percent, crit_percent))


# --------------------------------------------------------------------------- log errors

def tail_lines(path, max_bytes):
    size = os.path.getsize(path)
    with open(path, 'rb') as stream:
        if size > max_bytes:
            stream.seek(size - max_bytes)
            stream.readline()  # drop the partial first line
        data = stream.read()
    return data.decode('utf-8', 'replace').splitlines()


def line_time(line):
    match = LOG_TIMESTAMP.match(line)
    if not match:
        return None
    try:
        return datetime.datetime.strptime(match.group(1) + ' ' + match.group(2), '%Y-%m-%d %H:%M:%S')
    except ValueError:
        return None


def check_log(path, window_minutes, last_lines, patterns, warn_count, crit_count, newest, max_bytes=50 * 1024 * 1024, now=None):
    """Lines matching ERROR/CRITICAL/Traceback within the last window_minutes or last_lines.

    In window mode a line's time is its leading ``YYYY-MM-DD HH:MM:SS`` (Victor's log format,
    local time); lines without one (traceback bodies) take the time of the line before.
    """
    name = 'log:%s' % path
    threshold = {'warn': warn_count, 'crit': crit_count}
    regexes = [re.compile(p) for p in patterns]
    if os.path.exists(path) and not os.path.isfile(path):
        return result(name, UNKNOWN, None, threshold, 'log %s is not a regular file' % path), []
    try:
        lines = tail_lines(path, max_bytes)
    except FileNotFoundError:
        return result(name, UNKNOWN, None, threshold, 'log %s does not exist' % path), []
    except (OSError, IOError) as exc:
        return result(name, UNKNOWN, None, threshold, 'cannot read log %s: %s' % (path, getattr(exc, 'strerror', None) or exc)), []
    if last_lines:
        scope = lines[-last_lines:]
        scope_text = 'last %d lines' % last_lines
    else:
        try:
            since = (now or datetime.datetime.now()) - datetime.timedelta(minutes=window_minutes)
        except OverflowError:  # a window reaching before year 1 covers the whole file
            since = datetime.datetime.min
        scope = []
        current = None
        for line in lines:
            stamp = line_time(line)
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

def newest_backup(path, pattern, complete_marker):
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


def check_backup(path, pattern, complete_marker, warn_age_hours, crit_age_hours, now=None):
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

def check_sqlite(path, missing_ok, timeout=5.0):
    """PRAGMA quick_check on a database opened through sqlite_ro (never creates or changes a file)."""
    name = 'sqlite:%s' % path
    if not os.path.exists(path):
        if missing_ok:
            return result(name, OK, 'absent', 'ok', 'database %s does not exist yet (missing_ok)' % path)
        return result(name, CRIT, 'absent', 'ok', 'database %s does not exist' % path)
    if not os.path.isfile(path):
        return result(name, CRIT, None, 'ok', '%s is not a regular file' % path)
    connection = None
    note = ''
    try:
        connection, how = sqlite_ro.connect_readonly(path, timeout)
        if how['wal_ignored']:
            note = ' (main file only: %s-wal has no -shm beside it, reading it would create one)' % os.path.basename(path)
        rows = [row[0] for row in connection.execute('PRAGMA quick_check').fetchall()]
    except (sqlite3.Error, OSError) as exc:
        return result(name, CRIT, None, 'ok', 'cannot check %s: %s' % (path, exc))
    finally:
        if connection is not None:
            connection.close()
    if rows == ['ok']:
        return result(name, OK, 'ok', 'ok', 'quick_check ok' + note)
    return result(name, CRIT, rows[:5], 'ok', 'quick_check found %d problems: %s%s' % (len(rows), '; '.join(rows[:3]), note))


def import_psycopg():
    """psycopg (3), or MissingLibraryError; imported only when a PostgreSQL check runs."""
    try:
        import psycopg  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise MissingLibraryError('psycopg', exc)
    return psycopg


def check_postgres(options, psycopg=None):
    """Connect, SELECT 1, and connections in use versus max_connections.

    options: the module's postgres option (the common connection options, warn_percent, crit_percent).
    """
    driver = psycopg or import_psycopg()
    conn = libpq_params(options)
    target = '%s:%s/%s' % (conn.get('host') or 'local socket', conn.get('port'), conn.get('dbname'))
    warn_percent, crit_percent = options['warn_percent'], options['crit_percent']
    threshold = {'warn': warn_percent, 'crit': crit_percent}
    try:
        # connect_timeout bounds connecting (libpq waits forever at 0: validate_params refuses it)
        with driver.connect(**conn) as connection:
            with connection.cursor() as cursor:
                # SET LOCAL, not a startup option: poolers such as pgbouncer refuse unknown startup parameters
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", ('%ds' % int(options['connect_timeout']),))
                cursor.execute('SELECT 1')
                cursor.fetchone()
                cursor.execute("SELECT count(*) FILTER (WHERE backend_type = 'client backend'), current_setting('max_connections')::int"
                               " FROM pg_stat_activity")
                used, maximum = cursor.fetchone()
    except Exception as exc:  # pylint: disable=broad-except
        message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, [options.get('login_password')])
        return [result('postgres:connect', CRIT, None, 'SELECT 1', 'cannot query %s: %s' % (target, message)),
                result('postgres:connections', UNKNOWN, None, threshold, 'not connected')]
    percent = round(used * 100.0 / maximum, 1) if maximum else 0.0
    return [result('postgres:connect', OK, 1, 'SELECT 1', 'connected to %s' % target),
            result('postgres:connections', grade_above(percent, warn_percent, crit_percent), percent, threshold,
                   '%s of %s connections used (%s%%)' % (used, maximum, percent))]


# --------------------------------------------------------------------------- orchestration

CHECK_OPTIONS = ('http', 'tls', 'service', 'disk', 'memory', 'log', 'backup', 'sqlite', 'postgres', 'fleet')


def option_defaults(name):
    """The defaults of the dict option name, read from the argument spec (the one place they are written)."""
    return dict((key, spec.get('default')) for key, spec in health_argument_spec()[name]['options'].items())


def complete(name, given):
    """The dict option name with the argument spec's defaults for what is not given.

    An empty string or list counts as not given where a default exists (``paths: []`` checks the default paths), so
    every default is written once, in the argument spec. Also for an absent option (fleet
    without http) and callers that are not the module.
    """
    options = option_defaults(name)
    # an empty value is kept where there is no default to fall back to (log.path '' is checked and reported)
    options.update((key, value) for key, value in (given or {}).items()
                   if value is not None and (value not in ('', []) or options.get(key) is None))
    return options


def http_options(http):
    """Keyword arguments of check_http from the module's http option (missing keys: the argument spec's defaults)."""
    http = complete('http', http)
    headers = dict((str(k), str(v)) for k, v in http['headers'].items())
    if http['bearer_token']:
        headers['Authorization'] = 'Bearer %s' % http['bearer_token']
    return dict(headers=headers, timeout=http['timeout'], validate_certs=http['validate_certs'], ca_path=http['ca_path'],
                use_proxy=http['use_proxy'], expected_status=http['expected_status'], latency_warn_ms=http['latency_warn_ms'],
                latency_crit_ms=http['latency_crit_ms'])


def check_endpoint(url, paths, options, expected_version=None, tls=None, fetch=http_get):
    """All HTTP checks of one base URL (each path, plus the certificate for https)."""
    checks = []
    for index, path in enumerate(paths or complete('http', None)['paths']):
        checks.extend(check_http(url, path, expected_version=expected_version if index == 0 else None, fetch=fetch, **options))
    if tls is not None and url.lower().startswith('https://') and not url_problem(url):
        tls = complete('tls', tls)
        checks.append(check_tls(url, tls['warn_days'], tls['crit_days'], timeout=options['timeout'],
                                validate_certs=options['validate_certs'], ca_path=options['ca_path']))
    return checks


def check_fleet(endpoints, http, max_workers, tls=None, fetch=http_get):
    """Check many endpoints concurrently; one entry per endpoint, in the given order."""
    options = http_options(http)
    http = complete('http', http)

    def one(endpoint):
        url = endpoint['url']
        try:
            checks = check_endpoint(url, endpoint.get('paths') or http['paths'], options,
                                    endpoint.get('expected_version') or http['expected_version'], tls, fetch)
        except Exception as exc:  # pylint: disable=broad-except
            # whatever one endpoint answers, the other endpoints' results still come back
            message = redact('checking %s failed: %s: %s' % (url, type(exc).__name__, exc), options['headers'].values())
            checks = [result('http', CRIT, None, None, message)]
        return {'name': endpoint.get('name') or url, 'url': url, 'status': verdict(checks), 'checks': checks}

    if not endpoints:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(endpoints)))) as pool:
        return list(pool.map(one, endpoints))


def run_checks(params, run_command=None, systemctl=None, fetch=http_get):
    """Run every check the parameters ask for; returns (checks, log_lines, endpoints).

    params are the module's: every given dict option holds all its keys (the argument spec's defaults).
    """
    checks, log_lines, endpoints = [], [], []
    given = dict((name, complete(name, params[name])) for name in CHECK_OPTIONS if params.get(name))
    http = given.get('http')
    if http and http['url']:
        checks.extend(check_endpoint(http['url'], http['paths'], http_options(http), http['expected_version'],
                                     given.get('tls'), fetch))
    if 'service' in given:
        checks.append(check_service(run_command=run_command, systemctl=systemctl, **given['service']))
    if 'disk' in given:
        checks.extend(check_disk(**given['disk']))
    if 'memory' in given:
        checks.append(check_memory(**given['memory']))
    if 'log' in given:
        check, log_lines = check_log(**given['log'])
        checks.append(check)
    if 'backup' in given:
        checks.append(check_backup(**given['backup']))
    if 'sqlite' in given:
        for path in given['sqlite']['paths'] or []:
            checks.append(check_sqlite(path, given['sqlite']['missing_ok']))
    if 'postgres' in given:
        checks.extend(check_postgres(given['postgres']))
    if 'fleet' in given:
        endpoints = check_fleet(given['fleet']['endpoints'], http, given['fleet']['max_workers'], given.get('tls'), fetch)
    return checks, log_lines, endpoints


def postgres_options():
    """The postgres check's options: the common connection options and thresholds.

    Two defaults differ from the common ones on purpose (documented in the victor.ops.postgres
    fragment's HEALTH, checked by tests/unit/test_postgres_common.py): a health check gives up
    sooner (connect_timeout 5, also its statement_timeout), and it needs no application database
    (login_db postgres, which every cluster has).
    """
    options = postgres_common_argument_spec()
    options['connect_timeout']['default'] = 5
    options['login_db']['default'] = 'postgres'
    options.update(warn_percent=dict(type='float', default=80), crit_percent=dict(type='float', default=90))
    return options


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
            window_minutes=dict(type='int', default=1440),  # last_lines, when given, wins (check_log)
            last_lines=dict(type='int'),
            patterns=dict(type='list', elements='str', default=[DEFAULT_LOG_PATTERN]),
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
        postgres=dict(type='dict', options=postgres_options()),
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
