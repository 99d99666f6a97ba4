"""The first hour of a new user, literally: `git clone`, the README's set-up and demo command
(`make demo`), then each command README.md, docs/ and the demo's summary show for the local
Victor, exactly as written, with only the venv's bin on PATH (no `. scripts/env.sh`, no
ANSIBLE_* variables: ansible.cfg must find the inventory and the collection).

What is re-done and what is reused: the clone gets a `.venv` symlink to the already built tool
venv (so `make demo` skips `make venv`, 1-2 min of pip); everything else is re-done in the
clone: the collection link, the victor-ai release venv (from the project's wheelhouse, so no
network: VICTOR_LOCAL_WHEELHOUSE), starting `victor serve`, the monthly maintenance. The demo
gets a free port (VICTOR_LOCAL_PORT), as when 8765 is taken; the later commands find it in
.cache/local-victor/port. Also covers the demo's rerun (server reused, cleanup and capacity
growth against the first report) and what happens once the server is stopped. The server is
stopped by its pid file.
"""
import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(os.environ.get('VICTOR_OPS_WHEELHOUSE', str(ROOT / '.cache' / 'wheelhouse')))
DAY = 86400
# The commands, as README.md / docs / the demo's summary print them.
MONTHLY = 'ansible-playbook playbooks/monthly_maintenance.yml'
WEEKLY = 'ansible-playbook -i inventories/local playbooks/weekly_maintenance.yml'
HEALTH = 'ansible-playbook -i inventories/local playbooks/daily_health_check.yml'


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _stop(pid_file):
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
        for _wait in range(150):
            os.kill(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    pid_file.unlink()  # the pid may be reused by another process later


@pytest.fixture(name='clone', scope='module')
def clone_fixture(tmp_path_factory):
    if not list(WHEELHOUSE.glob('victor_ai-0.9.5-*.whl')):
        pytest.skip('no wheelhouse with victor-ai 0.9.5 (make wheelhouse)')
    checkout = tmp_path_factory.mktemp('first-hour') / 'victor.ops'
    subprocess.run(['git', 'clone', '--quiet', str(ROOT), str(checkout)], check=True, capture_output=True)
    os.symlink(os.path.realpath(str(ROOT / '.venv')), str(checkout / '.venv'))
    # A new user's shell: the venv's bin first on PATH, nothing else of ours.
    env = {'PATH': '%s:/usr/local/bin:/usr/bin:/bin' % (checkout / '.venv' / 'bin'), 'HOME': os.environ['HOME'],
           'LANG': 'C.UTF-8', 'ANSIBLE_FORCE_COLOR': '0', 'ANSIBLE_NOCOLOR': '1',
           'VICTOR_LOCAL_WHEELHOUSE': str(WHEELHOUSE)}
    root = checkout / '.cache' / 'local-victor'
    yield checkout, env, root
    _stop(root / 'run' / 'victor.pid')
    shutil.rmtree(str(checkout), ignore_errors=True)


def _run(command, checkout, env, timeout=900):
    started = time.monotonic()
    proc = subprocess.run(command.split(), cwd=str(checkout), env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    print('%s: rc %d in %.1f s' % (command, proc.returncode, time.monotonic() - started))
    return proc


def _newest(pattern):
    found = sorted(glob.glob(str(pattern)))
    assert found, pattern
    with open(found[-1], encoding='utf-8') as handle:
        return found[-1], json.load(handle)


def _steps(report):
    return {step['name']: step for step in report['steps']}


def _age(path, days):
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))


