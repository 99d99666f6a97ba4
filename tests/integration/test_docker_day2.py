"""Day-2 playbooks with victor_deploy_method: docker, against this machine's docker engine (issue 18 item 3).

One deploy (module fixture) of the real victor-ai with playbooks/deploy.yml, then each day-2
playbook on it, in file order: daily health (healthy; a stopped container is unhealthy and
named), backup (in --check nothing written, then a real one while Victor runs) and restore
(the data changed after the backup is back, Victor healthy), weekly maintenance on the
volume's victor.db, log rotation of Victor's log in the volume (and the container's json-file
limits), the runbooks api_server_down (stopped container) and emergency_restart (killed
process), an upgrade with its pre-deploy backup and rollback.yml with restore.

No image is built: the docker method's image layout (venv /opt/victor/venv, uid 10001, HOME
/var/lib/victor as a volume) is added as a thin layer on the shared image
victor-ops/victor:0.9.4-0.9.5 (both releases installed), tagged as the role's images 0.9.4 and
0.9.5, which the role then finds and uses. Every container, image and volume has a name
starting with victor-ops-day2; only those are removed.
"""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from test_deploy_docker import _docker, _free_port, _health, _require_docker  # pylint: disable=import-error

# the steps run in file order on the one deploy: a failed step (or a failed deploy in the fixture) stops the later ones
pytestmark = pytest.mark.ordered_steps

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASE = 'victor-ops/victor:0.9.4-0.9.5'
IMAGE = 'victor-ops-day2/victor-ai'
CONTAINER = 'victor-ops-day2-api'
VOLUME = 'victor-ops-day2-data'
SECRET = 'sk-day2-never-printed-0123456789'
# roles/victor_deploy/templates/docker/Dockerfile.j2's layout over a release of the base image.
DOCKERFILE = """FROM %s
RUN ln -s /opt/victor/releases/{version} /opt/victor/venv \\
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/victor --shell /usr/sbin/nologin victor \\
 && mkdir -p /var/lib/victor/.victor && chown -R 10001:10001 /var/lib/victor && chmod 0750 /var/lib/victor
ENV HOME=/var/lib/victor PATH=/opt/victor/venv/bin:/usr/local/bin:/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
LABEL victor.ops.deploy.version="{version}"
USER 10001:10001
WORKDIR /var/lib/victor
VOLUME /var/lib/victor
STOPSIGNAL SIGTERM
CMD ["victor", "serve", "--host", "0.0.0.0", "--port", "8765"]
""" % BASE
Run = namedtuple('Run', 'rc out changed')


def _cleanup():
    """Remove this test's container, images and volume, by name only."""
    _docker('rm', '-f', CONTAINER, check=False)
    _docker('image', 'rm', '-f', IMAGE + ':0.9.4', IMAGE + ':0.9.5', check=False)
    _docker('volume', 'rm', '-f', VOLUME, check=False)


def _play(env, playbook, *extra):
    cmd = [str(BIN / 'ansible-playbook'), '-v', '-i', str(env['work'] / 'inventory.ini'), str(ROOT / 'playbooks' / playbook),
           '-e', '@' + str(env['work'] / 'vars.json')]
    proc = subprocess.run(cmd + list(extra), cwd=str(ROOT), env=env['env'], capture_output=True, text=True, timeout=900, check=False)
    out = proc.stdout + proc.stderr
    assert SECRET not in out, 'the API key was printed'
    recap = re.search(r'localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', out)
    return Run(proc.returncode, out, int(recap.group(2)) if recap else None)


