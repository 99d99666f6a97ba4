#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: victor_host_info
short_description: Inspect a Victor AI API host (service, health, port, errors, memory, database, logs, CPU, Redis)
version_added: 0.1.0
description:
  - The diagnostics of the incident runbooks (role C(victor.ops.victor_runbook)) and the probes of the monthly
    maintenance (role C(victor.ops.victor_maintenance)) as one read-only module.
  - C(service) - the systemd unit's state and the processes of its control group.
    C(health) - C(GET /health) of the API (status, answer, latency), judged as M(victor.ops.victor_health) judges it.
    C(port) - who listens on the API port, and whether it is the unit.
    C(errors) - recent error lines of the unit's journal and of C(victor.log), the lines M(victor.ops.victor_health)'s
    log check counts (its default pattern).
    C(memory) - host memory (as M(victor.ops.victor_health) reads it), the unit's resident memory, the top processes.
    C(database) - Victor's SQLite database (size, WAL, the processes holding it open inside and outside the unit,
    a write probe C(BEGIN IMMEDIATE) run as the file's owner so no side file ever belongs to root).
    C(logs) - what C(victor.log) and C(usage.jsonl) say over O(window_minutes), split at O(since).
    C(cpu) - the unit's CPU, sampled O(cpu_samples) times. C(redis) - Redis C(INFO) and the keys matching
    O(redis_pattern) (C(SCAN), never C(KEYS)), with the client and figures of M(victor.ops.victor_db_maintenance).
  - C(log_summary) - entries per severity in the C(*.log) files of O(log_dir) over O(log_days), top error
    messages. C(latency) - O(latency_count) GETs of O(latency_url) (p50, p95, max, failures).
    C(capacity) - the file system of the first of O(capacity_paths) and the size of each, and the growth since
    O(capacity_previous). C(permissions) - files whose mode allows more than their rule in O(permission_rules).
  - The module only reads (the write probe rolls back). It never reports C(changed) and runs the same in check mode.
    Clearing what it finds is C(victor.ops.victor_db_maintenance) (C(clear_locks), C(clear)).
author:
  - victor.ops maintainers (@victor-ops)
