# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a chain: stage and check everything, keep a safety copy, swap, check in place, revert."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sqlite3
import stat
import uuid

from ansible_collections.victor.ops.plugins.module_utils import backup_postgres
from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import chain_state, check_manifest, resolve_chain
from ansible_collections.victor.ops.plugins.module_utils.backup_common import PARTIAL_MARKER, Background, BackupError, utcnow
from ansible_collections.victor.ops.plugins.module_utils.backup_files import (
    check_tree_links,
    confined,
    fsync_path,
    inside,
    resolve_links,
    write_file_atomic,
)
from ansible_collections.victor.ops.plugins.module_utils.backup_extract import Syncer, read_archive
from ansible_collections.victor.ops.plugins.module_utils.backup_sqlite import integrity_lines


def restore_backup(store, manifests, manifest, tools, target, scope, restore_postgres, safety_dir=None, now=None,
                   postgres=None):
    """Restore a backup chain into target; returns {restored, safety_copy, files, moved, postgres}.

    1. Extract and check every archive of the chain into a staging directory next to the
       target (nothing live is touched yet; any sha256 or integrity failure stops here).
       PostgreSQL dumps are checked with pg_restore --list and a full read.
    2. With a PostgreSQL dump to restore, pg_dump the live database first (the safety copy
       of the database; a failure here stops the restore, nothing changed).
    3. Move the live files the restore replaces into a safety copy, then move the staged
       files in (renames on one filesystem).  Stale -wal/-shm files of replaced databases
       go to the safety copy too.  The pre-restore dump is kept in the safety copy.
    4. pg_restore --clean --if-exists --single-transaction the dump (a failing pg_restore
       leaves the database unchanged) and integrity_check the SQLite databases in place;
       on any failure put the safety copy back (files and database).

    postgres: a backup_postgres.PostgresSource for the database to restore into.
    """
    if scope not in ("full", "database", "config"):
        raise BackupError("unknown scope %r" % (scope,))
    check_manifest(manifest)
    if manifest["scope"] != "full" and scope != manifest["scope"]:
        raise BackupError("backup %s has scope %s; it cannot restore scope %s" % (manifest["id"], manifest["scope"], scope))
    chain = resolve_chain(manifests, manifest)
    for member in chain:
        check_manifest(member)
    target = os.path.abspath(target)
    parent_dir = os.path.dirname(target)
    stamp = (now or utcnow()).strftime("%Y%m%dT%H%M%SZ")
    safety = safety_dir or "%s.before-restore-%s" % (target, stamp)
    check_safety_copy(target, safety)
    os.makedirs(parent_dir, exist_ok=True)
    staging = os.path.join(parent_dir, ".victor-backup-restore-%s-%s" % (manifest["id"], uuid.uuid4().hex[:6]))
    os.makedirs(staging, mode=0o700)
    pg_done = None
    try:
        files, dumps = _stage_chain(store, chain, tools, staging, scope)
        dump = _pick_dump(manifest, dumps, postgres, restore_postgres, tools)
        if os.path.lexists(safety):
            raise BackupError("safety copy path %s already exists" % safety)
        pre_dump = None
        if dump is not None:
            pre_dump = os.path.join(staging, "pre-restore" + backup_postgres.DUMP_SUFFIX)
            try:
                postgres.dump(pre_dump, staging)
            except BackupError as exc:
                raise BackupError("cannot take the safety dump of the database before the restore, nothing was changed: %s" % exc)
        moved = swap_in(staging, target, safety, files, scope)
        if pre_dump is not None:
            keep = os.path.join(safety, backup_postgres.dump_relpath(postgres.database, set()))
            os.makedirs(os.path.dirname(keep), mode=0o700, exist_ok=True)
            os.rename(pre_dump, keep)
            try:
                postgres.restore(dump, staging)
            except BackupError as exc:
                revert(target, safety, moved, postgres=None)
                raise BackupError("%s; the previous files were put back" % exc)
            pg_done = {"database": postgres.describe(), "dump": dump.rsplit(os.sep, 1)[-1], "safety_dump": keep}
        problems = check_databases(target, files)
        if problems:
            revert(target, safety, moved, postgres=postgres if pg_done else None)
            raise BackupError("restored databases fail integrity_check (%s); the previous state was put back" % "; ".join(problems))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"restored": manifest["id"], "chain": [m["id"] for m in chain], "safety_copy": safety,
            "files": sorted(files), "moved": moved, "postgres": pg_done}


