"""victor_watch: the watch period after a deploy, against a real loopback HTTP server and a real log file."""
import http.server
import json
import threading

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.victor.ops.plugins.module_utils import watch as w
from ansible_collections.victor.ops.plugins.modules import victor_watch


class _Release(http.server.BaseHTTPRequestHandler):
    answer = (200, {'status': 'healthy', 'version': '0.9.5'})

    def do_GET(self):  # noqa: N802 - http.server's name
        code, document = type(self).answer
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def release():
    _Release.answer = (200, {'status': 'healthy', 'version': '0.9.5'})
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Release)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()
    server.server_close()


class _Clock:
    """Fake time: sleep advances it and runs what the test scheduled for that moment (the fault)."""

    def __init__(self, events=None):
        self.now = 0.0
        self.events = dict(events or {})

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        for at in sorted(t for t in self.events if t <= self.now):
            self.events.pop(at)()


def _params(url, **given):
    params = dict(url=url, path='/health', expected_version='0.9.5', period=60, interval=10, timeout=5.0,
                  max_health_failures=3, log_path=None, log_patterns=None, max_errors=5)
    params.update(given)
    return params


def test_a_healthy_release_is_watched_for_the_whole_period(release):
    clock = _Clock()
    result = w.watch(_params(release), clock=clock, sleep=clock.sleep)
    assert result['breached'] is False and result['reason'] == ''
    assert result['polls'] == 7 and result['seconds'] == 60  # at 0, 10, ... 60
    assert result['last_health'] == 'healthy at version 0.9.5'


def test_a_release_that_turns_unhealthy_after_the_gate_breaches_after_three_failed_polls(release):
    def turn_bad():
        _Release.answer = (503, {'status': 'unhealthy', 'version': '0.9.5'})
    clock = _Clock({25: turn_bad})
    result = w.watch(_params(release), clock=clock, sleep=clock.sleep)
    assert result['breached'] is True
    assert result['polls'] == 6 and result['health_failures'] == 3  # ok at 0, 10, 20; bad at 30, 40, 50
    assert '/health failed 3 polls in a row' in result['reason'] and '503' in result['reason']
    assert result['seconds'] == 50  # the watch stops at the breach, not at the end of the period


def test_one_failed_poll_is_a_blip_not_a_breach(release):
    def bad():
        _Release.answer = (503, {'status': 'unhealthy'})

    def good():
        _Release.answer = (200, {'status': 'healthy', 'version': '0.9.5'})
    clock = _Clock({15: bad, 25: good})
    result = w.watch(_params(release), clock=clock, sleep=clock.sleep)
    assert result['breached'] is False and result['health_failures'] == 1


def test_a_wrong_version_is_a_failed_poll(release):
    _Release.answer = (200, {'status': 'healthy', 'version': '0.9.4'})
    clock = _Clock()
    result = w.watch(_params(release, max_health_failures=1), clock=clock, sleep=clock.sleep)
    assert result['breached'] and 'running 0.9.4, expected 0.9.5' in result['reason']


def test_a_release_that_stops_answering_breaches(release):
    clock = _Clock()
    result = w.watch(_params('http://127.0.0.1:9', max_health_failures=2), clock=clock, sleep=clock.sleep)
    assert result['breached'] and result['polls'] == 2


def test_only_errors_written_during_the_watch_count(release, tmp_path):
    log = tmp_path / 'victor.log'
    log.write_text('2026-12-03 01:00:00,000 - victor - ERROR - old release failed\n' * 50)

    def errors(count):
        def write():
            with open(str(log), 'a') as stream:
                stream.write('2026-12-03 04:00:00,000 - victor.api - ERROR - chat failed\n' * count)
                stream.write('2026-12-03 04:00:00,000 - victor.api - INFO - chat ok\n')
        return write
    clock = _Clock({5: errors(2), 15: errors(2)})
    quiet = w.watch(_params(release, log_path=str(log)), clock=clock, sleep=clock.sleep)
    assert quiet['breached'] is False and quiet['errors'] == 4
    assert quiet['error_lines'][-1].endswith('ERROR - chat failed')

    clock = _Clock({5: errors(2), 15: errors(3)})
    loud = w.watch(_params(release, log_path=str(log)), clock=clock, sleep=clock.sleep)
    assert loud['breached'] and loud['errors'] == 5 and '5 error lines' in loud['reason']


