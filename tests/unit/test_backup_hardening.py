"""Hostile repository content, overlapping paths and bad arguments (issue 13, 14): real files, tar, zstd and age.

Each test names the escape it closes; "nothing outside changed" is asserted by snapshotting
the directories around the target before and after.
"""
import hashlib
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
import zipfile

import backup_calls as bc
import module_runner
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st


from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import check_manifest, load_manifests
from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError, MANIFEST_SUFFIX
from ansible_collections.victor.ops.plugins.module_utils.backup_extract import read_archive
from ansible_collections.victor.ops.plugins.module_utils.backup_files import confined
from ansible_collections.victor.ops.plugins.module_utils.backup_store import LocalStore
from ansible_collections.victor.ops.plugins.module_utils import backup_restore, backup_verify
from ansible_collections.victor.ops.plugins.modules import victor_backup, victor_backup_info

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
needs_age = pytest.mark.skipif(not AGE or not AGE_KEYGEN, reason="age not installed (Debian package age)")


def snapshot(path):
    """Every entry below path: relative name -> (type, content digest or link target, mode)."""
    result = {}
    for root, dirs, files in os.walk(str(path)):
        for name in dirs + files:
            full = os.path.join(root, name)
            st_ = os.lstat(full)
            if stat.S_ISLNK(st_.st_mode):
                value = ("link", os.readlink(full))
            elif stat.S_ISDIR(st_.st_mode):
                value = ("dir", None)
            else:
                with open(full, "rb") as handle:
                    value = ("file", hashlib.sha256(handle.read()).hexdigest())
            result[os.path.relpath(full, str(path))] = value + (stat.S_IMODE(st_.st_mode),)
    return result


def make_state(root):
    state = root / "home" / "state"
    (state / "logs").mkdir(parents=True)
    (state / "profiles.yaml").write_text("default: {}\n")
    (state / "logs" / "victor.log").write_text("line\n" * 50)
    return state


run = module_runner.run_module  # run(module, args, capsys, check_mode=False) -> (failed, result)


