"""victor_monitoring on real components: Prometheus, Alertmanager, blackbox, node/nginx
exporters and mtail watching a real victor-ai 0.9.5 behind nginx.

Order matters: the first tests read the converged stack; then Victor is stopped (VictorDown
must reach the webhook receiver this test runs), started (resolved), and the backup metric is
made too old (VictorBackupTooOld). Times are printed and written to the ephemeral directory.
"""
import json
import os
import re
import time

import pytest

EPHEMERAL = os.environ['MOLECULE_EPHEMERAL_DIRECTORY']
PROM = 'http://127.0.0.1:9090'
ALERTS = '/tmp/victor-test-alerts.jsonl'
TEXTFILE = '/var/lib/prometheus/node-exporter'
DASHBOARD = '/var/lib/grafana/dashboards/victor-ops.json'
VICTOR_LOG = '/var/lib/victor/.victor/logs/victor.log'
# Bounds (s) with the scenario's 2 s scrape/evaluation and 6 s `for:`; generous for a loaded CI.
ALERT_BOUND = 90
RESOLVE_BOUND = 180
TIMES = {}

# Webhook receiver run by the test inside the container (Alertmanager posts to 127.0.0.1).
WEBHOOK = r'''
import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        with open(sys.argv[1], 'a') as out:
            for a in body['alerts']:
                out.write(json.dumps({'received': time.time(), 'status': a['status'], 'alertname': a['labels']['alertname'],
                                      'labels': a['labels']}) + '\n')
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(('127.0.0.1', 9999), H).serve_forever()
'''


def _get(host, url):
    out = host.check_output("python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' %s"
                            % _quote(url))
    return json.loads(out)


def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _query(host, promql):
    from urllib.parse import quote
    return _get(host, PROM + '/api/v1/query?query=' + quote(promql))['data']['result']


def _wait(what, predicate, bound):
    start = time.time()
    while time.time() - start < bound:
        value = predicate()
        if value:
            return time.time() - start, value
        time.sleep(1)
    pytest.fail('%s did not happen within %d s' % (what, bound))


def _received(host):
    text = host.run('cat %s 2>/dev/null' % ALERTS).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _notified(host, alertname, status):
    return [a for a in _received(host) if a['alertname'] == alertname and a['status'] == status]


def _firing(host, alertname):
    return [a for a in _get(host, PROM + '/api/v1/alerts')['data']['alerts'] if a['labels']['alertname'] == alertname and a['state'] == 'firing']


def _record(name, seconds):
    TIMES[name] = round(seconds, 1)
    with open(os.path.join(EPHEMERAL, 'time_to_alert.json'), 'w') as out:
        json.dump(TIMES, out, indent=2)
    print('%s: %.1f s' % (name, seconds))


def test_services_run_and_secrets_are_protected(host):
    for unit in ('prometheus', 'prometheus-alertmanager', 'prometheus-blackbox-exporter', 'prometheus-node-exporter',
                 'prometheus-nginx-exporter', 'victor-mtail', 'nginx', 'victor-api'):
        assert host.service(unit).is_running, unit
    config = host.file('/etc/prometheus/alertmanager.yml')
    assert (config.user, config.group, config.mode) == ('root', 'prometheus', 0o640)
    assert host.check_output('ps -o user= -C mtail') == 'victor'


def test_every_target_is_up(host):
    def all_up():
        result = _query(host, 'up')
        jobs = dict((r['metric']['job'], r['value'][1]) for r in result)
        return jobs if set(jobs) >= {'prometheus', 'blackbox', 'victor-health', 'victor-lb-health', 'node', 'mtail', 'nginx'} \
            and all(v == '1' for v in jobs.values()) else None
    _wait('every scrape target up', all_up, 60)
    # /health through blackbox (JSON says healthy) and through nginx
    _wait('probes succeed', lambda: len(_query(host, 'probe_success == 1')) == 2, 30)


def test_textfile_metrics_of_health_and_backup_are_scraped(host):
    status = _query(host, 'victor_ops_health_status')
    written = re.search(r'^victor_ops_health_status\{[^}]*\} (\d)$', host.file(TEXTFILE + '/victor_ops_health.prom').content_string, re.M)
    assert [r['value'][1] for r in status] == [written.group(1)]
    assert _query(host, 'victor_ops_health_check_status{check=~"log:.*"}')
    assert _query(host, 'victor_ops_backup_last_run_success')[0]['value'][1] == '1'
    assert float(_query(host, 'victor_ops_backup_last_size_bytes')[0]['value'][1]) > 0
    assert _query(host, 'victor_ops_backup_last_verified_timestamp_seconds')
    assert _query(host, 'node_textfile_scrape_error')[0]['value'][1] == '0'


