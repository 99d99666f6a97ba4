# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistent, verifiable backups of Victor's state directory.

Everything here runs on the managed node with the standard library only (plus the
``zstd`` and ``age`` executables through pipes, and boto3 lazily in backup_s3).

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
import fnmatch
import glob
import hashlib
import json
import os
import posixpath
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import tarfile
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


# --------------------------------------------------------------------------- helpers

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


def fsync_dir(path):
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
    fsync_dir(directory)


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


# --------------------------------------------------------------------------- confinement
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


def _inside(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def confined(base, name, what="path"):
    """base joined with the untrusted relative name; refuses names that leave base, also through
    symlinks already on disk (the parent directory is resolved, not read as text)."""
    rel = safe_relpath(name, what)
    path = os.path.join(base, *rel.split("/"))
    if not _inside(os.path.realpath(os.path.dirname(path)), os.path.realpath(base)):
        raise BackupError("refusing %s %r: a symlink on its way leads outside %s" % (what, name, base))
    return path


def resolve_links(links, what="symlink"):
    """Follow every symlink of a tree the way the kernel would (links: relpath -> target).

    Raises BackupError for an absolute target or one that, through other links of the tree
    (``sub/up -> ..`` then ``esc -> sub/up/..``), leaves the tree's root.
    """
    for name in sorted(links):
        _follow(links, name, what)


def _follow(links, name, what):
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
        if not _inside(os.path.realpath(full), top):
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


def load_manifests(store, missing_ok=False):
    """The store's manifests that pass check_manifest; the others are reported, never followed.

    A local repository that does not exist is an error unless missing_ok (then: no backups).
    """
    checker = getattr(store, "check", None)
    if checker is not None and not checker(missing_ok):
        return [], []
    manifests, problems = store.list_manifests()
    good = []
    for manifest in manifests:
        try:
            check_manifest(manifest)
        except BackupError as exc:
            problems.append("manifest ignored: %s" % exc)
            continue
        good.append(manifest)
    return good, problems


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


# --------------------------------------------------------------------------- selection

def _match_any(relpath, patterns):
    base = posixpath.basename(relpath)
    for pattern in patterns:
        if fnmatch.fnmatchcase(relpath, pattern) or fnmatch.fnmatchcase(base, pattern):
            return True
        # "cache/" or "cache/*" excludes everything below cache/
        stripped = pattern.rstrip("/*")
        if stripped and "*" not in stripped and (relpath == stripped or relpath.startswith(stripped + "/")):
            return True
    return False


def select_files(source, scope="full", include=None, exclude=None, include_cache=False):
    """Walk source and return sorted entries {path, kind, abspath, type} for the scope.

    kind is ``db`` (an SQLite file), ``config`` (a top-level config file) or ``data``.
    """
    if scope not in ("full", "database", "config"):
        raise BackupError("unknown scope %r" % (scope,))
    if not os.path.isdir(source):
        raise BackupError("source directory %s does not exist" % source)
    include = list(include or [])
    exclude = list(exclude or []) + list(ALWAYS_EXCLUDED)
    if not include_cache:
        exclude.append("cache")
    entries = []
    for root, dirs, files in os.walk(source, followlinks=False):
        dirs.sort()
        rel_root = os.path.relpath(root, source)
        rel_root = "" if rel_root == "." else rel_root.replace(os.sep, "/")
        kept_dirs = []
        for name in dirs:
            rel = posixpath.join(rel_root, name) if rel_root else name
            full = os.path.join(root, name)
            if _match_any(rel, exclude):
                continue
            if os.path.islink(full):
                entries.append({"path": rel, "type": "symlink", "abspath": full, "kind": "data"})
                continue
            kept_dirs.append(name)
        dirs[:] = kept_dirs
        for name in sorted(files):
            rel = posixpath.join(rel_root, name) if rel_root else name
            full = os.path.join(root, name)
            if _match_any(rel, exclude):
                continue
            if include and not _match_any(rel, include):
                continue
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries.append({"path": rel, "type": "symlink", "abspath": full, "kind": "data"})
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # sockets, fifos: runtime files, never state
            if is_sqlite_file(full):
                kind = "db"
            elif "/" not in rel and _match_any(rel, CONFIG_PATTERNS):
                kind = "config"
            else:
                kind = "data"
            entries.append({"path": rel, "type": "file", "abspath": full, "kind": kind})
    if scope == "database":
        entries = [e for e in entries if e["kind"] == "db"]
    elif scope == "config":
        entries = [e for e in entries if e["kind"] == "config"]
    links = dict((e["path"], os.readlink(e["abspath"])) for e in entries if e["type"] == "symlink")
    try:
        resolve_links(links)
    except BackupError as exc:
        # verify and restore refuse such a link: fail now rather than store a backup that cannot be restored
        raise BackupError("%s holds a symlink that a restore could not recreate safely (%s); remove it or add it to "
                          "exclude; nothing was backed up" % (source, str(exc).replace("refusing ", "")))
    return entries


# --------------------------------------------------------------------------- sqlite

def snapshot_sqlite(src_path, dst_path, check=True):
    """Copy a live SQLite database with the online backup API.

    The source is opened read-only (``mode=ro``): the backup never writes to, and never
    checkpoints, Victor's WAL; a read-only connection does not checkpoint on close.  The
    copy is made in one step inside one read transaction, so it is a consistent snapshot
    while writers go on.  The snapshot is switched to rollback journal mode so that it is
    one self-contained file.  Returns snapshot details for the manifest.
    """
    side_files = [src_path + suffix for suffix in ("-wal", "-shm")]
    existed = set(p for p in side_files if os.path.exists(p))
    src_stat = os.stat(src_path)
    uri = "file:%s?mode=ro" % _quote_uri_path(src_path)
    try:
        src = sqlite3.connect(uri, uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackupError("cannot open %s read-only: %s" % (src_path, exc))
    try:
        journal_mode = src.execute("PRAGMA journal_mode").fetchone()[0]
        dst = sqlite3.connect(dst_path)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE").fetchone()
            page_size = dst.execute("PRAGMA page_size").fetchone()[0]
            page_count = dst.execute("PRAGMA page_count").fetchone()[0]
            # quick_check (O(N)) here; the full integrity_check runs in verify.  With
            # check=False the caller runs it (QuickCheck) while the archive is written.
            rows = dst.execute("PRAGMA quick_check").fetchall() if check else [("ok",)]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError("online backup of %s failed: %s" % (src_path, exc))
    finally:
        src.close()
        # A read-only open recreates a missing -shm as the caller (root): give it back
        # to the database owner so Victor can still open its database.
        for path in side_files:
            if path not in existed and os.path.exists(path) and os.geteuid() == 0:
                try:
                    os.chown(path, src_stat.st_uid, src_stat.st_gid)
                except OSError:
                    pass
    result = [row[0] for row in rows]
    if result != ["ok"]:
        raise BackupError("snapshot of %s fails quick_check: %s" % (src_path, "; ".join(result[:5])))
    return {"journal_mode": journal_mode, "page_size": page_size, "page_count": page_count,
            "quick_check": "ok", "sqlite_version": sqlite3.sqlite_version}


class QuickCheck(threading.Thread):
    """PRAGMA quick_check of a snapshot in a thread (SQLite releases the GIL), joined before the archive is committed."""

    def __init__(self, label, path):
        super(QuickCheck, self).__init__(daemon=True)
        self.label = label
        self.path = path
        self.result = None

    def run(self):
        try:
            conn = sqlite3.connect("file:%s?mode=ro" % _quote_uri_path(self.path), uri=True)
            try:
                self.result = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            self.result = ["cannot open: %s" % exc]

    def problem(self):
        self.join()
        if self.result != ["ok"]:
            return "snapshot of %s fails quick_check: %s" % (self.label, "; ".join((self.result or ["no result"])[:5]))
        return None


def _quote_uri_path(path):
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def integrity_check(path, readonly=True):
    """PRAGMA integrity_check on a database file. Returns the result lines (["ok"] when intact).

    readonly=False is for restored files while the service is stopped: a read-write
    connection that closes last removes the -wal/-shm it created, where a read-only one
    would leave them behind (owned by whoever ran the check).
    """
    try:
        if readonly:
            conn = sqlite3.connect("file:%s?mode=ro" % _quote_uri_path(path), uri=True)
        else:
            conn = sqlite3.connect(path)
        try:
            return [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return ["cannot open: %s" % exc]


# --------------------------------------------------------------------------- pipelines

class _Pump(threading.Thread):
    """Copy a readable object into a writable one in a thread, hashing and counting the bytes.

    The write side (close_out=False) drains the last stage's stdout into the archive file.
    The read side (close_out=True) feeds the archive into a decompressor's stdin and closes
    it at the end; a decompressor that exits early is an error unless it already got data
    (it then reports the problem itself through its exit status).
    """

    def __init__(self, source, out, close_out=False):
        super(_Pump, self).__init__(daemon=True)
        self.source = source
        self.out = out
        self.close_out = close_out
        self.digest = hashlib.sha256()
        self.size = 0
        self.error = None

    def run(self):
        try:
            while True:
                block = self.source.read(CHUNK)
                if not block:
                    break
                self.digest.update(block)
                self.size += len(block)
                self.out.write(block)
        except BrokenPipeError:
            self.error = None if (self.close_out and self.size) else BrokenPipeError("the next pipeline stage exited early")
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc
        finally:
            if self.close_out:
                try:
                    self.out.close()
                except OSError:
                    pass


class Tools:
    """Paths of the external programs and the encryption settings."""

    def __init__(self, zstd="zstd", age="age", compression_level=3, threads=0,
                 age_recipients=None, age_recipients_file=None, age_identity_file=None, pg_restore="pg_restore",
                 age_identity_label=None):
        self.zstd = zstd
        self.age = age
        self.pg_restore = pg_restore
        self.compression_level = int(compression_level)
        self.threads = int(threads)
        self.age_recipients = list(age_recipients or [])
        self.age_recipients_file = age_recipients_file
        self.age_identity_file = age_identity_file
        self.age_identity_label = age_identity_label

    def identity_label(self):
        """How messages name the identity: its file path (or the option it came from), never its content."""
        return self.age_identity_label or "in %s" % self.age_identity_file

    @property
    def encrypt(self):
        return bool(self.age_recipients or self.age_recipients_file)

    def compress_argv(self):
        level = self.compression_level
        argv = [self.zstd, "-q", "-c", "-T%d" % self.threads]
        argv.append("--ultra" if level > 19 else "-%d" % level)
        if level > 19:
            argv.append("-%d" % level)
        return argv

    def encrypt_argv(self):
        argv = [self.age, "--encrypt"]
        for recipient in self.age_recipients:
            argv += ["-r", recipient]  # public keys only; never a secret on argv
        if self.age_recipients_file:
            argv += ["-R", self.age_recipients_file]
        return argv

    def decrypt_argv(self):
        if not self.age_identity_file:
            raise BackupError("the archive is encrypted: give age_identity_file (an age identity file, mode 0600)")
        return [self.age, "--decrypt", "-i", self.age_identity_file]


def _stage_error(name, proc):
    err = b""
    if proc.stderr is not None:
        try:
            err = proc.stderr.read()
        except (OSError, ValueError):
            pass
    return "%s exited with %s: %s" % (name, proc.returncode, err.decode("utf-8", "replace").strip()[:500])


def write_archive(entries, snapshots, out_handle, tools, before=None):
    """Stream entries as tar -> zstd [-> age] into out_handle.

    snapshots maps relpath -> snapshot file path (used instead of the live DB); before(entry),
    when given, is called before each entry is written (it waits for that entry's snapshot).
    Returns (file records, archive sha256, archive size).
    """
    procs = []
    compressor = subprocess.Popen(tools.compress_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(("zstd", compressor))
    last = compressor
    if tools.encrypt:
        encryptor = subprocess.Popen(tools.encrypt_argv(), stdin=compressor.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        compressor.stdout.close()
        procs.append(("age", encryptor))
        last = encryptor
    sink = _Pump(last.stdout, out_handle)
    sink.start()
    records = []
    try:
        try:
            # tar headers and data written straight into the compressor (tarfile's stream
            # writer copies every block through its own buffer, which costs throughput)
            written = 0
            for entry in entries:
                if before is not None:
                    before(entry)
                record, size = _add_entry(compressor.stdin, entry, snapshots.get(entry["path"]))
                records.append(record)
                written += size
            end = 2 * tarfile.BLOCKSIZE
            end += (-(written + end)) % tarfile.RECORDSIZE
            compressor.stdin.write(b"\0" * end)
        finally:
            try:
                compressor.stdin.close()
            except OSError:
                pass
    except BrokenPipeError:
        pass  # reported below from the stage's exit status
    except BaseException:
        for _name, proc in procs:
            proc.kill()
        raise
    finally:
        for _name, proc in procs:
            proc.wait()
        sink.join()
    for name, proc in procs:
        if proc.returncode != 0:
            raise BackupError("archive stage failed: " + _stage_error(name, proc))
    for _name, proc in procs:
        proc.stderr.close()
    if sink.error is not None:
        raise BackupError("writing the archive failed: %s" % sink.error)
    if sink.size == 0:
        raise BackupError("the archive is empty")
    return records, sink.digest.hexdigest(), sink.size


class _NoHash:
    """Stands in for hashlib.sha256() when the digest of a private snapshot is already known."""

    def __init__(self, hexdigest):
        self.value = hexdigest

    def update(self, _block):
        pass

    def hexdigest(self):
        return self.value


def _add_entry(out, entry, snapshot_path):
    """Write one tar member (PAX header, data, padding) to out; returns (manifest record, bytes written)."""
    if entry["type"] == "symlink":
        st = os.lstat(entry["abspath"])
        info = tarfile.TarInfo(entry["path"])
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(entry["abspath"])
        info.mtime = int(st.st_mtime)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        out.write(header)
        return {"path": entry["path"], "type": "symlink", "target": info.linkname, "kind": entry["kind"]}, len(header)
    path = snapshot_path or entry["abspath"]
    opened = time.time()
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        live = os.stat(entry["abspath"]) if snapshot_path else st
        info = tarfile.TarInfo(entry["path"])
        info.size = st.st_size
        info.mtime = int(live.st_mtime)
        info.mode = stat.S_IMODE(live.st_mode)
        info.uid, info.gid = live.st_uid, live.st_gid
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        out.write(header)
        known = entry.get("sha256") if snapshot_path else None
        digest = _NoHash(known) if known else hashlib.sha256()
        left = st.st_size  # a file that grows while it is read (a live log) is cut at its size when opened
        while left > 0:
            block = handle.read(min(CHUNK, left))
            if not block:
                raise BackupError("%s shrank while it was read (truncated by another process?)" % entry["path"])
            digest.update(block)
            out.write(block)
            left -= len(block)
        padding = (-st.st_size) % tarfile.BLOCKSIZE
        if padding:
            out.write(b"\0" * padding)
    record = {"path": entry["path"], "type": "file", "kind": entry["kind"], "size": st.st_size,
              "sha256": digest.hexdigest(), "mode": "%04o" % info.mode, "uid": info.uid,
              "gid": info.gid, "mtime": info.mtime}
    if not snapshot_path and live.st_mtime < opened - RACY_SECONDS:
        # what an incremental compares to skip unchanged files without reading them
        record.update(mtime_ns=live.st_mtime_ns, ctime_ns=live.st_ctime_ns, ino=live.st_ino, dev=live.st_dev)
    if entry.get("engine"):
        record["engine"] = entry["engine"]
    return record, len(header) + st.st_size + padding


def open_archive_stream(source, tools, encrypted):
    """Start the read pipeline: source file object -> [age -d] -> zstd -d.

    Returns (feeder, procs, output pipe).  Callers must call finish_read().
    """
    procs = []
    first_argv = tools.decrypt_argv() if encrypted else [tools.zstd, "-d", "-q", "-c"]
    try:
        first = subprocess.Popen(first_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(("age" if encrypted else "zstd", first))
        last = first
        if encrypted:
            second = subprocess.Popen([tools.zstd, "-d", "-q", "-c"], stdin=first.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            first.stdout.close()
            procs.append(("zstd", second))
            last = second
    except OSError as exc:
        for _name, proc in procs:
            proc.kill()
            proc.wait()
        raise BackupError("cannot start %s: %s" % (first_argv[0] if not procs else tools.zstd, exc))
    feeder = _Pump(source, first.stdin, close_out=True)
    feeder.start()
    return feeder, procs, last.stdout


def finish_read(feeder, procs, out):
    """Drain the rest of the stream, wait for every stage, raise on any failure."""
    try:
        while out.read(CHUNK):
            pass
    except OSError:
        pass
    out.close()
    feeder.join()
    for _name, proc in procs:
        proc.wait()
    errors = [_stage_error(name, proc) for name, proc in procs if proc.returncode != 0]
    for _name, proc in procs:
        proc.stderr.close()
    if feeder.error is not None:
        errors.append("reading the archive failed: %s" % feeder.error)
    if errors:
        raise BackupError("; ".join(errors))


def abort_read(feeder, procs, out):
    """Stop the read pipeline; returns the errors of stages that had failed on their own (exit status > 0)."""
    try:
        ended = not out.read(1)
    except (OSError, ValueError):
        ended = False
    for _name, proc in procs:
        if ended:
            # the stream ended early (a truncated or corrupt zstd frame): the stage that closed
            # it is exiting with its own message, let it say why before anything is killed
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()  # a stage that already exited keeps its own status
    try:
        out.close()
    except OSError:
        pass
    errors = []
    for name, proc in procs:
        proc.wait()
        if proc.returncode > 0:
            errors.append(_stage_error(name, proc))
        proc.stderr.close()
    feeder.join(5)
    return errors


# --------------------------------------------------------------------------- safe extraction

def check_member_name(name):
    """Return the normalised relative path or raise for absolute paths and '..'."""
    return safe_relpath(name, "archive entry")


def check_link_target(name, target, links=None):
    """Symlinks may only point inside the target directory, also through the other links of the tree."""
    known = dict(links or {})
    known[name] = target
    _follow(known, name, "symlink")
    return target


def extract_member(tar, member, dest, expected, links, private=False, write=True, syncer=None):
    """Extract one member under dest without following links; return its sha256 or None.

    links maps the symlinks extracted so far to their targets.  private (verify) keeps every
    file 0600 in 0700 directories instead of applying the recorded modes and owners, and
    skips fsync (a scratch copy is deleted afterwards).  write=False checks and hashes the
    member without writing it (a restore does not need it).  syncer fsyncs written files in
    a thread while the next members are extracted; without it each file is fsynced here.
    """
    name = check_member_name(member.name)
    for i in range(1, name.count("/") + 1):
        prefix = "/".join(name.split("/")[:i])
        if prefix in links:
            raise BackupError("refusing archive entry %r written through the symlink %r" % (name, prefix))
    path = os.path.join(dest, *name.split("/"))
    if member.issym():
        check_link_target(name, member.linkname, links)
        if write:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            os.symlink(member.linkname, path)
        links[name] = member.linkname
        return None
    if member.isdir():
        if write:
            os.makedirs(path, mode=0o700, exist_ok=True)
        return None
    if not member.isreg():
        raise BackupError("refusing archive entry %r of type %r (hard links, devices and fifos are not allowed)" % (name, member.type))
    if expected is None:
        raise BackupError("archive entry %r is not in the manifest" % name)
    if not write:
        return _hash_member(tar, member)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as handle:
        while True:
            block = tar.read_block()
            if block is None:
                break
            digest.update(block)
            handle.write(block)
        handle.flush()
        if syncer is None and not private:
            os.fsync(handle.fileno())
    if syncer is not None:
        syncer.add(path)
    if private:
        os.utime(path, (member.mtime, member.mtime))
        return digest.hexdigest()
    mode = int(expected.get("mode", "0600"), 8)
    os.chmod(path, mode)
    if os.geteuid() == 0 and "uid" in expected:
        os.chown(path, int(expected["uid"]), int(expected["gid"]))
    os.utime(path, (member.mtime, member.mtime))
    return digest.hexdigest()


def _hash_member(tar, _member):
    digest = hashlib.sha256()
    while True:
        block = tar.read_block()
        if block is None:
            break
        digest.update(block)
    return digest.hexdigest()


class _Syncer(threading.Thread):
    """fsync extracted files in a thread (one at a time, in order) while the next members stream in."""

    def __init__(self):
        super(_Syncer, self).__init__(daemon=True)
        self.todo = []
        self.cond = threading.Condition()
        self.closed = False
        self.error = None
        self.start()

    def add(self, path):
        with self.cond:
            self.todo.append(path)
            self.cond.notify()

    def run(self):
        while True:
            with self.cond:
                while not self.todo and not self.closed:
                    self.cond.wait()
                if not self.todo:
                    return
                path = self.todo.pop(0)
            if self.error is not None:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self.error = exc

    def stop(self, drop=True):
        with self.cond:
            if drop:
                del self.todo[:]
            self.closed = True
            self.cond.notify()
        self.join()

    def finish(self):
        """Wait until every added file is on disk; raise BackupError when one could not be synced."""
        self.stop(drop=False)
        if self.error is not None:
            raise BackupError("cannot fsync a restored file, nothing was changed: %s" % self.error)


class _TarStream:
    """Minimal reader of the tar stream that zstd decompresses into a pipe (ustar and PAX).

    tarfile's stream mode copies every block through two buffers before it reaches the
    hash; this reads member data straight from the pipe into one reused buffer.  Headers
    are parsed by tarfile.TarInfo.frombuf (checksum, ustar prefix); PAX extended headers
    set path, linkpath, size, mtime, uid and gid.  GNU extensions and global headers are
    refused: this collection never writes them.
    """

    def __init__(self, fileobj):
        self.fileobj = fileobj
        self.left = 0  # data + padding of the current member not read yet
        self.data_left = 0
        self.buffer = bytearray(CHUNK)
        self.view = memoryview(self.buffer)

    def _exact(self, size):
        data = self.fileobj.read(size)
        if len(data) != size:
            raise tarfile.ReadError("unexpected end of data")
        return data

    def _skip_rest(self):
        while self.left:
            got = self.fileobj.readinto(self.view[:min(self.left, CHUNK)])
            if not got:
                raise tarfile.ReadError("unexpected end of data")
            self.left -= got
        self.data_left = 0

    def __iter__(self):
        pax = {}
        while True:
            self._skip_rest()
            block = self.fileobj.read(tarfile.BLOCKSIZE)
            if not block:
                if pax:
                    raise tarfile.ReadError("unexpected end of data")
                return
            if len(block) != tarfile.BLOCKSIZE:
                raise tarfile.ReadError("unexpected end of data")
            if block == tarfile.NUL * tarfile.BLOCKSIZE:
                if pax:
                    raise tarfile.ReadError("PAX header without a member")
                return  # end of archive; finish_read drains the padding
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            padded = info.size + (-info.size) % tarfile.BLOCKSIZE
            if info.type == tarfile.XHDTYPE:
                pax = self._pax(self._exact(padded)[:info.size])
                continue
            if info.type in (tarfile.XGLTYPE,) + tarfile.GNU_TYPES:
                raise BackupError("refusing archive entry %r of type %r (GNU or global headers are not written by victor_backup)" % (info.name, info.type))
            self._apply(info, pax)
            pax = {}
            if info.type == tarfile.CONTTYPE:
                info.type = tarfile.REGTYPE
            size = info.size if info.isreg() else 0
            self.data_left = size
            self.left = size + (-size) % tarfile.BLOCKSIZE
            yield info

    @staticmethod
    def _apply(info, pax):
        try:
            for key, value in pax.items():
                if key == "path":
                    info.name = value.rstrip("/") if info.isdir() else value
                elif key == "linkpath":
                    info.linkname = value
                elif key in ("size", "uid", "gid"):
                    setattr(info, key, int(value))
                elif key == "mtime":
                    info.mtime = int(float(value))
                elif key.startswith("GNU.sparse"):
                    raise BackupError("refusing sparse archive entry %r" % info.name)
        except ValueError:
            raise tarfile.ReadError("invalid PAX header value")
        if info.size < 0:
            raise tarfile.ReadError("invalid PAX header value")

    @staticmethod
    def _pax(data):
        records = {}
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos)
            if space < 0 or not data[pos:space].isdigit():
                raise tarfile.ReadError("invalid PAX header")
            length = int(data[pos:space])
            record = data[space + 1:pos + length]
            if length < 5 or not record.endswith(b"\n") or b"=" not in record:
                raise tarfile.ReadError("invalid PAX header")
            key, value = record[:-1].split(b"=", 1)
            records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
            pos += length
        return records

    def read_block(self):
        """The next block of the current member's data as a memoryview (valid until the next call), or None at its end."""
        if not self.data_left:
            return None
        got = self.fileobj.readinto(self.view[:min(self.data_left, CHUNK)])
        if not got:
            raise tarfile.ReadError("unexpected end of data")
        self.data_left -= got
        self.left -= got
        return self.view[:got]


def read_archive(store, manifest, tools, dest=None, private=False, write=None, syncer=None, on_file=None):
    """Read one archive end to end; check its sha256 and every member's sha256.

    One pass: the archive is hashed while it is fed to zstd, which decompresses in its own
    process while this one parses tar and hashes (and writes) the members.  With dest,
    members are extracted there (safely; private: see extract_member); write, a set of
    member names, limits what is written (the rest is checked and hashed only).  on_file(name,
    path) is called for each written file whose sha256 matched.  Returns the list of problems
    (empty when the archive is intact).
    """
    check_manifest(manifest)
    expected = dict((f["path"], f) for f in manifest["files"] if f["type"] == "file" and f.get("stored", True))
    expected_links = dict((f["path"], f["target"]) for f in manifest["files"] if f["type"] == "symlink")
    seen = set()
    links = {}
    problems = []
    source = store.open_data(manifest)
    feeder, procs, out = open_archive_stream(source, tools, manifest.get("encrypted", False))
    try:
        tar = _TarStream(out)
        for member in tar:
            name = check_member_name(member.name)
            if name in seen:
                raise BackupError("archive entry %r appears twice" % name)
            seen.add(name)
            if dest is not None:
                written = write is None or name in write
                digest = extract_member(tar, member, dest, expected.get(name), links, private, written, syncer)
                if on_file is not None and written and digest is not None and digest == expected[name]["sha256"]:
                    on_file(name, os.path.join(dest, *name.split("/")))
            elif member.isreg():
                if name not in expected:
                    raise BackupError("archive entry %r is not in the manifest" % name)
                digest = _hash_member(tar, member)
            else:
                if member.issym():
                    check_link_target(name, member.linkname, links)
                    links[name] = member.linkname
                elif not member.isdir():
                    raise BackupError("refusing archive entry %r of type %r" % (name, member.type))
                digest = None
            if digest is not None and digest != expected[name]["sha256"]:
                problems.append("sha256 mismatch for %s" % name)
    except (tarfile.TarError, EOFError, OSError, BackupError) as exc:
        stage_errors = abort_read(feeder, procs, out)
        _close_quietly(source)
        if isinstance(exc, BackupError):
            raise
        # a decryption stage that failed explains the empty stream behind the tar error
        raise BackupError("archive %s is unreadable: %s" % (manifest["id"], _explain(stage_errors, tools) or exc))
    try:
        finish_read(feeder, procs, out)
    except BackupError as exc:
        _close_quietly(source)
        raise BackupError("archive %s is unreadable: %s" % (manifest["id"], _explain([str(exc)], tools)))
    _close_quietly(source)
    # the whole archive's links, in any order of members, and those recorded only in the manifest
    resolve_links(links)
    if links != expected_links:
        differ = sorted(set(links.items()) ^ set(expected_links.items()))
        problems.append("symlinks differ between the archive and the manifest: %s" % ", ".join("%s -> %s" % kv for kv in differ[:5]))
    if feeder.digest.hexdigest() != manifest["archive"]["sha256"]:
        problems.insert(0, "archive sha256 mismatch (expected %s, got %s)" % (manifest["archive"]["sha256"], feeder.digest.hexdigest()))
    if feeder.size != manifest["archive"]["size"]:
        problems.insert(0, "archive size mismatch (expected %d, got %d)" % (manifest["archive"]["size"], feeder.size))
    missing = sorted(set(expected) - seen)
    if missing:
        problems.append("files missing from the archive: %s" % ", ".join(missing[:10]))
    return problems


def _explain(errors, tools):
    """Stage errors as a message; age's 'no identity matched' names the identity used (never its content)."""
    text = "; ".join(errors)
    if "no identity matched" in text:
        return ("the age identity %s does not match this archive (it was encrypted to other recipients); "
                "use the identity whose public key was a recipient when the backup was made" % tools.identity_label())
    return text


def _close_quietly(handle):
    try:
        handle.close()
    except Exception:  # pylint: disable=broad-except
        pass


# --------------------------------------------------------------------------- local store

class LocalStore:
    """A backup repository in a local directory."""

    kind = "local"

    def __init__(self, path):
        if not isinstance(path, str) or not path or "\x00" in path:
            raise BackupError("repository %r is not a usable path (empty or holding a NUL byte)" % (path,))
        self.path = path

    def describe(self):
        return self.path

    def check(self, missing_ok=False):
        """True when the repository exists; False (missing_ok) or BackupError when it does not."""
        if os.path.isdir(self.path):
            return True
        if os.path.lexists(self.path):
            raise BackupError("repository %s exists but is not a directory" % self.path)
        if missing_ok:
            return False
        raise BackupError("repository %s does not exist (a typo? with missing_ok=true a missing repository "
                          "counts as holding no backup yet)" % self.path)

    def ensure(self):
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise BackupError("repository %s exists but is not a directory" % self.path)
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    def _data_path(self, manifest):
        name = manifest["archive"]["name"]
        if "/" in str(name):
            raise BackupError("manifest %s: refusing archive name %r outside the repository" % (manifest["id"], name))
        return confined(self.path, name, "archive name")

    def data_name(self, manifest):
        return manifest["archive"]["name"]

    def open_writer(self, name):
        tmp = os.path.join(self.path, ".%s.%s.part" % (name, uuid.uuid4().hex[:8]))
        handle = os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        return tmp, handle

    def commit_data(self, tmp, handle, name, size, sha256):
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        final = os.path.join(self.path, name)
        if os.path.getsize(tmp) != size:
            raise BackupError("archive on disk has %d bytes, expected %d" % (os.path.getsize(tmp), size))
        os.replace(tmp, final)
        fsync_dir(self.path)
        return {"location": final}

    def abort_data(self, tmp, handle):
        _close_quietly(handle)
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)

    def put_manifest(self, manifest):
        data = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
        write_file_atomic(os.path.join(self.path, manifest["id"] + MANIFEST_SUFFIX), data, 0o600)

    def list_manifests(self):
        result = []
        problems = []
        if not os.path.isdir(self.path):
            return result, problems
        for name in sorted(os.listdir(self.path)):
            if name.startswith(".") or not name.endswith(MANIFEST_SUFFIX):
                continue
            try:
                with open(os.path.join(self.path, name), "rb") as handle:
                    manifest = json.loads(handle.read().decode("utf-8"))
                if not isinstance(manifest, dict) or manifest.get("id") + MANIFEST_SUFFIX != name:
                    raise ValueError("not a manifest object, or its id does not match the file name")
                result.append(manifest)
            except (OSError, ValueError, TypeError) as exc:
                problems.append("unreadable manifest %s: %s" % (name, exc))
        return result, problems

    def open_data(self, manifest):
        path = self._data_path(manifest)
        try:
            return open(path, "rb")
        except OSError as exc:
            raise BackupError("archive of %s is missing: %s" % (manifest["id"], exc))

    def delete(self, manifest):
        """Manifest first, then data: an interrupted delete never leaves a listed broken backup."""
        check_manifest(manifest)
        data = self._data_path(manifest)
        os.unlink(confined(self.path, manifest["id"] + MANIFEST_SUFFIX, "manifest"))
        fsync_dir(self.path)
        if os.path.exists(data):
            os.unlink(data)

    def cleanup(self):
        """Remove leftovers of killed runs: *.part files and archives without a manifest."""
        removed = []
        if not os.path.isdir(self.path):
            return removed
        names = set(os.listdir(self.path))
        ids = set(n[:-len(MANIFEST_SUFFIX)] for n in names if n.endswith(MANIFEST_SUFFIX) and not n.startswith("."))
        for name in sorted(names):
            full = os.path.join(self.path, name)
            if name.startswith(".") and (name.endswith(".part") or name.endswith(".tmp")):
                os.unlink(full)
                removed.append(name)
            elif ".tar.zst" in name and not name.startswith(".") and name.split(".tar.zst")[0] not in ids:
                os.unlink(full)
                removed.append(name)
        return removed


# --------------------------------------------------------------------------- catalogue

def sort_manifests(manifests):
    """Oldest first, by the time recorded in the manifest (never by name)."""
    return sorted(manifests, key=lambda m: (parse_time(m["time"]), m["id"]))


def filter_manifests(manifests, backup_type=None, scope=None, since=None):
    result = []
    since_time = parse_time(since) if since else None
    for manifest in sort_manifests(manifests):
        if backup_type and manifest["type"] != backup_type:
            continue
        if scope and manifest["scope"] != scope:
            continue
        if since_time and parse_time(manifest["time"]) < since_time:
            continue
        result.append(manifest)
    return result


def summary(manifest):
    return {
        "id": manifest["id"], "time": manifest["time"], "type": manifest["type"], "scope": manifest["scope"],
        "parent": manifest.get("parent"), "host": manifest.get("host"), "victor_version": manifest.get("victor_version"),
        "archive": manifest["archive"]["name"], "size": manifest["archive"]["size"],
        "files": len([f for f in manifest["files"] if f["type"] == "file"]),
        "stored_files": len([f for f in manifest["files"] if f["type"] == "file" and f.get("stored", True)]),
        "encrypted": manifest.get("encrypted", False), "verified": manifest.get("verified"),
    }


def select_backup(manifests, backup_id=None, before=None, scope=None):
    """Pick a backup by id, by 'before' (newest at or before that time) or the latest."""
    ordered = sort_manifests(manifests)
    if backup_id and backup_id != "latest":
        for manifest in ordered:
            if manifest["id"] == backup_id:
                return manifest
        raise BackupError("no backup with id %s" % backup_id)
    candidates = ordered
    if scope and scope != "full":
        candidates = [m for m in candidates if m["scope"] in ("full", scope)]
    if before:
        limit = parse_time(before)
        candidates = [m for m in candidates if parse_time(m["time"]) <= limit]
        if not candidates:
            raise BackupError("no backup at or before %s" % format_time(limit))
    if not candidates:
        raise BackupError("the repository holds no backup")
    return candidates[-1]


def resolve_chain(manifests, manifest):
    """The list of manifests to apply, full first, ending with manifest."""
    by_id = dict((m["id"], m) for m in manifests)
    chain = [manifest]
    seen = set([manifest["id"]])
    while chain[0].get("parent"):
        parent_id = chain[0]["parent"]
        if parent_id in seen:
            raise BackupError("backup chain of %s loops at %s" % (manifest["id"], parent_id))
        if parent_id not in by_id:
            raise BackupError("backup %s needs its parent %s, which is missing" % (chain[0]["id"], parent_id))
        chain.insert(0, by_id[parent_id])
        seen.add(parent_id)
    if chain[0]["type"] != "full":
        raise BackupError("backup chain of %s does not start with a full backup" % manifest["id"])
    return chain


def chain_state(chain):
    """Files present after applying the chain: path -> file record (with the owning backup id)."""
    state = {}
    for manifest in chain:
        for path in manifest.get("deleted", []):
            state.pop(path, None)
        for record in manifest["files"]:
            item = dict(record)
            item["backup"] = manifest["id"] if record.get("stored", True) else state.get(record["path"], {}).get("backup")
            state[record["path"]] = item
    return state


# --------------------------------------------------------------------------- create

def create_backup(store, source, work_dir, tools, backup_type="full", scope="full", include=None, exclude=None,
                  include_cache=False, victor_version=None, host=None, now=None, lock_timeout=0.0, postgres=None):
    """Make one backup; returns its manifest.  Raises BackupError and leaves nothing listed on failure.

    postgres: backup_postgres.PostgresSource objects whose databases are dumped (pg_dump
    --format=custom) into the archive for the full and database scopes.
    """
    if backup_type not in ("full", "incremental"):
        raise BackupError("unknown backup type %r" % (backup_type,))
    store.ensure()
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    with Lock(os.path.join(work_dir, ".victor-backup.lock"), lock_timeout):
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
    snapper = _Background(_snapshot_all, entries, snapshots, checks)
    try:
        pg_details = []
        if scope in ("full", "database"):
            for index, pg_source in enumerate(postgres or []):
                dump = os.path.join(scratch, "pg-%d.pgdump" % index)
                details = pg_source.dump(dump, scratch)
                details["path"] = _pg().dump_relpath(pg_source.database, set(e["path"] for e in entries))
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


def _pg():
    # backup_postgres imports BackupError from here: import it when it is used.
    from ansible_collections.victor.ops.plugins.module_utils import backup_postgres  # pylint: disable=import-outside-toplevel
    return backup_postgres


# File times move in coarse ticks: a file changed in the tick we read it in keeps the mtime we
# recorded, so only a file older than this is trusted by stat next time (git's "racy clean").
RACY_SECONDS = 2
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


# --------------------------------------------------------------------------- verify

def verify_backup(store, manifests, manifest, tools, work_dir, record=True):
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


class _Background(threading.Thread):
    """Run func(*args) in a thread; wait() returns its result or raises what it raised."""

    def __init__(self, func, *args):
        super(_Background, self).__init__(daemon=True)
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
            checks.append((db["path"], _Background(_pg().check_dump, path, tools.pg_restore)))
        elif engine == "sqlite":
            checks.append((db["path"], _Background(integrity_check, path)))
    return checks


# --------------------------------------------------------------------------- restore

def restore_backup(store, manifests, manifest, tools, target, scope="full", safety_dir=None, now=None, postgres=None,
                   restore_postgres=True):
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
            pre_dump = os.path.join(staging, "pre-restore" + _pg().DUMP_SUFFIX)
            try:
                postgres.dump(pre_dump, staging)
            except BackupError as exc:
                raise BackupError("cannot take the safety dump of the database before the restore, nothing was changed: %s" % exc)
        moved = swap_in(staging, target, safety, files, scope)
        if pre_dump is not None:
            keep = os.path.join(safety, _pg().dump_relpath(postgres.database, set()))
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
        wanted = _pg().dump_relpath(postgres.database, set())
        if wanted not in dumps:
            raise BackupError("backup %s holds several PostgreSQL dumps (%s) and none of database %s; nothing was changed"
                              % (manifest["id"], ", ".join(sorted(dumps)), postgres.database))
        path = dumps[wanted]
    problems = _pg().check_dump(path, tools.pg_restore)
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
    wanted = dict((p, r) for p, r in state.items() if _in_scope(r, scope))
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
            checks.append((name, _Background(_prepare_database, path, modes.get(name, "delete"))))

    syncer = _Syncer()
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
        fsync_dir(root)  # the renamed entries are on disk before the swap
    return dict((p, r) for p, r in wanted.items() if p not in dumps), dumps


def _in_scope(record, scope):
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
            if journal_mode == "wal":
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
            result = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        result = ["cannot open: %s" % exc]
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    os.chmod(path, stat.S_IMODE(st.st_mode))
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
        fsync_dir(os.path.dirname(target))
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
    fsync_dir(target)
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
    pg_dir = os.path.join(safety, _pg().DUMP_DIR)
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
    if _inside(real_safety, real_target) or _inside(real_target, real_safety):
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
        fsync_dir(os.path.dirname(target))
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
