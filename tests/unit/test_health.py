"""victor_health checks against real loopback HTTP/TLS servers, files, SQLite and processes."""
import datetime
import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

from ansible_collections.victor.ops.plugins.module_utils import health


def _as_module(options, function):
    """function called as the module calls it: the argument spec's defaults (of the dict option, or options,
    named) for the parameters a test leaves out. The functions have no defaults of their own."""
    import inspect
    parameters = inspect.signature(function).parameters
    options = (options,) if isinstance(options, str) else options

    def call(*args, **kwargs):
        given = inspect.signature(function).bind_partial(*args, **kwargs).arguments
        defaults = {}
        for option in reversed(options):  # the first option named wins
            defaults.update((k, v) for k, v in health.option_defaults(option).items() if k in parameters)
        return function(**dict(defaults, **given))
    return call


check_service = _as_module('service', health.check_service)
check_disk = _as_module('disk', health.check_disk)
check_memory = _as_module('memory', health.check_memory)
check_log = _as_module('log', health.check_log)
check_backup = _as_module('backup', health.check_backup)
check_fleet = _as_module('fleet', health.check_fleet)
check_http = _as_module('http', health.check_http)
check_tls = _as_module(('tls', 'http'), health.check_tls)  # timeout, validate_certs and ca_path are http's
check_sqlite = _as_module('sqlite', health.check_sqlite)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes = {
        '/health': (200, {'status': 'healthy', 'version': '0.9.5'}, 0),
        '/degraded': (200, {'status': 'degraded'}, 0),
        '/broken': (500, {'detail': 'boom'}, 0),
        '/slow': (200, {'status': 'healthy'}, 0.3),
        '/plain': (200, 'hello', 0),
        '/not-json': (200, 'hello', 0),
        '/components': (200, {'status': 'healthy', 'components': {'database': 'healthy', 'cache': {'status': 'unhealthy'}}}, 0),
        '/auth': (200, {'status': 'healthy'}, 0),
        '/status': (200, {'connected': True, 'provider': 'ollama', 'mode': 'chat'}, 0),
        '/status-down': (200, {'connected': False, 'provider': 'anthropic'}, 0),
    }

    def do_GET(self):  # noqa: N802 (http.server naming)
        code, body, delay = self.routes.get(self.path, (404, {'detail': 'Not Found'}, 0))
        if self.path == '/auth' and self.headers.get('Authorization') != 'Bearer s3cret':
            code, body = 401, {'detail': 'unauthorized'}
        if delay:
            time.sleep(delay)
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json' if isinstance(body, dict) or self.path == '/not-json' else 'text/plain')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep pytest output clean
        pass


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope='module')
def server():
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    _serve(srv)
    yield 'http://127.0.0.1:%d' % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _by_name(checks):
    return dict((c['name'], c) for c in checks)


# ----------------------------------------------------------------- verdict and thresholds

@pytest.mark.parametrize('value,expected', [(84.9, 'ok'), (85, 'ok'), (85.1, 'warn'), (95, 'warn'), (95.1, 'crit')])
def test_grade_above_is_strictly_above(value, expected):
    assert health.grade_above(value, 85, 95) == expected


@pytest.mark.parametrize('value,expected', [(0, 'ok'), (1, 'warn'), (49, 'warn'), (50, 'crit')])
def test_grade_at_least_counts(value, expected):
    assert health.grade_at_least(value, 1, 50) == expected


@pytest.mark.parametrize('value,expected', [(31, 'ok'), (30, 'ok'), (29.9, 'warn'), (7, 'warn'), (6.9, 'crit'), (-2, 'crit')])
def test_grade_below_days(value, expected):
    assert health.grade_below(value, 30, 7) == expected


@pytest.mark.parametrize('statuses,expected', [
    ([], 'healthy'), (['ok', 'ok'], 'healthy'), (['ok', 'warn'], 'degraded'), (['ok', 'unknown'], 'degraded'),
    (['warn', 'crit', 'ok'], 'unhealthy'), (['unknown', 'crit'], 'unhealthy'),
])
def test_verdict(statuses, expected):
    assert health.verdict([health.result('c%d' % i, s) for i, s in enumerate(statuses)]) == expected


