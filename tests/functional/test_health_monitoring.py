"""victor_monitoring: every file passes its own validator, every alert fires on bad input and
stays quiet on healthy input (promtool test rules), the Alertmanager configuration passes
amtool, the mtail program counts Victor's log lines, victor_backup writes valid textfile metrics.

Needs promtool, amtool, prometheus-blackbox-exporter and mtail (tests/host-packages.txt).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(ROOT, 'roles', 'victor_monitoring')
TOOLS = dict((name, shutil.which(name) or '/usr/bin/' + name) for name in ('promtool', 'amtool', 'prometheus-blackbox-exporter', 'mtail'))


def _tool(name):
    if not os.path.exists(TOOLS[name]):
        pytest.fail('%s missing: apt-get install the packages of tests/host-packages.txt' % name)
    return TOOLS[name]


def _play(tmp_path, body, variables):
    """Run a one-play playbook on localhost (connection local); returns the process."""
    playbook = tmp_path / 'play.yml'
    playbook.write_text(textwrap.dedent(body))
    (tmp_path / 'vars.json').write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false', ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    return subprocess.run(['ansible-playbook', '-i', 'localhost,', '-c', 'local', str(playbook), '-e', '@' + str(tmp_path / 'vars.json')],
                          capture_output=True, text=True, env=env, timeout=180, cwd=ROOT, check=False)


def _converge(tmp_path, **extra):
    """The role as for a site's own Prometheus (install_server=false), writing into tmp_path."""
    variables = dict(victor_monitoring_server=True, victor_monitoring_install_server=False, victor_monitoring_install_exporters=False,
                     victor_monitoring_rules_file=str(tmp_path / 'rules' / 'victor-ops.rules.yml'),
                     victor_monitoring_scrape_config_file=str(tmp_path / 'victor-ops.scrape.yml'),
                     victor_monitoring_blackbox_config_file=str(tmp_path / 'blackbox.yml'),
                     victor_monitoring_grafana_dashboard_dir=str(tmp_path / 'dashboards'),
                     victor_monitoring_owner=str(os.getuid()), victor_monitoring_group=str(os.getgid()),
                     victor_monitoring_health_urls=['http://victor-1:8765/health'],
                     victor_monitoring_lb_health_urls=['http://lb-1/health'],
                     victor_monitoring_node_targets=['victor-1:9100'], victor_monitoring_mtail_targets=['victor-1:3903'],
                     victor_monitoring_nginx_targets=['lb-1:9113'],
                     victor_monitoring_promtool=_tool('promtool'), victor_monitoring_blackbox_exporter=_tool('prometheus-blackbox-exporter'),
                     **extra)
    return _play(tmp_path, '''\
        - name: Monitoring
          hosts: localhost
          gather_facts: false
          roles:
            - role: victor.ops.victor_monitoring
        ''', variables)


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('monitoring')
    run = _converge(tmp)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return tmp


def _alerts(rendered):
    rules = yaml.safe_load((rendered / 'rules' / 'victor-ops.rules.yml').read_text())['groups'][0]['rules']
    return dict((r['alert'], r) for r in rules)


