"""victor_backup module_utils against real SQLite, zstd, tar and age."""
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import time

import pytest

import backup_calls as bc
from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import filter_manifests, resolve_chain, select_backup
from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError, parse_time
from ansible_collections.victor.ops.plugins.module_utils.backup_lock import Lock
from ansible_collections.victor.ops.plugins.module_utils.backup_sqlite import QuickCheck
from ansible_collections.victor.ops.plugins.module_utils.backup_store import LocalStore
from ansible_collections.victor.ops.plugins.module_utils import backup, backup_create, backup_restore

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")


def make_state(root, rows=200):
    state = root / "state"
    (state / "logs").mkdir(parents=True)
    (state / "cache").mkdir()
    (state / "rl_data").mkdir()
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("row%d" % i,) for i in range(rows)])
    conn.commit()
    (state / "profiles.yaml").write_text("default:\n  provider: ollama\n")
    (state / "logs" / "victor.log").write_text("line\n" * 5000)
    (state / "rl_data" / "q.json").write_text("{}")
    (state / "cache" / "cache-v2.sqlite3").write_bytes(b"cache")
    return state, conn


def crash_writer(db, rows):
    """Commit rows from a child that dies without closing: its WAL and -shm stay behind."""
    pid = os.fork()
    if pid == 0:
        conn = sqlite3.connect(str(db))
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [("late",)] * rows)
        conn.commit()
        os._exit(0)
    os.waitpid(pid, 0)


