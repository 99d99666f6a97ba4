"""The reports of the weekly and monthly runs, and what the runs did to the host."""
import glob
import json
import os

import pytest

DATA = '/var/lib/victor/.victor'
REPORTS = os.path.join(os.environ.get('MOLECULE_EPHEMERAL_DIRECTORY', '/nonexistent'), 'reports', 'victor-ops-victor_maintenance')


def _report(kind):
    found = sorted(glob.glob(os.path.join(REPORTS, '%s-*Z.json' % kind)))
    assert len(found) == 1, found  # the idempotence run skips report writing (tagged)
    assert os.path.isfile(found[0][:-len('.json')] + '.md')
    with open(found[0], encoding='utf-8') as handle:
        report = json.load(handle)
    return report, {step['name']: step for step in report['steps']}


def test_weekly_report(host):
    report, steps = _report('weekly')
    assert [s['name'] for s in report['steps']] == ['logs', 'performance', 'database', 'cache', 'security']
    assert report['counts']['failed'] == 0, report
    logs = steps['logs']['data']
    assert logs['counts']['ERROR'] == 2 and logs['counts']['WARNING'] >= 1
    assert logs['top_errors'][0] == {'message': 'provider timeout after N s', 'count': 2}
    perf = steps['performance']['data']
    assert perf['ok'] == 20 and 0 < perf['p50_ms'] <= perf['p95_ms'] <= perf['max_ms']
    fixture = steps['database']['data']['sqlite'][DATA + '/fixture-fragmented.db']
    assert fixture['stats']['fragmentation_pct'] > 70
    assert fixture['vacuum']['changed'] is True
    assert fixture['vacuum']['size_after'] < fixture['vacuum']['size_before'] / 5
    assert fixture['stats_after']['tables'] == fixture['stats']['tables'] == {'t': 200}
    assert host.file(DATA + '/fixture-fragmented.db').size == fixture['vacuum']['size_after']
    assert host.file(DATA + '/fixture-fragmented.db').user == 'victor'
    assert steps['database']['data']['absent'] == [DATA + '/cache/cache-v2.sqlite3']
    assert steps['database']['data']['busy'] == []
    victor_db = steps['database']['data']['sqlite'][DATA + '/victor.db']  # maintained while Victor runs
    assert victor_db['quick_check']['ok'] is True
    assert victor_db['stats']['tables']['sys_metadata'] >= 1
    assert host.file(DATA + '/victor.db').user == 'victor'
    assert not host.file(DATA + '/victor.db-wal').exists or host.file(DATA + '/victor.db-wal').user == 'victor'
    assert steps['security']['data']['pip_check'], steps['security']


def test_monthly_report(host):
    report, steps = _report('monthly')
    assert [s['name'] for s in report['steps']] == ['backup', 'outdated', 'cleanup', 'performance', 'capacity', 'health']
    assert report['counts']['failed'] == 0, report
    backup = steps['backup']['data']
    assert host.file(backup['path']).exists and host.file(backup['path']).size == backup['backup']['size'] > 0
    assert steps['outdated']['data']['outdated'] == []  # the wheelhouse has nothing newer than 0.9.5's pins
    assert steps['health']['data']['status'] == 'healthy'
    sizes = steps['capacity']['data']['sizes']
    assert sizes['db:fixture-fragmented.db'] == host.file(DATA + '/fixture-fragmented.db').size
    assert sizes['db:victor.db'] == host.file(DATA + '/victor.db').size
    assert steps['capacity']['data']['growth']['previous'] is None


@pytest.mark.parametrize('path, removed', [
    ('logs/old-2025.log.1', True),
    ('logs/old-usage.jsonl.gz', True),
    ('cache/old-entry.json', True),
    ('logs/recent.log.1', False),
    ('logs/victor-fixture.log', False),
    ('cache/fresh-entry.json', False),
    ('cache/old-cache.sqlite3', False),
    ('fixture-fragmented.db', False),
    ('victor.db', False),
])
def test_only_old_files_are_removed(host, path, removed):
    _report_, steps = _report('monthly')
    assert host.file('%s/%s' % (DATA, path)).exists is not removed
    assert (('%s/%s' % (DATA, path)) in steps['cleanup']['data']['removed']) is removed


def test_victor_still_serves(host):
    answer = host.run('curl -sf http://127.0.0.1:8765/health')
    assert answer.rc == 0 and json.loads(answer.stdout)['status'] == 'healthy'
