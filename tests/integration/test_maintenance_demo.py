"""`make demo` end to end: scripts/demo.sh deploys the real victor-ai locally (process service
manager, no root, no docker), runs the monthly maintenance on inventories/local, and is rerun.

The deploy uses the project's wheelhouse (VICTOR_LOCAL_WHEELHOUSE) so the test needs no
network; everything lives in a temp directory and the server is stopped by its pid file.
"""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / '.cache' / 'wheelhouse'
DAY = 86400


def _demo(env):
    started = time.monotonic()
    proc = subprocess.run(['bash', str(ROOT / 'scripts' / 'demo.sh')], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout, time.monotonic() - started


def _reports(root):
    return sorted(glob.glob(str(root / 'reports' / 'localhost' / 'monthly-*Z.json')))


def _steps(path):
    with open(path, encoding='utf-8') as handle:
        report = json.load(handle)
    return report, {step['name']: step for step in report['steps']}


def _age(path, days):
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))


@pytest.fixture(name='demo_env')
def demo_env_fixture(tmp_path):
    if not list(WHEELHOUSE.glob('victor_ai-0.9.5-*.whl')):
        pytest.skip('no wheelhouse with victor-ai 0.9.5 (make wheelhouse)')
    root = tmp_path / 'local-victor'
    env = dict(os.environ, VICTOR_LOCAL_ROOT=str(root), VICTOR_LOCAL_WHEELHOUSE=str(WHEELHOUSE),
               ANSIBLE_FORCE_COLOR='0', PY_COLORS='0')
    env.pop('VICTOR_LOCAL_PORT', None)
    if os.path.exists('/usr/bin/python3'):
        env['VICTOR_LOCAL_PYTHON'] = '/usr/bin/python3'  # the wheelhouse is built for Debian's python3
    yield root, env
    pid_file = root / 'run' / 'victor.pid'
    if pid_file.is_file():
        pid = int(pid_file.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
            for _wait in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            pass
    shutil.rmtree(root, ignore_errors=True)


def test_demo_runs_and_reruns(demo_env):
    root, env = demo_env
    out, first_seconds = _demo(env)
    print('first demo run: %.1f s' % first_seconds)
    reports = _reports(root)
    assert len(reports) == 1
    report_md = reports[0][:-len('.json')] + '.md'
    assert 'report:  %s' % report_md in out
    report, steps = _steps(reports[0])
    assert report['counts'] == {'ok': 6, 'warn': 0, 'failed': 0, 'skipped': 0}, report
    backup = steps['backup']['data']['path']
    assert 'backup:  %s' % backup in out
    assert os.path.getsize(backup) == steps['backup']['data']['backup']['size'] > 0
    assert steps['health']['data']['status'] == 'healthy'
    assert 'victor-ai' not in [p['name'] for p in steps['outdated']['data']['outdated']]
    assert steps['performance']['data']['ok'] == steps['performance']['data']['requests']
    assert steps['capacity']['data']['growth']['previous'] is None
    markdown = Path(report_md).read_text(encoding='utf-8')
    assert '| backup | OK |' in markdown and '| health | OK |' in markdown
    port = int((root / 'port').read_text())
    pid = (root / 'run' / 'victor.pid').read_text().strip()
    assert re.search(r'Victor is running at http://127.0.0.1:%d \(pid %s\)' % (port, pid), out)

    data = root / 'state' / '.victor'
    (data / 'logs').mkdir(parents=True, exist_ok=True)
    (data / 'cache').mkdir(parents=True, exist_ok=True)
    fixtures = {'logs/old.log.1': 100, 'logs/recent.log.1': 10, 'cache/old-entry.json': 45,
                'cache/fresh-entry.json': 3, 'cache/old.sqlite3': 60}
    for name, days in fixtures.items():
        (data / name).write_text('x' * 1000)
        _age(data / name, days)
    (data / 'logs' / 'grow.bin').write_bytes(b'g' * 50000)

    out, second_seconds = _demo(env)
    print('second demo run: %.1f s' % second_seconds)
    assert (root / 'run' / 'victor.pid').read_text().strip() == pid  # the running server was reused
    reports = _reports(root)
    assert len(reports) == 2
    first, _first_steps = _steps(reports[0])
    report, steps = _steps(reports[1])
    assert report['counts']['failed'] == 0, report
    assert steps['cleanup']['data']['removed'] == sorted([str(data / 'cache/old-entry.json'), str(data / 'logs/old.log.1')])
    for name in fixtures:
        assert (data / name).exists() is (name not in ('logs/old.log.1', 'cache/old-entry.json')), name
    growth = steps['capacity']['data']['growth']
    assert growth['previous'] == first['finished']
    assert growth['bytes']['logs'] >= 50000 + 3 * 1000 - 2 * 1000
    assert growth['bytes']['backups'] > 0
