"""victor_health module entry point: results, failures and random input (hypothesis)."""
import http.server
import json
import socket
import threading

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.victor.ops.plugins.module_utils.health import health_argument_spec
from ansible_collections.victor.ops.plugins.modules import victor_health


class _Exit(SystemExit):
    def __init__(self, kind, result):
        super().__init__(kind)
        self.kind = kind
        self.result = result


@pytest.fixture(autouse=True)
def _capture_exits(monkeypatch):
    def exit_json(self, **kwargs):
        raise _Exit('exit', kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs['msg'] = msg
        raise _Exit('fail', kwargs)

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Random URLs must never leave the machine: resolve only loopback names."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in ('127.0.0.1', 'localhost', '::1'):
            raise socket.gaierror(socket.EAI_NONAME, 'test blocks non-loopback host %r' % host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, 'getaddrinfo', getaddrinfo)


def _run(args):
    with patch_module_args(args):
        with pytest.raises(_Exit) as info:
            victor_health.main()
    return info.value


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        data = json.dumps({'status': 'healthy', 'version': '0.9.5'}).encode()
        self.send_response(200 if self.path == '/health' else 503)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def server():
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Health)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield 'http://127.0.0.1:%d' % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_healthy_never_changed(server):
    out = _run({'http': {'url': server, 'expected_version': '0.9.5'}, 'memory': {'warn_percent': 100, 'crit_percent': 100}})
    assert out.kind == 'exit'
    assert out.result['status'] == 'healthy' and out.result['healthy'] is True
    assert out.result['changed'] is False
    assert out.result['failed_checks'] == []
    assert set(out.result) >= {'checks', 'summary', 'log_lines', 'endpoints', 'fleet_summary'}


def test_unhealthy_fails_by_default_with_results(server):
    out = _run({'http': {'url': server, 'paths': ['/health', '/status']}})
    assert out.kind == 'fail'
    assert out.result['status'] == 'unhealthy'
    assert out.result['failed_checks'] == ['http:/status']
    assert 'Victor is unhealthy: http:/status' in out.result['msg']


def test_fail_on_never_and_degraded(server, tmp_path):
    args = {'disk': {'paths': [str(tmp_path)], 'warn_percent': 0, 'crit_percent': 100}}
    assert _run(dict(args, fail_on='never')).kind == 'exit'
    assert _run(dict(args)).kind == 'exit'
    degraded = _run(dict(args, fail_on='degraded'))
    assert degraded.kind == 'fail' and degraded.result['status'] == 'degraded'


def test_fleet_summary(server):
    out = _run({'fleet': {'endpoints': [{'url': server}, {'url': server, 'paths': ['/x']}, {'url': 'nope'}]}, 'fail_on': 'never'})
    assert out.result['fleet_summary'] == {'healthy': 1, 'degraded': 0, 'unhealthy': 2}
    assert out.result['status'] == 'unhealthy'
    assert '%s http:/x' % server in out.result['failed_checks']


@pytest.mark.parametrize('args,fragment', [
    ({}, 'no check requested'),
    ({'http': {'paths': ['/health']}}, 'http.url is required'),
    ({'http': {'url': 'localhost:8765'}}, 'must start with http://'),
    ({'disk': {'warn_percent': 90, 'crit_percent': 80}}, 'must not be greater than'),
    ({'memory': {'warn_percent': -5}}, 'must not be negative'),
    ({'log': {'path': '/x', 'window_minutes': 5, 'last_lines': 5}}, 'mutually exclusive'),
    ({'service': {'manager': 'upstart'}}, 'value of manager must be one of'),
    ({'disk': {'warn_percent': 'lots'}}, 'float'),
])
def test_bad_input_fails_clearly(args, fragment):
    out = _run(args)
    assert out.kind == 'fail'
    assert fragment in out.result['msg'], out.result['msg']


def test_missing_psycopg_is_missing_required_lib(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'psycopg', None)
    out = _run({'postgres': {'login_host': '127.0.0.1'}})
    assert out.kind == 'fail'
    assert 'Failed to import the required Python library (psycopg)' in out.result['msg']


def test_secrets_are_no_log():
    spec = health_argument_spec()
    assert spec['http']['options']['headers']['no_log'] is True
    assert spec['http']['options']['bearer_token']['no_log'] is True
    assert spec['postgres']['options']['login_password']['no_log'] is True


# ----------------------------------------------------------------- random input

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                     st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=20))
_urls = st.one_of(st.text(max_size=30), st.sampled_from(['http://127.0.0.1:1', 'https://127.0.0.1:1', 'http://[::1', 'http://127.0.0.1:99999',
                                                         'ftp://127.0.0.1', 'http://', 'http://localhost:1/x']))