@pytest.mark.parametrize('status,fail_on,fails', [
    ('healthy', 'unhealthy', False), ('degraded', 'unhealthy', False), ('unhealthy', 'unhealthy', True),
    ('degraded', 'degraded', True), ('healthy', 'degraded', False), ('unhealthy', 'never', False),
])
def test_should_fail(status, fail_on, fails):
    assert health.should_fail(status, fail_on) is fails


def test_worst_and_summary():
    assert health.worst(['healthy', 'unhealthy', 'degraded']) == 'unhealthy'
    assert health.worst([]) == 'healthy'
    assert health.summarize([health.result('a', 'ok'), health.result('b', 'warn'), health.result('c', 'warn')]) == \
        {'ok': 1, 'warn': 2, 'crit': 0, 'unknown': 0}


@pytest.mark.parametrize('params,fragment', [
    ({'disk': {'warn_percent': -1, 'crit_percent': 95}}, 'disk.warn_percent must not be negative'),
    ({'disk': {'warn_percent': 96, 'crit_percent': 95}}, 'disk.warn_percent (96) must not be greater than disk.crit_percent (95)'),
    ({'memory': {'warn_percent': 80, 'crit_percent': 120}}, 'memory.crit_percent is a percentage'),
    ({'tls': {'warn_days': 5, 'crit_days': 10}}, 'tls.warn_days (5) must not be smaller than tls.crit_days (10)'),
    ({'http': {'url': 'not a url', 'latency_warn_ms': 500, 'latency_crit_ms': 2000}}, 'must start with http:// or https://'),
    ({'http': {'url': 'http://127.0.0.1:99999'}}, 'malformed URL'),
    ({'http': {'url': 'http://'}}, 'has no host'),
    ({'http': {'url': 'http://127.0.0.1', 'timeout': 0}}, 'http.timeout must be greater than 0'),
    ({'http': {'url': 'http://127.0.0.1', 'paths': ['health']}}, "must start with '/'"),
    ({'http': {'url': 'http://127.0.0.1', 'latency_warn_ms': 3000, 'latency_crit_ms': 2000}}, 'latency_warn_ms (3000)'),
    ({'log': {'path': '/x', 'patterns': ['(']}}, 'not a valid regular expression'),
    ({'log': {'path': '/x', 'window_minutes': -5}}, 'log.window_minutes must be greater than 0'),
    ({'backup': {'path': '/x', 'warn_age_hours': 50, 'crit_age_hours': 26}}, 'backup.warn_age_hours (50)'),
    ({'fleet': {'endpoints': [], 'max_workers': 0}}, 'fleet.max_workers must be at least 1'),
    ({'http': {'url': 'https://127.0.0.1', 'ca_path': '/'}}, "http.ca_path: cannot load CA bundle '/': Is a directory"),
    ({'http': {'url': 'https://127.0.0.1', 'ca_path': '/nonexistent'}}, 'No such file or directory'),
    ({'http': {'url': 'https://127.0.0.1', 'ca_path': '/etc/hostname'}}, 'NO_CERTIFICATE_OR_CRL_FOUND'),
])
def test_validate_params_names_the_problem(params, fragment):
    errors = health.validate_params(params)
    assert any(fragment in e for e in errors), errors


def test_validate_params_accepts_defaults():
    params = {'http': {'url': 'https://127.0.0.1:8765', 'paths': ['/health'], 'timeout': 10, 'latency_warn_ms': 500, 'latency_crit_ms': 2000},
              'disk': {'warn_percent': 85, 'crit_percent': 95}, 'memory': {'warn_percent': 80, 'crit_percent': 95},
              'tls': {'warn_days': 30, 'crit_days': 7}, 'log': {'path': '/x', 'warn_count': 1, 'crit_count': 50}}
    assert health.validate_params(params) == []


# ----------------------------------------------------------------- HTTP

def test_http_healthy_with_version(server):
    checks = _by_name(check_http(server, '/health', expected_version='0.9.5'))
    assert checks['http:/health']['status'] == 'ok'
    assert checks['http:/health']['value'] == 200
    assert checks['latency:/health']['status'] == 'ok'
    assert checks['version:/health']['status'] == 'ok'
    assert checks['version:/health']['value'] == '0.9.5'


