"""victor_deploy method docker against this machine's docker engine (real victor-ai from the wheelhouse).

The steps run in file order and share one module fixture (the container, images and volume
the steps build on): a failing first deploy leaves nothing, deploy 0.9.4, a no-change
rerun, an upgrade in check mode (nothing built or touched), a marker row in Victor's
state DB, upgrade to 0.9.5, playbooks/rollback.yml back to
0.9.4, a deploy whose container cannot become healthy (automatic rollback), a version the
wheelhouse lacks (the build fails, the container is not touched), pruning with keep=2.
Everything the test creates has a name starting with victor-ops-itest; only those are removed.
Needs: a docker engine, the image victor-ops/debian12-systemd:latest and the wheelhouse
(make images wheelhouse).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections import namedtuple
from pathlib import Path

import pytest

# Steps in file order on one container: after a failed step the later ones are not run
# (reported as xfail naming it; tests/integration/conftest.py).
pytestmark = pytest.mark.ordered_steps

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WHEELHOUSE = Path(os.environ.get('VICTOR_OPS_WHEELHOUSE', str(ROOT / '.cache' / 'wheelhouse')))
BASE_IMAGE = 'victor-ops/debian12-systemd:latest'
IMAGE = 'victor-ops-itest/victor-ai'
CONTAINER = 'victor-ops-itest-deploy'
VOLUME = 'victor-ops-itest-data'
SECRET = 'sk-itest-do-not-print-0123456789'
DB = '/var/lib/victor/.victor/victor.db'
Run = namedtuple('Run', 'rc out changed')
# A start option that makes `victor serve` exit (the gate sees the container exit after one
# round). The timeout also bounds the gate of the automatic rollback, so it must cover
# Victor's start-up on a loaded machine.
BAD_START = ['-e', '{"victor_deploy_docker_serve_args": ["--no-such-option"], "victor_deploy_health_timeout": 60}']


def _docker(*args, check=True):
    return subprocess.run(['docker'] + list(args), capture_output=True, text=True, check=check, timeout=120)


def _cleanup():
    """Remove the container, the images and the volume of this test, by name only."""
    _docker('rm', '-f', CONTAINER, check=False)
    tags = _docker('image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', IMAGE, check=False).stdout.split()
    if tags:
        _docker('image', 'rm', '-f', *tags, check=False)
    _docker('volume', 'rm', '-f', VOLUME, check=False)


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _require_docker(image):
    """Skip (a failure in CI) without a docker engine or without the local image."""
    if shutil.which('docker') is None or _docker('info', check=False).returncode != 0:
        pytest.skip('no docker engine')
    if _docker('image', 'inspect', image, check=False).returncode != 0:
        pytest.skip('image %s missing (make images)' % image)


@pytest.fixture(scope='module', name='env')
def env_fixture(tmp_path_factory):
    _require_docker(BASE_IMAGE)
    if not (WHEELHOUSE / '.complete-0.9.4').exists() or not (WHEELHOUSE / '.complete-0.9.5').exists():
        pytest.skip('wheelhouse with victor-ai 0.9.4 and 0.9.5 missing (make wheelhouse)')
    _cleanup()
    work = tmp_path_factory.mktemp('deploy-docker')
    (work / 'inventory.ini').write_text(
        '[victor_api]\nlocalhost ansible_connection=local ansible_python_interpreter=%s\n' % sys.executable)
    port = _free_port()
    (work / 'vars.json').write_text(json.dumps({
        'victor_deploy_method': 'docker',
        'victor_deploy_source': 'wheelhouse',
        'victor_deploy_wheelhouse_dir': str(WHEELHOUSE),
        'victor_deploy_docker_image': IMAGE,
        'victor_deploy_docker_base_image': BASE_IMAGE,
        'victor_deploy_docker_container_name': CONTAINER,
        'victor_deploy_docker_volume': VOLUME,
        'victor_deploy_port': port,
        'victor_deploy_fact_file': str(work / 'facts.d' / 'victor_deploy.fact'),
        'victor_deploy_environment': {'ANTHROPIC_API_KEY': SECRET},
        'victor_deploy_pre_backup': False,
    }))
    env = dict(os.environ, ANSIBLE_FORCE_COLOR='0', PY_COLORS='0', ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH=os.environ.get('ANSIBLE_COLLECTIONS_PATH', str(ROOT / '.cache' / 'collections')))
    try:
        yield {'work': work, 'port': port, 'env': env, 'fact': work / 'facts.d' / 'victor_deploy.fact'}
    finally:
        _cleanup()


def _play(env, playbook, *extra, version=None):
    cmd = [str(BIN / 'ansible-playbook'), '-v', '-i', str(env['work'] / 'inventory.ini'), str(ROOT / 'playbooks' / playbook),
           '-e', '@' + str(env['work'] / 'vars.json')]
    if version:
        cmd += ['-e', 'victor_deploy_version=%s' % version]
    proc = subprocess.run(cmd + list(extra), cwd=str(ROOT), env=env['env'], capture_output=True, text=True, timeout=1200, check=False)
    out = proc.stdout + proc.stderr
    assert SECRET not in out, 'the API key was printed'
    recap = re.search(r'localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', out)
    return Run(proc.returncode, out, int(recap.group(2)) if recap else None)


def _health(env):
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d/health' % env['port'], timeout=5) as resp:
            return json.loads(resp.read().decode())
    except OSError as exc:
        return {'error': str(exc)}


def _container():
    proc = _docker('inspect', CONTAINER, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def _fact(env):
    return json.loads(env['fact'].read_text()) if env['fact'].exists() else None


def _sql(query):
    code = 'import sqlite3, sys; c = sqlite3.connect(%r); r = c.execute(sys.argv[1]).fetchall(); c.commit(); print(r)' % DB
    return _docker('exec', CONTAINER, 'python', '-c', code, query).stdout.strip()


def _images():
    return sorted(_docker('image', 'ls', '--format', '{{.Tag}}', IMAGE).stdout.split())


def test_bad_input_fails_before_touching_the_host(env):
    for extra, name in ((['-e', 'victor_deploy_version=latest'], 'victor_deploy_version'),
                        (['-e', 'victor_deploy_version=0.9.4', '-e', 'victor_deploy_docker_volume=no/slash'], 'victor_deploy_docker_volume')):
        rc, out = _play(env, 'deploy.yml', *extra)[:2]
        assert rc != 0 and name in out, out[-3000:]
    assert _container() is None
    assert not _images()


def test_failing_first_deploy_leaves_nothing_running(env):
    rc, out = _play(env, 'deploy.yml', *BAD_START, version='0.9.4')[:2]
    assert rc != 0
    assert 'no previous release to roll back to (first deploy; the container was removed)' in out, out[-3000:]
    # the gate saw the container exit and did not wait out victor_deploy_health_timeout
    assert 'Health gate failed: container %s exited or restarted' % CONTAINER in out, out[-3000:]
    assert _container() is None
    assert _fact(env) is None
    assert _images() == ['0.9.4']  # the image is fine; only the start option was bad
    build_stage = _docker('image', 'ls', '-q', '--filter', 'dangling=true', '--filter', 'label=victor.ops.deploy.version.stage=build').stdout
    assert not build_stage.strip()


def test_deploy_094(env):
    rc, out, changed = _play(env, 'deploy.yml', version='0.9.4')
    assert rc == 0, out[-3000:]
    assert changed > 0
    assert _health(env) == {'status': 'healthy', 'version': '0.9.4'}
    info = _container()
    assert info['Config']['Image'] == IMAGE + ':0.9.4'
    assert info['Config']['User'] == '10001:10001'
    assert info['HostConfig']['ReadonlyRootfs'] is True
    assert info['HostConfig']['RestartPolicy']['Name'] == 'unless-stopped'
    assert info['HostConfig']['PortBindings']['8765/tcp'] == [{'HostIp': '127.0.0.1', 'HostPort': str(env['port'])}]
    assert [m['Name'] for m in info['Mounts'] if m['Destination'] == '/var/lib/victor'] == [VOLUME]
    assert 'ANTHROPIC_API_KEY=' + SECRET in info['Config']['Env']
    fact = _fact(env)
    assert (fact['current'], fact['previous'], fact['history'], fact['method']) == ('0.9.4', '', ['0.9.4'], 'docker')


def test_rerun_changes_nothing(env):
    before = _container()
    rc, out, changed = _play(env, 'deploy.yml', version='0.9.4')
    assert rc == 0, out[-3000:]
    assert changed == 0, out[-5000:]
    after = _container()
    assert (after['Id'], after['State']['StartedAt']) == (before['Id'], before['State']['StartedAt'])


def test_check_mode_upgrade_touches_nothing(env):
    before, fact = _container(), _fact(env)
    rc, out, changed = _play(env, 'deploy.yml', '--check', version='0.9.5')
    assert rc == 0, out[-3000:]
    assert changed > 0, 'check mode must report the upgrade it would make'
    after = _container()
    assert (after['Id'], after['State']['StartedAt']) == (before['Id'], before['State']['StartedAt'])
    assert _images() == ['0.9.4'], 'check mode built an image'
    assert _health(env) == {'status': 'healthy', 'version': '0.9.4'}
    assert _fact(env) == fact


def test_upgrade_095_keeps_data(env):
    _sql('CREATE TABLE IF NOT EXISTS itest_marker (v TEXT)')
    _sql("INSERT INTO itest_marker VALUES ('kept-across-deploys')")
    rc, out = _play(env, 'deploy.yml', version='0.9.5')[:2]
    assert rc == 0, out[-3000:]
    assert _health(env) == {'status': 'healthy', 'version': '0.9.5'}
    assert _container()['Config']['Image'] == IMAGE + ':0.9.5'
    assert _sql('SELECT v FROM itest_marker') == "[('kept-across-deploys',)]"
    fact = _fact(env)
    assert (fact['current'], fact['previous'], fact['history']) == ('0.9.5', '0.9.4', ['0.9.4', '0.9.5'])
    assert _images() == ['0.9.4', '0.9.5']


def test_rollback_playbook(env):
    rc, out = _play(env, 'rollback.yml')[:2]
    assert rc == 0, out[-3000:]
    assert _health(env) == {'status': 'healthy', 'version': '0.9.4'}
    assert _sql('SELECT v FROM itest_marker') == "[('kept-across-deploys',)]"
    fact = _fact(env)
    assert (fact['current'], fact['rolled_back_from'], fact['history']) == ('0.9.4', '0.9.5', ['0.9.4'])


def test_unhealthy_deploy_rolls_back(env):
    rc, out = _play(env, 'deploy.yml', *BAD_START, version='0.9.5')[:2]
    assert rc != 0
    assert 'Deploy of victor-ai 0.9.5 on localhost failed' in out, out[-3000:]
    assert 'Rolled back automatically to 0.9.4, which passed the health gate again' in out, out[-3000:]
    assert 'Health gate failed: container %s exited or restarted' % CONTAINER in out, out[-3000:]
    assert _health(env) == {'status': 'healthy', 'version': '0.9.4'}
    info = _container()
    assert info['Config']['Image'] == IMAGE + ':0.9.4'
    assert '--no-such-option' not in info['Config']['Cmd']  # the previous container's command, not the new one
    assert 'ANTHROPIC_API_KEY=' + SECRET in info['Config']['Env']
    assert _sql('SELECT v FROM itest_marker') == "[('kept-across-deploys',)]"
    assert _fact(env)['current'] == '0.9.4'


def test_version_missing_from_wheelhouse_fails_untouched(env):
    before = _container()
    rc, out = _play(env, 'deploy.yml', version='0.9.99')[:2]
    assert rc != 0
    assert 'Building %s:0.9.99' % IMAGE in out and 'the running container was not touched' in out, out[-3000:]
    after = _container()
    assert (after['Id'], after['State']['StartedAt']) == (before['Id'], before['State']['StartedAt'])
    assert _health(env) == {'status': 'healthy', 'version': '0.9.4'}
    assert '0.9.99' not in _images()
    assert _sql('SELECT v FROM itest_marker') == "[('kept-across-deploys',)]"


def test_prune_keeps_current_and_previous(env):
    # A third image the history does not know, then an upgrade with keep=2: 0.9.4 (previous)
    # and 0.9.5 (current) stay, the unknown one goes.
    _docker('tag', IMAGE + ':0.9.4', IMAGE + ':0.9.3')
    assert _images() == ['0.9.3', '0.9.4', '0.9.5']
    rc, out = _play(env, 'deploy.yml', '-e', 'victor_deploy_keep_releases=2', version='0.9.5')[:2]
    assert rc == 0, out[-3000:]
    assert _health(env) == {'status': 'healthy', 'version': '0.9.5'}
    assert _images() == ['0.9.4', '0.9.5']