def _option_values(spec):
    """Values for one option: mostly of the right shape, sometimes of the wrong type."""
    kind = spec.get('type', 'str')
    if kind == 'dict' and 'options' in spec:
        sub = st.fixed_dictionaries({}, optional=dict((k, _option_values(v)) for k, v in spec['options'].items()))
        return st.one_of(sub, _scalars) if spec.get('elements') is None else sub
    if kind == 'list':
        element = _option_values(dict(spec.get('options') and {'type': 'dict', 'options': spec['options']} or {'type': spec.get('elements', 'str')}))
        return st.one_of(st.lists(element, max_size=3), _scalars)
    if kind in ('int', 'float'):
        return st.one_of(st.integers(-1000, 100000), st.floats(-1e3, 1e5, allow_nan=False), _scalars)
    if spec.get('choices'):
        return st.one_of(st.sampled_from(spec['choices']), _scalars)
    return st.one_of(_urls, _scalars)


def _module_args():
    spec = health_argument_spec()
    return st.fixed_dictionaries({}, optional=dict((name, _option_values(option)) for name, option in spec.items()))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(args=_module_args())
def test_random_arguments_end_in_exit_or_fail(args):
    if isinstance(args.get('http'), dict):
        args['http']['timeout'] = 1
    if isinstance(args.get('postgres'), dict):
        # libpq resolves names itself, past the socket patch: pin the host to loopback.
        args['postgres'].update(login_host='127.0.0.1', login_unix_socket=None, connect_timeout=1)
    if isinstance(args.get('fleet'), dict) and isinstance(args['fleet'].get('endpoints'), list):
        args['fleet']['endpoints'] = args['fleet']['endpoints'][:3]
    out = _run(args)
    event(out.kind)
    assert out.kind in ('exit', 'fail')
    if out.kind == 'fail':
        assert isinstance(out.result['msg'], str) and out.result['msg']
        assert 'Traceback' not in out.result['msg']
    else:
        assert out.result['status'] in ('healthy', 'degraded', 'unhealthy')
        assert out.result['changed'] is False


_paths = st.sampled_from(['/', '/proc', '/dev/zero', '/nonexistent', '/etc/hostname', '/proc/meminfo', '/tmp', ''])


_headers = st.dictionaries(st.sampled_from(['Accept', 'X-Request-Id']), st.text(max_size=5), max_size=2)


def _typed_values(spec):
    """Values of the declared type (often out of range), to reach the checks themselves."""
    kind = spec.get('type', 'str')
    if kind == 'dict' and 'options' in spec:
        required = dict((k, _typed_values(v)) for k, v in spec['options'].items() if v.get('required'))
        optional = dict((k, _typed_values(v)) for k, v in spec['options'].items() if not v.get('required'))
        return st.fixed_dictionaries(required, optional=optional)
    if kind == 'dict':
        return _headers
    if kind == 'list':
        inner = {'type': 'dict', 'options': spec['options']} if spec.get('options') else {'type': spec.get('elements', 'str')}
        return st.lists(_typed_values(inner), max_size=3)
    if kind == 'int':
        return st.integers(-5, 200)
    if kind == 'float':
        return st.floats(-5, 200, allow_nan=False)
    if kind == 'bool':
        return st.booleans()
    if kind == 'path':
        return _paths
    if spec.get('choices'):
        return st.sampled_from(spec['choices'])
    return st.one_of(_urls, st.sampled_from(['/health', 'victor-api', '(', 'ERROR', '*']))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.fixed_dictionaries({}, optional=dict((k, _typed_values(v)) for k, v in health_argument_spec().items())))
@example(args={'http': {'url': 'https://127.0.0.1:1', 'ca_path': '/'}})  # found by CI: a directory as CA bundle raised
def test_well_typed_random_arguments_end_in_exit_or_fail(args):
    test_random_arguments_end_in_exit_or_fail.hypothesis.inner_test(args)


# Valid by construction: every example passes validation, so all of them reach the checks themselves
# (random and well-typed input mostly stops at validation). 'SERVER' is replaced by the live loopback server.
_loopback_urls = st.sampled_from(['SERVER', 'http://127.0.0.1:1', 'https://127.0.0.1:1', 'http://localhost:1/x'])
_url_paths = st.lists(st.sampled_from(['/health', '/', '/x?y=1', '/status']), max_size=3)


def _pair(keys, values, descending=False):
    """{warn_key: w, crit_key: c} with w not past c."""
    return st.tuples(values, values).map(lambda pair: dict(zip(keys, sorted(pair, reverse=descending))))


def _merged(*parts):
    """One dict from several dict strategies."""
    return st.tuples(*parts).map(lambda dicts: dict((k, v) for d in dicts for k, v in d.items()))


