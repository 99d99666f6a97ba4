# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pieces of the backup module_utils: format constants, BackupError, time, fsync and
atomic writes, the lock, path confinement, manifest checks and small helpers.

Everything here runs on the managed node with the standard library only.

Layout of a repository (local directory or S3 prefix)::

    <id>.tar.zst[.age]   one archive per backup (tar stream -> zstd -> age)
    <id>.manifest.json   written last; a backup exists only when its manifest does

A backup is made under a temporary name, fsynced and renamed; the manifest is written
the same way afterwards, so a killed run never leaves a listed partial backup.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import fcntl
import glob
import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid


FORMAT_VERSION = 1
CHUNK = 1024 * 1024
SQLITE_MAGIC = b"SQLite format 3\x00"
MANIFEST_SUFFIX = ".manifest.json"
# Never archived: SQLite side files (the snapshot replaces them) and our own scratch.
ALWAYS_EXCLUDED = ("*-wal", "*-shm", "*-journal", ".victor-backup-*")
PARTIAL_MARKER = ".victor-backup-partial.json"
CONFIG_PATTERNS = ("*.yaml", "*.yml", "*.toml", "*.json", "*.env", "*.ini", "*.conf")
# Backup ids as new_backup_id makes them; never "/", never a leading dot or "..".
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
ARCHIVE_SUFFIXES = (".tar.zst", ".tar.zst.age")
MAX_LINK_HOPS = 40


class BackupError(Exception):
    """A backup, verify or restore step failed; the message says which and why."""


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def format_time(value):
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    """Parse an ISO 8601 time; a value without zone is taken as UTC."""
    if isinstance(text, datetime.datetime):
        value = text
    else:
        raw = str(text).strip().replace(" ", "T")
        if raw.endswith("Z"):
            raw = raw[:-1] + "+00:00"
        try:
            value = datetime.datetime.fromisoformat(raw)
        except ValueError:
            raise BackupError("cannot parse time %r: use ISO 8601, e.g. 2025-01-20T10:00:00Z" % (text,))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)


def new_backup_id(now, backup_type):
    return "%s-%s-%s" % (now.strftime("%Y%m%dT%H%M%SZ"), backup_type, uuid.uuid4().hex[:8])


def fsync_path(path):
    """fsync a file or a directory, by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path, data, mode=0o600):
    """Write bytes to path through a temporary name, fsync, rename, fsync the directory."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, ".%s.%s.tmp" % (os.path.basename(path), uuid.uuid4().hex[:8]))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(directory)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def is_sqlite_file(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def sqlite_version():
    return sqlite3.sqlite_version