def test_a_rotated_log_is_followed_and_a_half_written_line_counted_once_complete(tmp_path):
    log = tmp_path / 'victor.log'
    log.write_text('x' * 1000 + '\n')
    follower = w.LogFollower(str(log), w.log_patterns({}))
    log.write_text('ERROR one\nERR')  # rotated (smaller), the last line half written
    assert follower.poll() == 1
    with open(str(log), 'a') as stream:
        stream.write('OR two\n')
    assert follower.poll() == 2  # 'ERR' + 'OR two': one line, counted once it is complete
    with open(str(log), 'a') as stream:
        stream.write('CRITICAL three\n')
    assert follower.poll() == 3


def test_log_patterns_default_is_in_the_argument_spec_and_an_empty_list_means_it(tmp_path):
    from ansible_collections.victor.ops.plugins.module_utils.health import DEFAULT_LOG_PATTERN
    assert w.watch_argument_spec()['log_patterns']['default'] == [DEFAULT_LOG_PATTERN]
    assert w.log_patterns({'log_patterns': []}) == w.log_patterns({'log_patterns': None}) == [DEFAULT_LOG_PATTERN]
    assert w.log_patterns({'log_patterns': ['boom']}) == ['boom']
    log = tmp_path / 'victor.log'
    log.write_text('')
    follower = w.LogFollower(str(log), w.log_patterns({'log_patterns': []}))
    log.write_text('ERROR a\nboom b\nTraceback (most recent call last):\n')
    assert follower.poll() == 2


def test_a_missing_log_counts_from_its_creation(tmp_path):
    log = tmp_path / 'later.log'
    follower = w.LogFollower(str(log), w.log_patterns({}))
    assert follower.poll() == 0
    log.write_text('ERROR first\n')
    assert follower.poll() == 1


class _Exit(SystemExit):
    def __init__(self, kind, result):
        super().__init__(kind)
        self.kind, self.result = kind, result


@pytest.fixture
def module(monkeypatch):
    def exit_json(self, **kwargs):
        raise _Exit('exit', kwargs)

    def fail_json(self, msg, **kwargs):
        raise _Exit('fail', dict(kwargs, msg=msg))
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)

    def run(args):
        with patch_module_args(args):
            with pytest.raises(_Exit) as info:
                victor_watch.main()
        return info.value
    return run


@pytest.mark.parametrize('args, message', [
    (dict(period=0), 'period must be between 1 and 86400'),
    (dict(period=10, interval=20), 'interval must be between 1 second and the period'),
    (dict(period=10, max_health_failures=0), 'max_health_failures must be at least 1'),
    (dict(period=10, max_errors=0), 'max_errors must be at least 1'),
    (dict(period=10, timeout=0), 'timeout must be greater than 0'),
    (dict(period=10, log_patterns=['(']), 'is not a regular expression'),
    (dict(period=10, path='health'), 'path must start with /'),
    (dict(period=10, url='ftp://127.0.0.1/'), 'must start with http:// or https://'),
    (dict(period=10, url='http://ops:s3cret@127.0.0.1/'), 'user:password@ in a URL is refused'),
])
def test_bad_arguments_fail_clearly_before_any_poll(module, args, message):
    outcome = module(dict(dict(url='http://127.0.0.1:9'), **args))
    assert outcome.kind == 'fail' and message in outcome.result['msg']
    assert 's3cret' not in outcome.result['msg']


def test_the_module_reports_without_change_in_check_mode(module, release):
    outcome = module(dict(url=release, expected_version='0.9.5', period=1, interval=1, _ansible_check_mode=True))
    assert outcome.kind == 'exit' and outcome.result['changed'] is False and outcome.result['breached'] is False
