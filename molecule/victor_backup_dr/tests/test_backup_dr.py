"""After converge: Victor recovered from a full + incremental chain in S3 (moto), healthy, markers back."""
import json

HOST = 'victor-ops-victor_backup_dr'
STATE = '/var/lib/victor/.victor'
BUCKET = 'victor-dr-backups'
PREFIX = 'dr/victor/'
# boto3 of the moto venv, with the scenario's (fake) keys, against moto on 127.0.0.1:5000.
S3_PY = ("AWS_ACCESS_KEY_ID=victor-dr-access-key AWS_SECRET_ACCESS_KEY=victor-dr-secret-key "
         "/opt/moto/bin/python -c 'import boto3, json; "
         "s3 = boto3.client(\"s3\", endpoint_url=\"http://127.0.0.1:5000\", region_name=\"us-east-1\"); %s'")


def _objects(host):
    """{key: size} of every object under the scenario's prefix."""
    out = host.check_output(S3_PY % ('print(json.dumps({o[\"Key\"]: o[\"Size\"] for o in '
                                     's3.list_objects_v2(Bucket=\"%s\", Prefix=\"%s\").get(\"Contents\", [])}))' % (BUCKET, PREFIX)))
    return json.loads(out)


def _manifests(host):
    keys = [k for k in _objects(host) if k.endswith('.manifest.json')]
    out = host.check_output(S3_PY % ('print(json.dumps([json.load(s3.get_object(Bucket=\"%s\", Key=k)[\"Body\"]) for k in %s]))'
                                     % (BUCKET, json.dumps(keys))))
    return json.loads(out)


def test_victor_is_healthy_with_the_deployed_version(host):
    body = json.loads(host.check_output('curl -fsS http://127.0.0.1:8765/health'))
    assert body['status'] == 'healthy'
    assert body['version'] == '0.9.5'


def _markers(host):
    return host.check_output("runuser -u victor -- sqlite3 %s/victor.db 'SELECT name FROM ops_dr_marker ORDER BY name'" % STATE).split()


def test_both_markers_are_back(host):
    assert {'before-full', 'before-incremental'} <= set(_markers(host))
    assert host.file(STATE + '/rl_data/dr_marker.txt').content_string == 'dr-marker\n'


def test_failed_restore_put_the_previous_state_back(host):
    # converge restored a backup whose YAML does not parse: the role failed after the swap
    # and reverted, so the live state is the one from before that restore attempt
    assert _markers(host) == ['after-broken-backup', 'before-full', 'before-incremental']
    assert not host.file(STATE + '/ops-dr-broken.yaml').exists
    assert host.service('victor-api').is_running


def test_restored_state_belongs_to_victor_and_is_intact(host):
    state = host.file(STATE)
    assert state.is_directory and state.user == 'victor'
    assert host.file(STATE + '/victor.db').user == 'victor'
    assert host.check_output("runuser -u victor -- sqlite3 %s/victor.db 'PRAGMA integrity_check'" % STATE) == 'ok'


def test_backups_are_objects_in_the_bucket_and_nothing_local(host):
    objects = _objects(host)
    manifests = _manifests(host)
    assert len(manifests) >= 2
    for manifest in manifests:
        key = PREFIX + manifest['archive']['name']
        assert objects.get(key, 0) > 0, (key, sorted(objects))
        assert objects[key] == manifest['archive']['size']
    # the restore had nothing but S3 to restore from: no local repository was ever made
    assert not host.file('/var/backups/victor').exists


def test_chain_was_full_then_incremental(host):
    manifests = sorted(_manifests(host), key=lambda m: m['time'])
    assert [m['type'] for m in manifests][:2] == ['full', 'incremental']
    assert manifests[1]['parent'] == manifests[0]['id']
    assert manifests[0]['verified']['ok'] and manifests[1]['verified']['ok']


def test_timers_are_installed_and_the_scheduled_backup_works(host):
    for name in ('incremental', 'full', 'database'):
        assert host.service('victor-backup-%s.timer' % name).is_enabled
    before = {m['id']: m for m in _manifests(host)}
    host.check_output('systemctl start victor-backup@database.service')
    after = {m['id']: m for m in _manifests(host)}
    new = [m for backup_id, m in after.items() if backup_id not in before]
    assert len(new) == 1 and new[0]['scope'] == 'database'
    paths = [f['path'] for f in new[0]['files']]
    assert 'victor.db' in paths and all(f['kind'] == 'db' for f in new[0]['files'])  # project.db too
    # the service also prunes (--prune, keep_hourly 24 ...): the newest full-scope backup stays
    newest_full_scope = max((m for m in before.values() if m['scope'] == 'full'), key=lambda m: m['time'])
    assert newest_full_scope['id'] in after