def tree_digest(path):
    """sha256 over every file's relative path and content (symlinks by target)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode())
            if os.path.islink(full):
                digest.update(os.readlink(full).encode())
            else:
                with open(full, "rb") as handle:
                    digest.update(handle.read())
    return digest.hexdigest()


def count_rows(db):
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def env(tmp_path):
    state, conn = make_state(tmp_path)
    store = LocalStore(str(tmp_path / "repo"))
    yield tmp_path, state, conn, store
    conn.close()


def test_full_backup_snapshot_includes_uncheckpointed_wal_and_excludes_cache(env):
    tmp, state, conn, store = env
    assert os.path.getsize(str(state / "victor.db-wal")) > 0  # rows live only in the WAL
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), host="h1")
    paths = [f["path"] for f in manifest["files"]]
    assert paths == ["logs/victor.log", "profiles.yaml", "rl_data/q.json", "victor.db"]
    assert manifest["databases"][0]["journal_mode"] == "wal"
    listed, problems = store.list_manifests()
    assert problems == [] and [m["id"] for m in listed] == [manifest["id"]]
    # the backup never checkpointed Victor's WAL: the main file still lacks the rows
    assert os.path.getsize(str(state / "victor.db-wal")) > 0
    work = tmp / "verify"
    result = bc.verify_backup(store, listed, manifest, bc.Tools(), str(work))
    assert result["ok"], result
    assert result["databases"] == {"victor.db": "ok"}
    assert store.list_manifests()[0][0]["verified"]["ok"] is True
    assert oct(os.stat(os.path.join(store.path, manifest["archive"]["name"])).st_mode & 0o777) == "0o600"


def test_restore_with_standard_tools_only(env):
    tmp, state, conn, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    out = tmp / "plain"
    out.mkdir()
    archive = os.path.join(store.path, manifest["archive"]["name"])
    subprocess.run("zstd -d -c %s | tar -x -C %s" % (archive, out), shell=True, check=True)
    for record in manifest["files"]:
        with open(str(out / record["path"]), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == record["sha256"], record["path"]
    assert count_rows(out / "victor.db") == 200
    check = subprocess.run(["sqlite3", str(out / "victor.db"), "PRAGMA integrity_check"], capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "ok"


@pytest.mark.skipif(not AGE or not AGE_KEYGEN, reason="age not installed (Debian package age)")
def test_encrypted_backup_roundtrip_and_standard_tools(env):
    tmp, state, conn, store = env
    key = tmp / "key.txt"
    subprocess.run([AGE_KEYGEN, "-o", str(key)], check=True, capture_output=True)
    os.chmod(str(key), 0o600)
    recipient = [line.split(": ")[1] for line in key.read_text().splitlines() if "public key" in line][0]
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(age_recipients=[recipient]))
    assert manifest["encrypted"] and manifest["archive"]["name"].endswith(".tar.zst.age")
    archive = os.path.join(store.path, manifest["archive"]["name"])
    with open(archive, "rb") as handle:
        assert handle.read(21) == b"age-encryption.org/v1"
    listed = store.list_manifests()[0]
    missing_key = bc.verify_backup(store, listed, manifest, bc.Tools(), str(tmp / "v0"), record=False)
    assert not missing_key["ok"] and "age_identity_file" in missing_key["problems"][0]
    assert bc.verify_backup(store, listed, manifest, bc.Tools(age_identity_file=str(key)), str(tmp / "v1"))["ok"]
    out = tmp / "plain"
    out.mkdir()
    subprocess.run("age -d -i %s %s | zstd -d | tar -x -C %s" % (key, archive, out), shell=True, check=True)
    assert count_rows(out / "victor.db") == 200
    conn.execute("DELETE FROM t")
    conn.commit()
    conn.close()
    bc.restore_backup(store, listed, manifest, bc.Tools(age_identity_file=str(key)), str(state))
    assert count_rows(state / "victor.db") == 200


def test_restore_replaces_state_keeps_safety_copy_and_drops_stale_wal(env):
    tmp, state, conn, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    conn.close()
    crash_writer(state / "victor.db", 50)
    before = tree_digest(str(state))
    assert (state / "victor.db-wal").exists()
    result = bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state))
    assert sorted(os.listdir(str(state))) == ["logs", "profiles.yaml", "rl_data", "victor.db"]  # no -wal/-shm, no cache
    assert count_rows(state / "victor.db") == 200
    conn2 = sqlite3.connect(str(state / "victor.db"))
    assert conn2.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # journal mode given back
    conn2.close()
    assert tree_digest(result["safety_copy"]) == before
    backup_restore.revert(str(state), result["safety_copy"])
    assert tree_digest(str(state)) == before
    assert count_rows(state / "victor.db") == 250


def test_database_scope_restore_moves_stale_wal_and_shm_into_safety_copy(env):
    tmp, state, conn, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), scope="database")
    assert [f["path"] for f in manifest["files"]] == ["victor.db"]
    conn.close()
    crash_writer(state / "victor.db", 30)
    assert (state / "victor.db-wal").exists()
    (state / "profiles.yaml").write_text("changed: true\n")
    result = bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state), scope="database",
                               safety_dir=str(tmp / "safety"))
    assert not (state / "victor.db-wal").exists() and not (state / "victor.db-shm").exists()
    assert sorted(os.listdir(str(tmp / "safety"))) == [".victor-backup-partial.json", "victor.db", "victor.db-shm", "victor.db-wal"]
    assert count_rows(state / "victor.db") == 200
    assert (state / "profiles.yaml").read_text() == "changed: true\n"  # out of scope, untouched
    backup_restore.revert(str(state), result["safety_copy"])
    assert count_rows(state / "victor.db") == 230


def test_incremental_chain_records_changes_and_deletions(env):
    tmp, state, conn, store = env
    full = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    (state / "rl_data" / "q.json").unlink()
    (state / "logs" / "new.log").write_text("new\n")
    conn.execute("INSERT INTO t (v) VALUES ('inc')")
    conn.commit()
    inc = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    assert inc["parent"] == full["id"]
    assert inc["deleted"] == ["rl_data/q.json"]
    stored = sorted(f["path"] for f in inc["files"] if f.get("stored", True))
    assert stored == ["logs/new.log", "victor.db"]
    assert inc["archive"]["size"] < full["archive"]["size"]
    listed = store.list_manifests()[0]
    assert [m["id"] for m in resolve_chain(listed, inc)] == [full["id"], inc["id"]]
    assert bc.verify_backup(store, listed, inc, bc.Tools(), str(tmp / "v"))["ok"]
    conn.close()
    shutil.rmtree(str(state))
    bc.restore_backup(store, listed, inc, bc.Tools(), str(state))
    assert count_rows(state / "victor.db") == 201
    assert not (state / "rl_data" / "q.json").exists()
    assert (state / "logs" / "new.log").read_text() == "new\n"
    assert (state / "logs" / "victor.log").read_text() == "line\n" * 5000


def test_incremental_needs_a_parent(env):
    tmp, state, _conn, store = env
    with pytest.raises(BackupError, match="make a full backup first"):
        bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    assert store.list_manifests() == ([], [])


@pytest.mark.parametrize("offset", ["start", "middle", "end"])
def test_flipped_byte_is_refused_by_verify_and_restore_and_live_data_is_untouched(env, offset):
    tmp, state, conn, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    conn.close()
    archive = os.path.join(store.path, manifest["archive"]["name"])
    size = os.path.getsize(archive)
    position = {"start": 10, "middle": size // 2, "end": size - 5}[offset]
    with open(archive, "r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)
        handle.seek(position)
        handle.write(bytes([byte[0] ^ 0x01]))
    listed = store.list_manifests()[0]
    result = bc.verify_backup(store, listed, manifest, bc.Tools(), str(tmp / "v"))
    assert not result["ok"] and result["problems"]
    before = tree_digest(str(state))
    with pytest.raises(BackupError, match="nothing was changed|unreadable|sha256"):
        bc.restore_backup(store, listed, manifest, bc.Tools(), str(state))
    assert tree_digest(str(state)) == before
    assert not [n for n in os.listdir(str(tmp)) if "before-restore" in n or n.startswith(".victor-backup-restore")]


def _forge_backup(store, members, files_records=None):
    """Write an archive with chosen tar members and a manifest that matches its bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    compressed = subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True, check=True).stdout
    store.ensure()
    ident = "20250101T000000Z-full-forged00"
    name = ident + ".tar.zst"
    with open(os.path.join(store.path, name), "wb") as handle:
        handle.write(compressed)
    records = files_records
    if records is None:
        records = [{"path": i.name, "type": "file", "kind": "data", "size": len(d), "sha256": hashlib.sha256(d).hexdigest(), "mode": "0644"}
                   for i, d in members if d is not None and i.isreg()]
    manifest = {"format": 1, "id": ident, "time": "2025-01-01T00:00:00Z", "type": "full", "scope": "full", "parent": None,
                "archive": {"name": name, "size": len(compressed), "sha256": hashlib.sha256(compressed).hexdigest()},
                "files": records, "deleted": [], "databases": [], "encrypted": False, "host": "h"}
    store.put_manifest(manifest)
    return manifest


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize("members,message", [
    ([_file("/etc/evil")], "absolute"),
    ([_file("../evil")], "leaves the target"),
    ([_file("logs/../../evil")], "leaves the target"),
    ([_link("out", "/etc")], "absolute target"),
    ([_link("out", "../../etc")], "outside the target"),
    ([_link("logs/out", "../../x")], "outside the target"),
    ([_link("hard", "/etc/passwd", tarfile.LNKTYPE)], "hard links"),
    ([_link("inside", "logs"), _file("inside/x")], "through the symlink"),
])
def test_restore_refuses_entries_escaping_the_target(tmp_path, members, message):
    state, conn = make_state(tmp_path)
    conn.close()
    store = LocalStore(str(tmp_path / "repo"))
    records = [{"path": i.name, "type": "file", "kind": "data", "size": len(d), "sha256": hashlib.sha256(d).hexdigest(), "mode": "0644"}
               for i, d in members if d is not None]
    manifest = _forge_backup(store, members, records)
    before = tree_digest(str(state))
    with pytest.raises(BackupError, match=message):
        bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state))
    assert tree_digest(str(state)) == before
    assert not (tmp_path / "evil").exists() and not os.path.exists("/etc/evil")
    assert not bc.verify_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(tmp_path / "v"), record=False)["ok"]


