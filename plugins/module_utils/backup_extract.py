# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Safe extraction: reading an archive stream member by member, hashing every file and writing
only what is wanted, confined to the destination (no absolute paths, '..', links out, devices).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import tarfile
import threading

from ansible_collections.victor.ops.plugins.module_utils.backup_archive import abort_read, finish_read, open_archive_stream
from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import check_manifest
from ansible_collections.victor.ops.plugins.module_utils.backup_common import CHUNK, BackupError, close_quietly
from ansible_collections.victor.ops.plugins.module_utils.backup_files import follow_link, resolve_links, safe_relpath


def check_member_name(name):
    """Return the normalised relative path or raise for absolute paths and '..'."""
    return safe_relpath(name, "archive entry")


def check_link_target(name, target, links=None):
    """Symlinks may only point inside the target directory, also through the other links of the tree."""
    known = dict(links or {})
    known[name] = target
    follow_link(known, name, "symlink")
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
    unsynced = 0
    with os.fdopen(fd, "wb") as handle:
        while True:
            block = tar.read_block()
            if block is None:
                break
            digest.update(block)
            handle.write(block)
            unsynced += len(block)
            if syncer is not None and unsynced >= EARLY_SYNC_BYTES:
                # start the write-back of a large file while it streams, so that its final
                # fsync has little left to write (1 GiB database: 0.9 s after the member)
                handle.flush()
                syncer.add(path)
                unsynced = 0
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


EARLY_SYNC_BYTES = 64 << 20


class Syncer(threading.Thread):
    """fsync extracted files in a thread (one at a time, in order) while the next members stream in."""

    def __init__(self):
        super(Syncer, self).__init__(daemon=True)
        self.todo = []
        self.cond = threading.Condition()
        self.closed = False
        self.error = None
        self.start()

    def add(self, path):
        with self.cond:
            if not self.todo or self.todo[-1] != path:  # a waiting fsync of path covers this one
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
        close_quietly(source)
        if isinstance(exc, BackupError):
            raise
        # a decryption stage that failed explains the empty stream behind the tar error
        raise BackupError("archive %s is unreadable: %s" % (manifest["id"], _explain(stage_errors, tools) or exc))
    try:
        finish_read(feeder, procs, out)
    except BackupError as exc:
        close_quietly(source)
        raise BackupError("archive %s is unreadable: %s" % (manifest["id"], _explain([str(exc)], tools)))
    close_quietly(source)
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
