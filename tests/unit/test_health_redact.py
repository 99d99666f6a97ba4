"""Secrets never come back in messages, results or the invocation; every network wait is bounded (issue 13).

Modules run as Ansible runs them (a subprocess reading its arguments, printing the result
JSON that -vvv shows, invocation included). Servers are real loopback sockets: a black hole
that accepts connections and never answers stands for a hung Redis or S3 endpoint.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.victor.ops.plugins.module_utils import redact
from ansible_collections.victor.ops.plugins.module_utils.backup import BackupError

SECRET = 'S3CR3T'
_OPS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(redact.__file__))))  # .../ansible_collections/victor/ops
COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(_OPS)))
MODULES = os.path.join(_OPS, 'plugins', 'modules')


def _run_module(name, args, tmp_path):
    """Run a module like ansible does; returns (result dict, raw stdout)."""
    path = tmp_path / 'args.json'
    path.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    proc = subprocess.run([sys.executable, os.path.join(MODULES, name + '.py'), str(path)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return json.loads(proc.stdout), proc.stdout + proc.stderr


@pytest.fixture
def black_hole():
    """127.0.0.1:<port> that accepts TCP connections (kernel backlog) and never answers."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


# ----------------------------------------------------------------- the helper

@pytest.mark.parametrize('text', [
    'postgresql://victor:S3CR3T@db:5432/victor',
    'postgresql://victor:S3/CR#3T%@db:5432/victor',  # unencoded / # %: a parser would cut the URL inside it
    "host=db password=S3CR3T dbname=victor",
    "host=db password='S3 CR3T' dbname=victor",
    "Invalid header value b'Bearer S3CR3T\\r\\n'",
    'Authorization: Basic S3CR3T',
    'X-Api-Key: S3CR3T',
    'identity AGE-SECRET-KEY-1S3CR3TQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ',
])
def test_redact_masks_secret_shapes_without_knowing_them(text):
    out = redact.redact(text)
    assert 'S3CR3T' not in out and 'CR3T' not in out and redact.MASK in out, out


def test_redact_masks_known_secrets_in_every_quoted_form():
    secret = 'pa ss/%w\n'
    for form in (secret, secret.strip(), repr(secret)[1:-1], 'pa%20ss%2F%25w'):
        assert 'ss' not in redact.redact('error: %s!' % form, [secret]).replace('*', '')


def test_url_error_never_quotes_a_piece_of_the_password():
    from urllib.parse import urlsplit
    url = 'postgresql://victor:S3CR3T/more@db:5432/victor'
    with pytest.raises(ValueError) as info:
        urlsplit(url).port  # pylint: disable=expression-not-assigned
    assert SECRET in str(info.value)  # what the parser says ...
    message = redact.url_error('postgres_url', url, info.value)
    assert SECRET not in message and 'percent-encoded' in message  # ... and what we say


# ----------------------------------------------------------------- where the secrets used to leak

@pytest.mark.parametrize('url', ['postgresql://victor:S3CR3T/x@127.0.0.1:5432/victor',
                                 'postgresql://victor:S3CR3T#x@127.0.0.1:5432/victor'])
def test_postgres_url_parse_error_hides_the_password(url):
    from ansible_collections.victor.ops.plugins.module_utils.postgres_common import postgres_url_options
    with pytest.raises(ValueError) as info:
        postgres_url_options(url)
    assert SECRET not in str(info.value) and 'postgres_url is not a valid URL' in str(info.value)


@pytest.mark.parametrize('query', ['connect_timeout=0', 'connect_timeout=-1', 'connect_timeout=x'])
def test_postgres_url_connect_timeout_must_bound_the_wait(query):
    from ansible_collections.victor.ops.plugins.module_utils.postgres_common import postgres_url_options
    with pytest.raises(ValueError, match='connect_timeout must be'):
        postgres_url_options('postgresql://victor@127.0.0.1:5432/victor?' + query)