def test_mtail_counts_lines_appended_to_victors_log(host):
    def errors():
        result = _query(host, 'victor_ops_log_lines_total{level="ERROR"}')
        return float(result[0]['value'][1]) if result else 0.0
    before = errors()
    line = '2026-12-02 12:00:00,000 - test - victor.agent.services.chat_stream_helpers - ERROR - Rate limit persisted after 4 attempts'
    host.run_test("printf '%%s\\n' %s %s >> %s" % (_quote(line), _quote(line), VICTOR_LOG))
    _wait('mtail to count the new ERROR lines', lambda: errors() >= before + 2, 30)
    _wait('the rate-limit counter', lambda: _query(host, 'victor_ops_log_rate_limit_lines_total > 0'), 30)
    # an event in Victor's usage.jsonl format (EnhancedUsageLogger.log_event)
    event = json.dumps({'session_id': 'test', 'run_kind': 'chat', 'timestamp': '2026-12-02T12:00:00+00:00', 'event_type': 'tool_call', 'data': {}})
    host.run_test("printf '%%s\\n' %s >> %s" % (_quote(event), VICTOR_LOG.replace('victor.log', 'usage.jsonl')))
    _wait('the usage event counter', lambda: _query(host, 'victor_ops_usage_events_total{event_type="tool_call"}'), 30)
    # an INFO line (mtail follows from the end of the file: lines Victor wrote before it started are not counted)
    info = line.replace(' - ERROR - Rate limit persisted after 4 attempts', ' - INFO - Server started')
    host.run_test("printf '%%s\\n' %s >> %s" % (_quote(info), VICTOR_LOG))
    _wait('mtail to count the INFO line', lambda: _query(host, 'victor_ops_log_lines_total{level="INFO"} > 0'), 30)


def _metric_names(expr):
    """Metric names in a PromQL query: identifiers that are not functions, keywords or labels."""
    expr = re.sub(r'\{[^}]*\}', '', expr)        # label matchers
    expr = re.sub(r'\[[^\]]*\]', '', expr)        # range selectors
    expr = re.sub(r'\b(by|without|on|ignoring)\s*\([^)]*\)', '', expr)
    keywords = {'and', 'or', 'unless', 'offset', 'bool', 'group_left', 'group_right'}
    names = set()
    for match in re.finditer(r'[A-Za-z_:][A-Za-z0-9_:]*', expr):
        if expr[match.end():].lstrip().startswith('(') or match.group() in keywords:
            continue
        names.add(match.group())
    return names


def test_metric_name_parser_sees_what_a_query_names():
    """The dashboard test below is only as good as this parser."""
    assert _metric_names('sum by (instance, level) (rate(victor_ops_log_lines_total{level="ERROR"}[5m]))') == {'victor_ops_log_lines_total'}
    assert _metric_names('1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes') == {'node_memory_MemAvailable_bytes', 'node_memory_MemTotal_bytes'}
    assert _metric_names('(time() - victor_ops_backup_last_success_timestamp_seconds) / 3600') == {'victor_ops_backup_last_success_timestamp_seconds'}


def test_every_dashboard_query_names_only_live_metrics(host):
    dashboard = json.loads(host.file(DASHBOARD).content_string)
    live = set(_get(host, PROM + '/api/v1/label/__name__/values')['data'])
    panels = [p for p in dashboard['panels'] if p['type'] != 'row']
    assert len(panels) >= 15
    missing = {}
    for panel in panels:
        for target in panel['targets']:
            names = _metric_names(target['expr'])
            assert names, target['expr']
            if names - live:
                missing[panel['title']] = sorted(names - live)
    assert not missing, missing


def test_alert_rules_are_loaded_with_scaled_for(host):
    groups = _get(host, PROM + '/api/v1/rules')['data']['groups']
    rules = dict((r['name'], r) for g in groups for r in g['rules'])
    assert len(rules) == 20
    assert rules['VictorDown']['duration'] == 6
    assert all(r['health'] == 'ok' for r in rules.values())


def test_victor_down_reaches_the_webhook_and_resolves(host):
    host.run_test('rm -f %s' % ALERTS)
    host.run_test("cat > /tmp/victor-test-webhook.py <<'EOF'\n%s\nEOF" % WEBHOOK)
    host.run_test('systemd-run --unit=victor-test-webhook python3 /tmp/victor-test-webhook.py %s' % ALERTS)
    try:
        _wait('the webhook receiver', lambda: host.run('python3 -c "import socket; socket.create_connection((\'127.0.0.1\', 9999), 1)"').rc == 0, 20)
        host.run_test('systemctl stop victor-api')
        elapsed = _wait('VictorDown at the webhook', lambda: _notified(host, 'VictorDown', 'firing'), ALERT_BOUND)[0]
        _record('victor_down_to_webhook_s', elapsed)
        host.run_test('systemctl start victor-api')
        elapsed = _wait('VictorDown resolved at the webhook', lambda: _notified(host, 'VictorDown', 'resolved'), RESOLVE_BOUND)[0]
        _record('victor_start_to_resolved_s', elapsed)
    finally:
        host.run('systemctl start victor-api')
        host.run('systemctl stop victor-test-webhook')


def test_old_backup_fires_the_backup_alert(host):
    path = TEXTFILE + '/victor_ops_backup_success.prom'
    saved = host.file(path).content_string
    old = int(time.time()) - 27 * 3600  # older than victor_monitoring_backup_max_age_hours (26)
    text = re.sub(r'(victor_ops_backup_last_success_timestamp_seconds) \d+', r'\1 %d' % old, saved)
    # temp + rename, like the roles write it: node_exporter never reads half a file
    host.run_test("cat > %s.tmp <<'EOF'\n%sEOF\nmv %s.tmp %s" % (path, text, path, path))
    try:
        elapsed = _wait('VictorBackupTooOld firing', lambda: _firing(host, 'VictorBackupTooOld'), 60)[0]
        _record('old_backup_to_firing_s', elapsed)
    finally:
        host.run_test("cat > %s.tmp <<'EOF'\n%sEOF\nmv %s.tmp %s" % (path, saved, path, path))
