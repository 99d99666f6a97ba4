"""victor_health against hostile answers and inputs (issue 13): real loopback servers, FIFOs, WAL databases.

Every test here failed on b179f62: credentials followed redirects, ftp:// was followed, the
timeout was per read, deep JSON raised RecursionError, invalid JSON and status-less /health
counted as healthy, a FIFO pid file blocked, huge numbers raised OverflowError, a unit name
reached systemctl as an option, and the read-only SQLite check created -shm/-wal files.
"""
import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.victor.ops.plugins.module_utils import health

SECRET_TOKEN = 'T0KEN-S3CR3T'
SECRET_KEY = 'K3Y-S3CR3T'


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers per path; remembers the headers of every request it got."""

    seen = None  # list, set per server
    routes = {}

    def do_GET(self):  # noqa: N802 (http.server naming)
        self.seen.append((self.path, dict(self.headers)))
        route = self.routes.get(self.path.split('?')[0])
        if route is None:
            code, ctype, body = 200, 'application/json', json.dumps({'status': 'healthy'}).encode()
        else:
            code, ctype, body = route(self)
        self.send_response(code)
        if code in (301, 302, 303, 307, 308):
            self.send_header('Location', body.decode())
            body = b''
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _server(routes):
    handler = type('Handler', (_Recorder,), {'seen': [], 'routes': routes})
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return srv, 'http://127.0.0.1:%d' % srv.server_address[1], handler.seen


@pytest.fixture
def servers():
    started = []

    def start(routes=None):
        srv, url, seen = _server(routes or {})
        started.append(srv)
        return url, seen
    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def _check(url, path, **options):
    """check_http as the module calls it: the http option's defaults (http_options) for what a test leaves out."""
    options = dict(health.http_options(None), expected_version=None, **options)
    return dict((c['name'], c) for c in health.check_http(url, path, **options))['http:%s' % path]


# ----------------------------------------------------------------- redirects

def test_cross_origin_redirect_drops_token_and_api_key(servers):
    other, other_seen = servers()
    origin, origin_seen = servers({'/health': lambda h: (302, 'text/plain', (other + '/health').encode()),
                                   '/same': lambda h: (302, 'text/plain', b'/landing')})
    headers = {'Authorization': 'Bearer ' + SECRET_TOKEN, 'X-Api-Key': SECRET_KEY}
    check = _check(origin, '/health', headers=headers, timeout=5)
    assert check['status'] == 'ok', check  # the redirect is followed ...
    (path, sent), = other_seen
    assert path == '/health'
    assert SECRET_TOKEN not in json.dumps(sent) and SECRET_KEY not in json.dumps(sent), sent  # ... without the credentials
    # within the same origin the headers stay (a redirect to /landing on the same server)
    _check(origin, '/same', headers=headers, timeout=5)
    assert origin_seen[-1][0] == '/landing' and origin_seen[-1][1].get('X-Api-Key') == SECRET_KEY


@pytest.mark.parametrize('scheme', ['ftp', 'file'])
def test_redirect_to_non_http_scheme_is_not_followed(servers, scheme):
    trap = socket.socket()
    trap.bind(('127.0.0.1', 0))
    trap.listen(1)
    trap.setblocking(False)
    target = 'ftp://127.0.0.1:%d/victor' % trap.getsockname()[1] if scheme == 'ftp' else 'file:///etc/passwd'
    origin, _seen = servers({'/health': lambda h: (302, 'text/plain', target.encode())})
    try:
        check = _check(origin, '/health', timeout=3)
        assert check['status'] == 'crit'
        assert 'only http and https redirects are followed' in check['message'], check
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody connected to the ftp "server"
    finally:
        trap.close()


# ----------------------------------------------------------------- total deadline and size