def test_http_version_mismatch_is_crit(server):
    check = _by_name(check_http(server, '/health', expected_version='0.9.4'))['version:/health']
    assert check['status'] == 'crit'
    assert 'running 0.9.5, expected 0.9.4' in check['message']


def test_http_degraded_status_word_warns(server):
    assert _by_name(check_http(server, '/degraded'))['http:/degraded']['status'] == 'warn'


def test_http_error_code_is_crit_with_body(server):
    check = _by_name(check_http(server, '/broken'))['http:/broken']
    assert (check['status'], check['value']) == ('crit', 500)
    assert 'boom' in check['message']


def test_http_expected_status_can_be_widened(server):
    assert _by_name(check_http(server, '/broken', expected_status=[200, 500]))['http:/broken']['status'] == 'ok'


def test_http_plain_body_ok(server):
    assert _by_name(check_http(server, '/plain'))['http:/plain']['status'] == 'ok'


def test_http_invalid_json_where_json_is_expected_is_crit(server):
    # issue 13: a 200 answer with a JSON Content-Type and a body that is not JSON counted as healthy
    check = _by_name(check_http(server, '/not-json'))['http:/not-json']
    assert (check['status'], check['value']) == ('crit', 200)
    assert 'where JSON was expected' in check['message']


@pytest.mark.parametrize('warn,crit,expected', [(100, 2000, 'warn'), (50, 100, 'crit'), (3000, 6000, 'ok')])
def test_http_latency_thresholds(server, warn, crit, expected):
    check = _by_name(check_http(server, '/slow', latency_warn_ms=warn, latency_crit_ms=crit))['latency:/slow']
    assert check['status'] == expected
    assert check['value'] >= 300
    assert check['threshold'] == {'warn': warn, 'crit': crit}


def test_http_components_reported(server):
    check = _by_name(check_http(server, '/components'))['components:/components']
    assert check['status'] == 'crit'
    assert 'cache' in check['message'] and 'database' not in check['message']


def test_http_provider_connectivity_from_status(server):
    up = _by_name(check_http(server, '/status'))['provider:/status']
    assert (up['status'], up['value']) == ('ok', 'ollama')
    down = _by_name(check_http(server, '/status-down'))['provider:/status-down']
    assert (down['status'], down['message']) == ('crit', 'anthropic not connected')
    assert 'provider:/health' not in _by_name(check_http(server, '/health'))


def test_http_bearer_token_sent(server):
    opts = health.http_options({'bearer_token': 's3cret'})
    assert _by_name(check_http(server, '/auth', **opts))['http:/auth']['status'] == 'ok'
    assert _by_name(check_http(server, '/auth'))['http:/auth']['value'] == 401


def test_http_unreachable_is_crit_not_exception():
    checks = _by_name(check_http('http://127.0.0.1:%d' % _free_port(), '/health', timeout=2))
    assert checks['http:/health']['status'] == 'crit'
    assert 'cannot reach' in checks['http:/health']['message']
    assert checks['latency:/health']['status'] == 'unknown'


def test_http_timeout_is_crit(server):
    check = _by_name(check_http(server, '/slow', timeout=0.05))['http:/slow']
    assert check['status'] == 'crit'
    assert 'failed' in check['message'] or 'no answer' in check['message'] or 'cannot reach' in check['message']


@pytest.mark.parametrize('url', ['localhost:8765', 'http://[::1', 'ftp://127.0.0.1/', 'http:///health'])
def test_http_malformed_url_is_crit(url):
    check = check_http(url, '/health')[0]
    assert check['status'] == 'crit' and check['message']


# ----------------------------------------------------------------- TLS

@pytest.fixture(scope='module')
def tls_server(tmp_path_factory):
    openssl = shutil.which('openssl')
    if openssl is None:
        pytest.fail('openssl is needed to make a test certificate')
    tmp = tmp_path_factory.mktemp('tls')
    cert, key = str(tmp / 'cert.pem'), str(tmp / 'key.pem')
    subprocess.run([openssl, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '10',
                    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], check=True, capture_output=True)
    import ssl
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    _serve(srv)
    yield 'https://127.0.0.1:%d' % srv.server_address[1], cert
    srv.shutdown()
    srv.server_close()


