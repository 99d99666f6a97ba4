# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every backup file shares: the repository format's constants, BackupError, UTC time
and two small helpers (close_quietly, Background).

Layout of a repository (local directory or S3 prefix)::

    <id>.tar.zst[.age]   one archive per backup (tar stream -> zstd -> age)
    <id>.manifest.json   written last; a backup exists only when its manifest does

A backup is made under a temporary name, fsynced and renamed; the manifest is written
the same way afterwards, so a killed run never leaves a listed partial backup.
Everything here runs on the managed node with the standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
import threading
import uuid


FORMAT_VERSION = 1
CHUNK = 1024 * 1024
MANIFEST_SUFFIX = ".manifest.json"
# Never archived: SQLite side files (the snapshot replaces them) and our own scratch.
ALWAYS_EXCLUDED = ("*-wal", "*-shm", "*-journal", ".victor-backup-*")
PARTIAL_MARKER = ".victor-backup-partial.json"
CONFIG_PATTERNS = ("*.yaml", "*.yml", "*.toml", "*.json", "*.env", "*.ini", "*.conf")
# Backup ids as new_backup_id makes them; never "/", never a leading dot or "..".
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
ARCHIVE_SUFFIXES = (".tar.zst", ".tar.zst.age")


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


def refuse_nul(params):
    """Module options holding a NUL byte are refused by name (os calls would raise ValueError)."""
    for key, value in sorted(params.items()):
        if isinstance(value, str) and "\x00" in value:
            raise BackupError("%s holds a NUL byte" % key)


def close_quietly(handle):
    try:
        handle.close()
    except Exception:  # pylint: disable=broad-except
        pass


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
