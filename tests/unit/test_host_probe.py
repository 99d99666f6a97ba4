"""The read-only maintenance probes of victor_host_info (module_utils/host_probe.py) that the victor_maintenance role runs."""
import functools
import datetime
import http.server
import os
import threading
import time

import module_runner
import pytest


from ansible_collections.victor.ops.plugins.module_utils import host_probe as probe
from ansible_collections.victor.ops.plugins.modules import victor_host_info


def _stamp(hours_ago):
    return (datetime.datetime.now() - datetime.timedelta(hours=hours_ago)).strftime('%Y-%m-%d %H:%M:%S')


def test_logs_counts_severities_inside_the_window_only(tmp_path):
    (tmp_path / 'victor.log').write_text('\n'.join([
        '%s,001 - victor.api - ERROR - provider timeout after 30 s' % _stamp(1),
        '%s,002 - victor.api - ERROR - provider timeout after 45 s' % _stamp(2),
        'Traceback (most recent call last):',
        '%s,003 - victor.tools - WARNING - slow tool selection' % _stamp(3),
        '%s,004 - victor.api - CRITICAL - database unavailable' % _stamp(4),
        '%s,005 - victor.api - INFO - started' % _stamp(5),
        '%s,006 - victor.api - ERROR - ancient error' % _stamp(24 * 10),
    ]) + '\n')
    (tmp_path / 'notes.txt').write_text('%s - ERROR - not a log file\n' % _stamp(1))
    old = tmp_path / 'victor.log.1'
    old.write_text('%s - ERROR - rotated long ago\n' % _stamp(1))
    os.utime(old, (time.time() - 30 * 86400,) * 2)
    result = probe.logs(str(tmp_path), 7)
    assert result['counts'] == {'CRITICAL': 1, 'ERROR': 2, 'WARNING': 1, 'INFO': 1, 'DEBUG': 0}
    assert result['files'] == [str(tmp_path / 'victor.log')]
    assert result['top_errors'][0] == {'message': 'provider timeout after N s', 'count': 2}


def test_logs_of_a_missing_directory_are_empty(tmp_path):
    assert probe.logs(str(tmp_path / 'absent'), 7)['total'] == 0


def test_capacity_growth_against_the_previous_report(tmp_path):
    (tmp_path / 'db').write_bytes(b'x' * 3000)
    (tmp_path / 'logs').mkdir()
    (tmp_path / 'logs' / 'a.log').write_bytes(b'y' * 500)
    then = (datetime.datetime.utcnow() - datetime.timedelta(days=15)).strftime('%Y-%m-%dT%H:%M:%SZ')
    previous = {'time': then, 'sizes': {'db': 1000, 'logs': 500, 'gone': 7}}
    result = probe.capacity({'db': str(tmp_path / 'db'), 'logs': str(tmp_path / 'logs'), 'missing': str(tmp_path / 'nope')}, previous)
    assert result['sizes'] == {'db': 3000, 'logs': 500, 'missing': None}
    assert result['growth']['bytes'] == {'db': 2000, 'logs': 0}
    assert result['growth']['bytes_per_30_days']['db'] == pytest.approx(4000, rel=0.01)
    assert result['growth']['previous'] == then
    assert 0 < result['filesystem']['used_pct'] <= 100
    assert probe.capacity({'db': str(tmp_path / 'db')}, {})['growth']['previous'] is None


def test_permissions_findings(tmp_path):
    env = tmp_path / 'victor.env'
    env.write_text('SECRET=1\n')
    os.chmod(env, 0o644)
    backups = tmp_path / 'backups'
    backups.mkdir()
    (backups / 'ok.tar.zst').write_text('a')
    os.chmod(backups / 'ok.tar.zst', 0o600)
    (backups / 'open.tar.zst').write_text('a')
    os.chmod(backups / 'open.tar.zst', 0o664)
    result = probe.permissions([{'mode': '0600', 'path': str(env)}, {'mode': '0640', 'path': str(backups)},
                                {'mode': '0600', 'path': str(tmp_path / 'absent')}])
    assert sorted(f['path'] for f in result['findings']) == [str(backups / 'open.tar.zst'), str(env)]
    assert result['checked'] == 3 and result['missing'] == [str(tmp_path / 'absent')]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name
        code = 200 if self.path == '/health' else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{"status":"healthy"}')

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