def test_tls_days_left_with_verification(tls_server):
    url, cert = tls_server
    check = check_tls(url, warn_days=30, crit_days=7, ca_path=cert)
    assert check['status'] == 'warn', check
    assert 9 < check['value'] <= 10
    assert check_tls(url, warn_days=30, crit_days=11, ca_path=cert)['status'] == 'crit'
    assert check_tls(url, warn_days=5, crit_days=2, ca_path=cert)['status'] == 'ok'


def test_tls_untrusted_is_crit_and_unverified_still_reads_expiry(tls_server):
    url, _cert = tls_server
    untrusted = check_tls(url)
    assert untrusted['status'] == 'crit' and 'not trusted' in untrusted['message']
    unverified = check_tls(url, validate_certs=False)
    assert unverified['status'] == 'warn' and 9 < unverified['value'] <= 10


@pytest.mark.parametrize('ca_path', ['/', '/nonexistent', '/etc/hostname'])
def test_unloadable_ca_bundle_is_crit_not_exception(tls_server, ca_path):
    url, _cert = tls_server
    checks = _by_name(health.check_endpoint(url, ['/health'], health.http_options({'ca_path': ca_path}), tls={}))
    port = url.rsplit(':', 1)[1]
    assert checks['http:/health']['status'] == 'crit' and 'request to %s/health failed' % url in checks['http:/health']['message']
    assert checks['tls:127.0.0.1:%s' % port]['status'] == 'crit' and 'TLS handshake' in checks['tls:127.0.0.1:%s' % port]['message']


def test_https_endpoint_checks_include_certificate(tls_server):
    url, cert = tls_server
    assert health.validate_params({'http': {'url': url, 'ca_path': cert}}) == []
    options = health.http_options({'ca_path': cert})
    checks = _by_name(health.check_endpoint(url, ['/health'], options, '0.9.5', tls={'warn_days': 5, 'crit_days': 2}))
    assert checks['http:/health']['status'] == 'ok'
    assert checks['tls:127.0.0.1:%s' % url.rsplit(':', 1)[1]]['status'] == 'ok'


# ----------------------------------------------------------------- service

def test_service_systemd_states():
    def runner(state, rc):
        return lambda argv: (rc, state + '\n', '')
    assert check_service('victor-api', run_command=runner('active', 0), systemctl='/bin/systemctl')['status'] == 'ok'
    assert check_service('victor-api', run_command=runner('activating', 3), systemctl='/bin/systemctl')['status'] == 'warn'
    stopped = check_service('victor-api', run_command=runner('inactive', 3), systemctl='/bin/systemctl')
    assert (stopped['status'], stopped['value']) == ('crit', 'inactive')
    assert check_service('victor-api', run_command=runner('active', 0), systemctl=None)['status'] == 'unknown'


def test_service_process_pid_file(tmp_path):
    pid_file = tmp_path / 'victor.pid'
    pid_file.write_text('%d\n' % os.getpid())
    assert check_service(manager='process', pid_file=str(pid_file))['status'] == 'ok'
    proc = subprocess.Popen(['true'])
    proc.wait()
    pid_file.write_text(str(proc.pid))
    assert check_service(manager='process', pid_file=str(pid_file))['status'] == 'crit'
    pid_file.write_text('garbage')
    assert check_service(manager='process', pid_file=str(pid_file))['status'] == 'crit'
    assert check_service(manager='process', pid_file=str(tmp_path / 'none.pid'))['status'] == 'crit'
    assert check_service(manager='process', pid_file=None)['status'] == 'unknown'


def test_service_pid_file_that_is_an_endless_device_is_read_bounded():
    # /dev/zero never ends: an unbounded read() once took the whole machine's memory.
    check = check_service(manager='process', pid_file='/dev/zero')
    assert check['status'] == 'crit' and 'is not a regular file' in check['message']


# ----------------------------------------------------------------- disk and memory

def test_disk_thresholds_on_real_filesystem(tmp_path):
    used = health.disk_usage_percent(str(tmp_path))
    assert 0 <= used <= 100
    assert check_disk([str(tmp_path)], 100, 100)[0]['status'] == 'ok'
    if used > 0:
        assert check_disk([str(tmp_path)], 0, 100)[0]['status'] == 'warn'
        assert check_disk([str(tmp_path)], 0, 0)[0]['status'] == 'crit'
    missing = check_disk([str(tmp_path / 'nope')])[0]
    assert missing['status'] == 'unknown' and 'does not exist' in missing['message']