@pytest.fixture(scope='module', name='env')
def env_fixture(tmp_path_factory):
    _require_docker(BASE)
    for tool in ('logrotate', 'zstd'):
        if shutil.which(tool) is None:
            pytest.skip('%s missing (tests/host-packages.txt)' % tool)
    _cleanup()
    work = tmp_path_factory.mktemp('docker-day2')
    for version in ('0.9.4', '0.9.5'):
        (work / version).mkdir()
        (work / version / 'Dockerfile').write_text(DOCKERFILE.format(version=version))
        _docker('build', '--quiet', '-t', '%s:%s' % (IMAGE, version), str(work / version))
    (work / 'inventory.ini').write_text(
        '[victor_api]\nlocalhost ansible_connection=local ansible_become=false ansible_python_interpreter=%s\n' % sys.executable)
    port = _free_port()
    variables = {
        'victor_deploy_method': 'docker',
        'victor_deploy_docker_image': IMAGE,
        'victor_deploy_docker_container_name': CONTAINER,
        'victor_deploy_docker_volume': VOLUME,
        'victor_deploy_port': port,
        'victor_deploy_health_timeout': 180,
        'victor_deploy_fact_file': str(work / 'facts.d' / 'victor_deploy.fact'),
        'victor_deploy_environment': {'ANTHROPIC_API_KEY': SECRET},
        'victor_deploy_pre_backup_record': str(work / 'deploy-pre-backup.json'),
        'victor_deploy_docker_log_max_size': '3m',
        'victor_deploy_docker_log_max_file': 2,
        # backups into the test's directory; this host has no systemd for the timers
        'victor_backup_repository': str(work / 'backups'),
        'victor_backup_timers_install': False,
        'victor_backup_metrics_textfile_dir': '',
        'victor_backup_packages': [],
        'victor_restore_repository': str(work / 'backups'),
        'victor_restore_packages': [],
        'victor_restore_health_url': 'http://127.0.0.1:%d/health' % port,
        'victor_restore_health_timeout': 180,
        'victor_rollback_restore_record': str(work / 'deploy-pre-backup.json'),
        'victor_health_url': 'http://127.0.0.1:%d' % port,
        'victor_health_report_dir': str(work / 'health'),
        'victor_maintenance_url': 'http://127.0.0.1:%d' % port,
        'victor_maintenance_report_dir': str(work / 'maintenance'),
        'victor_maintenance_backup_dir': str(work / 'backups'),
        'victor_logrotate_config_path': str(work / 'logrotate' / 'victor-ai'),
        'victor_logrotate_freeze_script': str(work / 'logrotate' / 'victor-logrotate-freeze'),
        'victor_logrotate_install': False,
        'victor_runbook_report_dir': str(work / 'runbooks'),
        'victor_runbook_health_timeout': 180,
    }
    (work / 'logrotate').mkdir()
    (work / 'vars.json').write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_FORCE_COLOR='0', PY_COLORS='0', ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH=os.environ.get('ANSIBLE_COLLECTIONS_PATH', str(ROOT / '.cache' / 'collections')))
    env = {'work': work, 'port': port, 'env': env}
    try:
        run = _play(env, 'deploy.yml', '-e', 'victor_deploy_version=0.9.4')
        assert run.rc == 0, run.out[-4000:]
        assert _health(env) == {'status': 'healthy', 'version': '0.9.4'}
        env['volume_path'] = Path(json.loads(_docker('volume', 'inspect', VOLUME).stdout)[0]['Mountpoint'])
        yield env
    finally:
        _cleanup()


def _container():
    return json.loads(_docker('inspect', CONTAINER).stdout)[0]


def _db(env):
    return env['volume_path'] / '.victor' / 'victor.db'


def _mark(env, value=None):
    """Write (or read, without value) a marker row in the volume's victor.db from the host, while Victor runs:
    the same kernel, so SQLite's locks hold across the bind mount. WAL mode, as Victor's own database."""
    conn = sqlite3.connect(str(_db(env)), timeout=30)
    try:
        conn.execute('PRAGMA journal_mode=WAL')
        conn.execute('CREATE TABLE IF NOT EXISTS day2_marker (v TEXT)')
        if value is not None:
            conn.execute('DELETE FROM day2_marker')
            conn.execute('INSERT INTO day2_marker VALUES (?)', (value,))
            conn.commit()
        rows = conn.execute('SELECT v FROM day2_marker').fetchall()
    finally:
        conn.close()
    for path in _db(env).parent.glob('victor.db*'):
        os.chown(str(path), 10001, 10001)  # Victor's uid in the container
    return [r[0] for r in rows]


def _report(directory, pattern):
    found = sorted(Path(directory).glob(pattern))
    assert found, 'no %s in %s' % (pattern, directory)
    return json.loads(found[-1].read_text())


