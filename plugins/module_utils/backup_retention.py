# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention with restic's calendar semantics (``restic forget --keep-*``).

Backups are grouped by (host, scope) like restic groups snapshots by host and paths,
ordered newest first by the time in their manifest (never by name).  For each rule
(last, hourly, daily, weekly, monthly, yearly) a backup is kept when its calendar bucket
differs from the bucket of the previous backup that rule kept, until the rule's count is
used up (-1: unlimited).  The rules are ORed.  On top of restic:

* the newest backup whose verification passed is always kept;
* every ancestor of a kept incremental backup is kept (a chain stays restorable).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError, parse_time

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _bucket(rule, when, index):
    if rule == "last":
        return index  # every backup is its own bucket
    if rule == "hourly":
        return (when.year, when.month, when.day, when.hour)
    if rule == "daily":
        return (when.year, when.month, when.day)
    if rule == "weekly":
        iso = when.isocalendar()
        return (iso[0], iso[1])
    if rule == "monthly":
        return (when.year, when.month)
    return (when.year,)


def plan(manifests, keep=None):
    """Return {"keep": {id: [reasons]}, "forget": [ids oldest first], "forget_reasons": {id: reason}}.

    keep maps rule name -> count (0 or missing: rule off, -1: unlimited).
    """
    keep = dict((rule, int((keep or {}).get(rule) or 0)) for rule in RULES)
    for rule, count in keep.items():
        if count < -1:
            raise BackupError("keep_%s must be -1 (unlimited), 0 (off) or a positive count, got %d" % (rule, count))
    if not any(keep.values()):
        raise BackupError("no retention rule is set: refusing to forget every backup")
    groups = {}
    for manifest in manifests:
        groups.setdefault((manifest.get("host"), manifest.get("scope")), []).append(manifest)
    reasons = {}
    for members in groups.values():
        ordered = sorted(members, key=lambda m: (parse_time(m["time"]), m["id"]), reverse=True)
        remaining = dict(keep)
        last_bucket = dict((rule, None) for rule in RULES)
        for index, manifest in enumerate(ordered):
            when = parse_time(manifest["time"])
            for rule in RULES:
                if remaining[rule] == 0:
                    continue
                bucket = _bucket(rule, when, index)
                if bucket != last_bucket[rule]:
                    last_bucket[rule] = bucket
                    if remaining[rule] > 0:
                        remaining[rule] -= 1
                    reasons.setdefault(manifest["id"], []).append("%s %s" % (rule, _label(rule, when)))
    by_time = sorted(manifests, key=lambda m: (parse_time(m["time"]), m["id"]))
    verified = [m for m in by_time if (m.get("verified") or {}).get("ok")]
    if verified:
        reasons.setdefault(verified[-1]["id"], []).append("newest verified backup")
    by_id = dict((m["id"], m) for m in manifests)
    for manifest in reversed(by_time):
        if manifest["id"] not in reasons:
            continue
        child = manifest
        while child.get("parent"):
            parent = by_id.get(child["parent"])
            if parent is None:
                break
            note = "parent of kept %s" % child["id"]
            if note not in reasons.setdefault(parent["id"], []):
                reasons[parent["id"]].append(note)
            child = parent
    forget = [m["id"] for m in by_time if m["id"] not in reasons]
    forget_reasons = dict((ident, "not kept by any rule") for ident in forget)
    return {"keep": reasons, "forget": forget, "forget_reasons": forget_reasons}


def _label(rule, when):
    if rule == "last":
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if rule == "hourly":
        return when.strftime("%Y-%m-%dT%H")
    if rule == "daily":
        return when.strftime("%Y-%m-%d")
    if rule == "weekly":
        iso = when.isocalendar()
        return "%d-W%02d" % (iso[0], iso[1])
    if rule == "monthly":
        return when.strftime("%Y-%m")
    return when.strftime("%Y")