def test_disk_uses_usage_function():
    check = check_disk(['/data'], 85, 95, usage=lambda path: 90.0)[0]
    assert (check['name'], check['status'], check['value']) == ('disk:/data', 'warn', 90.0)


def _meminfo(tmp_path, total, available):
    path = tmp_path / 'meminfo'
    path.write_text('MemTotal:       %d kB\nMemFree:          1000 kB\nMemAvailable:   %d kB\n' % (total, available))
    return str(path)


@pytest.mark.parametrize('available,expected', [(500, 'ok'), (150, 'warn'), (40, 'crit')])
def test_memory_thresholds(tmp_path, available, expected):
    check = check_memory(80, 95, meminfo=_meminfo(tmp_path, 1000, available))
    assert check['status'] == expected
    assert check['value'] == round(100 - available / 10.0, 1)


def test_memory_unreadable_is_unknown(tmp_path):
    assert check_memory(meminfo=str(tmp_path / 'missing'))['status'] == 'unknown'
    assert check_memory(meminfo=str(tmp_path))['status'] == 'unknown'
    assert check_memory()['value'] > 0  # the real /proc/meminfo


# ----------------------------------------------------------------- log

def _write_log(path, now):
    old = (now - datetime.timedelta(hours=30)).strftime('%Y-%m-%d %H:%M:%S')
    new = (now - datetime.timedelta(minutes=10)).strftime('%Y-%m-%d %H:%M:%S')
    lines = [
        '%s,001 - victor - victor.api - ERROR - old failure' % old,
        '%s,002 - victor - victor.api - INFO - started' % new,
        '%s,003 - victor - victor.api - ERROR - provider timeout' % new,
        'Traceback (most recent call last):',
        '  File "x.py", line 1, in <module>',
        '%s,004 - victor - victor.api - CRITICAL - database locked' % new,
        '%s,005 - victor - victor.api - INFO - error_count metric is fine' % new,
    ]
    path.write_text('\n'.join(lines) + '\n')


def test_log_window_counts_recent_errors_only(tmp_path):
    now = datetime.datetime.now()
    log = tmp_path / 'victor.log'
    _write_log(log, now)
    check, lines = check_log(str(log), window_minutes=60, warn_count=1, crit_count=5, newest=2, now=now)
    assert check['value'] == 3  # ERROR, Traceback, CRITICAL; not the old one, not lowercase "error_count"
    assert check['status'] == 'warn'
    assert lines[0] == 'Traceback (most recent call last):'
    assert 'database locked' in lines[1]
    assert check_log(str(log), window_minutes=60 * 48, now=now)[0]['value'] == 4


def test_log_last_lines_and_thresholds(tmp_path):
    log = tmp_path / 'victor.log'
    _write_log(log, datetime.datetime.now())
    assert check_log(str(log), last_lines=2)[0]['value'] == 1
    assert check_log(str(log), last_lines=100, warn_count=1, crit_count=4)[0]['status'] == 'crit'
    assert check_log(str(log), last_lines=100, patterns=['provider'])[0]['value'] == 1
    assert check_log(str(log), last_lines=1, warn_count=1)[0]['status'] == 'ok'


def test_log_defaults_come_from_the_argument_spec(tmp_path):
    """Without window_minutes or last_lines the last 1440 minutes count; no patterns (or an empty list, as the
    module completes it) count ERROR, CRITICAL and tracebacks. Both defaults are in the argument spec only."""
    assert health.option_defaults('log')['window_minutes'] == 1440
    assert health.option_defaults('log')['patterns'] == [health.DEFAULT_LOG_PATTERN]
    now = datetime.datetime.now()
    log = tmp_path / 'victor.log'
    _write_log(log, now)
    check, _lines = check_log(str(log), now=now)
    assert check['value'] == 3 and 'last 1440 minutes' in check['message']  # the 30-hour-old ERROR is outside
    given = health.complete('log', {'path': str(log), 'patterns': [], 'last_lines': 100})
    assert given['patterns'] == [health.DEFAULT_LOG_PATTERN]
    assert health.check_log(now=now, **given)[0]['value'] == 4  # last_lines wins over the window default


