# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalogue of a repository: checking, loading, sorting, filtering and choosing manifests, and resolving
incremental chains.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ansible_collections.victor.ops.plugins.module_utils.backup_common import (
    ARCHIVE_SUFFIXES, ID_PATTERN, MANIFEST_SUFFIX, BackupError, format_time, parse_time,
)
from ansible_collections.victor.ops.plugins.module_utils.backup_files import resolve_links, safe_relpath


def load_manifests(store, missing_ok):
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


def sort_manifests(manifests):
    """Oldest first, by the time recorded in the manifest (never by name)."""
    return sorted(manifests, key=lambda m: (parse_time(m["time"]), m["id"]))


def filter_manifests(manifests, backup_type, scope, since):
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