def test_deploy_sets_container_log_limits(env):
    info = _container()
    assert info['HostConfig']['LogConfig'] == {'Type': 'json-file', 'Config': {'max-size': '3m', 'max-file': '2'}}
    assert _mark(env, 'deployed') == ['deployed']


def test_daily_health_check(env):
    run = _play(env, 'daily_health_check.yml')
    assert run.rc == 0, run.out[-4000:]
    host = _report(env['work'] / 'health', '*.json')['hosts']['localhost']
    checks = {c['name']: c for c in host['checks']}
    assert host['status'] != 'unhealthy', host  # latency or memory may warn on a loaded machine
    assert checks['container:' + CONTAINER]['status'] == 'ok' and checks['container:' + CONTAINER]['value'] == 'running'
    assert 'service:victor-api' not in checks  # no systemd unit with the docker method
    assert any(str(_db(env)) in json.dumps(c) for c in host['checks']), 'victor.db in the volume was not checked'
    # --check without the controller's reports (new dated files would count as changes): nothing changes
    reports = sorted((env['work'] / 'health').iterdir())
    checked = _play(env, 'daily_health_check.yml', '--check', '-e', 'victor_health_report_dir=')
    assert checked.rc == 0 and checked.changed == 0, checked.out[-4000:]
    assert sorted((env['work'] / 'health').iterdir()) == reports

    _docker('stop', CONTAINER)
    run = _play(env, 'daily_health_check.yml')
    assert run.rc != 0
    assert '1 of 1 hosts are unhealthy: localhost (unhealthy:' in run.out and 'container:' + CONTAINER in run.out, run.out[-4000:]
    host = _report(env['work'] / 'health', '*.json')['hosts']['localhost']
    container = [c for c in host['checks'] if c['name'] == 'container:' + CONTAINER][0]
    assert container['status'] == 'crit' and container['value'] == 'exited', container


def test_api_server_down_runbook_starts_the_stopped_container(env):
    _docker('stop', CONTAINER)  # as the health test left it
    run = _play(env, 'runbooks/api_server_down.yml')
    assert run.rc == 0, run.out[-4000:]
    assert _health(env)['status'] == 'healthy'
    bundle = _report(env['work'] / 'runbooks', 'api_server_down-*.json')
    assert bundle['healthy'] is True and bundle['actions']['restarted'] is True, bundle['actions']
    assert bundle['diagnostics']['before']['container']['status'] == 'exited'
    assert bundle['diagnostics']['after']['container']['running'] is True
    again = _play(env, 'runbooks/api_server_down.yml')  # healthy: nothing restarted
    assert again.rc == 0 and _report(env['work'] / 'runbooks', 'api_server_down-*.json')['actions']['restarted'] is False


def test_emergency_restart_runbook_brings_back_a_killed_container(env):
    started = _container()['State']['StartedAt']
    _docker('kill', CONTAINER)
    run = _play(env, 'runbooks/emergency_restart.yml')
    assert run.rc == 0, run.out[-4000:]
    assert _health(env)['status'] == 'healthy'
    assert _report(env['work'] / 'runbooks', 'emergency_restart-*.json')['actions']['restarted'] is True
    assert _container()['State']['StartedAt'] != started


def test_backup_while_running_and_restore(env):
    repo = env['work'] / 'backups'
    _mark(env, 'before-backup')
    checked = _play(env, 'backup.yml', '--check')
    assert checked.rc == 0, checked.out[-4000:]
    assert not list(repo.glob('*.manifest.json')), 'check mode wrote a backup'
    run = _play(env, 'backup.yml')
    assert run.rc == 0, run.out[-4000:]
    manifests = [json.loads(p.read_text()) for p in repo.glob('*.manifest.json')]
    assert len(manifests) == 1 and manifests[0]['verified']['ok'] is True
    assert manifests[0]['victor_version'] == '0.9.4'  # the container's label
    assert _container()['State']['Running'] is True  # taken while Victor ran

    _mark(env, 'after-backup')
    before = _container()
    run = _play(env, 'restore.yml')
    assert run.rc == 0, run.out[-4000:]
    assert _mark(env) == ['before-backup']
    assert _health(env)['status'] == 'healthy'
    after = _container()
    assert after['Id'] == before['Id'] and after['State']['StartedAt'] != before['State']['StartedAt']
    assert list(env['volume_path'].glob('.victor.before-restore-*')), 'no safety copy in the volume'
    assert os.stat(str(_db(env))).st_uid == 10001