def test_log_unreadable_is_unknown(tmp_path):
    assert check_log(str(tmp_path / 'missing.log'))[0]['status'] == 'unknown'
    assert check_log(str(tmp_path))[0]['status'] == 'unknown'  # a directory


def test_log_large_file_reads_only_tail(tmp_path):
    log = tmp_path / 'big.log'
    log.write_text('ERROR old\n' * 1000 + 'ERROR new\n')
    assert check_log(str(log), last_lines=5000, max_bytes=30)[0]['value'] == 2


# ----------------------------------------------------------------- backup

def _age(path, hours):
    stamp = time.time() - hours * 3600
    os.utime(str(path), (stamp, stamp))


def test_backup_newest_complete_file(tmp_path):
    (tmp_path / 'victor-1.tar.zst').write_text('x')
    _age(tmp_path / 'victor-1.tar.zst', 30)
    (tmp_path / 'victor-2.tar.zst.partial').write_text('x')  # newer but incomplete
    (tmp_path / 'victor-3.tar.zst').write_text('')  # newer but empty
    check = check_backup(str(tmp_path), 'victor-*', warn_age_hours=26, crit_age_hours=50)
    assert check['status'] == 'warn' and 29.9 < check['value'] < 30.1
    assert 'victor-1.tar.zst' in check['message']
    (tmp_path / 'victor-4.tar.zst').write_text('x')
    assert check_backup(str(tmp_path), 'victor-*')['status'] == 'ok'


def test_backup_directories_need_marker(tmp_path):
    done, unfinished = tmp_path / '20261120T000000Z', tmp_path / '20261125T000000Z'
    done.mkdir()
    unfinished.mkdir()
    (done / 'MANIFEST.json').write_text('{}')
    _age(done / 'MANIFEST.json', 60)
    check = check_backup(str(tmp_path), complete_marker='MANIFEST.json')
    assert check['status'] == 'crit' and check['value'] > 59


def test_backup_missing_or_empty_is_crit(tmp_path):
    assert check_backup(str(tmp_path))['status'] == 'crit'
    assert check_backup(str(tmp_path / 'nope'))['status'] == 'crit'


# ----------------------------------------------------------------- sqlite

def test_sqlite_quick_check_ok_and_read_only(tmp_path):
    db = tmp_path / 'victor.db'
    connection = sqlite3.connect(str(db))
    connection.execute('PRAGMA journal_mode=WAL')
    connection.execute('CREATE TABLE t (x)')
    connection.execute('INSERT INTO t VALUES (1)')
    connection.commit()
    connection.close()
    before = db.stat().st_mtime_ns
    assert check_sqlite(str(db))['status'] == 'ok'
    assert db.stat().st_mtime_ns == before


def test_sqlite_corrupt_and_missing(tmp_path):
    bad = tmp_path / 'bad.db'
    bad.write_bytes(b'SQLite format 3\x00' + b'\xff' * 4000)
    assert check_sqlite(str(bad))['status'] == 'crit'
    missing = tmp_path / 'missing.db'
    assert check_sqlite(str(missing))['status'] == 'crit'
    assert check_sqlite(str(missing), missing_ok=True)['status'] == 'ok'
    assert not missing.exists()


def test_sqlite_detects_damaged_pages(tmp_path):
    db = tmp_path / 'damaged.db'
    connection = sqlite3.connect(str(db))
    connection.execute('CREATE TABLE t (x TEXT)')
    connection.execute('CREATE INDEX i ON t (x)')
    connection.executemany('INSERT INTO t VALUES (?)', [('row %05d' % i,) for i in range(3000)])
    connection.commit()
    connection.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(2 * page + 100, len(data) - page, 3 * page):  # scribble over b-tree pages
        data[offset:offset + 64] = b'\x00\x11' * 32
    db.write_bytes(bytes(data))
    check = check_sqlite(str(db))
    assert check['status'] == 'crit', check


# ----------------------------------------------------------------- postgres without the library

def _postgres_options(**given):
    """The postgres option as the module hands it over: the argument spec's defaults, then what was given."""
    options = dict((name, spec.get('default')) for name, spec in health.postgres_options().items())
    options.update(given)
    return options