@pytest.mark.parametrize('timeout', [0, -1])
def test_backup_postgres_connect_timeout_must_bound_the_wait(timeout):
    from ansible_collections.victor.ops.plugins.module_utils.backup_postgres import PostgresSource
    with pytest.raises(BackupError, match='connect_timeout must be 1-3600'):
        PostgresSource({'login_db': 'victor', 'connect_timeout': timeout})


def test_db_maintenance_takes_no_connection_string():
    # one connection interface: login_* options (a URL goes through the postgres_url_options filter, whose
    # errors never show the password: test_postgres_url_parse_error_hides_the_password)
    from ansible_collections.victor.ops.plugins.modules import victor_db_maintenance
    assert 'conninfo' not in victor_db_maintenance.argument_spec()


def test_health_url_credentials_refused_and_not_echoed(tmp_path):
    result, raw = _run_module('victor_health', {
        'http': {'url': 'http://victor:%s@127.0.0.1:1' % SECRET},
        'fleet': {'endpoints': [{'url': 'http://ops:%s/x@127.0.0.1:2' % SECRET}]}}, tmp_path)
    assert result['failed'] and 'user:password@ in a URL is refused' in result['msg']
    assert 'fleet.endpoints[0].url' in result['msg']
    assert SECRET not in raw  # neither in msg nor in the invocation -vvv prints


def test_health_token_with_crlf_refused_and_not_echoed(tmp_path):
    result, raw = _run_module('victor_health', {'http': {'url': 'http://127.0.0.1:1', 'bearer_token': SECRET + '\r\n'}}, tmp_path)
    assert result['failed'] and 'bearer_token' in result['msg']
    assert SECRET not in raw


def test_age_secret_key_as_recipient_refused_and_not_echoed(tmp_path):
    key = 'AGE-SECRET-KEY-1' + 'Q' * 58
    source = tmp_path / 'state'
    source.mkdir()
    result, raw = _run_module('victor_backup', {'state': 'create', 'source': str(source), 'repository': str(tmp_path / 'repo'),
                                                'age_recipients': [key]}, tmp_path)
    assert result['failed'] and 'age_recipients take public keys' in result['msg']
    assert key not in raw and 'Q' * 20 not in raw


def test_s3_endpoint_credentials_refused_and_not_echoed(tmp_path):
    pytest.importorskip('boto3')
    result, raw = _run_module('victor_backup_info', {'storage': 's3', 's3_bucket': 'b',
                                                     's3_endpoint_url': 'http://minio:%s@127.0.0.1:1' % SECRET}, tmp_path)
    assert result['failed'] and 's3_access_key' in result['msg'], result
    assert SECRET not in raw


@pytest.mark.parametrize('url,fragment', [('file:///etc', 'must be an http:// or https:// URL'),
                                          ('http://[::1', 'is not a valid URL'),
                                          ('http://k:S3CR3T/x@127.0.0.1:9000', 's3_access_key')])
def test_s3_endpoint_url_is_validated(tmp_path, url, fragment):
    pytest.importorskip('boto3')
    from ansible_collections.victor.ops.plugins.module_utils import backup_s3
    with pytest.raises(BackupError) as info:
        backup_s3.make_store({'storage': 's3', 's3_bucket': 'b', 's3_endpoint_url': url}, str(tmp_path))
    assert fragment in str(info.value) and SECRET not in str(info.value)


# ----------------------------------------------------------------- bounded waits

def _bounded(function, limit):
    """Run function in a thread; (finished within limit, its exception or None, seconds)."""
    out = {}

    def target():
        try:
            function()
        except Exception as exc:  # pylint: disable=broad-except
            out['error'] = exc
    started = time.monotonic()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(limit)
    return not worker.is_alive(), out.get('error'), time.monotonic() - started