def test_first_hour(clone):
    checkout, env, root = clone
    port = _free_port()
    demo_env = dict(env, VICTOR_LOCAL_PORT=str(port))
    if os.path.exists('/usr/bin/python3'):
        demo_env['VICTOR_LOCAL_PYTHON'] = '/usr/bin/python3'  # the wheelhouse is built for Debian's python3

    # 1. The README's set-up and demo command.
    demo = _run('make demo', checkout, demo_env)
    assert demo.returncode == 0, demo.stdout[-6000:] + demo.stderr[-3000:]
    first_path, first = _newest(root / 'reports' / 'localhost' / 'monthly-*Z.json')
    steps = _steps(first)
    assert first['counts'] == {'ok': 6, 'warn': 0, 'failed': 0, 'skipped': 0}, first
    assert 'report:  %s.md' % first_path[:-len('.json')] in demo.stdout
    backup = steps['backup']['data']['path']
    assert 'backup:  %s' % backup in demo.stdout
    assert os.path.getsize(backup) == steps['backup']['data']['backup']['size'] > 0
    assert 'victor-ai' not in [p['name'] for p in steps['outdated']['data']['outdated']]
    assert steps['performance']['data']['ok'] == steps['performance']['data']['requests']
    assert steps['capacity']['data']['growth']['previous'] is None
    pid = (root / 'run' / 'victor.pid').read_text().strip()
    assert re.search(r'Victor is running at http://127.0.0.1:%d \(pid %s\)' % (port, pid), demo.stdout)
    assert (root / 'port').read_text().strip() == str(port)
    # Every command the summary prints is one this test runs literally.
    for command in (MONTHLY, WEEKLY, HEALTH):
        assert command in demo.stdout, command

    # One definition of "disk used" in the report: the capacity figure is the health figure (df's Use%).
    # The two steps read the file system seconds apart while other jobs write to it (28.4 vs 28.3 % seen
    # in CI), so they may differ by a few tenths; counting the root-reserved blocks (used/size) would
    # differ by about 1.4 points at this fill, which this still catches.
    health_disk = [c for c in steps['health']['data']['checks'] if c['name'].startswith('disk:')]
    assert health_disk and abs(health_disk[0]['value'] - steps['capacity']['data']['filesystem']['used_pct']) <= 0.5
    df_out = subprocess.run(['df', '--output=pcent', str(root)], capture_output=True, text=True, check=True).stdout
    assert abs(int(df_out.split()[-1].rstrip('%')) - health_disk[0]['value']) <= 1

    # Old and new files for the cleanup, growth for the capacity report.
    data = root / 'state' / '.victor'
    (data / 'logs').mkdir(parents=True, exist_ok=True)
    (data / 'cache').mkdir(parents=True, exist_ok=True)
    fixtures = {'logs/old.log.1': 100, 'logs/recent.log.1': 10, 'cache/old-entry.json': 45,
                'cache/fresh-entry.json': 3, 'cache/old.sqlite3': 60}
    for name, days in fixtures.items():
        (data / name).write_text('x' * 1000)
        _age(data / name, days)
    (data / 'logs' / 'grow.bin').write_bytes(b'g' * 50000)

    # 2. The literal monthly command: ansible.cfg's inventory (local), port from the port file.
    monthly = _run(MONTHLY, checkout, env)
    assert monthly.returncode == 0, monthly.stdout[-6000:] + monthly.stderr[-3000:]
    path, report = _newest(root / 'reports' / 'localhost' / 'monthly-*Z.json')
    assert path != first_path
    steps = _steps(report)
    assert report['counts']['failed'] == 0 and steps['health']['data']['status'] == 'healthy', report
    assert steps['cleanup']['data']['removed'] == sorted([str(data / 'cache/old-entry.json'), str(data / 'logs/old.log.1')])
    for name in fixtures:
        assert (data / name).exists() is (name not in ('logs/old.log.1', 'cache/old-entry.json')), name
    growth = steps['capacity']['data']['growth']
    assert growth['previous'] == first['finished']
    assert growth['bytes']['logs'] >= 50000 + 3 * 1000 - 2 * 1000
    assert growth['bytes']['backups'] > 0

    # 3. The weekly maintenance, as the demo's summary prints it.
    weekly = _run(WEEKLY, checkout, env)
    assert weekly.returncode == 0, weekly.stdout[-6000:] + weekly.stderr[-3000:]
    _path, report = _newest(root / 'reports' / 'localhost' / 'weekly-*Z.json')
    assert report['counts']['failed'] == 0, report

    # 4. The daily health check of the healthy demo server: healthy, every check ok.
    health = _run(HEALTH, checkout, env)
    assert health.returncode == 0, health.stdout[-6000:] + health.stderr[-3000:]
    _path, report = _newest(root / 'reports' / 'victor-health-*.json')
    assert report['status'] == 'healthy', report
    checks = report['hosts']['localhost']['checks']
    assert [c['name'] for c in checks if c['status'] != 'ok'] == [], checks
    names = {c['name'] for c in checks}
    assert 'disk:%s' % root in names and [n for n in names if n.startswith('service:')], names

    # 5. `make demo` again: the running server and its port are reused.
    again = _run('make demo', checkout, {k: v for k, v in demo_env.items() if k != 'VICTOR_LOCAL_PORT'})
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert (root / 'run' / 'victor.pid').read_text().strip() == pid
    assert 'Victor is running at http://127.0.0.1:%d (pid %s)' % (port, pid) in again.stdout

    # 6. Victor stopped: the literal command says, at once, to run `make demo`.
    _stop(root / 'run' / 'victor.pid')
    down = _run(MONTHLY, checkout, env, timeout=300)
    assert down.returncode == 2, down.stdout[-3000:]
    assert 'Victor does not answer at http://127.0.0.1:%d/health' % port in down.stdout
    assert 'start it with `make demo`' in down.stdout
    # ... and so does the daily health check, after naming the failed checks.
    sick = _run(HEALTH, checkout, env, timeout=300)
    assert sick.returncode == 2, sick.stdout[-3000:]
    assert re.search(r'localhost \(unhealthy: [^)]*service:', sick.stdout), sick.stdout[-3000:]
    assert 'start it with `make demo`' in sick.stdout, sick.stdout[-3000:]


