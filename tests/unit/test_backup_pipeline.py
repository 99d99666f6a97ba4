"""Issue 19: the one-pass verify/restore pipeline and the incremental-never-bigger rule, against real SQLite and zstd.

Speed is measured by bench/backup_bench.py, never here; these tests prove that the faster
paths refuse what the old ones refused and change nothing live when they fail.
"""
import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import tarfile

import pytest

import backup_calls as bc
from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import resolve_chain
from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError
from ansible_collections.victor.ops.plugins.module_utils.backup_extract import extract_member
from ansible_collections.victor.ops.plugins.module_utils.backup_restore import check_databases
from ansible_collections.victor.ops.plugins.module_utils.backup_store import LocalStore
from ansible_collections.victor.ops.plugins.module_utils import backup_extract, backup_restore

from test_backup import count_rows, make_state, tree_digest


@pytest.fixture
def env(tmp_path):
    state, conn = make_state(tmp_path)
    conn.close()
    store = LocalStore(str(tmp_path / "repo"))
    return tmp_path, state, store


def _touch_every_file(state, keep_profiles=False):
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("INSERT INTO t (v) VALUES ('new')")
    conn.commit()
    conn.close()
    if not keep_profiles:
        (state / "profiles.yaml").write_text("default:\n  provider: anthropic\n")
    (state / "logs" / "victor.log").write_text("line\n" * 5001)
    (state / "rl_data" / "q.json").write_text('{"q": 1}')


def _leftovers(tmp):
    return [n for n in os.listdir(str(tmp)) if "before-restore" in n or n.startswith(".victor-backup-restore")]


@pytest.mark.parametrize("kept", ["nothing", "only profiles.yaml (under 1 % of the bytes)"])
def test_incremental_that_would_store_about_everything_is_stored_as_a_full(env, kept):
    tmp, state, store = env
    full = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    _touch_every_file(state, keep_profiles=kept != "nothing")
    second = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    assert second["type"] == "full" and second["parent"] is None and second["requested_type"] == "incremental"
    assert "-full-" in second["id"] and second["deleted"] == []
    assert all(f.get("stored", True) for f in second["files"])
    assert sorted(f["path"] for f in second["files"]) == ["logs/victor.log", "profiles.yaml", "rl_data/q.json", "victor.db"]
    listed = store.list_manifests()[0]
    assert [m["id"] for m in resolve_chain(listed, second)] == [second["id"]]  # no dependency on the old full
    LocalStore.delete(store, full)
    listed = store.list_manifests()[0]
    assert bc.verify_backup(store, listed, second, bc.Tools(), str(tmp / "v"))["ok"]
    bc.restore_backup(store, listed, second, bc.Tools(), str(state))
    assert count_rows(state / "victor.db") == 201
    assert (state / "rl_data" / "q.json").read_text() == '{"q": 1}'


def test_incremental_with_an_unchanged_file_stays_incremental_and_smaller_than_a_full(env):
    tmp, state, store = env
    bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    with open(str(state / "logs" / "victor.log"), "a") as handle:
        handle.write("appended\n")
    inc = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    full_now = bc.create_backup(store, str(state), str(tmp / "work2"), bc.Tools())
    assert inc["type"] == "incremental" and "requested_type" not in inc
    assert inc["archive"]["size"] < full_now["archive"]["size"]