def test_restore_of_a_backup_whose_database_is_corrupt_changes_nothing(tmp_path):
    state, conn = make_state(tmp_path)
    conn.close()
    store = LocalStore(str(tmp_path / "repo"))
    good = (state / "victor.db").read_bytes()
    corrupt = bytearray(good if len(good) > 8192 else good + b"\0" * 8192)
    corrupt[4096:4096 + 200] = b"\xff" * 200  # smash the first table page
    data = bytes(corrupt)
    info = _file("victor.db", data)[0]
    records = [{"path": "victor.db", "type": "file", "kind": "db", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mode": "0644"}]
    manifest = _forge_backup(store, [(info, data)], records)
    manifest["databases"] = [{"path": "victor.db", "journal_mode": "wal"}]
    store.put_manifest(manifest)
    before = tree_digest(str(state))
    with pytest.raises(BackupError, match="integrity_check, nothing was changed"):
        bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state))
    assert tree_digest(str(state)) == before
    result = bc.verify_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(tmp_path / "v"), record=False)
    assert not result["ok"] and "integrity_check" in result["problems"][0]


def test_failed_check_after_swap_puts_the_safety_copy_back(env, monkeypatch):
    tmp, state, conn, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    conn.execute("INSERT INTO t (v) VALUES ('after')")
    conn.commit()
    conn.close()
    before = tree_digest(str(state))
    monkeypatch.setattr(backup_restore, "check_databases", lambda target, files: ["victor.db: simulated failure"])
    with pytest.raises(BackupError, match="previous state was put back"):
        bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state))
    assert tree_digest(str(state)) == before
    assert count_rows(state / "victor.db") == 201
    assert not [n for n in os.listdir(str(tmp)) if "before-restore" in n]