def _pick_dump(manifest, dumps, postgres, restore_postgres, tools):
    """The staged dump to pg_restore (checked), or None."""
    if not dumps or not restore_postgres:
        return None
    if postgres is None:
        raise BackupError("backup %s holds a PostgreSQL dump (%s): give login_db (and the connection options) to restore it, or postgres_restore=false "
                          "to restore the files only; nothing was changed" % (manifest["id"], ", ".join(sorted(dumps))))
    if len(dumps) == 1:
        path = list(dumps.values())[0]
    else:
        wanted = backup_postgres.dump_relpath(postgres.database, set())
        if wanted not in dumps:
            raise BackupError("backup %s holds several PostgreSQL dumps (%s) and none of database %s; nothing was changed"
                              % (manifest["id"], ", ".join(sorted(dumps)), postgres.database))
        path = dumps[wanted]
    problems = backup_postgres.check_dump(path, tools.pg_restore)
    if problems:
        raise BackupError("the PostgreSQL dump in backup %s is unusable, nothing was changed: %s" % (manifest["id"], "; ".join(problems)))
    return path


def _stage_chain(store, chain, tools, staging, scope):
    """Extract the chain; returns (state files to swap in, {dump relpath: staged dump path}).

    Every archive is read whole (its sha256 and every member's are checked), but only the
    files the restored state needs are written: a file replaced by a later incremental is
    hashed, not written.  Written files are fsynced by a thread while the next members
    stream in; each SQLite database gets its journal mode and integrity_check in a thread
    as soon as it is complete.  All of it finishes before anything live is touched.
    """
    state = chain_state(chain)
    wanted = dict((p, r) for p, r in state.items() if in_scope(r, scope))
    links = dict((p, r["target"]) for p, r in wanted.items() if r["type"] == "symlink")
    resolve_links(links, "manifest symlink")
    modes = {}
    for manifest in chain:
        for db in manifest.get("databases", []):
            modes[db["path"]] = str(db.get("journal_mode", "delete")).lower()
    checks = []

    def prepare(name, path):
        record = wanted.get(name, {})
        if record.get("kind") == "db" and record.get("engine", "sqlite") == "sqlite":
            checks.append((name, Background(_prepare_database, path, modes.get(name, "delete"))))

    syncer = Syncer()
    try:
        for manifest in chain:
            dest = os.path.join(staging, ".chain", manifest["id"])
            os.makedirs(dest)
            needed = set(p for p, r in wanted.items() if r["type"] == "file" and r["backup"] == manifest["id"])
            problems = read_archive(store, manifest, tools, dest, write=needed, syncer=syncer, on_file=prepare)
            if problems:
                raise BackupError("backup %s failed verification, nothing was changed: %s" % (manifest["id"], "; ".join(problems)))
        syncer.finish()
        for name, check in checks:
            result = check.wait()
            if result != ["ok"]:
                raise BackupError("database %s in the backup fails integrity_check, nothing was changed: %s" % (name, "; ".join(result[:5])))
    finally:
        for _name, check in checks:
            check.join()  # the staging directory is removed after this: no thread may still use it
        syncer.stop()
    tree = os.path.join(staging, "tree")
    os.makedirs(tree)
    dumps = {}
    for path, record in sorted(wanted.items()):
        if record["type"] != "symlink" and not record["backup"]:
            raise BackupError("file %s is in no archive of the chain" % path)
        src = confined(os.path.join(staging, ".chain", record["backup"] or "."), path, "manifest entry")
        if record["type"] != "symlink" and not os.path.lexists(src):
            raise BackupError("file %s of backup %s is missing from its archive" % (path, record["backup"]))
        if record.get("engine") == "postgresql":
            dumps[path] = src  # restored with pg_restore, never placed in the state directory
            continue
        dst = confined(tree, path, "manifest entry")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if record["type"] == "symlink":
            os.symlink(record["target"], dst)
        else:
            os.rename(src, dst)
    check_tree_links(tree, sorted(links))  # resolved on disk, not only as text
    for root, _dirs, _files in os.walk(tree):
        fsync_path(root)  # the renamed entries are on disk before the swap
    return dict((p, r) for p, r in wanted.items() if p not in dumps), dumps