def forge(repo, members, records=None, ident="20250101T000000Z-full-forged00", time="2025-01-01T00:00:00Z", extra=None):
    """An archive with chosen tar members and a manifest matching its bytes (records default: the files)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    compressed = subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True, check=True).stdout
    os.makedirs(str(repo), mode=0o700, exist_ok=True)
    name = ident + ".tar.zst"
    with open(os.path.join(str(repo), name), "wb") as handle:
        handle.write(compressed)
    if records is None:
        records = [{"path": i.name, "type": "file", "kind": "data", "size": len(d), "sha256": hashlib.sha256(d).hexdigest(),
                    "mode": "0644"} for i, d in members if d is not None and i.isreg()]
        records += [{"path": i.name, "type": "symlink", "target": i.linkname, "kind": "data"} for i, _d in members if i.issym()]
    manifest = {"format": 1, "id": ident, "time": time, "type": "full", "scope": "full", "parent": None,
                "archive": {"name": name, "size": len(compressed), "sha256": hashlib.sha256(compressed).hexdigest()},
                "files": records, "deleted": [], "databases": [], "encrypted": False, "host": "h"}
    manifest.update(extra or {})
    with open(os.path.join(str(repo), ident + MANIFEST_SUFFIX), "w") as handle:
        json.dump(manifest, handle)
    return manifest


def tfile(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def tlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


# ----------------------------------------------------------------------------- 1. revert overlap

@pytest.mark.parametrize("safety", ["{t}", "{t}/.", "{t}/logs", "{p}", "{t}/../state"])
@pytest.mark.parametrize("check_mode", [False, True])
def test_revert_refuses_a_safety_copy_overlapping_the_target(tmp_path, capsys, safety, check_mode):
    state = make_state(tmp_path)
    before = snapshot(tmp_path)
    args = {"state": "revert", "target": str(state), "safety_copy": safety.format(t=state, p=state.parent),
            "repository": str(tmp_path / "repo")}
    failed, result = run(victor_backup, args, capsys, check_mode)
    assert failed and result.get("changed") is not True
    assert "one is inside the other" in result["msg"] and "nothing was changed" in result["msg"]
    assert snapshot(tmp_path) == before


def test_revert_through_a_symlink_to_the_target_is_refused(tmp_path):
    state = make_state(tmp_path)
    os.symlink(str(state), str(tmp_path / "alias"))
    before = snapshot(tmp_path)
    with pytest.raises(BackupError, match="one is inside the other"):
        backup_restore.revert(str(state), str(tmp_path / "alias"))
    assert snapshot(tmp_path) == before


def test_restore_refuses_a_safety_copy_inside_the_target(tmp_path):
    state = make_state(tmp_path)
    store = LocalStore(str(tmp_path / "repo"))
    manifest = bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools())
    before = snapshot(state.parent)
    with pytest.raises(BackupError, match="one is inside the other"):
        bc.restore_backup(store, [manifest], manifest, bc.Tools(), str(state), safety_dir=str(state / "keep"))
    assert snapshot(state.parent) == before


# ----------------------------------------------------------------------------- 2. paths from manifests

def test_prune_never_follows_an_archive_name_out_of_the_repository(tmp_path, capsys):
    state = make_state(tmp_path)
    repo = tmp_path / "repo"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    failed, created = run(victor_backup, {"source": str(state), "repository": str(repo)}, capsys)
    assert not failed
    forge(repo, [tfile("a")], ident="20200101T000000Z-full-evil0000", time="2020-01-01T00:00:00Z",
          extra={"archive": {"name": "../victim.txt", "size": 8, "sha256": "0" * 64}})
    args = {"state": "prune", "repository": str(repo), "keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}
    for check_mode in (True, False):
        failed, result = run(victor_backup, args, capsys, check_mode)
        assert not failed, result
        assert result["forget"] == [] and list(result["keep"]) == [created["backup"]["id"]]
        assert any("refusing archive name '../victim.txt'" in p for p in result["problems"])
    assert victim.read_text() == "precious"
    assert os.path.exists(str(repo / "20200101T000000Z-full-evil0000.manifest.json"))  # reported, not followed
    with pytest.raises(BackupError, match="refusing archive name"):
        LocalStore(str(repo)).delete(json.loads((repo / "20200101T000000Z-full-evil0000.manifest.json").read_text()))
    assert victim.read_text() == "precious"


def test_config_entry_leaving_the_target_is_refused_on_restore(tmp_path):
    state = make_state(tmp_path)
    victim = tmp_path / "victim.yaml"
    victim.write_text("mine: true\n")
    repo = tmp_path / "repo"
    data = b"evil: true\n"
    records = [{"path": "../../victim.yaml", "type": "file", "kind": "config", "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "mode": "0644"}]
    manifest = forge(repo, [tfile("profiles.yaml", data)], records)
    before = snapshot(tmp_path)
    with pytest.raises(BackupError, match="leaves the target"):
        bc.restore_backup(LocalStore(str(repo)), [manifest], manifest, bc.Tools(), str(state), scope="config")
    assert snapshot(tmp_path) == before
    listed, problems = load_manifests(LocalStore(str(repo)), False)
    assert listed == [] and "leaves the target" in problems[0]


def test_confined_resolves_symlinks_already_on_disk(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink("../outside", str(tmp_path / "base" / "logs"))
    assert confined(str(tmp_path / "base"), "a/b") == str(tmp_path / "base" / "a" / "b")
    for name in ("logs/x", "../x", "/etc/x", "a/../../x", "", "a\x00b"):
        with pytest.raises(BackupError, match="refusing"):
            confined(str(tmp_path / "base"), name)


# ----------------------------------------------------------------------------- 3. symlinks on restore and verify

@pytest.mark.parametrize("members,records,message", [
    # the chain resolves to the target's parent only when the links are followed, not as text
    ([tlink("sub/up", ".."), tlink("esc", "sub/up/..")], None, "outside the target"),
    ([tlink("esc", "sub/up/.."), tlink("sub/up", "..")], None, "outside the target"),
    ([tlink("a", "b"), tlink("b", "a")], None, "too many levels"),
    # a symlink listed only in the manifest is checked the same way
    ([tfile("x")], [{"path": "esc", "type": "symlink", "target": "../../etc/passwd", "kind": "data"}], "outside the target"),
    ([tfile("x")], [{"path": "../../../x", "type": "symlink", "target": "y", "kind": "data"}], "leaves the target"),
    ([tfile("x")], [{"path": "sub/up", "type": "symlink", "target": "..", "kind": "data"},
                    {"path": "esc", "type": "symlink", "target": "sub/up/..", "kind": "data"}], "outside the target"),
])
def test_symlinks_are_resolved_through_each_other_and_refused(tmp_path, members, records, message):
    state = make_state(tmp_path)
    repo = tmp_path / "repo"
    manifest = forge(repo, members, records)
    before = snapshot(tmp_path)
    store = LocalStore(str(repo))
    with pytest.raises(BackupError, match=message):
        bc.restore_backup(store, [manifest], manifest, bc.Tools(), str(state))
    result = bc.verify_backup(store, [manifest], manifest, bc.Tools(), str(tmp_path / "v"), record=False)
    assert not result["ok"] and any(message in p for p in result["problems"]), result
    shutil.rmtree(str(tmp_path / "v"))
    assert snapshot(tmp_path) == before


def test_a_symlink_only_in_the_manifest_is_a_verify_problem(tmp_path):
    repo = tmp_path / "repo"
    records = [{"path": "x", "type": "file", "kind": "data", "size": 1, "sha256": hashlib.sha256(b"x").hexdigest(), "mode": "0644"},
               {"path": "cfg", "type": "symlink", "target": "x", "kind": "data"}]
    manifest = forge(repo, [tfile("x")], records)
    result = bc.verify_backup(LocalStore(str(repo)), [manifest], manifest, bc.Tools(), str(tmp_path / "v"), record=False)
    assert not result["ok"] and "symlinks differ between the archive and the manifest: cfg -> x" in result["problems"][0]


def test_inside_symlinks_still_restore(tmp_path):
    state = make_state(tmp_path)
    os.symlink("logs/victor.log", str(state / "current.log"))
    os.symlink("../profiles.yaml", str(state / "logs" / "profiles.yaml"))
    store = LocalStore(str(tmp_path / "repo"))
    manifest = bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools())
    assert bc.verify_backup(store, [manifest], manifest, bc.Tools(), str(tmp_path / "v"))["ok"]
    bc.restore_backup(store, [manifest], manifest, bc.Tools(), str(state))
    assert os.readlink(str(state / "current.log")) == "logs/victor.log" and (state / "current.log").read_text() == "line\n" * 50


# ----------------------------------------------------------------------------- 4. state symlinks leaving the tree

@pytest.mark.parametrize("target", ["/etc", "../..", "logs/../.."])
def test_backup_of_a_state_symlink_leaving_the_tree_fails_clearly(tmp_path, capsys, target):
    state = make_state(tmp_path)
    os.symlink(target, str(state / "etc-link"))
    repo = tmp_path / "repo"
    for check_mode in (True, False):
        failed, result = run(victor_backup, {"source": str(state), "repository": str(repo)}, capsys, check_mode)
        assert failed and "etc-link" in result["msg"] and "add it to exclude" in result["msg"], result
    assert not [n for n in os.listdir(str(repo)) if not n.startswith(".victor-backup.lock")] if repo.exists() else True
    failed, result = run(victor_backup, {"source": str(state), "repository": str(repo), "exclude": ["etc-link"]}, capsys)
    assert not failed
    manifests, _problems = load_manifests(LocalStore(str(repo)), False)
    assert bc.verify_backup(LocalStore(str(repo)), manifests, manifests[0], bc.Tools(), str(tmp_path / "v"))["ok"]


# ----------------------------------------------------------------------------- 6. encrypted verify

def _keys(tmp_path):
    keys = []
    for name in ("key.txt", "other.txt"):
        path = tmp_path / name
        subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
        public = [l.split(": ")[1] for l in path.read_text().splitlines() if l.startswith("# public key: ")][0]
        keys.append((str(path), public))
    return keys


@needs_age
def test_encrypted_verify_keeps_decrypted_files_private_in_a_0755_work_dir(tmp_path, monkeypatch):
    state = make_state(tmp_path)
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("CREATE TABLE t (v)")
    conn.commit()
    conn.close()
    (key, public), _other = _keys(tmp_path)
    store = LocalStore(str(tmp_path / "repo"))
    manifest = bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools(age_recipients=[public]))
    work = tmp_path / "shared-work"
    work.mkdir(mode=0o755)
    os.chmod(str(work), 0o755)
    seen = {}
    real = read_archive

    def spy(store_, manifest_, tools, dest=None, private=False, write=None):
        problems = real(store_, manifest_, tools, dest, private, write)
        for root, dirs, files in os.walk(str(work)):
            for name in dirs + files:
                full = os.path.join(root, name)
                if full.startswith(os.path.join(str(work), ".victor-backup-verify-")):
                    seen[os.path.relpath(full, str(work))] = stat.S_IMODE(os.lstat(full).st_mode)
        return problems

    monkeypatch.setattr(backup_verify, "read_archive", spy)
    assert bc.verify_backup(store, [manifest], manifest, bc.Tools(age_identity_file=key), str(work))["ok"]
    files = [p for p in seen if p.endswith("victor.db")]  # verify writes only the databases, for their checks
    assert len(files) == 1 and all(seen[p] == 0o600 for p in files), seen
    assert not [p for p in seen if p.endswith(("victor.log", "profiles.yaml"))], seen
    assert all(mode == 0o700 for path, mode in seen.items() if path not in files), seen
    assert not [n for n in os.listdir(str(work)) if n.startswith(".victor-backup-verify-")]


@needs_age
def test_verify_with_the_wrong_identity_names_the_key_file(tmp_path, capsys):
    state = make_state(tmp_path)
    (_key, public), (other, _public) = _keys(tmp_path)
    repo = tmp_path / "repo"
    failed, created = run(victor_backup, {"source": str(state), "repository": str(repo), "age_recipients": [public]}, capsys)
    assert not failed
    failed, result = run(victor_backup, {"state": "verify", "repository": str(repo), "age_identity_file": other}, capsys)
    assert failed and "the age identity in %s does not match this archive" % other in result["msg"], result["msg"]
    assert "AGE-SECRET-KEY" not in json.dumps(result) and "empty file" not in result["msg"]
    secret = open(other).read().strip().splitlines()[-1]
    failed, result = run(victor_backup, {"state": "verify", "repository": str(repo), "age_identity": secret}, capsys)
    assert failed and "the age identity given in age_identity does not match" in result["msg"]
    assert secret not in json.dumps(result)


@needs_age
def test_encrypted_backup_is_verified_with_an_identity_given_as_text(tmp_path, capsys, monkeypatch):
    """Issue 14 item 5: the identity reaches the verifying run as a no_log value, 0600 in a temp file, never argv."""
    state = make_state(tmp_path)
    (key, public), _other = _keys(tmp_path)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    argvs = []
    real_popen = subprocess.Popen

    def popen(argv, *args, **kwargs):
        if argv[0].endswith("age") and "--decrypt" in argv:
            identity = argv[argv.index("-i") + 1]
            argvs.append((argv, stat.S_IMODE(os.stat(identity).st_mode), stat.S_IMODE(os.stat(os.path.dirname(identity)).st_mode)))
        return real_popen(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    repo = tmp_path / "repo"
    failed, created = run(victor_backup, {"source": str(state), "repository": str(repo), "age_recipients": [public]}, capsys)
    assert not failed and created["backup"]["encrypted"] is True
    secret = open(key).read()
    failed, result = run(victor_backup, {"state": "verify", "repository": str(repo), "backup_id": created["backup"]["id"],
                                         "age_identity": secret}, capsys)
    assert not failed and result["verification"]["ok"], result
    assert argvs and all(mode == 0o600 and dmode == 0o700 for _a, mode, dmode in argvs)
    assert all(secret.strip().splitlines()[-1] not in " ".join(a) for a, _m, _d in argvs)
    assert os.listdir(str(private_tmp)) == []  # the identity file and its directory are gone
    listed = load_manifests(LocalStore(str(repo)), False)[0]
    assert listed[0]["verified"]["ok"] is True


# ----------------------------------------------------------------------------- 7. malformed manifests, NUL

@pytest.mark.parametrize("content", ["[]", "null", '"text"', "{}"])
def test_malformed_manifests_are_reported_not_a_traceback(tmp_path, capsys, content):
    state = make_state(tmp_path)
    repo = tmp_path / "repo"
    failed, created = run(victor_backup, {"source": str(state), "repository": str(repo)}, capsys)
    (repo / "20200101T000000Z-full-broken00.manifest.json").write_text(content)
    no_time = json.loads((repo / (created["backup"]["id"] + MANIFEST_SUFFIX)).read_text())
    no_time.pop("time")
    no_time["id"] = "20200101T000000Z-full-notime00"
    (repo / "20200101T000000Z-full-notime00.manifest.json").write_text(json.dumps(no_time))
    failed, info = run(victor_backup_info, {"repository": str(repo)}, capsys)
    assert not failed and [b["id"] for b in info["backups"]] == [created["backup"]["id"]]
    assert len(info["problems"]) == 2 and any("has no time" in p for p in info["problems"]), info["problems"]
    failed, pruned = run(victor_backup, {"state": "prune", "repository": str(repo), "keep_last": 1}, capsys)
    assert not failed and pruned["forget"] == [] and len(pruned["problems"]) == 2


def test_nul_and_non_directory_repositories_are_clear_errors(tmp_path, capsys):
    state = make_state(tmp_path)
    for module, args in ((victor_backup_info, {}), (victor_backup, {"source": str(state)}), (victor_backup, {"state": "verify"})):
        failed, result = run(module, dict(args, repository=str(tmp_path / "re\x00po")), capsys)
        assert failed and "repository holds a NUL byte" in result["msg"]
        (tmp_path / "file").write_text("x")
        failed, result = run(module, dict(args, repository=str(tmp_path / "file")), capsys)
        assert failed and "exists but is not a directory" in result["msg"] and "FileExistsError" not in result["msg"]


# ----------------------------------------------------------------------------- 8. missing repositories, victor_version

def test_missing_repository_fails_unless_missing_ok(tmp_path, capsys):
    missing = str(tmp_path / "typo")
    failed, result = run(victor_backup_info, {"repository": missing}, capsys)
    assert failed and "repository %s does not exist" % missing in result["msg"]
    failed, result = run(victor_backup, {"state": "verify", "repository": missing}, capsys)
    assert failed and "does not exist" in result["msg"]
    failed, result = run(victor_backup_info, {"repository": missing, "missing_ok": True}, capsys)
    assert not failed and result["backups"] == []
    failed, result = run(victor_backup, {"state": "prune", "repository": missing, "missing_ok": True}, capsys)
    assert not failed and result["forget"] == [] and not os.path.exists(missing)


def test_manifest_records_the_installed_victor_version(tmp_path, capsys):
    """The version comes from the real victor-ai wheel's dist-info, laid out as pip installs it in a venv."""
    wheelhouse = os.environ.get("VICTOR_OPS_WHEELHOUSE", "")
    wheels = sorted(n for n in os.listdir(wheelhouse) if n.startswith("victor_ai-")) if os.path.isdir(wheelhouse) else []
    if not wheels:
        pytest.skip("no victor-ai wheel in the wheelhouse (make wheelhouse)")
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    with zipfile.ZipFile(os.path.join(wheelhouse, wheels[-1])) as wheel:
        metadata = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")][0]
        wheel.extract(metadata, str(site))
    version = wheels[-1].split("-")[1]
    state = make_state(tmp_path)
    failed, result = run(victor_backup, {"source": str(state), "repository": str(tmp_path / "repo"), "victor_venv": str(venv)}, capsys)
    assert not failed and result["manifest"]["victor_version"] == version and result["backup"]["victor_version"] == version
    failed, result = run(victor_backup, {"source": str(state), "repository": str(tmp_path / "repo"), "victor_venv": str(venv),
                                         "victor_version": "1.2.3"}, capsys)
    assert result["manifest"]["victor_version"] == "1.2.3"


