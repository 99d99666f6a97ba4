"""victor_db_maintenance against a real redis-server on 127.0.0.1 (conftest.py's redis_server, stopped by its pid)."""
import functools
import json

import module_runner
import pytest

from ansible_collections.victor.ops.plugins.modules import victor_db_maintenance

redis = pytest.importorskip('redis')

PASSWORD = 'cache-secret-pw'  # conftest.py's redis_server


@pytest.fixture(name='server')
def server_fixture(redis_server):
    return redis_server


# run_module(args, capsys, check_mode=False) -> (failed, result) of victor_db_maintenance
run_module = functools.partial(module_runner.run_module, victor_db_maintenance)


def _args(server, operations, **extra):
    args = {'engine': 'redis', 'login_host': '127.0.0.1', 'login_port': server['port'], 'login_password': PASSWORD,
            'operations': operations, 'scan_count': 100}
    args.update(extra)
    return args


def test_stats_hit_rate_and_keys(server, capsys):
    client = server['client']
    client.flushdb()
    client.set('victor:cache:a', '1')
    for _hit in range(3):
        client.get('victor:cache:a')
    client.get('victor:cache:missing')
    before = client.info()
    failed, result = run_module(_args(server, ['stats']), capsys)
    assert not failed, result
    stats = result['report']['stats']
    assert stats['keys'] == 1
    hits, misses = before['keyspace_hits'], before['keyspace_misses']
    assert stats['keyspace_hits'] == hits and stats['keyspace_misses'] == misses
    assert stats['hit_rate_pct'] == round(100.0 * hits / (hits + misses), 2)
    assert stats['used_memory'] > 0 and stats['evicted_keys'] == 0
    assert result['changed'] is False


def test_clear_by_pattern_uses_scan_and_unlink(server, capsys):
    client = server['client']
    client.flushdb()
    client.mset({'victor:cache:%d' % i: 'v' for i in range(1234)})
    client.mset({'victor:session:%d' % i: 'v' for i in range(10)})
    failed, result = run_module(_args(server, ['clear'], pattern='victor:cache:*'), capsys, check_mode=True)
    assert not failed and result['changed'] is True
    assert result['report']['clear']['would_remove'] == 1234
    assert client.dbsize() == 1244
    client.config_resetstat()
    failed, result = run_module(_args(server, ['clear'], pattern='victor:cache:*'), capsys)
    assert not failed and result['report']['clear']['removed'] == 1234
    assert client.dbsize() == 10
    commands = client.info('commandstats')
    assert 'cmdstat_keys' not in commands and 'cmdstat_del' not in commands
    assert commands['cmdstat_scan']['calls'] >= 1 and commands['cmdstat_unlink']['calls'] >= 13
    failed, result = run_module(_args(server, ['clear'], pattern='victor:cache:*'), capsys)
    assert not failed and result['changed'] is False


@pytest.mark.parametrize('override, message', [
    ({'operations': ['clear']}, 'clear needs a pattern'),
    ({'login_password': 'wrong'}, 'cannot connect to Redis at 127.0.0.1'),
])
def test_bad_input(server, override, message, capsys):
    failed, result = run_module(dict(_args(server, ['stats']), **override), capsys)
    assert failed and message in result['msg']
    assert PASSWORD not in json.dumps(result)