def test_failing_pipeline_stage_registers_nothing(env):
    tmp, state, _conn, store = env
    tools = bc.Tools(zstd="false")
    with pytest.raises(BackupError, match="archive stage failed|empty"):
        bc.create_backup(store, str(state), str(tmp / "work"), tools)
    assert store.list_manifests() == ([], [])
    assert os.listdir(store.path) == []


def test_missing_encryption_tool_registers_nothing(env):
    tmp, state, _conn, store = env
    tools = bc.Tools(age="/nonexistent/age", age_recipients=["age1qqqq"])
    with pytest.raises((BackupError, OSError)):
        bc.create_backup(store, str(state), str(tmp / "work"), tools)
    assert store.list_manifests() == ([], [])
    assert [n for n in os.listdir(store.path) if not n.startswith(".victor-backup.lock")] == []


@pytest.mark.parametrize("state_args", [{"state": "create"}, {"state": "verify"}, {"state": "prune", "keep_last": 1},
                                        {"state": "restore"}, {"state": "revert"}])
def test_concurrent_run_fails_clearly_on_the_lock(env, state_args):
    # every state that writes holds the one lock (backup_lock.work_lock), taken by backup.run for module and CLI alike
    tmp, state, _conn, store = env
    work = tmp / "work"
    work.mkdir()
    first = bc.create_backup(store, str(state), str(work), bc.Tools())
    bc.create_backup(store, str(state), str(work), bc.Tools())
    safety = tmp / "safety"
    shutil.copytree(str(state), str(safety))
    params = backup.with_defaults(dict(state_args, source=str(state), repository=store.path, work_dir=str(work), lock_timeout=0,
                                       safety_copy=str(safety) if state_args["state"] == "revert" else None))
    with Lock(str(work / ".victor-backup.lock"), 0):
        with pytest.raises(BackupError, match="holds the lock"):
            backup.run(params, shutil.which, False)
    assert len(store.list_manifests()[0]) == 2 and first["id"] in [m["id"] for m in store.list_manifests()[0]]
    assert backup.run(params, shutil.which, False)["changed"]