def test_files_pass_their_validators(rendered):
    check = subprocess.run([TOOLS['promtool'], 'check', 'config', str(rendered / 'victor-ops.scrape.yml')], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'SUCCESS: 20 rules found' in check.stdout  # promtool also checks the rule_files it names
    config = yaml.safe_load((rendered / 'victor-ops.scrape.yml').read_text())
    jobs = dict((j['job_name'], j) for j in config['scrape_configs'])
    assert sorted(jobs) == ['mtail', 'nginx', 'node', 'victor-health', 'victor-lb-health']  # no server: no self/blackbox jobs
    assert jobs['victor-health']['params'] == {'module': ['victor_health']}
    assert jobs['victor-health']['static_configs'][0]['targets'] == ['http://victor-1:8765/health']
    blackbox = subprocess.run([TOOLS['prometheus-blackbox-exporter'], '--config.check', '--config.file=' + str(rendered / 'blackbox.yml')],
                              capture_output=True, text=True, check=False)
    assert blackbox.returncode == 0, blackbox.stdout + blackbox.stderr
    module = yaml.safe_load((rendered / 'blackbox.yml').read_text())['modules']['victor_health']
    # the body regexp accepts what Victor 0.9.5 answers and rejects an unhealthy verdict
    regexp = re.compile(module['http']['fail_if_body_not_matches_regexp'][0])
    assert regexp.search('{"status":"healthy","version":"0.9.5"}')
    assert not regexp.search('{"status":"unhealthy","version":"0.9.5"}')


# Each alert: (series for both cases, firing values, quiet values, interval, eval time, expected labels).
CASES = {
    'VictorDown': ('probe_success{job="victor-health",instance="h"}', '0x10', '1x10', '1m', '5m', {'job': 'victor-health', 'instance': 'h'}),
    'VictorLoadBalancerDown': ('probe_success{job="victor-lb-health",instance="lb"}', '0x10', '1x10', '1m', '5m',
                               {'job': 'victor-lb-health', 'instance': 'lb'}),
    'VictorHealthSlow': ('probe_duration_seconds{job="victor-health",instance="h"}', '3x20', '0.05x20', '1m', '15m',
                         {'job': 'victor-health', 'instance': 'h'}),
    'MonitoringTargetDown': ('up{job="node",instance="n"}', '0x10', '1x10', '1m', '8m', {'job': 'node', 'instance': 'n'}),
    'HostHighCpu': ('node_cpu_seconds_total{mode="idle",cpu="0",instance="n"}', '0+0x40', '0+60x40', '1m', '30m', {'instance': 'n'}),
    'HostHighMemory': ('node_memory_MemAvailable_bytes{instance="n"}', '5x10', '50x10', '1m', '8m', {'instance': 'n'},
                       [('node_memory_MemTotal_bytes{instance="n"}', '100x10')]),
    'HostDiskAlmostFull': ('node_filesystem_avail_bytes{instance="n",mountpoint="/",fstype="ext4"}', '5x10', '50x10', '1m', '8m',
                           {'instance': 'n', 'mountpoint': '/', 'fstype': 'ext4'},
                           [('node_filesystem_size_bytes{instance="n",mountpoint="/",fstype="ext4"}', '100x10')]),
    'HostDiskWillFill': ('node_filesystem_avail_bytes{instance="n",mountpoint="/",fstype="ext4"}', '100000-1000x90', '100000x90', '1m', '80m',
                         {'instance': 'n', 'mountpoint': '/', 'fstype': 'ext4'}),
    'VictorHostUnhealthy': ('victor_ops_health_status{host="h"}', '2x5', '1x5', '1m', '2m', {'host': 'h'}),
    'VictorHealthCheckFailing': ('victor_ops_health_check_status{host="h",check="disk:/"}', '2x5', '1x5', '1m', '2m', {'host': 'h', 'check': 'disk:/'}),
    # time() is 0 at the start of a promtool test: a stamp of 0 is 48 h old at 48h
    'VictorHealthReportStale': ('victor_ops_health_report_timestamp_seconds', '0x50', '0+3600x50', '1h', '48h', {}),
    'VictorHighErrorRate': ('victor_ops_log_lines_total{level="ERROR",instance="n"}', '0+60x20', '0x20', '1m', '15m', {'instance': 'n'},
                            [('victor_ops_log_lines_total{level="INFO",instance="n"}', '0+600x20')]),
    'VictorRateLimited': ('victor_ops_log_rate_limit_lines_total{instance="n"}', '0 0 0 1 1 1', '0x5', '1m', '5m', {'instance': 'n'}),
    'VictorBackupTooOld': ('victor_ops_backup_last_success_timestamp_seconds{instance="n"}', '0x50', '0+3600x50', '1h', '48h', {'instance': 'n'}),
    'VictorBackupNotVerified': ('victor_ops_backup_last_verified_timestamp_seconds{instance="n"}', '0x70', '0+3600x70', '1h', '60h', {'instance': 'n'}),
    'VictorBackupFailed': ('victor_ops_backup_last_run_success{instance="n"}', '0x5', '1x5', '1m', '2m', {'instance': 'n'}),
    'VictorCertificateRenewalFailed': ('victor_ops_certificate_renewal_success{instance="lb",cert_name="lb.example.com"}', '0x5', '1x5', '1m', '2m',
                                       {'instance': 'lb', 'cert_name': 'lb.example.com'},
                                       [('victor_ops_certificate_deploy_success{instance="lb",cert_name="lb.example.com"}', '1x5')]),
    # time() is 0 at the start: an expiry at 10 days fires (< 14), one at 60 days stays quiet
    'VictorCertificateExpiresSoon': ('victor_ops_certificate_not_after_timestamp_seconds{instance="lb",cert_name="lb.example.com"}',
                                     '864000x5', '5184000x5', '1m', '2m', {'instance': 'lb', 'cert_name': 'lb.example.com'}),
    'NginxDown': ('nginx_up{instance="lb"}', '0x5', '1x5', '1m', '3m', {'instance': 'lb'}),
    'NginxTooManyConnections': ('nginx_connections_active{instance="lb"}', '2000x20', '10x20', '1m', '15m', {'instance': 'lb'}),
}


def test_every_alert_fires_on_bad_input_and_stays_quiet_on_healthy_input(rendered, tmp_path):
    alerts = _alerts(rendered)
    assert sorted(alerts) == sorted(CASES), 'every rule needs a firing and a quiet case'
    # Annotations are checked by promtool check rules (templates); here: when alerts fire.
    stripped = {'groups': [{'name': 'victor-ops', 'rules': [dict((k, v) for k, v in r.items() if k != 'annotations') for r in alerts.values()]}]}
    (tmp_path / 'rules.yml').write_text(yaml.safe_dump(stripped))
    tests = []
    for name, case in sorted(CASES.items()):
        series, bad, good, interval, at, labels = case[:6]
        extra = case[6] if len(case) > 6 else []
        labels = dict(labels, severity=alerts[name]['labels']['severity'])
        for values, expected in ((bad, [{'exp_labels': labels}]), (good, [])):
            tests.append({'interval': interval,
                          'input_series': [{'series': series, 'values': values}] + [{'series': s, 'values': v} for s, v in extra],
                          'alert_rule_test': [{'eval_time': at, 'alertname': name, 'exp_alerts': expected}]})
    # a `for:` holds: VictorDown is pending, not firing, one minute after /health failed
    tests.append({'interval': '1m', 'input_series': [{'series': 'probe_success{job="victor-health",instance="h"}', 'values': '0x10'}],
                  'alert_rule_test': [{'eval_time': '1m', 'alertname': 'VictorDown', 'exp_alerts': []}]})
    path = tmp_path / 'tests.yml'
    path.write_text(yaml.safe_dump({'rule_files': ['rules.yml'], 'evaluation_interval': '1m', 'tests': tests}))
    run = subprocess.run([TOOLS['promtool'], 'test', 'rules', str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_rules_use_only_metrics_the_collection_produces(rendered):
    """Seed 000's series (victor_errors_total, ...) do not exist in victor-ai 0.9: none may come back."""
    text = (rendered / 'rules' / 'victor-ops.rules.yml').read_text()
    for gone in ('victor_errors_total', 'victor_api_response_time', 'victor_provider_up', 'victor_cache_hits_total',
                 'victor_memory_usage_bytes', 'victor_db_connections', 'victor_health_status'):
        assert gone not in text


def test_dashboard_queries_parse_and_name_known_metrics(rendered):
    dashboard = json.loads((rendered / 'dashboards' / 'victor-ops.json').read_text())
    exprs = [t['expr'] for p in dashboard['panels'] if p['type'] != 'row' for t in p['targets']]
    assert len(exprs) >= 15
    # promtool parses every query when it is a recording rule
    rules = {'groups': [{'name': 'dashboard', 'rules': [{'record': 'panel_%d' % i, 'expr': e} for i, e in enumerate(exprs)]}]}
    path = rendered / 'dashboard-rules.yml'
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([TOOLS['promtool'], 'check', 'rules', str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def _render(tmp_path, template, variables):
    """Render one of the role's templates with the role's defaults plus variables."""
    return _play(tmp_path, '''\
        - name: Render
          hosts: localhost
          gather_facts: false
          tasks:
            - name: Load the role defaults
              ansible.builtin.include_vars: %s
            - name: Render
              ansible.builtin.template:
                src: %s
                dest: %s
                mode: "0600"
              no_log: true
        ''' % (os.path.join(ROLE, 'defaults', 'main.yml'), os.path.join(ROLE, 'templates', template), tmp_path / 'out.yml'), variables)


def test_alertmanager_config_with_every_receiver_passes_amtool(tmp_path):
    receivers = [{'name': 'ops-webhook', 'webhook_url': 'http://127.0.0.1:9999/alerts'},
                 {'name': 'ops-mail', 'email_to': 'ops@example.com'},
                 {'name': 'ops-slack', 'slack_api_url': 'https://hooks.slack.invalid/T0/B0/SECRET-SLACK', 'slack_channel': '#victor'},
                 {'name': 'ops-pager', 'pagerduty_routing_key': 'SECRET-PD-KEY'}]
    run = _render(tmp_path, 'alertmanager.yml.j2', dict(
        victor_monitoring_alertmanager_receivers=receivers, victor_monitoring_smtp_smarthost='smtp.example.com:587',
        victor_monitoring_smtp_from='victor@example.com', victor_monitoring_smtp_auth_username='victor',
        victor_monitoring_smtp_auth_password='SECRET-SMTP',
        victor_monitoring_alertmanager_routes=[{'matchers': ['severity="critical"'], 'receiver': 'ops-pager'}]))
    assert run.returncode == 0, run.stdout[-3000:]
    assert 'SECRET' not in run.stdout
    check = subprocess.run([_tool('amtool'), 'check-config', str(tmp_path / 'out.yml')], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert '4 receivers' in check.stdout
    config = yaml.safe_load((tmp_path / 'out.yml').read_text())
    assert config['route']['receiver'] == 'ops-webhook'
    assert config['receivers'][2]['slack_configs'][0]['send_resolved'] is True
    assert config['global']['smtp_auth_password'] == 'SECRET-SMTP'


def test_amtool_rejects_a_bad_receiver(tmp_path):
    """The role's validate: would keep the live file: amtool must fail on a broken receiver."""
    run = _render(tmp_path, 'alertmanager.yml.j2', dict(victor_monitoring_alertmanager_receivers=[{'name': 'x', 'webhook_url': 'not a url'}]))
    assert run.returncode == 0, run.stdout[-3000:]
    check = subprocess.run([_tool('amtool'), 'check-config', str(tmp_path / 'out.yml')], capture_output=True, text=True, check=False)
    assert check.returncode != 0


def test_bad_duration_is_rejected_and_live_file_kept(rendered):
    rules = rendered / 'rules' / 'victor-ops.rules.yml'
    before = rules.read_text()
    bad = _converge(rendered, victor_monitoring_victor_down_for='2 minutes')
    assert bad.returncode != 0
    # refused by the role's own check before promtool sees it (the message names the variable)
    assert 'victor_monitoring_victor_down_for must be a Prometheus duration' in bad.stdout
    assert rules.read_text() == before


def test_out_of_range_ratio_fails_before_writing(tmp_path):
    run = _converge(tmp_path, victor_monitoring_memory_ratio_max=90)
    assert run.returncode != 0
    assert 'CPU and memory ratios are 0-1' in run.stdout
    assert not (tmp_path / 'rules' / 'victor-ops.rules.yml').exists()


def test_second_run_changes_nothing(rendered):
    run = _converge(rendered)
    assert run.returncode == 0, run.stdout[-2000:]
    assert 'changed=0' in run.stdout


def test_mtail_program_counts_victor_log_lines(tmp_path):
    """Lines in victor-ai 0.9.5's own format (copied from a real logs/victor.log) and usage.jsonl."""
    progs = tmp_path / 'progs'
    progs.mkdir()
    shutil.copy(os.path.join(ROLE, 'files', 'victor.mtail'), str(progs / 'victor.mtail'))
    log = tmp_path / 'victor.log'
    log.write_text(
        '2026-12-02 11:49:05,543 - mon-victor-2481d425 - victor.integrations.api.fastapi_server - INFO - Starting Victor FastAPI server on 127.0.0.1:37535\n'
        "2026-12-02 11:49:12,725 - mon-victor-2481d425 - victor.config.secure_paths - WARNING - SECURITY: HOME_MANIPULATION_DETECTED - {'uid': 0}\n"
        '2026-12-02 11:50:01,000 - s1 - victor.agent.services.chat_stream_helpers - ERROR - Rate limit persisted after 4 attempts\n'
        '2026-12-02 11:50:02,000 - s1 - victor.agent.services.context_limit_runtime - ERROR - Rate limit/timeout during final response: 429\n'
        '2026-12-02 11:50:03,000 - s1 - victor.agent.orchestrator - ERROR - provider failed\n'
        'Traceback (most recent call last):\n')
    usage = tmp_path / 'usage.jsonl'
    usage.write_text('{"session_id": "s1", "run_kind": "chat", "timestamp": "2026-12-02T11:50:00+00:00", "event_type": "tool_call", "data": {}}\n' * 2)
    run = subprocess.run([_tool('mtail'), '--progs', str(progs), '--logs', '%s,%s' % (log, usage), '--one_shot', '--one_shot_format', 'prometheus'],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    values = dict((line.rsplit(' ', 1)[0].replace(',prog="victor.mtail"', '').replace('{prog="victor.mtail"}', ''), float(line.rsplit(' ', 1)[1]))
                  for line in run.stdout.splitlines() if line.startswith('victor_ops_'))
    assert values['victor_ops_log_lines_total{level="ERROR"}'] == 3
    assert values['victor_ops_log_lines_total{level="INFO"}'] == 1
    assert values['victor_ops_log_lines_total{level="WARNING"}'] == 1
    assert values['victor_ops_log_rate_limit_lines_total'] == 2
    assert values['victor_ops_usage_events_total{event_type="tool_call"}'] == 2


def _backup_metrics(tmp_path, ok, verified):
    return _play(tmp_path, '''\
        - name: Backup metrics
          hosts: localhost
          gather_facts: false
          tasks:
            - name: Export
              ansible.builtin.include_role:
                name: victor.ops.victor_backup
                tasks_from: metrics.yml
              vars:
                __victor_backup_ok: "{{ ok }}"
                victor_backup_verified: "{{ {'changed': false} if verified else {'skipped': true} }}"
                victor_backup_result: {backup: {size: 10485}}
        ''', dict(ok=ok, verified=verified, victor_backup_metrics_textfile_dir=str(tmp_path / 'textfile')))


def test_backup_metrics_keep_the_last_success_when_a_run_fails(tmp_path):
    run = _backup_metrics(tmp_path, True, True)
    assert run.returncode == 0, run.stdout[-3000:]
    textfile = tmp_path / 'textfile'
    assert sorted(os.listdir(str(textfile))) == ['victor_ops_backup_run.prom', 'victor_ops_backup_success.prom', 'victor_ops_backup_verified.prom']
    for name in os.listdir(str(textfile)):
        lint = subprocess.run([TOOLS['promtool'], 'check', 'metrics'], input=(textfile / name).read_text(), capture_output=True, text=True, check=False)
        assert lint.returncode == 0, name + lint.stdout + lint.stderr
    success = (textfile / 'victor_ops_backup_success.prom').read_text()
    assert 'victor_ops_backup_last_size_bytes 10485\n' in success
    assert 'victor_ops_backup_last_run_success 1\n' in (textfile / 'victor_ops_backup_run.prom').read_text()
    run = _backup_metrics(tmp_path, False, False)
    assert run.returncode == 0, run.stdout[-3000:]
    assert 'victor_ops_backup_last_run_success 0\n' in (textfile / 'victor_ops_backup_run.prom').read_text()
    assert (textfile / 'victor_ops_backup_success.prom').read_text() == success


def test_every_duration_default_is_checked_before_it_is_written():
    """The role checks its duration variables in a hand-written loop: a new one must join it."""
    with open(os.path.join(ROLE, 'defaults', 'main.yml')) as f:
        defaults = yaml.safe_load(f)
    durations = {k for k, v in defaults.items() if isinstance(v, str) and re.match(r'([0-9]+(ms|s|m|h|d|w|y))+\Z', v)}
    with open(os.path.join(ROLE, 'tasks', 'main.yml')) as f:
        tasks = yaml.safe_load(f)
    (check,) = [t for t in tasks if t['name'].startswith('Check the durations')]
    assert len(durations) >= 10 and durations <= {item['name'] for item in check['loop']}
