# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalogue of a repository: loading, sorting, filtering and choosing manifests, and resolving
incremental chains.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError, check_manifest, format_time, parse_time


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
