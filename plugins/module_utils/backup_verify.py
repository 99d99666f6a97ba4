# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verifying a backup chain: every sha256 and the databases (integrity_check, pg_restore reads)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile

from ansible_collections.victor.ops.plugins.module_utils import backup_postgres
from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import chain_state, check_manifest, resolve_chain
from ansible_collections.victor.ops.plugins.module_utils.backup_common import Background, BackupError, format_time, utcnow
from ansible_collections.victor.ops.plugins.module_utils.backup_files import confined, resolve_links
from ansible_collections.victor.ops.plugins.module_utils.backup_extract import read_archive
from ansible_collections.victor.ops.plugins.module_utils.backup_sqlite import integrity_check


def verify_backup(store, manifests, manifest, tools, work_dir, record):
    """Re-read the archive (and its chain), check all sha256, integrity_check DB snapshots.

    Returns a dict {id, ok, problems, databases}.  With record, the result is written
    into the manifest (atomically) so retention can protect the newest verified backup.
    """
    chain = resolve_chain(manifests, manifest)
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    # decrypted content: a fresh 0700 directory whatever work_dir's mode, files kept 0600
    scratch = tempfile.mkdtemp(prefix=".victor-backup-verify-", dir=work_dir)
    problems = []
    databases = {}
    pending = []
    try:
        try:
            for member in chain:
                check_manifest(member)
            links = dict((p, r["target"]) for p, r in chain_state(chain).items() if r["type"] == "symlink")
            resolve_links(links)
        except BackupError as exc:
            problems.append("%s: %s" % (manifest["id"], exc))
            chain = []
        # The database checks of an archive run in threads (SQLite and pg_restore release the
        # GIL) while the next archive of the chain streams through zstd and sha256.
        for member in chain:
            dest = os.path.join(scratch, member["id"])
            os.makedirs(dest, mode=0o700)
            try:
                # every member is hashed; only the databases are written, for their checks
                databases_only = set(db["path"] for db in member.get("databases", []))
                member_problems = read_archive(store, member, tools, dest, private=True, write=databases_only)
            except BackupError as exc:
                member_problems = [str(exc)]
            checks = [] if member_problems else _start_db_checks(member, dest, tools)
            pending.append((member, member_problems, checks))
        for member, member_problems, checks in pending:
            problems += ["%s: %s" % (member["id"], p) for p in member_problems]
            for path, check in checks:
                lines = check.wait()
                if _db_engine(member, path) == "postgresql":
                    databases[path] = "ok" if not lines else lines[0]
                    problems += ["%s: %s" % (member["id"], p) for p in lines]
                    continue
                databases[path] = lines[0] if len(lines) == 1 else "; ".join(lines[:5])
                if lines != ["ok"]:
                    problems.append("%s: %s fails integrity_check: %s" % (member["id"], path, "; ".join(lines[:5])))
    finally:
        for _member, _problems, checks in pending:
            for _path, check in checks:
                check.join()  # never remove the scratch directory under a running check
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"id": manifest["id"], "ok": not problems, "problems": problems, "databases": databases,
              "chain": [m["id"] for m in chain]}
    if record and not chain:
        record = False  # a refused manifest is never rewritten
    if record:
        updated = dict(manifest)
        updated["verified"] = {"time": format_time(utcnow()), "ok": not problems}
        store.put_manifest(updated)
    return result


def _db_engine(manifest, path):
    for db in manifest.get("databases", []):
        if db["path"] == path:
            return db.get("engine", "sqlite")
    return None


def _start_db_checks(member, dest, tools):
    """integrity_check (SQLite) / pg_restore checks (dumps) of the databases extracted from member, in threads."""
    checks = []
    for db in member.get("databases", []):
        path = confined(dest, db["path"], "manifest database")
        if not os.path.exists(path):
            continue  # unchanged in this incremental; checked in its parent
        engine = db.get("engine", "sqlite")
        if engine == "postgresql":
            checks.append((db["path"], Background(backup_postgres.check_dump, path, tools.pg_restore)))
        elif engine == "sqlite":
            checks.append((db["path"], Background(integrity_check, path)))
    return checks
