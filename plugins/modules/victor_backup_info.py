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
author:
  - victor.ops maintainers (@victor-ops)
requirements:
  - boto3 (Debian package C(python3-boto3)) for O(storage=s3)
options:
  storage:
    description: Where backups are kept.
    type: str
    choices: [local, s3]
    default: local
  repository:
    description: Local directory holding the backups.
    type: path
    default: /var/backups/victor
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
  s3_bucket:
    description: S3 bucket (O(storage=s3)).
    type: str
  s3_prefix:
    description: Key prefix inside the bucket.
    type: str
    default: victor-backups
  s3_region:
    description: S3 region.
    type: str
  s3_endpoint_url:
    description: S3 endpoint URL for S3-compatible stores.
    type: str
  s3_access_key:
    description: Access key id; boto3's usual credential chain is used when unset.
    type: str
  s3_secret_key:
    description: Secret access key.
    type: str
  s3_request_checksum_calculation:
    description: botocore 1.36+ request checksums; V(when_required) for stores that reject CRC checksums.
    type: str
    choices: [when_supported, when_required]
  s3_response_checksum_validation:
    description: botocore 1.36+ response checksum validation.
    type: str
    choices: [when_supported, when_required]
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
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
  description: Manifests that could not be read.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.victor.ops.plugins.module_utils import backup as bk
from ansible_collections.victor.ops.plugins.module_utils import backup_s3


def main():
    module = AnsibleModule(
        argument_spec=dict(
            storage=dict(type="str", default="local", choices=["local", "s3"]),
            repository=dict(type="path", default="/var/backups/victor"),
            filter_type=dict(type="str", choices=["full", "incremental"]),
            filter_scope=dict(type="str", choices=["full", "database", "config"]),
            since=dict(type="str"),
            s3_bucket=dict(type="str"),
            s3_prefix=dict(type="str", default="victor-backups"),
            s3_region=dict(type="str"),
            s3_endpoint_url=dict(type="str"),
            s3_access_key=dict(type="str", no_log=True),
            s3_secret_key=dict(type="str", no_log=True),
            s3_request_checksum_calculation=dict(type="str", choices=["when_supported", "when_required"]),
            s3_response_checksum_validation=dict(type="str", choices=["when_supported", "when_required"]),
        ),
        supports_check_mode=True,
        required_if=[("storage", "s3", ["s3_bucket"])],
    )
    params = module.params
    try:
        if params["storage"] == "local":
            store = bk.LocalStore(params["repository"])
        else:
            if not backup_s3.HAS_BOTO3:
                module.fail_json(msg=missing_required_lib("boto3 (Debian package python3-boto3)"), exception=str(backup_s3.BOTO3_IMPORT_ERROR))
            store = backup_s3.S3Store(
                params["s3_bucket"], prefix=params["s3_prefix"], region=params["s3_region"], endpoint_url=params["s3_endpoint_url"],
                access_key=params["s3_access_key"], secret_key=params["s3_secret_key"],
                request_checksum_calculation=params["s3_request_checksum_calculation"],
                response_checksum_validation=params["s3_response_checksum_validation"])
        manifests, problems = store.list_manifests()
        chosen = bk.filter_manifests(manifests, params["filter_type"], params["filter_scope"], params["since"])
    except bk.BackupError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, backups=[bk.summary(m) for m in chosen], problems=problems)


if __name__ == "__main__":
    main()