def test_postgres_missing_library(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'psycopg', None)
    with pytest.raises(health.MissingLibraryError) as info:
        health.check_postgres(_postgres_options(login_host='127.0.0.1'))
    assert info.value.library == 'psycopg'


def test_postgres_unreachable_is_crit():
    checks = _by_name(health.check_postgres(_postgres_options(login_host='127.0.0.1', login_port=_free_port(), connect_timeout=2)))
    assert checks['postgres:connect']['status'] == 'crit'
    assert 'cannot query 127.0.0.1' in checks['postgres:connect']['message']
    assert checks['postgres:connections']['status'] == 'unknown'


# ----------------------------------------------------------------- fleet and orchestration

def test_fleet_keeps_order_and_grades_each(server):
    endpoints = [{'url': server, 'name': 'good'}, {'url': 'http://127.0.0.1:%d' % _free_port(), 'name': 'down'},
                 {'url': server, 'name': 'old', 'expected_version': '0.9.4'}, {'url': 'bogus', 'name': 'bad-url'},
                 {'url': server, 'name': 'degraded', 'paths': ['/degraded']}]
    results = check_fleet(endpoints, {'timeout': 2})
    assert [r['name'] for r in results] == ['good', 'down', 'old', 'bad-url', 'degraded']
    assert [r['status'] for r in results] == ['healthy', 'unhealthy', 'unhealthy', 'unhealthy', 'degraded']


def test_fleet_runs_concurrently(server):
    started = time.monotonic()
    results = check_fleet([{'url': server, 'paths': ['/slow']}] * 20,
                          {'timeout': 5, 'latency_warn_ms': 5000, 'latency_crit_ms': 5000}, max_workers=20)
    elapsed = time.monotonic() - started
    assert [r['status'] for r in results] == ['healthy'] * 20, results
    assert elapsed < 3.0, elapsed  # 20 x 0.3 s one after another would be 6 s


def test_run_checks_combines_everything(server, tmp_path):
    log = tmp_path / 'victor.log'
    _write_log(log, datetime.datetime.now())
    params = {'http': {'url': server, 'paths': ['/health', '/degraded'], 'expected_version': '0.9.5'},
              'disk': {'paths': [str(tmp_path)], 'warn_percent': 100, 'crit_percent': 100},
              'memory': {'warn_percent': 100, 'crit_percent': 100},
              'log': {'path': str(log), 'last_lines': 3, 'newest': 1, 'warn_count': 5, 'crit_count': 10},
              'sqlite': {'paths': [str(tmp_path / 'none.db')], 'missing_ok': True},
              'service': {'name': 'victor-api', 'manager': 'systemd'}}
    params = dict((name, health.complete(name, given)) for name, given in params.items())  # as the module has them
    checks, lines, endpoints = health.run_checks(params, run_command=lambda argv: (0, 'active\n', ''), systemctl='/bin/systemctl')
    names = [c['name'] for c in checks]
    assert names == ['http:/health', 'latency:/health', 'version:/health', 'http:/degraded', 'latency:/degraded',
                     'service:victor-api', 'disk:%s' % tmp_path, 'memory', 'log:%s' % log, 'sqlite:%s' % (tmp_path / 'none.db')]
    assert health.verdict(checks) == 'degraded'
    assert len(lines) == 1 and endpoints == []


# ----------------------------------------------------------------- one place for defaults

def test_check_functions_repeat_no_argument_spec_default():
    """Defaults live in the argument spec only: a parameter named after an option of the module has no
    default of its own (the module, run_checks and the tests pass every value)."""
    import inspect
    spec = health.health_argument_spec()
    mirrors = {health.http_get: ['http'], health.check_http: ['http'], health.check_tls: ['tls', 'http'],
               health.check_service: ['service'], health.check_disk: ['disk'], health.check_memory: ['memory'],
               health.check_log: ['log'], health.newest_backup: ['backup'], health.check_backup: ['backup'],
               health.check_sqlite: ['sqlite']}
    for function, options in mirrors.items():
        names = set(name for option in options for name in spec[option]['options'])
        for name, parameter in inspect.signature(function).parameters.items():
            assert name not in names or parameter.default is inspect.Parameter.empty, (function.__name__, name)
