"""victor_health against a real victor-ai: reports of the converge run, then failure cases.

Order matters: the report tests read what converge wrote (Victor healthy); later tests
break one thing at a time (unit stopped, disk threshold, planted log errors) and restore it.
"""
import glob
import json
import os
import shutil
import subprocess
import time

import pytest

HOST = 'victor-ops-victor_health'
LOG = '/var/lib/victor/.victor/logs/victor.log'
EPHEMERAL = os.environ['MOLECULE_EPHEMERAL_DIRECTORY']
INVENTORY = os.environ['MOLECULE_INVENTORY_FILE']
PLAYBOOK = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'playbooks', 'daily_health_check.yml')
BASE_ARGS = {
    'http': {'url': 'http://127.0.0.1:8765', 'paths': ['/health'], 'expected_version': '0.9.5', 'timeout': 5},
    'service': {'name': 'victor-api'},
    'disk': {'paths': ['/', '/var/lib/victor']},
    'memory': {},
    'log': {'path': LOG, 'window_minutes': 60},
    'sqlite': {'paths': ['/var/lib/victor/.victor/cache/cache-v2.sqlite3', '/var/lib/victor/.victor/victor.db'], 'missing_ok': True},
    'backup': {'path': '/var/backups/victor', 'pattern': '*.manifest.json'},
    'fail_on': 'never',
}


def _health(host, **override):
    args = dict(BASE_ARGS, **override)
    return host.ansible('victor.ops.victor_health', json.dumps(args), check=False)


def _checks(result):
    return dict((c['name'], c) for c in result['checks'])


def _newest(pattern):
    files = sorted(glob.glob(os.path.join(EPHEMERAL, 'reports', pattern)))
    assert files, 'no report matching %s' % pattern
    return files[-1]


