# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lock that keeps two backup runs on one host from writing at once."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import time

from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError

LOCK_NAME = ".victor-backup.lock"


def work_lock(work_dir, timeout):
    """The lock every state that writes (create, verify, prune, restore, revert) holds, in work_dir (created 0700)."""
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    return Lock(os.path.join(work_dir, LOCK_NAME), timeout)


class Lock:
    """An exclusive fcntl lock on a file; waits up to timeout seconds, then fails clearly."""

    def __init__(self, path, timeout):
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