def test_latency_percentiles_against_a_loopback_server():
    server = http.server.HTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        good = probe.latency('http://127.0.0.1:%d/health' % port, 15, 5)
        bad = probe.latency('http://127.0.0.1:%d/broken' % port, 3, 5)
    finally:
        server.shutdown()
        server.server_close()
    assert good['ok'] == 15 and good['failed'] == 0
    assert 0 < good['p50_ms'] <= good['p95_ms'] <= good['max_ms']
    assert bad['ok'] == 0 and bad['failed'] == 3 and 'p95_ms' not in bad


def test_percentile_nearest_rank():
    assert probe._percentile(list(range(1, 101)), 95) == 95  # pylint: disable=protected-access
    assert probe._percentile([5.0], 50) == 5.0  # pylint: disable=protected-access


def test_capacity_disk_figure_is_dfs_and_the_health_checks(tmp_path, monkeypatch):
    """One definition of "disk used" in a monthly report: df's Use%, used / (used + available to non-root),
    as victor_health computes it; with 10 % of the blocks reserved for root, used / total would say 40 %."""
    from ansible_collections.victor.ops.plugins.module_utils import health  # pylint: disable=import-outside-toplevel

    class Vfs:  # 1000 blocks of 4 KiB: 400 used, 600 free of which 100 reserved for root
        f_frsize, f_blocks, f_bfree, f_bavail = 4096, 1000, 600, 500

    monkeypatch.setattr(os, 'statvfs', lambda _path: Vfs)
    result = probe.capacity({'state': str(tmp_path)})['filesystem']
    assert result['used_pct'] == health.disk_usage_percent(str(tmp_path)) == round(100 * 400 / 900, 1)
    assert result['free_bytes'] == 500 * 4096 and result['used_bytes'] == 400 * 4096


_module = functools.partial(module_runner.run_module, victor_host_info)


def test_module_runs_the_probes_read_only_and_in_check_mode(tmp_path, capsys):
    (tmp_path / 'logs').mkdir()
    (tmp_path / 'logs' / 'victor.log').write_text('%s,001 - victor.api - ERROR - boom\n' % _stamp(1))
    (tmp_path / 'victor.env').write_text('A=1\n')
    os.chmod(tmp_path / 'victor.env', 0o644)
    args = {'sections': ['log_summary', 'capacity', 'permissions'], 'log_dir': str(tmp_path / 'logs'), 'log_days': 7,
            'capacity_paths': {'logs': str(tmp_path / 'logs'), 'state': str(tmp_path)}, 'capacity_filesystem_of': 'state',
            'permission_rules': [{'mode': '0600', 'path': str(tmp_path / 'victor.env')}], '_ansible_check_mode': True}
    failed, result = _module(args, capsys)
    assert not failed and result['changed'] is False
    report = result['report']
    assert report['log_summary']['counts']['ERROR'] == 1
    assert report['capacity']['filesystem']['path'] == str(tmp_path) and report['capacity']['sizes']['logs'] > 0
    assert [f['path'] for f in report['permissions']['findings']] == [str(tmp_path / 'victor.env')]
    assert 'service' not in report  # no systemctl call for probes


@pytest.mark.parametrize('args, message', [
    ({'sections': ['log_summary']}, 'section log_summary needs log_dir'),
    ({'sections': ['latency'], 'latency_url': 'file:///etc/passwd'}, 'latency_url must start with http'),
    ({'sections': ['capacity'], 'capacity_paths': {'a': '/'}, 'capacity_filesystem_of': 'b'}, 'capacity_filesystem_of must be'),
    ({'sections': ['permissions'], 'permission_rules': [{'mode': 'rw', 'path': '/tmp'}]}, 'mode must be octal'),
])
def test_module_refuses_bad_probe_arguments(args, message, capsys):
    failed, result = _module(args, capsys)
    assert failed and message in result['msg']