def _is_playbook(word):
    return word.startswith('victor.ops.') or (word.endswith('.yml') and not word.startswith('@'))


def _documented_commands():
    """Every `ansible-playbook ...` command in README.md, docs/*.md and scripts/demo.sh (its summary)."""
    commands = []
    for path in [ROOT / 'README.md', ROOT / 'scripts' / 'demo.sh'] + sorted((ROOT / 'docs').glob('*.md')):
        text = path.read_text(encoding='utf-8').replace('\\\n', ' ')
        for match in re.finditer(r'ansible-playbook (?!\])([^`#\n]*)', text):
            words = shlex.split(match.group(1).replace('<', '').replace('>', ''))
            if [w for w in words if _is_playbook(w)]:
                commands.append((path.name, words))
    return commands


def test_every_documented_playbook_command_resolves():
    """The commands for remote inventories cannot reach their example hosts here: each one's inventory
    and playbook (through ansible.cfg's collections_path, no ANSIBLE_* variables) must at least load;
    the local ones run literally in test_first_hour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('ANSIBLE_')}
    env['PATH'] = '%s:%s' % (Path(os.path.realpath(str(ROOT / '.venv'))) / 'bin', env['PATH'])
    by_inventory = {}
    for source, words in _documented_commands():
        inventory = words[words.index('-i') + 1] if '-i' in words else None
        if inventory and not (ROOT / inventory).exists():
            assert 'acme' in inventory, (source, words)  # the "make your own copy" example of docs/inventories.md
            continue
        by_inventory.setdefault(inventory, set()).update(w for w in words if _is_playbook(w))
    assert {None, 'inventories/local', 'inventories/production', 'inventories/staging'} <= set(by_inventory), by_inventory
    for inventory, playbooks in sorted(by_inventory.items(), key=str):
        cmd = ['ansible-playbook', '--syntax-check'] + (['-i', inventory] if inventory else []) + sorted(playbooks)
        proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-3000:])
