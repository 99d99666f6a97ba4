# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Making a backup: select, snapshot, archive, verify what was written, then register the manifest; and the
victor-ai version recorded in it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import shutil
import socket
import sqlite3

from ansible_collections.victor.ops.plugins.module_utils import backup_postgres
from ansible_collections.victor.ops.plugins.module_utils.backup_archive import write_archive
from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import chain_state, resolve_chain, sort_manifests
from ansible_collections.victor.ops.plugins.module_utils.backup_common import FORMAT_VERSION, Background, BackupError, format_time, new_backup_id, utcnow
from ansible_collections.victor.ops.plugins.module_utils.backup_files import sha256_file
from ansible_collections.victor.ops.plugins.module_utils.backup_select import select_files
from ansible_collections.victor.ops.plugins.module_utils.backup_sqlite import QuickCheck, snapshot_sqlite


def create_backup(store, source, work_dir, tools, backup_type, scope, include, exclude, include_cache, victor_version=None,
                  host=None, now=None, postgres=None):
    """Make one backup; returns its manifest.  Raises BackupError and leaves nothing listed on failure.

    The caller holds backup_lock.work_lock(work_dir): leftovers of killed runs are removed here.
    postgres: backup_postgres.PostgresSource objects whose databases are dumped (pg_dump
    --format=custom) into the archive for the full and database scopes.
    """
    if backup_type not in ("full", "incremental"):
        raise BackupError("unknown backup type %r" % (backup_type,))
    store.ensure()
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    cleaned = store.cleanup() + _cleanup_scratch(work_dir)
    now = now or utcnow()
    manifests, _problems = store.list_manifests()
    parent = None
    if backup_type == "incremental":
        same_scope = [m for m in sort_manifests(manifests) if m["scope"] == scope]
        if not same_scope:
            raise BackupError("incremental backup needs a previous %s-scope backup; make a full backup first" % scope)
        parent = same_scope[-1]
    backup_id = new_backup_id(now, backup_type)
    scratch = os.path.join(work_dir, ".victor-backup-" + backup_id)
    os.makedirs(scratch, mode=0o700)
    try:
        manifest = _create(store, source, scratch, tools, backup_id, backup_type, scope, include, exclude,
                           include_cache, victor_version, host, now, parent, manifests, postgres)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest["cleaned"] = cleaned
    return manifest


def _cleanup_scratch(work_dir):
    """Remove scratch directories of killed runs (called under the lock)."""
    removed = []
    for name in sorted(os.listdir(work_dir)):
        full = os.path.join(work_dir, name)
        if name.startswith(".victor-backup-") and os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
            removed.append(name)
    return removed


def _create(store, source, scratch, tools, backup_id, backup_type, scope, include, exclude, include_cache,
            victor_version, host, now, parent, manifests, postgres):
    entries = select_files(source, scope, include, exclude, include_cache)
    # SQLite files last in the archive: their snapshots are taken in a thread while the other
    # files are compressed (a full backup waits for them only when it reaches them)
    entries = [e for e in entries if e["kind"] != "db"] + [e for e in entries if e["kind"] == "db"]
    snapshots = dict((e["path"], os.path.join(scratch, "db-%d.sqlite" % i)) for i, e in enumerate(entries) if e["kind"] == "db")
    databases = []
    checks = []
    snapper = Background(_snapshot_all, entries, snapshots, checks)
    try:
        pg_details = []
        if scope in ("full", "database"):
            for index, pg_source in enumerate(postgres or []):
                dump = os.path.join(scratch, "pg-%d.pgdump" % index)
                details = pg_source.dump(dump, scratch)
                details["path"] = backup_postgres.dump_relpath(pg_source.database, set(e["path"] for e in entries))
                entries.append({"path": details["path"], "type": "file", "abspath": dump, "kind": "db", "engine": "postgresql"})
                pg_details.append(details)
        deleted = []
        selected = list(entries)
        if parent is not None:
            databases = snapper.wait() + pg_details  # an incremental compares the snapshots first
            parent_state = chain_state(resolve_chain(manifests, parent))
            unchanged, entries = _split_unchanged(entries, snapshots, parent_state)
            current = set(e["path"] for e in entries) | set(r["path"] for r in unchanged)
            deleted = sorted(p for p in parent_state if p not in current)
        else:
            unchanged = []
        if not entries and not unchanged:
            raise BackupError("nothing to back up in %s for scope %s" % (source, scope))
        requested = backup_type
        if parent is not None and _store_as_full(entries, snapshots, unchanged):
            backup_type, parent, deleted = "full", None, []
            backup_id = new_backup_id(now, backup_type)
            entries, unchanged = selected, []
        suffix = ".tar.zst.age" if tools.encrypt else ".tar.zst"
        name = backup_id + suffix
        tmp, handle = store.open_writer(name)
        try:
            records, digest, size = write_archive(entries, snapshots, handle, tools,
                                                  before=lambda entry: entry["path"] in snapshots and snapper.wait())
            databases = snapper.wait() + pg_details
            problems = [p for p in (c.problem() for c in checks) if p]
            if problems:
                raise BackupError("; ".join(problems))
            location = store.commit_data(tmp, handle, name, size, digest)
        except BaseException:
            store.abort_data(tmp, handle)
            raise
        manifest = {
            "format": FORMAT_VERSION, "id": backup_id, "time": format_time(now), "host": host or socket.gethostname(),
            "type": backup_type, "scope": scope, "parent": parent["id"] if parent else None,
            "victor_version": victor_version, "source": source, "encrypted": tools.encrypt,
            "compression": {"program": "zstd", "level": tools.compression_level},
            "archive": {"name": name, "size": size, "sha256": digest},
            "files": sorted(records + unchanged, key=lambda r: r["path"]), "deleted": deleted,
            "databases": databases, "sqlite_version": sqlite3.sqlite_version, "verified": None,
        }
        if requested != backup_type:
            manifest["requested_type"] = requested
        manifest["archive"].update(location)
        stored = dict((r["path"], r) for r in records)
        for details in databases:
            if details.get("engine") == "postgresql" and details["path"] in stored:
                details.update(size=stored[details["path"]]["size"], sha256=stored[details["path"]]["sha256"])
        store.put_manifest(manifest)
        return manifest
    finally:
        snapper.join()
        for check in checks:
            check.join()  # never leave a thread reading the scratch snapshot