def _forge_archive(store, manifest, data):
    """Replace the archive bytes and make the manifest's size and sha256 match them, so only the pipeline can notice."""
    with open(os.path.join(store.path, manifest["archive"]["name"]), "wb") as handle:
        handle.write(data)
    manifest["archive"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    store.put_manifest(manifest)


@pytest.mark.parametrize("damage", ["truncated", "corrupt block"])
def test_broken_zstd_stream_fails_verify_and_restore_clearly_with_nothing_restored(env, damage):
    tmp, state, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    with open(os.path.join(store.path, manifest["archive"]["name"]), "rb") as handle:
        data = handle.read()
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        middle = len(data) // 2
        data = data[:middle] + bytes(b ^ 0x55 for b in data[middle:middle + 64]) + data[middle + 64:]
    _forge_archive(store, manifest, data)
    listed = store.list_manifests()[0]
    result = bc.verify_backup(store, listed, manifest, bc.Tools(), str(tmp / "v"), record=False)
    assert not result["ok"]
    assert any("unreadable" in p or "sha256 mismatch" in p for p in result["problems"]), result["problems"]
    (state / "marker").write_text("live")
    before = tree_digest(str(state))
    with pytest.raises(BackupError, match="unreadable|nothing was changed"):
        bc.restore_backup(store, listed, manifest, bc.Tools(), str(state))
    assert tree_digest(str(state)) == before
    assert not _leftovers(tmp)


def test_truncated_stream_names_zstd(env):
    tmp, state, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    with open(os.path.join(store.path, manifest["archive"]["name"]), "rb") as handle:
        data = handle.read()
    _forge_archive(store, manifest, data[:len(data) // 2])
    with pytest.raises(BackupError, match="unreadable: .*zstd"):
        bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state))


@pytest.mark.parametrize("zstd", ["false", "/nonexistent/zstd"])
def test_failing_or_missing_zstd_is_reported_and_nothing_is_restored(env, zstd):
    tmp, state, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    listed = store.list_manifests()[0]
    result = bc.verify_backup(store, listed, manifest, bc.Tools(zstd=zstd), str(tmp / "v"), record=False)
    assert not result["ok"] and "zstd" in result["problems"][0]
    before = tree_digest(str(state))
    with pytest.raises(BackupError, match="zstd"):
        bc.restore_backup(store, listed, manifest, bc.Tools(zstd=zstd), str(state))
    assert tree_digest(str(state)) == before
    assert not _leftovers(tmp)


def test_failing_fsync_of_a_staged_file_stops_the_restore_before_the_swap(env, monkeypatch):
    tmp, state, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    before = tree_digest(str(state))
    real = os.fsync

    def fsync(fd):
        if os.readlink("/proc/self/fd/%d" % fd).endswith("victor.log"):
            raise OSError(5, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(BackupError, match="cannot fsync .*nothing was changed"):
        bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state))
    assert tree_digest(str(state)) == before
    assert not _leftovers(tmp)


def test_restore_of_a_chain_writes_only_the_final_files_and_checks_the_final_database(env, monkeypatch):
    tmp, state, store = env
    bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("INSERT INTO t (v) VALUES ('inc')")
    conn.commit()
    conn.close()
    inc = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    assert [f["path"] for f in inc["files"] if f.get("stored", True)] == ["victor.db"]
    written, checked = [], []
    real_extract, real_prepare = extract_member, backup_restore._prepare_database

    def extract(tar, member, dest, expected, links, private=False, write=True, syncer=None):
        if write and member.isreg():
            written.append((os.path.basename(dest), member.name))
        return real_extract(tar, member, dest, expected, links, private, write, syncer)

    def prepare(path, mode):
        checked.append((os.path.basename(os.path.dirname(path)), mode))
        return real_prepare(path, mode)

    monkeypatch.setattr(backup_extract, "extract_member", extract)
    monkeypatch.setattr(backup_restore, "_prepare_database", prepare)
    listed = store.list_manifests()[0]
    bc.restore_backup(store, listed, inc, bc.Tools(), str(state))
    # the full's victor.db is superseded: hashed against the manifest, never written
    assert sorted(name for _archive, name in written) == ["logs/victor.log", "profiles.yaml", "rl_data/q.json", "victor.db"]
    assert ("%s" % inc["id"], "victor.db") in written
    assert checked == [(inc["id"], "wal")]
    assert count_rows(state / "victor.db") == 201
    with open(str(state / "victor.db"), "rb") as handle:
        assert handle.read(20)[18:20] == b"\x02\x02"  # WAL mode given back


def test_database_that_does_not_open_in_place_after_the_swap_is_reported(tmp_path):
    (tmp_path / "victor.db").write_bytes(b"not a database" * 100)
    problems = check_databases(str(tmp_path), {"victor.db": {"kind": "db"}, "profiles.yaml": {"kind": "config"}})
    assert len(problems) == 1 and problems[0].startswith("victor.db: cannot open in place")