extends_documentation_fragment:
  - victor.ops.attributes
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode runs it unchanged.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  sections:
    description: What to inspect.
    type: list
    elements: str
    choices: [service, health, port, errors, memory, database, logs, cpu, redis, log_summary, latency, capacity, permissions]
    default: [service, health]
  service:
    description: systemd unit of the API (ASCII letters, digits, C(:-_.@) and backslash, not starting with C(-)).
    type: str
    default: victor-api
  host:
    description: Address the API listens on.
    type: str
    default: 127.0.0.1
  port:
    description: Port the API listens on (1-65535).
    type: int
    default: 8765
  health_path:
    description: Health path, starting with C(/).
    type: str
    default: /health
  timeout:
    description: Seconds to wait for the health answer and for Redis (greater than 0, at most 60).
    type: float
    default: 5
  state_dir:
    description: HOME of the Victor user (holds C(.victor/)).
    type: path
    default: /var/lib/victor
  db:
    description: Victor's SQLite database; default C(<state_dir>/.victor/victor.db).
    type: path
  db_timeout:
    description: Seconds the write probe waits for the database's write lock (0-60).
    type: float
    default: 2
  journal_lines:
    description: Journal lines of the unit scanned for errors (1-100000).
    type: int
    default: 200
  error_limit:
    description: At most this many error lines per source (1-10000).
    type: int
    default: 50
  top:
    description: How many top processes the C(memory) and C(cpu) sections list (1-1000).
    type: int
    default: 10
  window_minutes:
    description: Minutes of log the C(logs) section reads (greater than 0, at most 10080).
    type: float
    default: 15
  since:
    description: ISO time (the last deploy) the C(logs) section splits at; empty for none.
    type: str
    default: ""
  slow_seconds:
    description: A chat request slower than this is slow (C(logs)).
    type: float
    default: 30
  cpu_samples:
    description: CPU samples (1-60).
    type: int
    default: 10
  cpu_interval:
    description: Seconds between two CPU samples (greater than 0, at most 10).
    type: float
    default: 1
  redis_url:
    description: Redis URL (V(redis://) or V(rediss://)), may hold a user and password (never logged) and a database
      number as its path (V(/0)).
    type: str
    default: ""
  redis_pattern:
    description: Keys to count with C(SCAN MATCH); empty counts none.
    type: str
    default: ""
  redis_batch:
    description: C(SCAN COUNT) (1-10000).
    type: int
    default: 500
  log_dir:
    description: Directory of the C(*.log) files C(log_summary) reads.
    type: path
  log_days:
    description: Days of log C(log_summary) reads (greater than 0, at most 3650).
    type: float
    default: 30
  latency_url:
    description: URL C(latency) GETs (http or https).
    type: str
  latency_count:
    description: GETs of C(latency) (1-10000).
    type: int
    default: 20
  capacity_paths:
    description: C(capacity) - names and paths to measure.
    type: dict
  capacity_filesystem_of:
    description: C(capacity) - the name in O(capacity_paths) whose file system is reported; default the first.
    type: str
  capacity_previous:
    description: C(capacity) - the previous report's C(time) (C(%Y-%m-%dT%H:%M:%SZ)) and C(sizes), for the growth.
    type: dict
    default: {}
  permission_rules:
    description: C(permissions) - paths and the most permissive mode each may have (a directory without C(x) in
      the mode has its files checked).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: File or directory.
        type: path
        required: true
      mode:
        description: Octal mode, for example V(0600).
        type: str
        required: true
notes:
  - Reads C(/proc) and runs C(systemctl show) and C(journalctl); run it with C(become) to see every process.
  - Standard library only on the managed host, but for the C(redis) section, which needs the Python library C(redis)
    (redis-py, Debian's C(python3-redis)) as M(victor.ops.victor_db_maintenance) does; without it the section reports
    an C(error).
requirements:
  - redis (redis-py) for the C(redis) section only
"""

EXAMPLES = r"""
- name: Diagnose the API and its database
  victor.ops.victor_host_info:
    sections: [service, health, database, errors]
    service: victor-api
    state_dir: /var/lib/victor
  become: true
  register: diag

- name: Redis memory and the cache keys
  victor.ops.victor_host_info:
    sections: [redis]
    redis_url: "{{ victor_cache_redis_url }}"
    redis_pattern: "victor:cache:*"
"""

RETURN = r"""
report:
  description: One key per section asked for, plus C(collected_at), C(hostname) and C(sections).
  returned: always
  type: dict
  contains:
    service:
      description: C(ActiveState), C(SubState), C(MainPID), C(NRestarts), C(pids), C(processes), C(active).
      returned: always (it is always collected, the unit's processes are needed by the others)
      type: dict
    health:
      description:
        - C(url), C(ok), C(status_code), C(body), C(error), C(latency_ms).
        - C(ok) is true when M(victor.ops.victor_health) would find the answer healthy (latency aside) - status 200,
          a JSON C(status) of C(healthy), C(ok), C(pass), C(up), C(ready) or C(alive), and every C(components) entry
          healthy. C(error) says why C(ok) is false (victor_health's message), else null.
      returned: when asked for
      type: dict
    errors:
      description:
        - C(journal), C(journal_error), C(victor_log), C(victor_log_path), C(count).
        - An error line is one M(victor.ops.victor_health)'s log check counts by default - C(ERROR) or C(CRITICAL) as a
          word, upper case, or a line starting with a traceback's header C(Traceback). C(victor.log) is read from
          its last 256 KiB, its first, cut line left out.
      returned: when asked for
      type: dict
    memory:
      description:
        - C(mem_total_kb), C(mem_available_kb), C(used_percent), C(unit_rss_kb), C(unit_rss_mb), C(top).
        - C(used_percent) is M(victor.ops.victor_health)'s memory figure, C(MemTotal - MemAvailable); on a kernel without
          C(MemAvailable) (before 3.14) C(mem_available_kb) is C(MemFree + Buffers + Cached). Null (totals 0) when
          C(/proc/meminfo) cannot be read.
      returned: when asked for
      type: dict
    port:
      description: C(owners) (pid, cmdline, C(in_unit)) and C(foreign_owner).
      returned: when asked for
      type: dict
    database:
      description: C(exists), C(size_bytes), C(wal_bytes), C(holders), C(foreign_holders), C(probe), C(locked).
      returned: when asked for
      type: dict
    redis:
      description:
        - C(ok), C(error), C(used_memory), C(maxmemory), C(used_percent_of_max), C(matching_keys), C(keys),
          C(hit_rate_pct), C(evicted_keys), C(connected_clients), C(rejected_connections), ...
        - The figures of M(victor.ops.victor_db_maintenance)'s C(stats), plus C(used_percent_of_max),
          C(rejected_connections) and C(blocked_clients).
      returned: when asked for
      type: dict
    log_summary:
      description: C(counts) per severity, C(total), C(files), C(first), C(last), C(top_errors).
      returned: when asked for
      type: dict
    latency:
      description: C(requests), C(ok), C(failed), C(errors), C(p50_ms), C(p95_ms), C(max_ms), C(mean_ms).
      returned: when asked for
      type: dict
    capacity:
      description: C(filesystem) (C(used_pct) as C(df) and M(victor.ops.victor_health) compute it, 0 for a file system
        without blocks), C(sizes), C(paths), C(growth).
      returned: when asked for
      type: dict
    permissions:
      description: C(checked), C(findings) (path, mode, allowed, problem), C(missing).
      returned: when asked for
      type: dict
  sample: {"hostname": "victor-api-1", "health": {"ok": true, "status_code": 200}}
"""

import argparse
import math
import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.victor.ops.plugins.module_utils import health
from ansible_collections.victor.ops.plugins.module_utils import host_info
from ansible_collections.victor.ops.plugins.module_utils import host_probe

PROBES = ("log_summary", "latency", "capacity", "permissions")

LIMITS = (("port", 1, 65535), ("timeout", 0, 60), ("db_timeout", 0, 60), ("journal_lines", 1, 100000),
          ("error_limit", 1, 10000), ("top", 1, 1000), ("window_minutes", 0, 10080), ("slow_seconds", 0, 86400),
          ("cpu_samples", 1, 60), ("cpu_interval", 0, 10), ("redis_batch", 1, 10000), ("log_days", 0, 3650),
          ("latency_count", 1, 10000))
EXCLUSIVE_LOW = ("timeout", "window_minutes", "cpu_interval", "slow_seconds", "log_days")
NEEDS = {"log_summary": "log_dir", "latency": "latency_url", "capacity": "capacity_paths"}


def problems(params):
    found = []
    for name, low, high in LIMITS:
        value = params[name]
        if isinstance(value, float) and not math.isfinite(value):
            found.append("%s must be a finite number" % name)
        elif value < low or value > high or (name in EXCLUSIVE_LOW and value <= low):
            bound = "greater than" if name in EXCLUSIVE_LOW else "at least"
            found.append("%s must be %s %s and at most %s, got %s" % (name, bound, low, high, value))
    if not params["health_path"].startswith("/"):
        found.append("health_path must start with /")
    if not health.UNIT_NAME.match(params["service"]):
        found.append('service %r is not a systemd unit name (ASCII letters, digits, ":-_.@" and backslash, not starting with "-")'
                     % params["service"][:80])
    if params["redis_url"] and not params["redis_url"].startswith(("redis://", "rediss://")):
        found.append("redis_url must start with redis:// or rediss://")
    for section, option in NEEDS.items():
        if section in params["sections"] and not params[option]:
            found.append("section %s needs %s" % (section, option))
    if params["latency_url"] and not params["latency_url"].startswith(("http://", "https://")):
        found.append("latency_url must start with http:// or https://")
    if params["capacity_filesystem_of"] and params["capacity_filesystem_of"] not in (params["capacity_paths"] or {}):
        found.append("capacity_filesystem_of must be a name in capacity_paths")
    for rule in params["permission_rules"]:
        if not re.match(r"^0?[0-7]{3}$", str(rule["mode"])):
            found.append("permission_rules mode must be octal like 0600, got %r" % rule["mode"])
    for name in ("service", "host", "state_dir", "db", "since", "redis_pattern", "health_path"):
        if params[name] and "\0" in params[name]:
            found.append("%s must not hold a NUL byte" % name)
    return found


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sections=dict(type="list", elements="str", default=["service", "health"], choices=list(host_info.SECTIONS + PROBES)),
            service=dict(type="str", default="victor-api"),
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", default=8765),
            health_path=dict(type="str", default="/health"),
            timeout=dict(type="float", default=5.0),
            state_dir=dict(type="path", default="/var/lib/victor"),
            db=dict(type="path"),
            db_timeout=dict(type="float", default=2.0),
            journal_lines=dict(type="int", default=200),
            error_limit=dict(type="int", default=50),
            top=dict(type="int", default=10),
            window_minutes=dict(type="float", default=15.0),
            since=dict(type="str", default=""),
            slow_seconds=dict(type="float", default=30.0),
            cpu_samples=dict(type="int", default=10),
            cpu_interval=dict(type="float", default=1.0),
            redis_url=dict(type="str", default="", no_log=True),
            redis_pattern=dict(type="str", default=""),
            redis_batch=dict(type="int", default=500),
            log_dir=dict(type="path"),
            log_days=dict(type="float", default=30.0),
            latency_url=dict(type="str"),
            latency_count=dict(type="int", default=20),
            capacity_paths=dict(type="dict"),
            capacity_filesystem_of=dict(type="str"),
            capacity_previous=dict(type="dict", default={}),
            permission_rules=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="path", required=True), mode=dict(type="str", required=True))),
        ),
        supports_check_mode=True,
    )
    found = problems(module.params)
    if found:
        module.fail_json(msg="; ".join(found))
    args = argparse.Namespace(**module.params)
    if not args.db:
        args.db = os.path.join(args.state_dir, ".victor", "victor.db")
    report = host_info.collect(args)
    probes = {"log_summary": lambda: host_probe.logs(args.log_dir, args.log_days),
              "latency": lambda: host_probe.latency(args.latency_url, args.latency_count, args.timeout),
              "capacity": lambda: host_probe.capacity(args.capacity_paths, args.capacity_previous or None, args.capacity_filesystem_of),
              "permissions": lambda: host_probe.permissions(args.permission_rules)}
    for name in PROBES:
        if name in args.sections:
            report[name] = probes[name]()
    module.exit_json(changed=False, report=report)


if __name__ == "__main__":
    main()
