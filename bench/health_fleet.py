#!/usr/bin/env python
"""Benchmark: victor_health fleet mode versus an ansible.builtin.uri loop, in one run.

Starts N loopback HTTP endpoints in this process (default 200 on 127.0.0.1: most answer
/health at once, some slowly, some with 500/503, some ports are closed), then runs one
ansible-playbook with two tasks over the same endpoints:

  1. victor.ops.victor_health with fleet.endpoints (one task, concurrent checks);
  2. ansible.builtin.uri in a loop (one request per loop item).

Task times come from the ansible.posix.json callback. Prints both times, the ratio and the
verdict counts. Goal: fleet >= 20x faster than the loop and <= 3 s.

Usage (from the repository root, after `. scripts/env.sh`):
    bench/health_fleet.py [--endpoints 200] [--slow 20] [--errors 10] [--closed 10] [--delay 0.8] [--json out.json]
"""
import argparse
import datetime
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

PLAYBOOK = """
- name: Health of {count} loopback endpoints
  hosts: localhost
  gather_facts: false
  vars:
    endpoints: "{{{{ lookup('ansible.builtin.file', endpoints_file) | from_json }}}}"
  tasks:
    - name: Fleet mode
      victor.ops.victor_health:
        http:
          timeout: 5
          use_proxy: false
        fleet:
          endpoints: "{{{{ endpoints }}}}"
          max_workers: {workers}
        fail_on: never
      register: fleet

    - name: URI loop
      when: not (fleet_only | bool)
      ansible.builtin.uri:
        url: "{{{{ item.url }}}}/health"
        timeout: 5
        use_proxy: false
        return_content: true
      loop: "{{{{ endpoints }}}}"
      loop_control:
        label: "{{{{ item.name }}}}"
      register: uri_loop
      failed_when: false

    - name: Counts
      ansible.builtin.set_fact:
        fleet_summary: "{{{{ fleet.fleet_summary }}}}"
        uri_ok: "{{{{ uri_loop.results | default([]) | selectattr('status', 'defined') | selectattr('status', 'equalto', 200) | list | length }}}}"
"""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'

    def do_GET(self):  # noqa: N802
        kind = self.server.kind
        if kind == 'slow':
            time.sleep(self.server.delay)
        code, body = {'error': (500, {'detail': 'internal error'}), 'unhealthy': (503, {'status': 'unhealthy'})}.get(
            kind, (200, {'status': 'healthy', 'version': '0.9.5'}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def start_endpoints(count, slow, errors, closed, delay):
    """(servers, endpoints, expected verdict per endpoint)."""
    servers, endpoints, expected = [], [], []
    for index in range(count):
        if index < closed:
            with socket.socket() as sock:  # a port that was free a moment ago: connection refused
                sock.bind(('127.0.0.1', 0))
                port = sock.getsockname()[1]
            kind = 'closed'
        else:
            kind = 'slow' if index < closed + slow else ('error' if index < closed + slow + errors // 2 else
                                                         ('unhealthy' if index < closed + slow + errors else 'ok'))
            server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
            server.kind, server.delay, server.daemon_threads = kind, delay, True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            port = server.server_address[1]
        endpoints.append({'name': 'victor-%03d-%s' % (index, kind), 'url': 'http://127.0.0.1:%d' % port})
        expected.append({'closed': 'unhealthy', 'error': 'unhealthy', 'unhealthy': 'unhealthy', 'slow': 'degraded'}.get(kind, 'healthy'))
    return servers, endpoints, expected


def task_seconds(task):
    """Seconds a task took, from the json callback's ISO timestamps."""
    duration = task['task']['duration']
    stamps = [datetime.datetime.strptime(duration[key], '%Y-%m-%dT%H:%M:%S.%fZ') for key in ('start', 'end')]
    return (stamps[1] - stamps[0]).total_seconds()


def inprocess_seconds(endpoints, workers):
    """The fleet checks alone, without Ansible's per-task cost (module transfer, interpreter start)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, 'plugins', 'module_utils'))
    try:
        import health  # pylint: disable=import-outside-toplevel,import-error
    finally:
        sys.path.pop(0)
    started = time.monotonic()
    health.check_fleet(endpoints, {'timeout': 5, 'use_proxy': False}, workers)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--endpoints', type=int, default=200)
    parser.add_argument('--slow', type=int, default=20, help='endpoints answering after --delay seconds')
    parser.add_argument('--errors', type=int, default=10, help='endpoints answering 500 or 503')
    parser.add_argument('--closed', type=int, default=10, help='endpoints whose port is closed')
    parser.add_argument('--delay', type=float, default=0.8)
    parser.add_argument('--workers', type=int, default=100)
    parser.add_argument('--json', help='write the numbers to this file')
    parser.add_argument('--fleet-only', action='store_true', help='skip the uri loop (quick look at fleet mode alone)')
    args = parser.parse_args()
    if not 1 <= args.endpoints <= 500 or args.slow + args.errors + args.closed > args.endpoints or not 0 <= args.delay <= 5:
        parser.error('keep it bounded: 1-500 endpoints, slow+errors+closed <= endpoints, delay 0-5 s')

    servers, endpoints, expected = start_endpoints(args.endpoints, args.slow, args.errors, args.closed, args.delay)
    try:
        with tempfile.TemporaryDirectory(prefix='health-fleet-') as tmp:
            endpoints_file = os.path.join(tmp, 'endpoints.json')
            with open(endpoints_file, 'w') as stream:
                json.dump(endpoints, stream)
            playbook = os.path.join(tmp, 'bench.yml')
            with open(playbook, 'w') as stream:
                stream.write(PLAYBOOK.format(count=len(endpoints), workers=args.workers))
            env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK='ansible.posix.json', ANSIBLE_LOCALHOST_WARNING='false',
                       ANSIBLE_INVENTORY_UNPARSED_WARNING='false', ANSIBLE_PYTHON_INTERPRETER=sys.executable)
            started = time.monotonic()
            run = subprocess.run(['ansible-playbook', '-i', 'localhost,', '-c', 'local', playbook, '-e', 'endpoints_file=' + endpoints_file,
                                  '-e', 'fleet_only=%s' % args.fleet_only],
                                 capture_output=True, text=True, env=env, timeout=900, check=False)
            wall = time.monotonic() - started
        inproc_s = inprocess_seconds(endpoints, args.workers)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    if run.returncode != 0:
        sys.stderr.write(run.stdout[-3000:] + run.stderr[-3000:])
        sys.exit('ansible-playbook failed with %d' % run.returncode)
    tasks = json.loads(run.stdout)['plays'][0]['tasks']
    by_name = dict((t['task']['name'], t) for t in tasks)
    fleet_s = task_seconds(by_name['Fleet mode'])
    loop_s = task_seconds(by_name['URI loop']) if not args.fleet_only else float('nan')
    fleet = by_name['Fleet mode']['hosts']['localhost']
    verdicts = [e['status'] for e in fleet['endpoints']]
    mismatches = [e['name'] for e, want in zip(fleet['endpoints'], expected) if e['status'] != want]
    uri_ok = sum(1 for r in by_name['URI loop']['hosts']['localhost'].get('results', []) if r.get('status') == 200)
    numbers = {
        'endpoints': len(endpoints), 'slow': args.slow, 'slow_delay_s': args.delay, 'errors': args.errors, 'closed': args.closed,
        'fleet_seconds': round(fleet_s, 2), 'uri_loop_seconds': round(loop_s, 2), 'ratio': round(loop_s / fleet_s, 1),
        'fleet_summary': fleet['fleet_summary'], 'uri_loop_status_200': uri_ok, 'verdict_mismatches': mismatches,
        'playbook_wall_seconds': round(wall, 1), 'fleet_checks_in_process_seconds': round(inproc_s, 2),
        'load_average': [round(x, 1) for x in os.getloadavg()], 'cpus': os.cpu_count(),
    }
    print('endpoints: %(endpoints)d (%(slow)d slow at %(slow_delay_s)ss, %(errors)d answering 500/503, %(closed)d closed ports)' % numbers)
    print('fleet mode (victor.ops.victor_health, one task): %.2f s   verdicts %s' % (fleet_s, fleet['fleet_summary']))
    print('ansible.builtin.uri loop:                        %.2f s   status 200: %d' % (loop_s, uri_ok))
    print('fleet checks alone, in-process (no Ansible):     %.2f s' % inproc_s)
    print('load average %s on %d CPUs' % (numbers['load_average'], numbers['cpus']))
    print('ratio (uri loop / fleet):                        %.1fx   (goal >= 20x, fleet <= 3 s)' % numbers['ratio'])
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump(numbers, stream, indent=2)
    problems = []
    if mismatches:
        problems.append('fleet verdicts differ from the endpoints\' behaviour: %s' % ', '.join(mismatches[:10]))
    if verdicts.count('healthy') != expected.count('healthy'):
        problems.append('healthy count %d, expected %d' % (verdicts.count('healthy'), expected.count('healthy')))
    if fleet_s > 3 or (not args.fleet_only and loop_s / fleet_s < 20):
        problems.append('goal missed: fleet %.2f s, ratio %.1fx' % (fleet_s, loop_s / fleet_s))
    if problems:
        sys.exit('; '.join(problems))


if __name__ == '__main__':
    main()