class Lock:
    """An exclusive fcntl lock on a file; waits up to timeout seconds, then fails clearly."""

    def __init__(self, path, timeout=0.0):
        self.path = path
        self.timeout = float(timeout)
        self.fd = None

    def __enter__(self):
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    raise BackupError("another victor_backup run holds the lock %s (waited %.0f s)" % (self.path, self.timeout))
                time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, ("%d\n" % os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False


# Repository and manifest content is not trusted (docs/security.md): every path taken from
# it goes through safe_relpath/confined, every symlink through resolve_links.

def safe_relpath(name, what="archive entry"):
    """The normalised relative path of name, or BackupError for absolute, empty, NUL or '..' paths."""
    if not isinstance(name, str) or not name or name.startswith(("/", "\\")) or "\x00" in name:
        raise BackupError("refusing %s with an absolute or empty path: %r" % (what, name))
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise BackupError("refusing %s that leaves the target: %r" % (what, name))
    return "/".join(parts)


def inside(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def confined(base, name, what="path"):
    """base joined with the untrusted relative name; refuses names that leave base, also through
    symlinks already on disk (the parent directory is resolved, not read as text)."""
    rel = safe_relpath(name, what)
    path = os.path.join(base, *rel.split("/"))
    if not inside(os.path.realpath(os.path.dirname(path)), os.path.realpath(base)):
        raise BackupError("refusing %s %r: a symlink on its way leads outside %s" % (what, name, base))
    return path


def resolve_links(links, what="symlink"):
    """Follow every symlink of a tree the way the kernel would (links: relpath -> target).

    Raises BackupError for an absolute target or one that, through other links of the tree
    (``sub/up -> ..`` then ``esc -> sub/up/..``), leaves the tree's root.
    """
    for name in sorted(links):
        follow_link(links, name, what)


def follow_link(links, name, what):
    target = links[name]
    if not isinstance(target, str) or not target or target.startswith("/") or "\x00" in target:
        raise BackupError("refusing %s %r with an absolute target %r" % (what, name, target))
    parts = name.split("/")[:-1]
    todo = target.split("/")
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise BackupError("refusing %s %r pointing outside the target (%r)" % (what, name, target))
            parts.pop()
            continue
        parts.append(part)
        inner = links.get("/".join(parts))
        if inner is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise BackupError("refusing %s %r: too many levels of symlinks" % (what, name))
            if not isinstance(inner, str) or inner.startswith("/"):
                raise BackupError("refusing %s %r with an absolute target %r" % (what, name, inner))
            parts.pop()
            todo = inner.split("/") + todo


def check_tree_links(root, paths):
    """The symlinks created under root (relative paths) must resolve inside root on disk."""
    top = os.path.realpath(root)
    for path in paths:
        full = os.path.join(root, *path.split("/"))
        if not inside(os.path.realpath(full), top):
            raise BackupError("refusing symlink %r pointing outside the target (%r)" % (path, os.readlink(full)))


def check_manifest(manifest, name=None):
    """Raise BackupError when a manifest is malformed or names a path outside its place."""
    if not isinstance(manifest, dict):
        raise BackupError("manifest %s is not a JSON object" % (name or "?"))
    ident = manifest.get("id")
    if not isinstance(ident, str) or not ID_PATTERN.match(ident):
        raise BackupError("manifest %s has an invalid id %r" % (name or "?", ident))
    if name is not None and ident + MANIFEST_SUFFIX != name:
        raise BackupError("manifest %s: id %s does not match the file name" % (name, ident))
    if manifest.get("time") is None:
        raise BackupError("manifest %s has no time" % ident)
    parse_time(manifest["time"])
    if manifest.get("type") not in ("full", "incremental") or manifest.get("scope") not in ("full", "database", "config"):
        raise BackupError("manifest %s has an unknown type %r or scope %r" % (ident, manifest.get("type"), manifest.get("scope")))
    parent = manifest.get("parent")
    if parent is not None and (not isinstance(parent, str) or not ID_PATTERN.match(parent)):
        raise BackupError("manifest %s has an invalid parent %r" % (ident, parent))
    archive = manifest.get("archive")
    if not isinstance(archive, dict) or archive.get("name") not in [ident + s for s in ARCHIVE_SUFFIXES]:
        raise BackupError("manifest %s: refusing archive name %r (must be %s.tar.zst[.age] in the repository)"
                          % (ident, archive.get("name") if isinstance(archive, dict) else archive, ident))
    if not isinstance(archive.get("size"), int) or not isinstance(archive.get("sha256"), str):
        raise BackupError("manifest %s: archive size or sha256 missing" % ident)
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise BackupError("manifest %s: files is not a list of records" % ident)
    links = {}
    for record in files:
        path = record.get("path")
        if safe_relpath(path, "manifest entry") != path or record.get("type") not in ("file", "symlink"):
            raise BackupError("manifest %s: refusing entry %r" % (ident, path))
        if record["type"] == "symlink":
            links[path] = record.get("target")
    if not isinstance(manifest.get("deleted") or [], list) or not isinstance(manifest.get("databases") or [], list):
        raise BackupError("manifest %s: deleted or databases is not a list" % ident)
    for path in manifest.get("deleted") or []:
        safe_relpath(path, "manifest entry")
    for db in manifest.get("databases") or []:
        safe_relpath(db.get("path") if isinstance(db, dict) else db, "manifest database")
    resolve_links(links, "manifest symlink")
    _check_not_under_links(ident, [r["path"] for r in files], links)


def _check_not_under_links(ident, paths, links):
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise BackupError("manifest %s: refusing entry %r written through the symlink %r" % (ident, path, "/".join(parts[:i])))


def refuse_nul(params):
    """Module options holding a NUL byte are refused by name (os calls would raise ValueError)."""
    for key, value in sorted(params.items()):
        if isinstance(value, str) and "\x00" in value:
            raise BackupError("%s holds a NUL byte" % key)


class IdentityFile:
    """An age identity given as text, written 0600 into a fresh 0700 directory and removed on exit.

    The secret reaches age as a file path (-i), never on a command line.
    """

    def __init__(self, content, directory=None):
        self.content = content
        self.directory = directory
        self.scratch = None
        self.path = None

    def __enter__(self):
        if self.directory:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.scratch = tempfile.mkdtemp(prefix=".victor-backup-identity-", dir=self.directory)
        self.path = os.path.join(self.scratch, "identity.txt")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.content.rstrip("\n") + "\n")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.scratch, ignore_errors=True)
        return False


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


def close_quietly(handle):
    try:
        handle.close()
    except Exception:  # pylint: disable=broad-except
        pass


# File times move in coarse ticks: a file changed in the tick we read it in keeps the mtime we
# recorded, so only a file older than this is trusted by stat next time (git's "racy clean").
RACY_SECONDS = 2


class Background(threading.Thread):
    """Run func(*args) in a thread; wait() returns its result or raises what it raised."""

    def __init__(self, func, *args):
        super(Background, self).__init__(daemon=True)
        self.func = func
        self.args = args
        self.value = None
        self.exc = None
        self.start()

    def run(self):
        try:
            self.value = self.func(*self.args)
        except Exception as exc:  # pylint: disable=broad-except
            self.exc = exc

    def wait(self):
        self.join()
        if self.exc is not None:
            raise self.exc
        return self.value
