# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local repository (a directory of archives and manifests); backup_s3 has the S3 one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import uuid

from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import check_manifest
from ansible_collections.victor.ops.plugins.module_utils.backup_common import MANIFEST_SUFFIX, BackupError, close_quietly
from ansible_collections.victor.ops.plugins.module_utils.backup_files import confined, fsync_path, write_file_atomic


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
        fsync_path(self.path)
        return {"location": final}

    def abort_data(self, tmp, handle):
        close_quietly(handle)
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
        fsync_path(self.path)
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
