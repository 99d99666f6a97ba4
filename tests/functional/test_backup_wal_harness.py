"""Consistency under load: a writer process commits rows while backups are taken.

Every backup must pass integrity_check and hold a gap-free prefix 1..k of the committed
rows with k between the rows committed when the backup started and when it ended.  The
same harness with a naive file copy (cp of the db and its -wal) must fail at least once,
which shows the harness can catch a broken backup.

A second test kills backups with SIGKILL at random moments: nothing partial is ever
listed, every listed backup verifies, and the next backup succeeds.
"""
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import backup_calls as bc
from ansible_collections.victor.ops.plugins.module_utils.backup_common import MANIFEST_SUFFIX
from ansible_collections.victor.ops.plugins.module_utils.backup_lock import work_lock
from ansible_collections.victor.ops.plugins.module_utils.backup_store import LocalStore

BACKUPS = 100
PAD = 800  # bytes per row: several rows per page, checkpoints move pages while copies run
MAX_ROWS = 30000  # at most about 30 MB: the test stays small and fast


def _writer(path, committed, attempted, stop):
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=50")
    seq = 0
    pad = "x" * PAD
    while not stop.is_set():
        conn.execute("BEGIN IMMEDIATE")
        for _row in range(5):
            seq += 1
            conn.execute("INSERT INTO t (id, pad) VALUES (?, ?)", (seq, pad))
        attempted.value = seq  # published before COMMIT: an upper bound of what readers can see
        conn.execute("COMMIT")
        committed.value = seq  # published after COMMIT: a lower bound
        if seq >= MAX_ROWS:
            break
        time.sleep(0.004)  # bounded growth: the test's disk use and time stay small
    conn.close()


def _start(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    db = str(state / "victor.db")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT)")
    conn.commit()
    conn.close()
    ctx = multiprocessing.get_context("fork")
    committed = ctx.Value("q", 0, lock=False)
    attempted = ctx.Value("q", 0, lock=False)
    stop = ctx.Event()
    proc = ctx.Process(target=_writer, args=(db, committed, attempted, stop), daemon=True)
    proc.start()
    deadline = time.monotonic() + 10
    while committed.value < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    return state, db, (committed, attempted), stop, proc


def _check_copy(path, low, high):
    """None when the copy is intact and holds a gap-free prefix within [low, high], else why not."""
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            check = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if check != ["ok"]:
                return "integrity_check: %s" % check[0][:120]
            count, low_id, high_id = conn.execute("SELECT count(*), min(id), max(id) FROM t").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return "unreadable: %s" % exc
    if count == 0:
        return None if low == 0 else "empty copy although %d rows were committed" % low
    if low_id != 1 or high_id != count:
        return "gap: %d rows, ids %s..%s" % (count, low_id, high_id)
    if not low <= count <= high:
        return "%d rows outside the committed window [%d, %d]" % (count, low, high)
    return None


def _run(tmp_path, take):
    state, db, (committed, attempted), stop, proc = _start(tmp_path)
    failures = []
    try:
        for index in range(BACKUPS):
            low = committed.value
            path = take(state, db, index)
            high = attempted.value
            problem = _check_copy(path, low, high)
            shutil.rmtree(os.path.dirname(path))
            if problem:
                failures.append("backup %d: %s" % (index, problem))
    finally:
        stop.set()
        proc.join(30)
    return failures, committed.value


def test_online_backup_api_is_consistent_under_writes(tmp_path):
    store = LocalStore(str(tmp_path / "repo"))
    work = tmp_path / "work"
    out = tmp_path / "out"

    def take(state, _db, index):
        manifest = bc.create_backup(store, str(state), str(work), bc.Tools(compression_level=1))
        dest = out / str(index)
        dest.mkdir(parents=True)
        archive = os.path.join(store.path, manifest["archive"]["name"])
        subprocess.run("zstd -d -c %s | tar -x -C %s" % (archive, dest), shell=True, check=True)
        os.unlink(archive)  # keep disk use bounded
        return str(dest / "victor.db")

    started = time.monotonic()
    failures, rows = _run(tmp_path, take)
    print("online backup: %d backups, %d rows committed, %d failures, %.1f s, SQLite %s"
          % (BACKUPS, rows, len(failures), time.monotonic() - started, sqlite3.sqlite_version))
    assert rows > 1000, "the writer did not keep writing"
    assert failures == []


