# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files on disk: fsync, atomic writes, sha256, and confinement of untrusted paths (archive
entries, manifest records, symlink targets) to the directory they belong in."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import uuid

from ansible_collections.victor.ops.plugins.module_utils.backup_common import CHUNK, BackupError

MAX_LINK_HOPS = 40


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