def _snapshot_all(entries, snapshots, checks):
    """Snapshot every SQLite entry (in order) and start its quick_check; returns the snapshot details."""
    databases = []
    for entry in entries:
        if entry["path"] in snapshots:
            details = snapshot_sqlite(entry["abspath"], snapshots[entry["path"]], check=False)
            details["path"] = entry["path"]
            checks.append(QuickCheck(entry["abspath"], snapshots[entry["path"]]))
            checks[-1].start()
            databases.append(details)
    return databases


STAT_KEYS = (("size", "st_size"), ("mtime_ns", "st_mtime_ns"), ("ctime_ns", "st_ctime_ns"), ("ino", "st_ino"), ("dev", "st_dev"))


# An incremental leaving out less than this share of the bytes is stored as a full: compressed,
# it would not be smaller than a full by more than zstd's own variation, and it would add a
# dependency on its parent.
INCREMENTAL_MIN_SAVING = 0.01


def _store_as_full(changed, snapshots, unchanged):
    """True when an incremental would store (about) everything a full stores: then a full is stored."""
    kept = sum(r.get("size") or 0 for r in unchanged)
    stored = 0
    for entry in changed:
        if entry["type"] == "file":
            stored += os.stat(snapshots.get(entry["path"]) or entry["abspath"]).st_size
    return kept <= INCREMENTAL_MIN_SAVING * (kept + stored)


def _split_unchanged(entries, snapshots, parent_state):
    """Files equal to the parent chain's are recorded, not stored again.

    Plain files whose size, mtime, ctime, inode and device equal the parent's record are
    unchanged without being read (restic's rule); database snapshots (always fresh files)
    and records of older manifests without those fields are compared by sha256.
    """
    changed = []
    unchanged = []
    for entry in entries:
        previous = parent_state.get(entry["path"])
        if entry["type"] == "file" and previous and previous.get("type") == "file" and previous.get("engine") is None:
            snapshot = snapshots.get(entry["path"])
            st = os.stat(snapshot or entry["abspath"])
            if not snapshot and all(k in previous for k, _a in STAT_KEYS):
                same = all(previous[k] == getattr(st, a) for k, a in STAT_KEYS)
            else:
                digest = sha256_file(snapshot or entry["abspath"]) if st.st_size == previous["size"] else None
                same = digest == previous["sha256"]
                if snapshot and digest:
                    entry["sha256"] = digest  # our private snapshot does not change: not hashed again in the archive
            if same:
                record = dict((k, v) for k, v in previous.items() if k != "backup")
                record["stored"] = False
                unchanged.append(record)
                continue
        changed.append(entry)
    return unchanged, changed


def detect_victor_version(venvs=(), path_env=None):
    """The installed victor-ai version: the dist-info of the first venv that has one, else the venv of
    the ``victor`` command on PATH (read from its script's shebang).  None when it cannot be known."""
    candidates = [v for v in venvs if v]
    script = shutil.which("victor", path=path_env)
    if script:
        try:
            with open(script, "rb") as handle:
                first = handle.readline().decode("utf-8", "replace")
            if first.startswith("#!"):
                candidates.append(os.path.dirname(os.path.dirname(first[2:].strip().split()[0])))
        except OSError:
            pass
    for venv in candidates:
        pattern = os.path.join(venv, "lib", "python*", "site-packages", "victor_ai-*.dist-info", "METADATA")
        for metadata in sorted(glob.glob(pattern)):
            try:
                with open(metadata, "rb") as handle:
                    for line in handle.read(65536).decode("utf-8", "replace").splitlines():
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
                        if not line:
                            break
            except OSError:
                continue
    return None
