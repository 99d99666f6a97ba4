# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The archive pipeline: tar -> zstd (-> age) in child processes, written and read through pipes, and the
age identity given as text (IdentityFile)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import time

from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError, CHUNK

# File times move in coarse ticks: a file changed in the tick we read it in keeps the mtime we
# recorded, so only a file older than this is trusted by stat next time (git's "racy clean").
RACY_SECONDS = 2


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

    def __init__(self, compression_level, threads, zstd="zstd", age="age",
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