def test_weekly_maintenance(env):
    run = _play(env, 'weekly_maintenance.yml')
    assert run.rc == 0, run.out[-4000:]
    report = _report(env['work'] / 'maintenance' / 'localhost', 'weekly-*.json')
    steps = {s['name']: s for s in report['steps']}
    assert steps['database']['status'] == 'ok', steps['database']
    assert str(_db(env)) in steps['database']['data']['sqlite'], steps['database']
    assert steps['security']['status'] in ('ok', 'warn') and 'pip check: ok' in steps['security']['summary'], steps['security']
    assert _mark(env) == ['before-backup']
    assert _health(env)['status'] == 'healthy'


def test_monthly_maintenance(env):
    """The monthly run: a backup of the volume taken while Victor runs, the outdated packages of the
    container's venv (no index reachable from it: --no-index), capacity, cleanup, health."""
    _mark(env, 'before-monthly')
    run = _play(env, 'monthly_maintenance.yml', '-e', json.dumps({'victor_maintenance_pip_args': ['--no-index']}))
    assert run.rc == 0, run.out[-4000:]
    report = _report(env['work'] / 'maintenance' / 'localhost', 'monthly-*.json')
    assert report['counts']['failed'] == 0, report
    steps = {s['name']: s for s in report['steps']}
    backup = Path(steps['backup']['data']['path'])
    assert backup.is_file() and backup.stat().st_size > 0 and (env['work'] / 'backups') in backup.parents, steps['backup']
    assert _mark(env) == ['before-monthly']
    assert _health(env)['status'] == 'healthy'


def test_log_rotation(env):
    log = env['volume_path'] / '.victor' / 'logs' / 'victor.log'
    log.parent.mkdir(exist_ok=True)
    with open(str(log), 'a', encoding='utf-8') as handle:
        handle.write('2026-12-02 10:00:00 INFO day2 line\n' * 1000)
    os.chown(str(log), 10001, 10001)
    run = _play(env, 'log_rotation.yml')
    assert run.rc == 0, run.out[-4000:]
    config = (env['work'] / 'logrotate' / 'victor-ai').read_text()
    assert str(log.parent) + '/*.log' in config and 'docker:' + CONTAINER in config and ' su ' not in config, config
    state = env['work'] / 'logrotate.state'
    rotated = subprocess.run(['logrotate', '-f', '-s', str(state), str(env['work'] / 'logrotate' / 'victor-ai')],
                             capture_output=True, text=True, check=False)
    assert rotated.returncode == 0, rotated.stderr
    copies = list(log.parent.glob('victor.log-*'))
    assert copies and log.stat().st_size < 1000, (copies, log.stat().st_size)
    assert all(p.stat().st_uid == 10001 for p in copies + [log])
    state_now = _container()['State']
    assert state_now['Running'] is True and state_now['Paused'] is False
    assert _health(env)['status'] == 'healthy'


def test_rollback_with_restore(env):
    _mark(env, 'state-of-0.9.4')
    run = _play(env, 'deploy.yml', '-e', 'victor_deploy_version=0.9.5')
    assert run.rc == 0, run.out[-4000:]
    assert _health(env) == {'status': 'healthy', 'version': '0.9.5'}
    record = json.loads((env['work'] / 'deploy-pre-backup.json').read_text())
    assert (record['from_version'], record['to_version']) == ('0.9.4', '0.9.5')
    _mark(env, 'written-by-0.9.5')
    run = _play(env, 'rollback.yml', '-e', 'victor_rollback_restore_backup=true')
    assert run.rc == 0, run.out[-4000:]
    assert _health(env) == {'status': 'healthy', 'version': '0.9.4'}
    assert _container()['Config']['Image'] == IMAGE + ':0.9.4'
    assert _mark(env) == ['state-of-0.9.4']
