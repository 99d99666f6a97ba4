"""After converge: Victor recovered from a full + incremental chain, healthy, markers back."""
import json

HOST = 'victor-ops-victor_backup_dr'
STATE = '/var/lib/victor/.victor'
REPO = '/var/backups/victor'


def _manifests(host):
    out = host.check_output("python3 -c 'import glob, json; print(json.dumps([json.load(open(p)) "
                            "for p in glob.glob(\"%s/*.manifest.json\")]))'" % REPO)
    return json.loads(out)


def test_victor_is_healthy_with_the_deployed_version(host):
    body = json.loads(host.check_output('curl -fsS http://127.0.0.1:8765/health'))
    assert body['status'] == 'healthy'
    assert body['version'] == '0.9.5'


def test_both_markers_are_back(host):
    rows = host.check_output("runuser -u victor -- sqlite3 %s/victor.db 'SELECT name FROM ops_dr_marker ORDER BY name'" % STATE)
    assert rows.split() == ['before-full', 'before-incremental']
    assert host.file(STATE + '/rl_data/dr_marker.txt').content_string == 'dr-marker\n'


def test_restored_state_belongs_to_victor_and_is_intact(host):
    state = host.file(STATE)
    assert state.is_directory and state.user == 'victor'
    assert host.file(STATE + '/victor.db').user == 'victor'
    assert host.check_output("runuser -u victor -- sqlite3 %s/victor.db 'PRAGMA integrity_check'" % STATE) == 'ok'


def test_chain_was_full_then_incremental(host):
    manifests = sorted(_manifests(host), key=lambda m: m['time'])
    assert [m['type'] for m in manifests][:2] == ['full', 'incremental']
    assert manifests[1]['parent'] == manifests[0]['id']
    assert manifests[0]['verified']['ok'] and manifests[1]['verified']['ok']


def test_timers_are_installed_and_the_scheduled_backup_works(host):
    for name in ('incremental', 'full', 'database'):
        assert host.service('victor-backup-%s.timer' % name).is_enabled
    before = len(_manifests(host))
    host.check_output('systemctl start victor-backup@database.service')
    manifests = _manifests(host)
    assert len(manifests) == before + 1
    newest = max(manifests, key=lambda m: m['time'])
    assert newest['scope'] == 'database'
    paths = [f['path'] for f in newest['files']]
    assert 'victor.db' in paths and all(f['kind'] == 'db' for f in newest['files'])  # project.db too