def test_naive_file_copy_fails_the_same_harness(tmp_path):
    out = tmp_path / "naive"

    def take(_state, db, index):
        # `cp victor.db victor.db-wal backup/` at the pace of a real multi-GiB copy: the
        # main file is read in 16 KiB chunks while the writer goes on (and checkpoints).
        dest = out / str(index)
        dest.mkdir(parents=True)
        for suffix in ("", "-wal"):
            if not os.path.exists(db + suffix):
                continue
            with open(db + suffix, "rb") as src, open(str(dest / "victor.db") + suffix, "wb") as dst:
                while True:
                    block = src.read(16 * 1024)
                    if not block:
                        break
                    dst.write(block)
                    time.sleep(0.0005)
        return str(dest / "victor.db")

    failures, _rows = _run(tmp_path, take)
    print("naive copy: %d/%d copies failed; first: %s" % (len(failures), BACKUPS, failures[:1]))
    assert failures, "the harness did not catch a single torn copy: it is too weak to prove anything"


KILLER = r"""
import sys
import backup_calls as bc
from ansible_collections.victor.ops.plugins.module_utils.backup_lock import work_lock
from ansible_collections.victor.ops.plugins.module_utils.backup_store import LocalStore
with work_lock(sys.argv[3], 30):
    bc.create_backup(LocalStore(sys.argv[1]), sys.argv[2], sys.argv[3], bc.Tools(compression_level=3))
"""


def test_sigkill_never_leaves_a_listed_partial_backup(tmp_path):
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, pad BLOB)")
    conn.executemany("INSERT INTO t (pad) VALUES (?)", [(os.urandom(4000),) for _row in range(3000)])
    conn.commit()
    conn.close()
    with open(str(state / "logs" / "victor.log"), "wb") as handle:
        handle.write(os.urandom(8 * 1024 * 1024))
    repo, work = str(tmp_path / "repo"), str(tmp_path / "work")
    store = LocalStore(repo)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    rng = random.Random(5)
    durations = []
    for _run in range(2):  # the faster of two: a cold first run would put most kills after the end
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", KILLER, repo, str(state), work], env=env, check=True)
        durations.append(time.monotonic() - started)
    one = min(durations)
    kills = completed = 0
    for _attempt in range(40):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, repo, str(state), work], env=env)
        time.sleep(rng.uniform(0, one * 1.1))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        if proc.wait() == 0:
            completed += 1
        listed, problems = store.list_manifests()
        assert problems == []
        for name in os.listdir(repo):
            if name.endswith(".tar.zst"):
                continue
            assert name.endswith(MANIFEST_SUFFIX) or name.startswith("."), name
    listed, problems = store.list_manifests()
    # a run killed after its manifest was written is a complete backup; anything listed must verify
    assert 2 + completed <= len(listed) <= 2 + completed + kills
    for manifest in listed:
        result = bc.verify_backup(store, listed, manifest, bc.Tools(), str(tmp_path / "verify"), record=False)
        assert result["ok"], result
    with work_lock(work, 5):
        final = bc.create_backup(store, str(state), work, bc.Tools())
    assert bc.verify_backup(store, store.list_manifests()[0], final, bc.Tools(), str(tmp_path / "verify"), record=False)["ok"]
    leftovers = [n for n in os.listdir(repo) if n.endswith(".part") or n.startswith(".victor-backup-")]
    assert leftovers == []
    archives = [n for n in os.listdir(repo) if n.endswith(".tar.zst")]
    assert len(archives) == len(store.list_manifests()[0])  # no orphan archive survived the cleanup
    print("sigkill: one backup %.2f s, %d killed, %d completed, all %d listed verify" % (one, kills, completed, len(listed)))
    assert kills >= 10
