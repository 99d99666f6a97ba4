#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: victor_health
short_description: Check the health of a Victor AI host or of a fleet of Victor endpoints
version_added: 0.1.0
description:
  - Runs the daily health checks of a Victor AI host and folds them into one verdict,
    V(healthy), V(degraded) or V(unhealthy).
  - Each check is optional and runs when its option is given. Every check returns
    C(name), C(status) (V(ok), V(warn), V(crit) or V(unknown)), C(value), C(threshold) and C(message).
  - The verdict is V(unhealthy) when any check is V(crit), V(degraded) when any check is
    V(warn) or V(unknown), V(healthy) otherwise.
  - Fleet mode (O(fleet)) checks many HTTP endpoints concurrently from wherever the module
    runs; use it on the controller with C(delegate_to=localhost) and C(run_once=true).
  - The module only reads. It never reports C(changed) and runs the same in check mode.
author:
  - victor.ops maintainers (@victor-ops)
extends_documentation_fragment:
  - victor.ops.attributes
  - victor.ops.postgres.health
attributes:
  check_mode:
    support: full
    details: The checks only read, so check mode runs them unchanged.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  http:
    description:
      - GET one or more paths of Victor's API. Per path this yields a C(http:<path>) check
        (status code and the JSON C(status) field), a C(latency:<path>) check, a
        C(version:<path>) check on the first path when O(http.expected_version) is set, a
        C(components:<path>) check when the answer has a C(components) mapping, and a
        C(provider:<path>) check when it has a boolean C(connected) field (Victor's C(/status)
        reports whether its LLM provider is connected).
      - In fleet mode these settings apply to every endpoint; O(http.url) may then be omitted.
    type: dict
    suboptions:
      url:
        description:
          - Base URL, for example V(http://127.0.0.1:8765).
          - A URL with C(user:password@) is refused; give credentials with O(http.headers) or O(http.bearer_token).
        type: str
      paths:
        description: Paths to GET, each starting with C(/).
        type: list
        elements: str
        default: ['/health']
      headers:
        description:
          - Extra request headers (never logged). Names must be HTTP tokens; values must not hold line breaks.
          - Headers go only to the origin (scheme, host, port) of the URL; a redirect elsewhere is followed without them.
        type: dict
        default: {}
      bearer_token:
        description: Sent as C(Authorization Bearer) header (never logged); no whitespace or control characters.
        type: str
      expected_status:
        description: Status codes that count as success.
        type: list
        elements: int
        default: [200]
      expected_version:
        description: Version the first path's JSON C(version) field must report.
        type: str
      timeout:
        description:
          - Seconds one request may take in total (connecting, redirects, headers and body), greater than 0
            and at most 3600. A server that trickles its answer is cut off at this deadline.
        type: float
        default: 10.0
      validate_certs:
        description: Verify TLS certificates of https URLs.
        type: bool
        default: true
      ca_path:
        description: CA bundle used to verify https URLs.
        type: path
      use_proxy:
        description: Honour C(http_proxy)/C(https_proxy) from the environment.
        type: bool
        default: true
      latency_warn_ms:
        description: Warn when an answer takes longer than this (runbook target 500 ms).
        type: float
        default: 500
      latency_crit_ms:
        description: Critical when an answer takes longer than this (runbook alert at 2 s).
        type: float
        default: 2000
  tls:
    description:
      - Check days until the certificate of every https URL (O(http.url) and fleet endpoints) expires.
    type: dict
    suboptions:
      warn_days:
        description: Warn when fewer days are left.
        type: int
        default: 30
      crit_days:
        description: Critical when fewer days are left; not greater than O(tls.warn_days).
        type: int
        default: 7
  service:
    description: Check that the service runs (C(service:<name>)).
    type: dict
    suboptions:
      name:
        description: systemd unit name (ASCII letters, digits, C(:-_.@) and backslash; not starting with C(-)).
        type: str
        default: victor-api
      manager:
        description: V(systemd) asks C(systemctl is-active); V(process) checks the pid in O(service.pid_file).
        type: str
        choices: [systemd, process]
        default: systemd
      pid_file:
        description: Pid file for O(service.manager=process).
        type: path
  disk:
    description: Used percentage of the file system of each path (C(disk:<path>)).
    type: dict
    suboptions:
      paths:
        description: Paths whose file systems are checked.
        type: list
        elements: path
        default: ['/']
      warn_percent:
        description: Warn above this percentage (runbook acts above 85 %).
        type: float
        default: 85
      crit_percent:
        description: Critical above this percentage.
        type: float
        default: 95
  memory:
    description: Used memory percentage from C(/proc/meminfo) (C(memory)).
    type: dict
    suboptions:
      warn_percent:
        description: Warn above this percentage (runbook target below 80 %).
        type: float
        default: 80
      crit_percent:
        description: Critical above this percentage (runbook alert above 95 %).
        type: float
        default: 95
  log:
    description:
      - Count error lines in Victor's log (C(log:<path>)) and return the newest in RV(log_lines).
      - Lines are scoped by O(log.last_lines) when it is given, else by O(log.window_minutes) (by the log's
        leading C(YYYY-MM-DD HH:MM:SS) local timestamps; traceback lines take the time of the line
        before them).
    type: dict
    suboptions:
      path:
        description: Log file, for example C(/var/lib/victor/.victor/logs/victor.log).
        type: path
        required: true
      window_minutes:
        description:
          - Only lines from the last this many minutes (at most ten years).
          - Exclusive with O(log.last_lines); the default applies when O(log.last_lines) is not given.
        type: int
        default: 1440
      last_lines:
        description: Only the last this many lines.
        type: int
      patterns:
        description:
          - Regular expressions of error lines; the default matches C(ERROR), C(CRITICAL) and C(Traceback).
          - An empty list means the default.
        type: list
        elements: str
        default: ['\b(ERROR|CRITICAL)\b|^Traceback \(most recent call last\)']
      warn_count:
        description: Warn when at least this many lines match.
        type: int
        default: 1
      crit_count:
        description: Critical when at least this many lines match.
        type: int
        default: 50
      newest:
        description: How many of the newest matching lines to return.
        type: int
        default: 5
  backup:
    description:
      - Age in hours of the newest complete backup in a directory (C(backup:<path>)).
      - A file counts when it is not empty and does not end in C(.partial), C(.part), C(.tmp)
        or C(.incomplete); a directory counts when it holds O(backup.complete_marker) (or
        always when no marker is set). The age is the mtime of the file or marker.
    type: dict
    suboptions:
      path:
        description: Backup directory.
        type: path
        required: true
      pattern:
        description: Shell glob the backup names must match.
        type: str
        default: '*'
      complete_marker:
        description: File name inside a backup directory that marks it complete.
        type: str
      warn_age_hours:
        description: Warn when the newest backup is older.
        type: float
        default: 26
      crit_age_hours:
        description: Critical when the newest backup is older.
        type: float
        default: 50
  sqlite:
    description: C(PRAGMA quick_check) on SQLite databases opened read-only (C(sqlite:<path>)).
    type: dict
    suboptions:
      paths:
        description: Database files.
        type: list
        elements: path
        required: true
      missing_ok:
        description: A database that does not exist yet is V(ok) rather than V(crit).
        type: bool
        default: false
  postgres:
    description:
      - Connect, C(SELECT 1), and connections used versus C(max_connections)
        (C(postgres:connect), C(postgres:connections)). Needs the psycopg (3) library.
      - Takes the connection options every victor.ops module that connects to PostgreSQL takes
        (fragment C(victor.ops.postgres)), and the thresholds O(postgres.warn_percent) and O(postgres.crit_percent).
    type: dict
  fleet:
    description:
      - Check many endpoints concurrently with the O(http) and O(tls) settings. Results are
        in RV(endpoints); the overall RV(status) is the worst of the endpoints and any local checks.
    type: dict
    suboptions:
      endpoints:
        description: Endpoints to check.
        type: list
        elements: dict
        required: true
        suboptions:
          url:
            description: Base URL of the endpoint; C(user:password@) in it is refused.
            type: str
            required: true
          name:
            description: Name in the results; the URL when unset.
            type: str
          paths:
            description: Paths for this endpoint; O(http.paths) when unset.
            type: list
            elements: str
          expected_version:
            description: Version this endpoint must report; O(http.expected_version) when unset.
            type: str
      max_workers:
        description: Endpoints checked at the same time.
        type: int
        default: 50
  fail_on:
    description: Fail the task when the overall status is V(unhealthy), V(degraded) (or worse), or V(never).
    type: str
    choices: [unhealthy, degraded, never]
    default: unhealthy
requirements:
  - psycopg (3) on the managed node, only for O(postgres).
notes:
  - SQLite databases are opened with C(mode=ro), and with C(immutable=1) when a WAL database has no
    C(-wal)/C(-shm) pair beside it; the check never creates or writes a file.
  - HTTP answers are not trusted. Redirects are followed (at most 5) only to http and https URLs, and
    to another origin without O(http.headers) or O(http.bearer_token). At most 1 MiB of an answer is
    read; a larger one, invalid or deeper than 64 levels JSON where JSON is expected (a JSON
    C(Content-Type), or any C(/health) path), and a C(/health) answer without a C(status) field are V(crit).
  - The role C(victor.ops.victor_health) runs this module on every Victor host and writes
    JSON, Markdown and Prometheus reports on the controller.
seealso:
  - module: ansible.builtin.uri
"""

EXAMPLES = r"""
- name: Daily health check of a Victor host
  victor.ops.victor_health:
    http:
      url: http://127.0.0.1:8765
      paths: [/health, /status]
      expected_version: "0.9.5"
    service:
      name: victor-api
    disk:
      paths: [/, /var/lib/victor]
    memory: {}
    log:
      path: /var/lib/victor/.victor/logs/victor.log
      window_minutes: 1440
    sqlite:
      paths: [/var/lib/victor/.victor/victor.db]
      missing_ok: true
    backup:
      path: /var/backups/victor
      warn_age_hours: 26
    fail_on: never
  register: health

- name: Check an https endpoint and its certificate with a token
  victor.ops.victor_health:
    http:
      url: https://victor.example.com
      bearer_token: "{{ vault_victor_token }}"
      ca_path: /etc/ssl/certs/internal-ca.pem
    tls:
      warn_days: 30
      crit_days: 7

- name: Check PostgreSQL connectivity and connection usage
  victor.ops.victor_health:
    postgres:
      login_host: db.internal
      login_user: victor
      login_password: "{{ vault_pg_password }}"
      login_db: victor

- name: Check every Victor endpoint of the fleet from the controller in one task
  victor.ops.victor_health:
    http:
      timeout: 5
    fleet:
      endpoints:
        - url: http://victor-1.internal:8765
        - url: http://victor-2.internal:8765
        - url: https://victor.example.com
      max_workers: 64
    fail_on: never
  delegate_to: localhost
  run_once: true
  register: fleet_health
"""

RETURN = r"""
status:
  description: Overall verdict.
  returned: always
  type: str
  sample: healthy
healthy:
  description: Whether the verdict is V(healthy).
  returned: always
  type: bool
  sample: true
checks:
  description: Every check that ran on this host, in order.
  returned: always
  type: list
  elements: dict
  sample:
    - name: http:/health
      status: ok
      value: 200
      threshold: [200]
      message: GET http://127.0.0.1:8765/health answered 200 with status 'healthy'
    - name: disk:/
      status: warn
      value: 88.1
      threshold: {warn: 85, crit: 95}
      message: 88.1% used (warn above 85%, crit above 95%)
failed_checks:
  description: Names of the checks (including fleet endpoints' checks, as C(<endpoint> <check>)) whose status is not V(ok).
  returned: always
  type: list
  elements: str
  sample: ["disk:/"]
summary:
  description: Number of checks per status.
  returned: always
  type: dict
  sample: {ok: 7, warn: 1, crit: 0, unknown: 0}
log_lines:
  description: The newest matching error lines of O(log) (each cut at 500 characters).
  returned: always
  type: list
  elements: str
  sample: ["2026-11-25 19:37:17,549 - victor - victor.api - ERROR - provider timeout"]
endpoints:
  description: Fleet mode results, one per endpoint in the given order.
  returned: always
  type: list
  elements: dict
  sample:
    - name: victor-1
      url: http://10.0.0.11:8765
      status: healthy
      checks:
        - {name: "http:/health", status: ok, value: 200, threshold: [200], message: "GET ... answered 200"}
fleet_summary:
  description: Number of fleet endpoints per verdict.
  returned: always
  type: dict
  sample: {healthy: 198, degraded: 1, unhealthy: 1}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.victor.ops.plugins.module_utils.health import (
    HEALTHY,
    MissingLibraryError,
    health_argument_spec,
    run_checks,
    should_fail,
    summarize,
    validate_params,
    verdict,
    worst,
)
from ansible_collections.victor.ops.plugins.module_utils.redact import url_secrets


def _fail_unparseable(spec, error):
    """ansible-core's validation raises on some wrong shapes (``http: false``); fail clearly instead."""
    raw_spec = dict((name, dict(type='raw', no_log=name in ('http', 'postgres', 'fleet'))) for name in spec)
    module = AnsibleModule(argument_spec=raw_spec, supports_check_mode=True)
    wrong = sorted(name for name, option in spec.items()
                   if option.get('type') == 'dict' and module.params.get(name) is not None and not isinstance(module.params[name], dict))
    module.fail_json(msg='invalid arguments (%s): %s' % (
        ('these options must be mappings: %s' % ', '.join(wrong)) if wrong else 'a value has the wrong type', error))


def main():
    spec = health_argument_spec()
    try:
        module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        _fail_unparseable(spec, '%s: %s' % (type(exc).__name__, exc))
    params = module.params
    # A URL with user:password@ is refused below; its password must not come back in the invocation either.
    urls = [(params.get('http') or {}).get('url')] + [e.get('url') for e in (params.get('fleet') or {}).get('endpoints') or []
                                                      if isinstance(e, dict)]
    module.no_log_values.update(secret for url in urls for secret in url_secrets(url))
    checks_requested = [k for k in ('http', 'service', 'disk', 'memory', 'log', 'backup', 'sqlite', 'postgres', 'fleet') if params.get(k)]
    if params.get('http') and not params['http'].get('url') and not params.get('fleet'):
        module.fail_json(msg='http.url is required unless fleet is used')
    if not checks_requested:
        module.fail_json(msg='no check requested: give at least one of http, service, disk, memory, log, backup, sqlite, postgres, fleet')
    errors = validate_params(params)
    if errors:
        module.fail_json(msg='; '.join(errors), errors=errors)

    systemctl = module.get_bin_path('systemctl') if params.get('service') else None
    try:
        checks, log_lines, endpoints = run_checks(params, run_command=module.run_command, systemctl=systemctl)
    except MissingLibraryError as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=str(exc.error))

    verdicts = [e['status'] for e in endpoints]
    if checks:
        verdicts.append(verdict(checks))
    status = worst(verdicts)
    failed = [c['name'] for c in checks if c['status'] != 'ok']
    for endpoint in endpoints:
        failed.extend('%s %s' % (endpoint['name'], c['name']) for c in endpoint['checks'] if c['status'] != 'ok')
    fleet_summary = dict((v, 0) for v in ('healthy', 'degraded', 'unhealthy'))
    for endpoint in endpoints:
        fleet_summary[endpoint['status']] += 1
    output = dict(changed=False, status=status, healthy=status == HEALTHY, checks=checks, failed_checks=failed,
                  summary=summarize(checks + [c for e in endpoints for c in e['checks']]), log_lines=log_lines,
                  endpoints=endpoints, fleet_summary=fleet_summary)
    if should_fail(status, params['fail_on']):
        module.fail_json(msg='Victor is %s: %s' % (status, ', '.join(failed) or 'no details'), **output)
    module.exit_json(**output)


if __name__ == '__main__':
    main()