def test_revert_never_creates_a_repository(env):
    # the roles revert with the default storage options: on a host backing up to S3 no local repository may appear
    tmp, state, _conn, store = env
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    result = bc.restore_backup(store, store.list_manifests()[0], manifest, bc.Tools(), str(state))
    params = backup.with_defaults({"state": "revert", "source": str(state), "repository": str(tmp / "none"),
                                   "safety_copy": result["safety_copy"]})
    assert backup.run(params, shutil.which, False)["changed"]
    assert not (tmp / "none").exists() and not os.path.exists(result["safety_copy"])


def test_selection_by_time_recorded_in_manifest_not_by_name(env):
    tmp, state, _conn, store = env
    first = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), now=parse_time("2025-01-20T10:00:00Z"))
    second = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), now=parse_time("2025-01-20T12:00:00Z"))
    # rename ids so that name order disagrees with time order
    listed = store.list_manifests()[0]
    swapped = []
    for manifest, new_id in ((first, "zzz-full"), (second, "aaa-full")):
        data = json.loads(json.dumps([m for m in listed if m["id"] == manifest["id"]][0]))
        data["id"] = new_id
        swapped.append(data)
    assert select_backup(swapped)["id"] == "aaa-full"
    assert select_backup(swapped, before="2025-01-20T11:00:00Z")["id"] == "zzz-full"
    assert select_backup(swapped, before="2025-01-20 12:00:00")["id"] == "aaa-full"
    with pytest.raises(BackupError, match="no backup at or before"):
        select_backup(swapped, before="2025-01-19T00:00:00Z")
    assert [m["id"] for m in filter_manifests(swapped, None, None, None)] == ["zzz-full", "aaa-full"]


def test_orphans_of_killed_runs_are_cleaned_and_never_listed(env):
    tmp, state, _conn, store = env
    store.ensure()
    orphan = os.path.join(store.path, "20250101T000000Z-full-deadbeef.tar.zst")
    part = os.path.join(store.path, ".20250101T000000Z-full-cafe.tar.zst.1234.part")
    for path in (orphan, part):
        with open(path, "wb") as handle:
            handle.write(b"partial")
    assert store.list_manifests() == ([], [])
    manifest = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    assert sorted(manifest["cleaned"]) == sorted([os.path.basename(orphan), os.path.basename(part)])
    assert not os.path.exists(orphan) and not os.path.exists(part)


def test_bad_input_is_a_clear_error(tmp_path):
    store = LocalStore(str(tmp_path / "repo"))
    with pytest.raises(BackupError, match="does not exist"):
        bc.create_backup(store, str(tmp_path / "missing"), str(tmp_path / "work"), bc.Tools())
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="nothing to back up"):
        bc.create_backup(store, str(tmp_path / "empty"), str(tmp_path / "work"), bc.Tools())
    assert store.list_manifests() == ([], [])
    with pytest.raises(BackupError, match="cannot parse time"):
        parse_time("yesterday")
    with pytest.raises(BackupError, match="holds no backup"):
        select_backup([])


