# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which files of the state directory a backup takes (scope, include/exclude patterns, the cache)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import os
import posixpath
import stat

from ansible_collections.victor.ops.plugins.module_utils.backup_common import ALWAYS_EXCLUDED, CONFIG_PATTERNS, BackupError
from ansible_collections.victor.ops.plugins.module_utils.backup_files import resolve_links
from ansible_collections.victor.ops.plugins.module_utils.backup_sqlite import is_sqlite_file


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


def select_files(source, scope, include, exclude, include_cache):
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