# ----------------------------------------------------------------------------- property: hostile repositories

_COMPONENT = st.sampled_from(["a", "b", "logs", "..", ".", "sub", "up", "victor.db", "profiles.yaml"])
_REL = st.lists(_COMPONENT, min_size=1, max_size=4).map("/".join)
_NAME = st.one_of(_REL, _REL.map(lambda p: "/" + p), st.just("OUTSIDE/x"), _REL.map(lambda p: "../" + p))
_TARGET = st.one_of(_REL, st.just("OUTSIDE"), st.just("/etc"), _REL.map(lambda p: "../" + p), st.just(".."))
_ENTRY = st.tuples(st.sampled_from(["file", "symlink", "manifest-symlink"]), _NAME, _TARGET)


@settings(max_examples=max(20, settings.default.max_examples // 10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(_ENTRY, min_size=1, max_size=5))
def test_hostile_repository_content_never_changes_anything_outside_the_target(entries):
    with tempfile.TemporaryDirectory() as tmp:
        outside = os.path.join(tmp, "outside")
        os.makedirs(os.path.join(outside, "d"))
        with open(os.path.join(outside, "keep.txt"), "w") as handle:
            handle.write("keep")
        state = os.path.join(tmp, "home", "state")
        os.makedirs(os.path.join(state, "logs"))
        with open(os.path.join(state, "profiles.yaml"), "w") as handle:
            handle.write("a: 1\n")
        members, records = [], []
        for kind, name, target in entries:
            name = name.replace("OUTSIDE", outside)
            target = target.replace("OUTSIDE", outside)
            if kind == "file":
                members.append(tfile(name, b"hostile"))
                records.append({"path": name, "type": "file", "kind": "config", "size": 7,
                                "sha256": hashlib.sha256(b"hostile").hexdigest(), "mode": "0644"})
            else:
                if kind == "symlink":
                    members.append(tlink(name, target))
                records.append({"path": name, "type": "symlink", "target": target, "kind": "data"})
        repo = os.path.join(tmp, "repo")
        try:
            manifest = forge(repo, members, records)
        except (ValueError, tarfile.TarError):
            return  # tarfile cannot even write it
        before_outside = snapshot(outside)
        store = LocalStore(repo)
        listed, _problems = load_manifests(store, False)
        bc.verify_backup(store, [manifest], manifest, bc.Tools(), os.path.join(tmp, "v"), record=False)
        for scope in ("config", "full"):
            try:
                bc.restore_backup(store, [manifest], manifest, bc.Tools(), state, scope=scope)
            except (BackupError, OSError):
                pass
        assert snapshot(outside) == before_outside
        assert sorted(os.listdir(tmp)) == ["home", "outside", "repo", "v"]
        assert all(n == "state" or n.startswith("state.before-restore-") for n in os.listdir(os.path.join(tmp, "home")))
        real_state = os.path.realpath(state)
        for root, dirs, files in os.walk(state):
            for name in dirs + files:
                full = os.path.join(root, name)
                if os.path.islink(full):
                    resolved = os.path.realpath(full)
                    assert resolved == real_state or resolved.startswith(real_state + os.sep), (full, os.readlink(full))
        if listed:  # a manifest load_manifests accepts is one verify and restore accept as safe
            check_manifest(listed[0])


# The module and the scheduled CLI run the same code: the same bad input is refused with the same message.
SHARED_REFUSALS = [
    ({"backup_id": "latest", "before": "2025-01-20"}, "parameters are mutually exclusive: backup_id|before"),
    ({"age_identity": "AGE-SECRET-KEY-1X", "age_identity_file": "/nonexistent"},
     "parameters are mutually exclusive: age_identity|age_identity_file"),
    ({"storage": "s3"}, "storage is s3 but all of the following are missing: s3_bucket"),
    ({"login_host": "127.0.0.1", "login_password": "pw"},
     "login_host, login_password given without login_db: set login_db to the PostgreSQL database to back up"),
    ({"login_db": "checkpoints", "connect_timeout": 0}, "connect_timeout must be 1-3600 seconds (got 0)"),
    ({"compression_level": 0}, "compression_level must be 1-22, got 0"),
]


@pytest.mark.parametrize("bad, message", SHARED_REFUSALS)
def test_module_and_cli_refuse_the_same_input_with_the_same_message(tmp_path, capsys, bad, message):
    from ansible_collections.victor.ops.plugins.module_utils import backup_cli
    state = make_state(tmp_path)
    args = dict(bad, source=str(state), repository=str(tmp_path / "repo"), state="verify")
    failed, result = run(victor_backup, args, capsys)
    assert failed and result["msg"].startswith(message), result["msg"]
    config = tmp_path / "backup.json"
    config.write_text(json.dumps(dict(bad, source=str(state), repository=str(tmp_path / "repo"))))
    assert backup_cli.main(["--config", str(config), "verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("victor-backup verify failed: " + result["msg"]) and "pw" not in err, err
    assert not (tmp_path / "repo").exists()


def test_module_and_cli_reach_the_same_state_runner_and_listing(tmp_path, capsys, monkeypatch):
    from ansible_collections.victor.ops.plugins.module_utils import backup, backup_cli
    calls = []
    monkeypatch.setattr(backup, "run", lambda params, find_tool, check_mode: calls.append(("run", params["state"])) or dict(
        changed=False, backup={"id": "x"}, verification={"ok": True}, chain=["x"], safety_copy="/s", forget=[], keep={}))
    monkeypatch.setattr(backup, "list_backups", lambda params, *filters: calls.append(("list", filters)) or ([], []))
    config = tmp_path / "backup.json"
    config.write_text(json.dumps({"repository": str(tmp_path / "repo")}))
    for command, state in (("create", "create"), ("verify", "verify"), ("restore", "restore"), ("prune", "prune")):
        del calls[:]
        run(victor_backup, {"state": state, "repository": str(tmp_path / "repo")}, capsys)
        assert backup_cli.main(["--config", str(config), command] + (["latest"] if command == "restore" else [])) == 0
        capsys.readouterr()
        assert calls == [("run", state), ("run", state)]
    del calls[:]
    run(victor_backup_info, {"repository": str(tmp_path / "repo")}, capsys)
    assert backup_cli.main(["--config", str(config), "list"]) == 0
    assert calls == [("list", (None, None, None)), ("list", (None, None, None))]


@pytest.mark.parametrize("config, message", [
    ({"postgres_url": "postgresql://victor@db/victor"}, "postgres_url is no longer an option; it became the PostgreSQL connection options"),
    ({"repositry": "/var/backups/victor"}, "unknown key repositry"),
    ({"postgres": {"db": "victor"}}, "unknown key postgres.db (use login_db)"),
])
def test_cli_refuses_unknown_config_keys_by_name(tmp_path, capsys, config, message):
    from ansible_collections.victor.ops.plugins.module_utils import backup_cli
    path = tmp_path / "backup.json"
    path.write_text(json.dumps(dict(config, source=str(make_state(tmp_path)))))
    assert backup_cli.main(["--config", str(path), "create"]) == 1
    assert message in capsys.readouterr().err
