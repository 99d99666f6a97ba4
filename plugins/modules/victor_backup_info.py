#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: victor_backup_info
short_description: List the backups of Victor's state made by victor.ops.victor_backup
version_added: "0.1.0"
description:
  - Lists the backups in a local directory or S3 repository, oldest first by the time recorded
    in their manifest (never by name). Only complete backups (with a manifest) are listed.
  - A local O(repository) that does not exist fails (a typo must not look like "no backups")
    unless O(missing_ok=true); one that is not a directory always fails.
  - Manifests that are malformed (not an object, no time) or name paths outside the repository
    are left out of RV(backups) and reported in RV(problems).
author:
  - victor.ops maintainers (@victor-ops)
extends_documentation_fragment:
  - victor.ops.attributes
  - victor.ops.backup_storage
options:
  filter_type:
    description: Only backups of this type.
    type: str
    choices: [full, incremental]
  filter_scope:
    description: Only backups of this scope.
    type: str
    choices: [full, database, config]
  since:
    description: Only backups taken at or after this time (ISO 8601; UTC when no zone is given).
    type: str
  missing_ok:
    description: V(true) lists a local O(repository) that does not exist as holding no backup (e.g. before the first backup).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: victor.ops.victor_backup
"""

EXAMPLES = r"""
- name: List full backups taken since the start of the year
  victor.ops.victor_backup_info:
    filter_type: full
    since: "2025-01-01"
  register: victor_backups

- name: Show the newest backup
  ansible.builtin.debug:
    msg: "{{ victor_backups.backups[-1].id }}"
"""

RETURN = r"""
backups:
  description: Backups, oldest first by the time recorded in their manifest.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 20250120T020000Z-incremental-3f2a9c1d
      time: "2025-01-20T02:00:00.123456Z"
      type: incremental
      scope: full
      parent: 20250119T030000Z-full-91b0e2aa
      size: 10485
      files: 12
      stored_files: 3
      encrypted: false
      verified: {"ok": true, "time": "2025-01-20T02:01:00.000000Z"}
problems:
  description: Manifests that could not be read or were refused (malformed, or naming paths outside the repository).
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.victor.ops.plugins.module_utils import backup as bk
from ansible_collections.victor.ops.plugins.module_utils import backup_s3
from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError


def argument_spec():
    spec = backup_s3.storage_argument_spec()
    spec.update(
        filter_type=dict(type="str", choices=["full", "incremental"]),
        filter_scope=dict(type="str", choices=["full", "database", "config"]),
        since=dict(type="str"),
        missing_ok=dict(type="bool", default=False),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=backup_s3.REQUIRED_IF,
    )
    params = module.params
    try:
        backups, problems = bk.list_backups(params, params["filter_type"], params["filter_scope"], params["since"])
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="%s: %s" % (exc.__class__.__name__, exc))
    module.exit_json(changed=False, backups=backups, problems=problems)


if __name__ == "__main__":
    main()