def test_cli_used_by_the_timers(env, capsys):
    from ansible_collections.victor.ops.plugins.module_utils import backup_cli
    tmp, state, _conn, store = env
    config = tmp / "backup.json"
    config.write_text(json.dumps({"source": str(state), "repository": store.path, "keep_last": 1}))
    assert backup_cli.main(["--config", str(config), "create", "--type", "full"]) == 0
    assert backup_cli.main(["--config", str(config), "create", "--type", "incremental", "--prune"]) == 0
    assert backup_cli.main(["--config", str(config), "verify"]) == 0
    listed = store.list_manifests()[0]
    assert sorted(m["type"] for m in listed) == ["full", "incremental"]  # the full is the kept incremental's parent
    capsys.readouterr()
    broken = tmp / "broken.json"
    broken.write_text(json.dumps({"source": str(tmp / "missing"), "repository": store.path}))
    assert backup_cli.main(["--config", str(broken), "create"]) == 1
    assert "does not exist" in capsys.readouterr().err


def _age_plain_files(state, seconds=3600):
    stamp = time.time() - seconds
    for root, _dirs, files in os.walk(str(state)):
        for name in files:
            if not name.startswith("victor.db"):
                os.utime(os.path.join(root, name), (stamp, stamp))


def _hash_reads(monkeypatch):
    """Names of the files backup_create.sha256_file reads from now on."""
    read = []
    real = backup_create.sha256_file
    monkeypatch.setattr(backup_create, "sha256_file", lambda path: read.append(os.path.basename(path)) or real(path))
    return read


def test_incremental_skips_unchanged_files_by_stat_and_catches_same_size_rewrites(env, monkeypatch):
    tmp, state, conn, store = env
    _age_plain_files(state)
    full = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    log = [f for f in full["files"] if f["path"] == "logs/victor.log"][0]
    assert log["mtime_ns"] and log["ino"] and "mtime_ns" not in [f for f in full["files"] if f["path"] == "victor.db"][0]
    read = _hash_reads(monkeypatch)
    inc = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    assert [f["path"] for f in inc["files"] if f.get("stored", True)] == []
    assert [name for name in read if not name.startswith("db-")] == []  # plain files were not read, only the DB snapshot
    (state / "logs" / "victor.log").write_text("LINE\n" * 5000)  # same size, new content, new mtime
    inc2 = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    assert [f["path"] for f in inc2["files"] if f.get("stored", True)] == ["logs/victor.log"]
    conn.close()
    shutil.rmtree(str(state))
    bc.restore_backup(store, store.list_manifests()[0], inc2, bc.Tools(), str(state))
    assert (state / "logs" / "victor.log").read_text() == "LINE\n" * 5000


def test_file_changed_in_the_tick_it_was_read_is_hashed_next_time(env, monkeypatch):
    tmp, state, _conn, store = env
    _age_plain_files(state)
    log = state / "logs" / "victor.log"
    log.write_text("line\n" * 5000)  # modified just now: its mtime may not move on the next change
    full = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    records = dict((f["path"], f) for f in full["files"])
    assert "mtime_ns" not in records["logs/victor.log"] and "mtime_ns" in records["profiles.yaml"]
    stamp = os.stat(str(log)).st_mtime_ns
    log.write_text("LINE\n" * 5000)  # same size; put the recorded mtime back, as a same-tick write leaves it
    os.utime(str(log), ns=(stamp, stamp))
    read = _hash_reads(monkeypatch)
    inc = bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools(), backup_type="incremental")
    assert "victor.log" in read and "profiles.yaml" not in read
    assert [f["path"] for f in inc["files"] if f.get("stored", True)] == ["logs/victor.log"]


def test_snapshot_failing_quick_check_registers_nothing(env, monkeypatch):
    tmp, state, _conn, store = env
    checked = []

    def corrupt(self):
        checked.append(self.path)
        self.result = ["*** in database main ***", "Page 3 is never used"]

    monkeypatch.setattr(QuickCheck, "run", corrupt)
    with pytest.raises(BackupError, match="fails quick_check: .*Page 3 is never used"):
        bc.create_backup(store, str(state), str(tmp / "work"), bc.Tools())
    assert len(checked) == 1 and checked[0].endswith(".sqlite")
    assert store.list_manifests() == ([], [])
    assert os.listdir(store.path) == []
