"""Retention: restic forget --keep-* calendar semantics plus chain and verified protection."""
import datetime

import pytest

from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError
from ansible_collections.victor.ops.plugins.module_utils.backup_retention import plan


def _m(ident, time, btype="full", parent=None, verified=None, scope="full", host="h"):
    return {"id": ident, "time": time, "type": btype, "parent": parent, "scope": scope, "host": host,
            "verified": {"ok": verified, "time": time} if verified is not None else None}


def _daily(start, days, hour=2):
    base = datetime.datetime.fromisoformat(start)
    return [_m("d%03d" % i, (base + datetime.timedelta(days=i, hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")) for i in range(days)]


# 2025-01-01 is a Wednesday; ISO week 1 of 2025 runs Mon 2024-12-30 .. Sun 2025-01-05.
CASES = [
    # (name, manifests, keep, expected kept ids)
    ("keep-last", _daily("2025-01-01", 5), {"last": 2}, {"d004", "d003"}),
    ("daily-7-of-10", _daily("2025-01-01", 10), {"daily": 7}, {"d%03d" % i for i in range(3, 10)}),
    ("daily-newest-of-the-day-wins",
     [_m("a", "2025-01-01T01:00:00Z"), _m("b", "2025-01-01T23:00:00Z"), _m("c", "2025-01-02T01:00:00Z")],
     {"daily": 2}, {"b", "c"}),
    ("weekly-iso-weeks",
     # Sun 2025-01-05 is week 1; Mon 2025-01-06 week 2; Sun 2025-01-12 week 2; Mon 2025-01-13 week 3
     [_m("w1", "2025-01-05T10:00:00Z"), _m("w2a", "2025-01-06T10:00:00Z"), _m("w2b", "2025-01-12T10:00:00Z"),
      _m("w3", "2025-01-13T10:00:00Z")],
     {"weekly": 2}, {"w3", "w2b"}),
    ("weekly-across-new-year",
     # Tue 2024-12-31 and Wed 2025-01-01 are both ISO 2025-W01
     [_m("old", "2024-12-29T10:00:00Z"), _m("y1", "2024-12-31T10:00:00Z"), _m("y2", "2025-01-01T10:00:00Z")],
     {"weekly": 2}, {"y2", "old"}),
    ("monthly-12", _daily("2024-01-01", 400)[::10], {"monthly": 12},
     None),  # checked separately below
    ("rules-are-ored",
     _daily("2025-01-01", 40), {"daily": 3, "weekly": 2, "monthly": 2},
     # daily: d039,d038,d037 ; weekly (newest of each ISO week): d039 (Sun 02-09, W06), d032 (Sun 02-02, W05)
     # monthly: d039 (Feb), d030 (Jan 31)
     {"d039", "d038", "d037", "d032", "d030"}),
    ("order-by-manifest-time-not-name",
     [_m("zzz", "2025-01-01T10:00:00Z"), _m("aaa", "2025-01-03T10:00:00Z"), _m("mmm", "2025-01-02T10:00:00Z")],
     {"last": 1}, {"aaa"}),
    ("unlimited-daily", _daily("2025-01-01", 5), {"daily": -1}, {"d000", "d001", "d002", "d003", "d004"}),
    ("chain-parent-of-kept-incremental-is-kept",
     [_m("f1", "2025-01-01T03:00:00Z"), _m("i1", "2025-01-02T02:00:00Z", "incremental", "f1"),
      _m("i2", "2025-01-03T02:00:00Z", "incremental", "i1")],
     {"last": 1}, {"i2", "i1", "f1"}),
    ("chain-unneeded-old-chain-goes",
     [_m("f0", "2024-12-20T03:00:00Z"), _m("i0", "2024-12-21T02:00:00Z", "incremental", "f0"),
      _m("f1", "2025-01-05T03:00:00Z"), _m("i1", "2025-01-06T02:00:00Z", "incremental", "f1")],
     {"daily": 2}, {"i1", "f1"}),
    ("newest-verified-is-never-deleted",
     [_m("a", "2025-01-01T02:00:00Z", verified=True), _m("b", "2025-01-02T02:00:00Z", verified=False),
      _m("c", "2025-01-03T02:00:00Z")],
     {"last": 1}, {"c", "a"}),
    ("groups-by-scope",
     [_m("full1", "2025-01-01T03:00:00Z"), _m("db1", "2025-01-01T04:00:00Z", scope="database"),
      _m("db2", "2025-01-01T05:00:00Z", scope="database")],
     {"last": 1}, {"full1", "db2"}),
    ("hourly",
     [_m("h1", "2025-01-01T01:10:00Z", scope="database"), _m("h1b", "2025-01-01T01:50:00Z", scope="database"),
      _m("h2", "2025-01-01T02:10:00Z", scope="database"), _m("h3", "2025-01-01T03:10:00Z", scope="database")],
     {"hourly": 2}, {"h3", "h2"}),
    ("timezone-offsets-are-compared-in-utc",
     # 2025-01-02T00:30+02:00 is 2025-01-01T22:30Z: the same UTC day as "a"
     [_m("a", "2025-01-01T10:00:00Z"), _m("b", "2025-01-02T00:30:00+02:00"), _m("c", "2025-01-02T10:00:00Z")],
     {"daily": 5}, {"b", "c"}),
]


@pytest.mark.parametrize("name,manifests,keep,expected", [c for c in CASES if c[3] is not None], ids=[c[0] for c in CASES if c[3] is not None])
def test_retention_table(name, manifests, keep, expected):
    result = plan(manifests, keep)
    assert set(result["keep"]) == expected, (name, result["keep"])
    assert set(result["forget"]) == {m["id"] for m in manifests} - expected
    for ident in result["forget"]:
        assert result["forget_reasons"][ident] == "not kept by any rule"


def test_monthly_keeps_newest_of_each_of_the_last_twelve_months():
    manifests = _daily("2024-01-01", 400)
    result = plan(manifests, {"monthly": 12})
    kept = sorted(m["time"][:10] for m in manifests if m["id"] in result["keep"])
    # the data ends on 2025-02-03: Feb 2025 (newest), then the last day of Jan 2025 ... Mar 2024
    assert len(kept) == 12
    assert kept[-1] == "2025-02-03" and kept[-2] == "2025-01-31" and kept[0] == "2024-03-31"


def test_reasons_explain_each_kept_backup():
    manifests = [_m("f1", "2025-01-01T03:00:00Z", verified=True), _m("i1", "2025-01-02T02:00:00Z", "incremental", "f1")]
    result = plan(manifests, {"daily": 1})
    assert result["keep"]["i1"] == ["daily 2025-01-02"]
    assert result["keep"]["f1"] == ["newest verified backup", "parent of kept i1"]


def test_no_rule_refuses_to_forget_everything():
    with pytest.raises(BackupError, match="no retention rule"):
        plan(_daily("2025-01-01", 3), {})
    with pytest.raises(BackupError, match="keep_daily"):
        plan(_daily("2025-01-01", 3), {"daily": -5})