def test_s3_endpoint_that_never_answers_fails_within_s3_timeout(tmp_path, black_hole):
    pytest.importorskip('boto3')
    from ansible_collections.victor.ops.plugins.module_utils import backup_s3
    store = backup_s3.make_store({'storage': 's3', 's3_bucket': 'b', 's3_endpoint_url': 'http://127.0.0.1:%d' % black_hole,
                                  's3_access_key': 'k', 's3_secret_key': SECRET, 's3_region': 'us-east-1', 's3_timeout': 3},
                                 str(tmp_path))
    finished, error, seconds = _bounded(store.ensure, 30)
    assert finished, 'no answer within 30 s (botocore defaults: 60 s per read, 5 retries)'
    assert isinstance(error, BackupError) and 'not reachable' in str(error) and SECRET not in str(error)
    assert seconds < 3 + 6, seconds  # three 1 s waits plus at most a few seconds of backoff


def test_s3_timeout_is_validated(tmp_path):
    pytest.importorskip('boto3')
    from ansible_collections.victor.ops.plugins.module_utils import backup_s3
    for value in (0, -1, float('nan'), 10 ** 6):
        with pytest.raises(BackupError, match='s3_timeout must be'):
            backup_s3.make_store({'storage': 's3', 's3_bucket': 'b', 's3_timeout': value}, str(tmp_path))


def test_redis_that_never_answers_fails_within_connect_timeout(black_hole):
    pytest.importorskip('redis')
    from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_redis as rd
    from ansible_collections.victor.ops.plugins.module_utils.db_maintenance import MaintenanceError
    finished, error, seconds = _bounded(lambda: rd.connect('127.0.0.1', black_hole, password=SECRET, db=0, user=None, tls=False, connect_timeout=1), 30)
    assert finished and isinstance(error, MaintenanceError) and SECRET not in str(error), error
    assert seconds < 2.5, seconds  # redis-py's default retries (3, with backoff) made it 4+ s


@pytest.mark.parametrize('params,fragment', [
    ({'connect_timeout': 0}, 'connect_timeout must be 1-3600'),  # libpq: wait forever
    ({'connect_timeout': -1}, 'connect_timeout must be 1-3600'),
    ({'lock_threshold': -5.0}, 'lock_threshold must be'),
    ({'lock_threshold': float('nan')}, 'lock_threshold must be'),
    ({'scan_count': 0}, 'scan_count must be at least 1'),
    ({'login_port': 70000}, 'login_port must be 1-65535'),
])
def test_db_maintenance_option_problems(params, fragment):
    from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_postgres as pg
    assert any(fragment in p for p in pg.option_problems(params)), pg.option_problems(params)
    assert pg.option_problems({'connect_timeout': 10, 'lock_threshold': 0.0, 'scan_count': 500, 'login_port': 5432}) == []


@pytest.mark.parametrize('engine', ['postgresql', 'redis'])
def test_db_maintenance_module_refuses_connect_timeout_zero(tmp_path, engine):
    args = {'engine': engine, 'operations': ['stats'], 'login_host': '127.0.0.1', 'login_port': 1, 'connect_timeout': 0}
    result, _raw = _run_module('victor_db_maintenance', args, tmp_path)
    # refused by the numbers check (> 0) or the range check (1-3600), whichever runs first
    assert result['failed'] and 'connect_timeout must be' in result['msg'], result['msg']


@pytest.mark.parametrize('name, args', [
    ('victor_backup', {'state': 'create', 'login_db': 'victor', 'login_port': 70000}),
    ('victor_db_maintenance', {'engine': 'postgresql', 'operations': ['stats'], 'login_db': 'victor', 'login_port': 70000}),
    ('victor_health', {'postgres': {'login_db': 'victor', 'login_port': 70000}}),
])
def test_modules_refuse_bad_connection_options_clearly_without_the_password(tmp_path, name, args):
    """The common PostgreSQL options (postgres_common) are checked alike in every module that connects."""
    if name == 'victor_health':
        args['postgres']['login_password'] = SECRET
    else:
        args['login_password'] = SECRET
    args.setdefault('repository', str(tmp_path / 'repo')) if name == 'victor_backup' else None
    result, raw = _run_module(name, args, tmp_path)
    assert result.get('failed') and 'login_port must be 1-65535' in result['msg'], result
    assert SECRET not in raw
    assert 'Traceback' not in raw