def _wait_healthy(host, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if host.run('curl -sf --max-time 2 http://127.0.0.1:8765/health').rc == 0:
            return
        time.sleep(1)
    pytest.fail('victor-api did not become healthy again')


# --------------------------------------------------------------- reports of the converge run

def test_json_report_says_healthy():
    report = json.loads(open(_newest('victor-health-*.json')).read())
    assert report['status'] == 'healthy', report
    entry = report['hosts'][HOST]
    assert entry['status'] == 'healthy'
    assert entry['failed_checks'] == []
    checks = _checks(entry)
    assert checks['http:/health']['value'] == 200
    assert checks['version:/health']['value'] == '0.9.5'
    assert checks['service:victor-api']['value'] == 'active'
    assert checks['backup:/var/backups/victor']['status'] == 'ok'
    assert '20261125T000000Z.manifest.json' in checks['backup:/var/backups/victor']['message']
    # Victor creates its databases on first use: present -> quick_check ok, absent -> ok (missing_ok)
    assert checks['sqlite:/var/lib/victor/.victor/cache/cache-v2.sqlite3']['value'] in ('ok', 'absent')
    assert checks['latency:/health']['value'] < 2000


def test_reports_are_not_world_readable():
    # they quote Victor's log lines and error messages
    for pattern in ('victor-health-*.json', 'victor-health-*.md'):
        assert os.stat(_newest(pattern)).st_mode & 0o777 == 0o640
    assert os.stat(os.path.join(EPHEMERAL, 'reports')).st_mode & 0o777 == 0o750


def test_markdown_report_has_one_line_per_host():
    text = open(_newest('victor-health-*.md')).read()
    assert 'Overall: **healthy**' in text
    assert '| %s | healthy |' % HOST in text


def test_prometheus_textfile():
    path = os.path.join(EPHEMERAL, 'textfile', 'victor_health.prom')
    text = open(path).read()
    assert 'victor_ops_health_status{host="%s"} 0\n' % HOST in text
    assert 'victor_ops_health_check_status{host="%s",check="service:victor-api"} 0\n' % HOST in text
    promtool = shutil.which('promtool')
    if promtool:  # tests/host-packages.txt installs prometheus; the format check then runs
        with open(path) as stream:
            check = subprocess.run([promtool, 'check', 'metrics'], stdin=stream, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


# --------------------------------------------------------------- the module on the live host

def test_module_healthy_and_unchanged(host):
    result = _health(host)
    assert result['status'] == 'healthy', result['failed_checks']
    assert result['changed'] is False


def test_provider_connectivity_from_status(host):
    http = dict(BASE_ARGS['http'], paths=['/status'], expected_version=None, timeout=30, latency_warn_ms=30000, latency_crit_ms=30000)
    result = _health(host, http=http)
    provider = _checks(result)['provider:/status']
    assert provider['status'] == 'ok', provider
    assert provider['value'] == 'ollama'  # victor-ai's default provider, as /status reports it


def test_sqlite_quick_check_on_the_host(host):
    db = '/var/lib/victor/health-test.db'
    host.check_output("sqlite3 %s 'PRAGMA journal_mode=WAL; CREATE TABLE t (x TEXT); CREATE INDEX i ON t (x);"
                      " WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 3000)"
                      " INSERT INTO t SELECT printf(\"row %%05d\", k) FROM n;'", db)
    try:
        good = _checks(_health(host, sqlite={'paths': [db]}))['sqlite:%s' % db]
        assert (good['status'], good['value']) == ('ok', 'ok')
        # scribble over b-tree pages 3, 6, 9 ... (4 KiB pages), as a disk error would
        host.check_output("for p in 3 6 9 12 15; do printf '\\x00\\x11%%.0s' $(seq 32) |"
                          " dd of=%s bs=1 seek=$((p * 4096 + 100)) conv=notrunc status=none; done", db)
        bad = _checks(_health(host, sqlite={'paths': [db]}))['sqlite:%s' % db]
        assert bad['status'] == 'crit', bad
    finally:
        host.run('rm -f %s %s-wal %s-shm', db, db, db)


def test_disk_threshold_degrades(host):
    result = _health(host, disk={'paths': ['/var/lib/victor'], 'warn_percent': 0.1, 'crit_percent': 100})
    assert result['status'] == 'degraded'
    assert result['failed_checks'] == ['disk:/var/lib/victor']
    assert _checks(result)['disk:/var/lib/victor']['status'] == 'warn'
    try:
        failing = _health(host, disk={'paths': ['/var/lib/victor'], 'warn_percent': 0.1, 'crit_percent': 100}, fail_on='degraded')
    except host.ansible.AnsibleException as exc:
        failing = exc.result
    assert failing.get('msg') == 'Victor is degraded: disk:/var/lib/victor'


def test_planted_errors_are_counted_and_shown(host):
    size = host.check_output('stat -c %%s %s', LOG).strip()
    stamp = host.check_output("date '+%Y-%m-%d %H:%M:%S'").strip()
    lines = ['%s,000 - victor-test - victor.providers - ERROR - planted provider failure %d' % (stamp, i) for i in range(3)]
    lines.append('Traceback (most recent call last):')
    try:
        planted = host.run("cat >> %s <<'EOF'\n%s\nEOF" % (LOG, '\n'.join(lines)))
        assert planted.rc == 0, planted.stderr
        result = _health(host)
        check = _checks(result)['log:%s' % LOG]
        assert check['value'] == 4
        assert check['status'] == 'warn'
        assert result['status'] == 'degraded'
        assert result['log_lines'][-1] == 'Traceback (most recent call last):'
        assert 'planted provider failure 2' in result['log_lines'][-2]
    finally:
        host.check_output('truncate -s %s %s', size, LOG)


def test_stopped_unit_is_unhealthy(host):
    host.check_output('systemctl stop victor-api')
    try:
        result = _health(host)
        assert result['status'] == 'unhealthy'
        checks = _checks(result)
        assert checks['service:victor-api']['status'] == 'crit'
        assert checks['service:victor-api']['value'] in ('inactive', 'failed')
        assert checks['http:/health']['status'] == 'crit'
        assert 'Connection refused' in checks['http:/health']['message']
        assert {'service:victor-api', 'http:/health'} <= set(result['failed_checks'])

        reports = os.path.join(EPHEMERAL, 'reports-unit-stopped')
        shutil.rmtree(reports, ignore_errors=True)
        run = subprocess.run(['ansible-playbook', '-i', os.path.dirname(INVENTORY), PLAYBOOK, '-e', 'victor_health_report_dir=' + reports],
                             capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode != 0, run.stdout[-2000:]
        assert '1 of 1 hosts are unhealthy: %s (unhealthy: ' % HOST in run.stdout + run.stderr
        new = glob.glob(os.path.join(reports, 'victor-health-*.json'))
        assert len(new) == 1
        report = json.loads(open(new[0]).read())
        assert report['status'] == 'unhealthy'
        assert 'service:victor-api' in report['hosts'][HOST]['failed_checks']
    finally:
        host.check_output('systemctl start victor-api')
        _wait_healthy(host)