_percents = st.floats(0, 100, allow_nan=False)
_valid_sections = dict(
    http=_merged(
        st.fixed_dictionaries({'url': _loopback_urls}, optional={
            # valid header values and tokens have no line breaks or control characters (issue 13: they leaked in errors)
            'paths': _url_paths,
            'headers': st.dictionaries(st.sampled_from(['Accept', 'X-Request-Id']),
                                       st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=5), max_size=2),
            'bearer_token': st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=8),
            'expected_status': st.lists(st.integers(100, 599), max_size=2),
            'expected_version': st.sampled_from(['0.9.5', '0.9.4', '']), 'validate_certs': st.booleans(),
            'ca_path': st.just('/etc/ssl/certs/ca-certificates.crt'), 'use_proxy': st.booleans()}),
        _pair(('latency_warn_ms', 'latency_crit_ms'), st.floats(0, 5000, allow_nan=False))),
    tls=_pair(('warn_days', 'crit_days'), st.integers(0, 400), descending=True),
    service=st.fixed_dictionaries({}, optional={'name': st.sampled_from(['victor-api', 'no-such-unit']),
                                                'manager': st.sampled_from(['systemd', 'process']), 'pid_file': _paths}),
    disk=_merged(st.fixed_dictionaries({'paths': st.lists(_paths, min_size=1, max_size=3)}), _pair(('warn_percent', 'crit_percent'), _percents)),
    memory=_pair(('warn_percent', 'crit_percent'), _percents),
    log=_merged(
        st.fixed_dictionaries({'path': _paths}, optional={
            'patterns': st.lists(st.sampled_from(['ERROR', 'CRITICAL|FATAL', r'\btimeout\b', '.*']), max_size=2),
            'newest': st.integers(0, 10)}),
        st.one_of(st.just({}), st.integers(1, 120).map(lambda m: {'window_minutes': m}),
                  st.integers(1, 1000).map(lambda n: {'last_lines': n})),
        _pair(('warn_count', 'crit_count'), st.integers(0, 100))),
    backup=_merged(
        st.fixed_dictionaries({'path': _paths}, optional={'pattern': st.sampled_from(['*', '*.tar*', '[']),
                                                          'complete_marker': st.sampled_from(['COMPLETE', 'manifest.json'])}),
        _pair(('warn_age_hours', 'crit_age_hours'), st.floats(0, 1000, allow_nan=False))),
    sqlite=st.fixed_dictionaries({'paths': st.lists(_paths, min_size=1, max_size=3)}, optional={'missing_ok': st.booleans()}),
    # nothing listens on port 1: libpq fails fast, as a down database would
    postgres=_merged(st.fixed_dictionaries({'login_host': st.just('127.0.0.1'), 'login_port': st.just(1), 'connect_timeout': st.just(1)},
                                           optional={'ssl_mode': st.sampled_from(['disable', 'prefer', 'require'])}),
                     _pair(('warn_percent', 'crit_percent'), _percents)),
    fleet=st.fixed_dictionaries({'endpoints': st.lists(
        st.fixed_dictionaries({'url': _loopback_urls}, optional={'name': st.text(min_size=1, max_size=5), 'paths': _url_paths,
                                                                 'expected_version': st.sampled_from(['0.9.5', '0.9.4'])}),
        min_size=1, max_size=3)}, optional={'max_workers': st.integers(1, 8)}),
)


def _with_server(value, url):
    if isinstance(value, dict):
        return dict((k, _with_server(v, url)) for k, v in value.items())
    if isinstance(value, list):
        return [_with_server(v, url) for v in value]
    return url if value == 'SERVER' else value


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(args=st.fixed_dictionaries({}, optional=_valid_sections).filter(lambda args: set(args) - {'tls'}))  # tls alone checks nothing
def test_valid_random_arguments_report_every_requested_check(server, args):
    args = _with_server(args, server)
    if 'http' in args:
        args['http']['timeout'] = 1
    out = _run(dict(args, fail_on='never'))
    assert out.kind == 'exit', out.result.get('msg')
    result = out.result
    assert result['status'] in ('healthy', 'degraded', 'unhealthy') and result['changed'] is False
    every_check = result['checks'] + [c for e in result['endpoints'] for c in e['checks']]
    assert all(c['status'] in ('ok', 'warn', 'crit', 'unknown') and isinstance(c['message'], str) for c in every_check)
    assert sum(result['summary'].values()) == len(every_check)
    names = [c['name'] for c in result['checks']]
    if 'http' in args:
        assert set('http:%s' % path for path in args['http'].get('paths') or ['/health']) <= set(names), names
    for section in ('disk', 'memory', 'service', 'sqlite', 'backup', 'log'):
        if section in args:
            assert any(name.split(':')[0] == section for name in names), (section, names)
    assert len(result['endpoints']) == len((args.get('fleet') or {}).get('endpoints') or [])
    event(result['status'])