def test_verify_reports_a_corrupt_database_in_the_parent_of_a_chain(env):
    """The parent's check runs in a thread while the incremental is read: its failure still counts."""
    tmp, state, store = env
    full = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    with open(str(state / "logs" / "victor.log"), "a") as handle:
        handle.write("more\n")
    inc = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    assert inc["type"] == "incremental"
    # rebuild the full's archive with a smashed table page and matching sha256s
    work = tmp / "rebuild"
    work.mkdir()
    archive = os.path.join(store.path, full["archive"]["name"])
    subprocess.run("zstd -d -q -c %s | tar -x -C %s" % (archive, work), shell=True, check=True)
    db = bytearray((work / "victor.db").read_bytes())
    db[4096:4096 + 200] = b"\xff" * 200
    (work / "victor.db").write_bytes(bytes(db))
    subprocess.run("tar --format=pax -c -C %s profiles.yaml logs/victor.log rl_data/q.json victor.db | zstd -q -c > %s"
                   % (work, archive), shell=True, check=True)
    for record in full["files"]:
        if record["path"] == "victor.db":
            record["sha256"] = hashlib.sha256(bytes(db)).hexdigest()
    with open(archive, "rb") as handle:
        _forge_archive(store, full, handle.read())
    listed = store.list_manifests()[0]
    result = bc.verify_backup(store, listed, inc, bc.Tools(), str(tmp / "v"), record=False)
    assert not result["ok"]
    assert any(p.startswith(full["id"] + ": victor.db fails integrity_check") for p in result["problems"]), result["problems"]


def test_long_and_non_ascii_names_round_trip_through_the_pax_reader(env):
    tmp, state, store = env
    deep = state / "rl_data" / ("d" * 60) / ("é" * 40)
    deep.mkdir(parents=True)
    (deep / ("f" * 120 + ".json")).write_text("deep")
    os.symlink("f" * 120 + ".json", str(deep / "link"))
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    listed = store.list_manifests()[0]
    assert bc.verify_backup(store, listed, manifest, bc.Tools(), str(tmp / "v"), record=False)["ok"]
    shutil.rmtree(str(state / "rl_data"))
    bc.restore_backup(store, listed, manifest, bc.Tools(), str(state))
    assert (deep / ("f" * 120 + ".json")).read_text() == "deep"
    assert os.readlink(str(deep / "link")) == "f" * 120 + ".json" and (deep / "link").read_text() == "deep"


def _write_tar(members, fmt):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt, pax_headers={"comment": "global"} if fmt == tarfile.PAX_FORMAT else None) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.mark.parametrize("fmt,message", [("gnu", "GNU or global"), ("pax-global", "GNU or global"), ("bad-pax", "unreadable: invalid PAX")])
def test_archives_this_collection_never_writes_are_refused_clearly(env, fmt, message):
    tmp, state, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    name = "logs/" + "n" * 120  # longer than ustar's 100 characters: a GNU 'L' or a PAX header
    if fmt == "bad-pax":
        info = tarfile.TarInfo("x")
        info.type = tarfile.XHDTYPE
        body = b"11 size=-5\n"
        info.size = len(body)
        member = tarfile.TarInfo(name[:90])
        member.size = 1
        data = (info.tobuf(tarfile.USTAR_FORMAT) + body + b"\0" * (512 - len(body))
                + member.tobuf(tarfile.USTAR_FORMAT) + b"x" + b"\0" * 511 + b"\0" * 1024)
    else:
        data = _write_tar([(name, b"x")], tarfile.GNU_FORMAT if fmt == "gnu" else tarfile.PAX_FORMAT)
    compressed = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    manifest["files"].append({"path": name, "type": "file", "kind": "data", "size": 1,
                              "sha256": hashlib.sha256(b"x").hexdigest(), "mode": "0644"})
    _forge_archive(store, manifest, compressed)
    listed = store.list_manifests()[0]
    result = bc.verify_backup(store, listed, manifest, bc.Tools(), str(tmp / "v"), record=False)
    assert not result["ok"] and message in result["problems"][0], result["problems"]
    before = tree_digest(str(state))
    with pytest.raises(BackupError, match=message):
        bc.restore_backup(store, listed, manifest, bc.Tools(), str(state))
    assert tree_digest(str(state)) == before
    assert not _leftovers(tmp)