def in_scope(record, scope):
    if scope == "full":
        return True
    if scope == "database":
        return record.get("kind") == "db"
    return record.get("kind") == "config"


def _prepare_database(path, journal_mode):
    """Give a staged database its recorded journal mode, then integrity_check it: the check
    sees the very bytes the swap moves in.  Returns the check's lines (["ok"] when intact)."""
    st = os.stat(path)
    try:
        conn = sqlite3.connect(path)
        try:
            # No fsync from SQLite: the syncer is already flushing this file, and a second
            # fsync here would wait for all of it (0.9 s for 1 GiB) before the check could
            # start.  The fsync below, after the check, makes the new header durable.
            conn.execute("PRAGMA synchronous=OFF").fetchall()
            if journal_mode == "wal":
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
            result = integrity_lines(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        result = ["cannot open: %s" % exc]
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    os.chmod(path, stat.S_IMODE(st.st_mode))
    fsync_path(path)
    return result


def swap_in(staging, target, safety, files, scope):
    """Move the staged tree into target, keeping what it replaces in safety. Returns the moves."""
    tree = os.path.join(staging, "tree")
    moved = {"mode": scope, "paths": []}
    if scope == "full":
        st = os.stat(target) if os.path.isdir(target) else None
        # Directories are not in the manifest: they take the owner of the state directory
        # (or, when it is gone, of its parent, Victor's HOME) so Victor can write to them.
        owner = st or os.stat(os.path.dirname(target))
        mode = stat.S_IMODE(st.st_mode) if st else 0o750
        _own_dirs(tree, owner.st_uid, owner.st_gid)
        if st is not None:
            os.rename(target, safety)
        else:
            os.makedirs(safety, mode=0o700)
        os.rename(tree, target)
        os.chmod(target, mode)
        if os.geteuid() == 0:
            os.chown(target, owner.st_uid, owner.st_gid)
        moved["paths"].append(".")
        fsync_path(os.path.dirname(target))
        return moved
    os.makedirs(safety, mode=0o700)
    os.makedirs(target, exist_ok=True)
    write_file_atomic(os.path.join(safety, PARTIAL_MARKER), json.dumps({"mode": scope, "restored": sorted(files)}).encode("utf-8"))
    for path in sorted(files):
        for suffix in ("", "-wal", "-shm", "-journal"):
            live = confined(target, path, "restored file") + suffix
            if os.path.lexists(live):
                keep = confined(safety, path, "restored file") + suffix
                os.makedirs(os.path.dirname(keep), exist_ok=True)
                os.rename(live, keep)
                moved["paths"].append(path + suffix)
        src = os.path.join(tree, *path.split("/"))
        dst = confined(target, path, "restored file")
        if not os.path.isdir(os.path.dirname(dst)):
            os.makedirs(os.path.dirname(dst))
            top = os.stat(target)
            _own_dirs(target, top.st_uid, top.st_gid)
        os.rename(src, dst)
    moved["restored"] = sorted(files)
    fsync_path(target)
    return moved


def _own_dirs(tree, uid, gid):
    if os.geteuid() != 0:
        return
    for root, dirs, _files in os.walk(tree):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chown(path, uid, gid)


def revert(target, safety, moved=None, postgres=None, private_dir=None):
    """Put a safety copy back in place of target (full) or file by file (database/config).

    A safety copy that holds a pre-restore PostgreSQL dump (.victor-backup-postgres/) needs
    postgres (the database to put it back into): it is pg_restored first, then removed.
    """
    check_revert(target, safety)
    pg_dir = os.path.join(safety, backup_postgres.DUMP_DIR)
    pg_error = None
    if os.path.isdir(pg_dir):
        if postgres is not None:
            for name in sorted(os.listdir(pg_dir)):
                try:
                    postgres.restore(os.path.join(pg_dir, name), private_dir or os.path.dirname(os.path.abspath(safety)))
                except BackupError as exc:
                    pg_error = exc
        elif moved is None:
            raise BackupError("safety copy %s holds a PostgreSQL dump of the database before the restore: give login_db (and the connection options) "
                              "to put it back too; nothing was changed" % safety)
        if pg_error is None:
            shutil.rmtree(pg_dir)
        else:
            # keep the dump out of the state directory, next to the safety copy
            os.rename(pg_dir, "%s.postgres-%s" % (safety.rstrip(os.sep), uuid.uuid4().hex[:6]))
    restored = _revert_files(target, safety, moved)
    if pg_error is not None:
        raise BackupError("the files were put back, but putting the database back failed: %s" % pg_error)
    return restored


def check_safety_copy(target, safety):
    """A safety copy is a tree of its own: never target itself, inside it or holding it (real paths)."""
    real_target = os.path.realpath(target)
    real_safety = os.path.realpath(safety)
    if inside(real_safety, real_target) or inside(real_target, real_safety):
        raise BackupError("safety copy %s and target %s are the same directory or one is inside the other "
                          "(%s, %s); refusing, nothing was changed" % (safety, target, real_safety, real_target))


def check_revert(target, safety):
    """What state=revert checks before it moves anything (also in check mode)."""
    check_safety_copy(target, safety)
    if not os.path.isdir(safety) or os.path.islink(safety):
        raise BackupError("safety copy %s does not exist (or is not a directory)" % safety)


def _revert_files(target, safety, moved):
    marker = moved
    if marker is None:
        marker = {"mode": "full"}
        if os.path.exists(os.path.join(safety, PARTIAL_MARKER)):
            with open(os.path.join(safety, PARTIAL_MARKER), "rb") as handle:
                marker = json.loads(handle.read().decode("utf-8"))
    if marker.get("mode") == "full":
        if os.path.lexists(target):
            failed = "%s.failed-restore-%s" % (target, uuid.uuid4().hex[:6])
            os.rename(target, failed)
            shutil.rmtree(failed, ignore_errors=True)
        os.rename(safety, target)
        fsync_path(os.path.dirname(target))
        return [target]
    restored = []
    for path in marker.get("restored", []):
        for suffix in ("", "-wal", "-shm", "-journal"):
            live = confined(target, path, "restored file") + suffix
            if os.path.lexists(live):
                os.unlink(live)
    for root, _dirs, names in os.walk(safety):
        for name in names:
            src = os.path.join(root, name)
            rel = os.path.relpath(src, safety)
            if rel == PARTIAL_MARKER:
                continue
            dst = confined(target, rel.replace(os.sep, "/"), "safety copy file")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(src, dst)
            restored.append(rel)
    shutil.rmtree(safety, ignore_errors=True)
    return restored


def check_databases(target, files):
    """After the swap: each restored SQLite database opens in place, read-write, in its journal mode.

    Its content passed integrity_check in staging after its journal mode was set, and the swap
    is a rename (same inode, same bytes), so a second full scan would re-read what was just
    checked; what the swap can break (path, permissions, side files) shows when it is opened.
    """
    problems = []
    for path, record in sorted(files.items()):
        if record.get("kind") == "db" and record.get("engine", "sqlite") == "sqlite":
            full = os.path.join(target, *path.split("/"))
            try:
                conn = sqlite3.connect(full)
                try:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    conn.execute("PRAGMA journal_mode").fetchone()
                finally:
                    conn.close()
                result = None
            except sqlite3.Error as exc:
                result = "cannot open in place: %s" % exc
            for suffix in ("-wal", "-shm"):
                if os.path.exists(full + suffix) and os.path.getsize(full + suffix) == 0:
                    os.unlink(full + suffix)
            if result:
                problems.append("%s: %s" % (path, result))
    return problems