def _drip_server(phase):
    """A raw server that sends its answer one byte every 0.5 s (in the status line or in the body)."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(4)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                head = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n'
                body = b'{"status": "healthy", "pad": "xxxxxxx"}\n'
                if phase == 'body':
                    conn.sendall(head)
                    drip = body
                else:
                    drip = head + body
                try:
                    for byte in drip:
                        if stop.wait(0.5):
                            break
                        conn.sendall(bytes([byte]))
                except OSError:
                    pass  # the client gave up: what the test wants
    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


@pytest.mark.parametrize('phase', ['headers', 'body'])
def test_timeout_is_a_total_deadline_against_a_trickling_server(phase):
    listener, stop = _drip_server(phase)
    try:
        started = time.monotonic()
        check = _check('http://127.0.0.1:%d' % listener.getsockname()[1], '/health', timeout=1.5)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        listener.close()
    assert check['status'] == 'crit'
    assert 'within 1.5s' in check['message'], check
    assert elapsed < 4, elapsed  # per-read timeouts let it run for the whole drip (20+ s)


def test_answer_larger_than_the_bound_is_crit(servers):
    big = json.dumps({'status': 'healthy', 'pad': 'x' * (health.MAX_BODY + 10)}).encode()
    url, _seen = servers({'/big': lambda h: (200, 'application/json', big)})
    check = _check(url, '/big', timeout=5)
    assert check['status'] == 'crit' and 'larger than' in check['message'], check


# ----------------------------------------------------------------- JSON answers

DEEP = ('[' * 100000 + ']' * 100000).encode()


def test_deeply_nested_json_is_crit_and_does_not_sink_the_fleet(servers):
    bad, _seen = servers({'/health': lambda h: (200, 'application/json', DEEP)})
    good, _seen2 = servers()
    check = _check(bad, '/health', timeout=5)
    assert check['status'] == 'crit' and 'nested' in check['message'], check
    results = health.check_fleet([{'url': bad, 'name': 'bad'}, {'url': good, 'name': 'good'}], {'timeout': 5}, 50)
    assert [(r['name'], r['status']) for r in results] == [('bad', 'unhealthy'), ('good', 'healthy')]


def test_json_nested_past_the_limit_is_refused_without_recursion():
    nested = {'status': 'healthy'}
    for _level in range(health.MAX_JSON_DEPTH + 1):
        nested = {'components': nested}
    document, problem = health.parse_json(json.dumps(nested))
    assert document is None and 'deeper than' in problem
    assert health.parse_json(json.dumps({'status': 'healthy'})) == ({'status': 'healthy'}, None)


@pytest.mark.parametrize('ctype,body', [
    ('application/json', b'{"version": "0.9.5"}'),  # JSON without a status
    ('text/plain', b'OK'),  # not JSON at all
    ('application/json', b'[]'),
])
def test_health_answer_must_say_its_status(servers, ctype, body):
    url, _seen = servers({'/health': lambda h: (200, ctype, body)})
    assert _check(url, '/health', timeout=5)['status'] == 'crit'


# ----------------------------------------------------------------- service

def test_fifo_pid_file_does_not_block(tmp_path):
    fifo = tmp_path / 'victor.pid'
    os.mkfifo(str(fifo))
    out = {}
    options = health.complete('service', {'manager': 'process', 'pid_file': str(fifo)})
    worker = threading.Thread(target=lambda: out.update(check=health.check_service(**options)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # release the blocked open() of the old code before failing
        os.close(os.open(str(fifo), os.O_WRONLY | os.O_NONBLOCK))
    assert not worker.is_alive(), 'check_service blocked on a FIFO'
    assert out['check']['status'] == 'crit' and 'not a regular file' in out['check']['message']


@pytest.mark.parametrize('text', ['9' * 60, '4194305', '-1', '0'])
def test_pid_out_of_range_is_no_pid(tmp_path, text):
    pid_file = tmp_path / 'victor.pid'
    pid_file.write_text(text + '\n')
    check = health.check_service(**health.complete('service', {'manager': 'process', 'pid_file': str(pid_file)}))
    assert check['status'] == 'crit' and 'holds no pid' in check['message']


def test_unit_name_never_reaches_systemctl_as_an_option():
    calls = []

    def run_command(argv):
        calls.append(argv)
        return 0, 'active\n', ''
    check = health.check_service('--version', 'systemd', None, run_command=run_command, systemctl='/bin/systemctl')
    assert check['status'] == 'crit' and calls == []
    assert health.check_service('victor-api', 'systemd', None, run_command=run_command, systemctl='/bin/systemctl')['status'] == 'ok'
    assert calls == [['/bin/systemctl', 'is-active', '--', 'victor-api']]
    errors = health.validate_params({'service': {'name': '--version', 'manager': 'systemd'}})
    assert any('not a systemd unit name' in e for e in errors), errors


# ----------------------------------------------------------------- numbers

@pytest.mark.parametrize('params,fragment', [
    ({'log': {'path': '/x', 'window_minutes': 1000000000000}}, 'log.window_minutes must be at most'),
    ({'log': {'path': '/x', 'newest': -1}}, 'log.newest must be at least 0'),
    ({'http': {'url': 'http://127.0.0.1:1', 'timeout': float('nan')}}, 'http.timeout must be a finite number'),
    ({'http': {'url': 'http://127.0.0.1:1', 'timeout': float('inf')}}, 'http.timeout must be a finite number'),
    ({'disk': {'warn_percent': float('nan'), 'crit_percent': 90}}, 'disk.warn_percent must be a finite number'),
    ({'postgres': {'connect_timeout': 0}}, 'postgres.connect_timeout must be 1-3600'),
    ({'postgres': {'connect_timeout': -1}}, 'postgres.connect_timeout must be 1-3600'),
])
def test_out_of_range_numbers_are_refused(params, fragment):
    errors = health.validate_params(params)
    assert any(fragment in e for e in errors), errors


def test_huge_log_window_counts_the_whole_file(tmp_path):
    log = tmp_path / 'victor.log'
    log.write_text('2001-01-01 00:00:00 ERROR old\n')
    check, _lines = health.check_log(**health.complete('log', {'path': str(log), 'window_minutes': 1000000000000}))
    assert check['value'] == 1


# ----------------------------------------------------------------- headers and tokens

def test_header_with_line_break_is_refused_without_showing_it():
    errors = health.validate_params({'http': {'url': 'http://127.0.0.1:1', 'bearer_token': SECRET_TOKEN + '\r\n',
                                              'headers': {'X-Api-Key': SECRET_KEY + '\n', 'Bad Name': 'x'}}})
    text = ' '.join(errors)
    assert 'http.bearer_token holds' in text and 'the value of X-Api-Key holds' in text and "'Bad Name'" in text
    assert SECRET_TOKEN not in text and SECRET_KEY not in text


def test_request_errors_never_show_header_values():
    # http.client refuses the value before sending and quotes it in its error: "Invalid header value b'...'"
    answer = health.http_get('http://127.0.0.1:1/health', headers={'Authorization': 'Bearer %s\r\n' % SECRET_TOKEN}, timeout=2,
                             validate_certs=True, ca_path=None, use_proxy=True)
    assert answer.error and SECRET_TOKEN not in answer.error, answer


# ----------------------------------------------------------------- SQLite read-only

def _wal_db(path, rows=1):
    connection = sqlite3.connect(str(path))
    connection.execute('PRAGMA journal_mode=WAL')
    connection.execute('CREATE TABLE t (x)')
    connection.executemany('INSERT INTO t VALUES (?)', [(i,) for i in range(rows)])
    connection.commit()
    return connection


def _listing(directory):
    return dict((p.name, p.stat().st_size) for p in directory.iterdir())


def test_sqlite_check_creates_no_file_beside_a_closed_wal_database(tmp_path):
    _wal_db(tmp_path / 'victor.db').close()  # the last close removes -wal and -shm
    before = _listing(tmp_path)
    assert sorted(before) == ['victor.db']
    check = health.check_sqlite(str(tmp_path / 'victor.db'), False)
    assert check['status'] == 'ok', check
    assert _listing(tmp_path) == before


def test_sqlite_check_reads_a_live_wal_database_without_changing_it(tmp_path):
    writer = _wal_db(tmp_path / 'victor.db', rows=500)  # open: -wal holds the rows, -shm exists
    try:
        before = _listing(tmp_path)
        assert sorted(before) == ['victor.db', 'victor.db-shm', 'victor.db-wal'] and before['victor.db-wal'] > 0
        assert health.check_sqlite(str(tmp_path / 'victor.db'), False)['status'] == 'ok'
        assert _listing(tmp_path) == before  # no checkpoint, nothing created
    finally:
        writer.close()


def test_sqlite_check_writes_no_read_mark_into_a_live_writers_shm(tmp_path):
    """A writer in another process (in one process SQLite shares its -shm mapping): a plain
    mode=ro reader changes -shm (a read mark), the check's readonly_shm reader does not."""
    database = tmp_path / 'victor.db'
    writer = subprocess.Popen([sys.executable, '-c', (
        'import sqlite3, sys, time\n'
        'c = sqlite3.connect(sys.argv[1]); c.execute("PRAGMA journal_mode=WAL"); c.execute("CREATE TABLE t (x)")\n'
        'c.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(500)]); c.commit()\n'
        'print("ready", flush=True); time.sleep(60)\n'), str(database)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == 'ready'
        shm = (tmp_path / 'victor.db-shm').read_bytes()
        assert health.check_sqlite(str(database), False)['status'] == 'ok'
        assert (tmp_path / 'victor.db-shm').read_bytes() == shm
        plain = sqlite3.connect('file:%s?mode=ro' % database, uri=True)
        plain.execute('PRAGMA quick_check').fetchall()
        plain.close()
        assert (tmp_path / 'victor.db-shm').read_bytes() != shm, 'the test can see a read mark'
    finally:
        writer.kill()
        writer.wait()


def test_sqlite_check_leaves_a_crashed_writers_wal_alone(tmp_path):
    live = tmp_path / 'live'
    live.mkdir()
    writer = _wal_db(live / 'victor.db', rows=200)
    crashed = tmp_path / 'crashed'
    crashed.mkdir()
    for name in ('victor.db', 'victor.db-wal'):  # a writer killed before its -shm could be removed
        (crashed / name).write_bytes((live / name).read_bytes())
    writer.close()
    before = _listing(crashed)
    check = health.check_sqlite(str(crashed / 'victor.db'), False)
    assert check['status'] == 'ok' and 'main file only' in check['message'], check
    assert _listing(crashed) == before
