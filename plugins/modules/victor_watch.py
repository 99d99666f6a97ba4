#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: victor_watch
short_description: Watch a freshly deployed Victor AI release for a period and report a breach
version_added: 0.1.0
description:
  - The watch period after a deploy (runbook 001 "monitor 15 minutes", runbook 000 C(victor monitor --watch)).
    A health gate judges a release once; this module keeps judging it for O(period) seconds.
  - Every O(interval) seconds it GETs O(path) of O(url); the answer must be a 200 with C(status) V(healthy)
    and, when O(expected_version) is given, that C(version).
  - It counts the lines matching O(log_patterns) that Victor appends to O(log_path) during the watch (the
    log's earlier content, written by the previous release, is not counted; a rotated log is followed).
  - The watch ends early at the first breach - O(max_health_failures) failed polls in a row, or
    O(max_errors) error lines - and returns RV(breached=true) with the reason. The module never fails on
    a breach, the caller decides (playbook deploy.yml rolls back, or switches the load balancers back).
  - A poll sends no extra headers, verifies the certificate of an https O(url) against the system's CAs and
    honours C(http_proxy)/C(https_proxy) from the environment; use M(victor.ops.victor_health) for other settings.
  - The module only reads. It never reports C(changed) and runs the same in check mode.
author:
  - victor.ops maintainers (@victor-ops)
extends_documentation_fragment:
  - victor.ops.attributes
attributes:
  check_mode:
    support: full
    details: The watch only reads, so check mode runs it unchanged.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  url:
    description: Base URL of the release, for example V(http://127.0.0.1:8765).
    type: str
    required: true
  path:
    description: Health path to poll.
    type: str
    default: /health
  expected_version:
    description: Version the health answer must report; empty accepts any.
    type: str
    default: ""
  period:
    description: Seconds to watch (1 to 86400).
    type: int
    required: true
  interval:
    description: Seconds between two polls (at least 1, at most O(period)).
    type: int
    default: 10
  timeout:
    description: Seconds one poll may take (greater than 0, at most 60); a slower answer is a failed poll.
    type: float
    default: 5.0
  max_health_failures:
    description: Failed polls in a row that are a breach (1 makes every failed poll one).
    type: int
    default: 3
  log_path:
    description: Victor's log, for example C(/var/lib/victor/.victor/logs/victor.log); omit to watch /health only.
    type: path
  log_patterns:
    description:
      - Regular expressions of error lines; the default matches C(ERROR), C(CRITICAL) and C(Traceback).
      - An empty list means the default.
    type: list
    elements: str
    default: ['\b(ERROR|CRITICAL)\b|^Traceback \(most recent call last\)']
  max_errors:
    description: Error lines appended to O(log_path) during the watch that are a breach.
    type: int
    default: 20
"""

EXAMPLES = r"""
- name: Watch the new release for 15 minutes
  victor.ops.victor_watch:
    url: http://127.0.0.1:8765
    expected_version: "0.9.5"
    period: 900
    interval: 15
    log_path: /var/lib/victor/.victor/logs/victor.log
    max_errors: 20
  register: watch

- name: Stop the rollout when the release turned bad
  ansible.builtin.fail:
    msg: "{{ watch.reason }}"
  when: watch.breached
"""

RETURN = r"""
breached:
  description: Whether the release breached a threshold during the watch.
  returned: always
  type: bool
  sample: false
reason:
  description: What breached, empty when nothing did.
  returned: always
  type: str
  sample: "/health failed 3 polls in a row (last: GET http://127.0.0.1:8765/health failed: timed out)"
polls:
  description: Health polls made.
  returned: always
  type: int
  sample: 61
health_failures:
  description: Failed health polls in total (in a row or not).
  returned: always
  type: int
  sample: 1
errors:
  description: Error lines appended to the log during the watch.
  returned: always
  type: int
  sample: 0
error_lines:
  description: The newest error lines (at most 5, each at most 500 characters).
  returned: always
  type: list
  elements: str
  sample: []
last_health:
  description: The last poll's verdict.
  returned: always
  type: str
  sample: healthy at version 0.9.5
seconds:
  description: How long the watch lasted.
  returned: always
  type: float
  sample: 900.2
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.victor.ops.plugins.module_utils.health import url_problem
from ansible_collections.victor.ops.plugins.module_utils.redact import url_secrets
from ansible_collections.victor.ops.plugins.module_utils.watch import validate, watch, watch_argument_spec


def main():
    module = AnsibleModule(argument_spec=watch_argument_spec(), supports_check_mode=True)
    module.no_log_values.update(url_secrets(module.params['url']))
    problems = validate(module.params)
    if not module.params['path'].startswith('/'):
        problems.append('path must start with /, got %r' % module.params['path'])
    url_error = url_problem(module.params['url'])
    if url_error:
        problems.append(url_error)
    if problems:
        module.fail_json(msg='; '.join(problems))
    module.exit_json(changed=False, **watch(module.params))


if __name__ == '__main__':
    main()
