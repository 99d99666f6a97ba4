#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: victor_backup
short_description: Consistent, verifiable backups of Victor's state, and a restore that cannot make things worse
version_added: "0.1.0"
description:
  - Creates, lists, verifies, prunes and restores backups of Victor's state directory
    (C(/var/lib/victor/.victor) by default) in a local directory or in S3.
  - One archive per backup, a tar stream compressed with C(zstd) and optionally encrypted with
    C(age) to recipient public keys, plus a JSON manifest listing every file with its size and
    sha256. The archive is written under a temporary name, fsynced and renamed; the manifest is
    written last, so a backup that was interrupted is never listed.
  - SQLite databases (Victor's C(victor.db) is in WAL mode and written to while Victor runs)
    are copied only through SQLite's online backup API from a read-only connection, which
    never checkpoints Victor's WAL.
  - Incremental backups store only the files whose sha256 changed since the parent backup and
    record deleted files; a restore resolves the chain.
  - Restores stage and check everything (every sha256, C(PRAGMA integrity_check)) before
    touching live data, reading each archive once (decompression in a C(zstd) process beside the
    hashing, fsync and database checks in threads), keep the replaced files as a safety copy, and put it back when the
    restored databases fail their check. O(state=revert) puts a safety copy back on request
    (the C(victor.ops.victor_restore) role uses it when the service does not come back healthy).
  - An archive can be restored without this collection, see C(docs/backup.md)
    (C(age -d -i key | zstd -d | tar -x)).
  - Runs of this module on one host serialise on a lock in O(work_dir).
  - Repository content is not trusted (see C(docs/security.md)). Manifests whose archive name, file paths or
    symlinks would lead outside the repository or the target are reported in RV(problems) and never followed
    (not pruned, not restored); a symlink in the state directory that points outside it fails the backup
    (a restore could not recreate it); O(state=revert) refuses a O(safety_copy) that overlaps O(target).
author:
  - victor.ops maintainers (@victor-ops)
requirements:
  - zstd (Debian package C(zstd)) on the managed node
  - age (Debian package C(age)) when archives are encrypted
  - pg_dump and pg_restore (Debian package C(postgresql-client), as new as the server) with O(login_db)
extends_documentation_fragment:
  - victor.ops.attributes
  - victor.ops.backup_storage
  - victor.ops.postgres
options:
  state:
    description:
      - V(create) makes a backup; V(verify) re-reads one backup chain
        and checks it; V(prune) applies the retention rules; V(restore) restores a backup into
        O(target); V(revert) puts O(safety_copy) back in place of O(target).
    type: str
    choices: [create, verify, prune, restore, revert]
    default: create
  source:
    description: Victor's state directory to back up.
    type: path
    default: /var/lib/victor/.victor
  target:
    description: Directory to restore into (O(state=restore), O(state=revert)); defaults to O(source).
    type: path
  work_dir:
    description:
      - Scratch directory for database snapshots, spooled uploads, verification and the lock file.
      - Defaults to O(repository) for local storage and to C(/var/tmp/victor-backup) for S3.
    type: path
  lock_timeout:
    description: Seconds to wait for another run on this host to finish before failing.
    type: int
    default: 600
  type:
    description:
      - V(full) stores every selected file; V(incremental) only what changed since the newest backup of the same scope.
      - An incremental that would leave out less than 1 % of the bytes is stored as a full (manifest C(requested_type=incremental)),
        so an incremental never stores more than a full.
    type: str
    choices: [full, incremental]
    default: full
  scope:
    description:
      - V(full) is the whole state directory except caches; V(database) only SQLite databases;
        V(config) only top-level configuration files (C(*.yaml), C(*.yml), C(*.toml), C(*.json), C(*.env), C(*.ini), C(*.conf)).
      - For O(state=restore), what to restore from the chosen backup.
    type: str
    choices: [full, database, config]
    default: full
  include:
    description: Only files matching one of these globs (relative path or base name) are backed up.
    type: list
    elements: str
    default: []
  exclude:
    description: Files or directories matching one of these globs are skipped. C(-wal), C(-shm) and C(-journal) files are always skipped.
    type: list
    elements: str
    default: []
  include_cache:
    description: Also back up C(cache/), which is skipped by default.
    type: bool
    default: false
  compression_level:
    description: zstd compression level (1-22).
    type: int
    default: 3
  compression_threads:
    description: zstd worker threads (0 means one per core).
    type: int
    default: 0
  age_recipients:
    description:
      - age recipient public keys (C(age1...)); when set, archives are encrypted.
      - Not logged, although public keys are not secret, so a secret key (C(AGE-SECRET-KEY-...)) put here by
        mistake is never echoed; it is refused.
    type: list
    elements: str
    default: []
  age_recipients_file:
    description: File of age recipients (one public key per line); when set, archives are encrypted.
    type: path
  age_identity_file:
    description:
      - age identity (private key) file used to decrypt for O(state=verify) and O(state=restore).
        Keep it mode 0600; it is passed to age as a file, never on the command line.
      - A wrong identity fails with a message naming this file (never its content).
    type: path
  age_identity:
    description:
      - The age identity (private key, C(AGE-SECRET-KEY-...)) as text, for O(state=verify) and O(state=restore)
        on a node that does not keep the key, e.g. verifying an encrypted backup right after it was taken.
      - Written mode 0600 into a fresh 0700 temporary directory for the run and removed afterwards;
        never logged, never on a command line. Mutually exclusive with O(age_identity_file).
    type: str
  missing_ok:
    description:
      - With O(state=verify), O(state=prune) or O(state=restore), a local O(repository) that does not exist
        fails by default (a typo must not look like "no backups"). V(true) treats it as holding no backup yet.
      - A O(repository) that exists but is not a directory always fails.
    type: bool
    default: false
  backup_id:
    description: The backup to verify or restore; V(latest) or unset means the newest (see O(before)).
    type: str
  before:
    description:
      - Pick the newest backup taken at or before this time (ISO 8601; UTC when no zone is given).
      - This is backup-granularity point-in-time recovery, not a replay of transactions.
    type: str
  safety_copy:
    description:
      - With O(state=restore), where the replaced files are kept (default C(<target>.before-restore-<time>)).
      - With O(state=revert), the safety copy to put back (required).
    type: path
  keep_last:
    description: Keep the N newest backups (-1 keeps all).
    type: int
    default: 0
  keep_hourly:
    description: For the last N hours that have backups, keep the newest backup of each hour.
    type: int
    default: 0
  keep_daily:
    description: For the last N days that have backups, keep the newest backup of each day.
    type: int
    default: 7
  keep_weekly:
    description: For the last N ISO weeks that have backups, keep the newest of each week.
    type: int
    default: 4
  keep_monthly:
    description: For the last N months that have backups, keep the newest of each month.
    type: int
    default: 12
  keep_yearly:
    description: For the last N years that have backups, keep the newest of each year.
    type: int
    default: 0
  record_verification:
    description: With O(state=verify), write the result into the manifest (retention never deletes the newest verified backup).
    type: bool
    default: true
  victor_version:
    description:
      - Victor version recorded in the manifest.
      - Unset, it is read from the installed C(victor-ai) package metadata of O(victor_venv), else of the venv of
        the C(victor) command on C(PATH); it stays null only when neither exists.
    type: str
  victor_venv:
    description: Victor's virtualenv, where O(victor_version) is read from when it is not given.
    type: path
    default: /opt/victor/current
  login_db:
    description:
      - PostgreSQL database to include (e.g. Victor's checkpoint database), reached with the connection options
        (O(login_host), O(login_user), O(login_password) ...). Unset, the backup holds no database dump.
      - With O(state=create) and O(scope=full) or O(scope=database), the backup holds a C(pg_dump --format=custom)
        dump of it, recorded in the manifest (database, server version, size, sha256).
      - With O(state=restore), the database the dump is restored into (C(pg_restore --clean --if-exists) in one
        transaction), after a C(pg_dump) of it was kept in the safety copy. With O(state=revert), the database that
        safety dump is put back into.
      - pg_dump and pg_restore get the connection in their environment and O(login_password) in a PGPASSFILE
        (mode 0600 in a private temporary directory), never on a command line.
      - Replaces C(postgres_url) (0.1.0); roles turn a URL into these options with the C(victor.ops.postgres_url_options) filter.
  postgres_restore:
    description:
      - With O(state=restore), restore the PostgreSQL dump the backup holds (needs O(login_db)).
        V(false) restores the files only.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Nothing is written; create, prune and restore report what they would do (prune lists what would go and why each kept backup is kept).
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Each O(state=create) makes a new backup by design. V(verify) with O(record_verification=false) never changes anything.
seealso:
  - module: victor.ops.victor_backup_info
  - name: Backup and restore guide
    description: Layout, retention, restoring with standard tools, and the disaster-recovery playbook.
    link: https://github.com/victor-ops/victor.ops/blob/main/docs/backup.md
notes:
  - Encryption uses age recipient public keys; decryption an identity file. age 1.1 reads a
    passphrase only from a terminal, so passphrase-encrypted archives are not supported (a
    passphrase would have to be typed or passed on a command line); use a key pair instead.
"""

EXAMPLES = r"""
- name: Take a full backup of Victor's state to a local directory
  victor.ops.victor_backup:
    state: create
    type: full
    repository: /var/backups/victor

- name: Hourly database-only backup, encrypted to a recipient key, to S3
  victor.ops.victor_backup:
    state: create
    scope: database
    storage: s3
    s3_bucket: victor-backups
    s3_region: eu-west-1
    s3_sse: AES256
    s3_request_checksum_calculation: when_required
    age_recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

- name: Verify the newest backup
  victor.ops.victor_backup:
    state: verify
    backup_id: latest

- name: Show what retention would delete (run with --check) and apply it
  victor.ops.victor_backup:
    state: prune
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12

- name: Restore the newest backup taken before an incident (service stopped first)
  victor.ops.victor_backup:
    state: restore
    before: "2025-01-20T10:00:00Z"
    age_identity_file: /root/.config/victor/backup-key.txt
  register: victor_restore_result

- name: Full backup including Victor's PostgreSQL checkpoint database
  victor.ops.victor_backup:
    state: create
    login_host: 127.0.0.1
    login_user: victor
    login_password: "{{ victor_checkpoint_db_password }}"
    login_db: checkpoints

- name: Put the previous state back (files and, from its pre-restore dump, the PostgreSQL database)
  victor.ops.victor_backup:
    state: revert
    safety_copy: "{{ victor_restore_result.safety_copy }}"
    login_host: 127.0.0.1
    login_user: victor
    login_password: "{{ victor_checkpoint_db_password }}"
    login_db: checkpoints
"""

RETURN = r"""
backup:
  description: Summary of the backup created, verified or restored.
  returned: state is create, verify or restore
  type: dict
  sample:
    id: 20250120T020000Z-incremental-3f2a9c1d
    time: "2025-01-20T02:00:00.123456Z"
    type: incremental
    scope: full
    parent: 20250119T030000Z-full-91b0e2aa
    host: victor-1
    victor_version: 0.9.5
    archive: 20250120T020000Z-incremental-3f2a9c1d.tar.zst
    size: 10485
    files: 12
    stored_files: 3
    encrypted: false
    verified: null
manifest:
  description: The full manifest of the backup created (every file with size and sha256, database snapshot details).
  returned: state is create and not check mode
  type: dict
  sample: {"id": "20250120T020000Z-full-3f2a9c1d", "files": [{"path": "victor.db", "size": 49152, "sha256": "9f86d0..."}]}
backups:
  description: Backups in the repository, oldest first by the time recorded in their manifest.
  returned: state is prune
  type: list
  elements: dict
  sample: [{"id": "20250120T020000Z-full-3f2a9c1d", "time": "2025-01-20T02:00:00.123456Z", "type": "full"}]
problems:
  description: Problems found (unreadable manifests, sha256 mismatches, failed integrity checks).
  returned: always
  type: list
  elements: str
  sample: ["20250120T020000Z-full-3f2a9c1d: sha256 mismatch for victor.db"]
verification:
  description: Result of O(state=verify); C(databases) maps each database to its integrity_check result.
  returned: state is verify
  type: dict
  sample: {"ok": true, "chain": ["20250120T020000Z-full-3f2a9c1d"], "databases": {"victor.db": "ok"}}
files:
  description: Files in the backup (create) or restored (restore), relative to the state directory.
  returned: state is create or restore
  type: list
  elements: str
  sample: ["logs/victor.log", "profiles.yaml", "victor.db"]
postgres:
  description:
    - With O(state=restore), the PostgreSQL database restored, the dump it came from and where the pre-restore
      dump of the database (its safety copy) is kept; null when the backup holds no dump or O(postgres_restore=false).
  returned: state is restore and not check mode
  type: dict
  sample: {"database": "postgresql://victor@127.0.0.1:5432/checkpoints", "dump": "checkpoints.pgdump",
           "safety_dump": "/var/lib/victor/.victor.before-restore-20250120T101500Z/.victor-backup-postgres/checkpoints.pgdump"}
chain:
  description: Backup ids applied by a restore, full backup first.
  returned: state is restore
  type: list
  elements: str
  sample: ["20250119T030000Z-full-91b0e2aa", "20250120T020000Z-incremental-3f2a9c1d"]
safety_copy:
  description: Where the replaced state was kept (restore) or which copy was put back (revert).
  returned: state is restore or revert and not check mode
  type: str
  sample: /var/lib/victor/.victor.before-restore-20250120T101500Z
keep:
  description: For prune, each kept backup id with the reasons it is kept.
  returned: state is prune
  type: dict
  sample: {"20250120T020000Z-full-3f2a9c1d": ["daily 2025-01-20", "newest verified backup"]}
forget:
  description: For prune, backup ids deleted (or, in check mode, that would be deleted), oldest first.
  returned: state is prune
  type: list
  elements: str
  sample: ["20241201T020000Z-incremental-0a1b2c3d"]
cleaned:
  description: Leftovers of interrupted runs removed before the backup (temporary files, archives without manifest).
  returned: state is create and not check mode
  type: list
  elements: str
  sample: [".20250120T020000Z-full-3f2a9c1d.tar.zst.1a2b3c4d.part"]
sqlite_version:
  description: Version of the SQLite library linked into the managed node's Python, which makes the snapshots.
  returned: always
  type: str
  sample: 3.40.1
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.victor.ops.plugins.module_utils import backup as bk
from ansible_collections.victor.ops.plugins.module_utils import backup_s3
from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError
from ansible_collections.victor.ops.plugins.module_utils.backup_sqlite import sqlite_version


def main():
    module = AnsibleModule(
        argument_spec=bk.argument_spec(),
        supports_check_mode=True,
        required_if=backup_s3.REQUIRED_IF,
        mutually_exclusive=bk.MUTUALLY_EXCLUSIVE,
    )
    try:
        result = bk.run(module.params, lambda name: module.get_bin_path(name, required=True), module.check_mode)
    except BackupError as exc:
        module.fail_json(msg=str(exc), sqlite_version=sqlite_version(), problems=[str(exc)])
    except OSError as exc:
        module.fail_json(msg="%s: %s" % (exc.__class__.__name__, exc), sqlite_version=sqlite_version(), problems=[str(exc)])
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
