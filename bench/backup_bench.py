#!/usr/bin/env python
"""Benchmark victor_backup against the raw pipeline and restic on one Victor state dir.

    python bench/backup_bench.py --db-mib 1024 --log-mib 256      # the issue's size
    python bench/backup_bench.py --db-mib 128 --log-mib 32        # quick

Builds a state dir (SQLite WAL DB + logs), then times in one run:
  ours: full backup, incremental after a 1 % change, verify, restore
  raw:  sqlite3 .backup + tar -I 'zstd -T0' (full; again after the change)
  restic (if installed): backup, backup after the change, check --read-data, restore
and prints sizes, times and ratios.  Run from the collection root with PYTHONPATH
pointing at the directory holding ansible_collections (scripts/env.sh + .cache/collections).
"""
import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

from ansible_collections.victor.ops.plugins.module_utils import backup as bk

MIB = 1024 * 1024


def build_state(state, db_mib, log_mib, seed=1):
    rng = random.Random(seed)
    (state / "logs").mkdir(parents=True)
    (state / "rl_data").mkdir()
    (state / "profiles.yaml").write_text("default:\n  provider: ollama\n")
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, session TEXT, body TEXT)")
    words = ["victor", "agent", "tool", "call", "result", "error", "token", "model", "cache", "prompt", "embedding"]
    row_bytes = 1024
    rows = db_mib * MIB // (row_bytes + 40)
    batch = []
    for i in range(rows):
        body = " ".join(rng.choice(words) for _word in range(row_bytes // 7))[:row_bytes]
        batch.append(("s%d" % (i % 997), body))
        if len(batch) == 5000:
            conn.executemany("INSERT INTO messages (session, body) VALUES (?, ?)", batch)
            conn.commit()
            batch = []
    if batch:
        conn.executemany("INSERT INTO messages (session, body) VALUES (?, ?)", batch)
        conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    line = "2025-01-20 10:00:00 INFO victor.api request handled in 12 ms path=/health status=200\n"
    with open(str(state / "logs" / "victor.log"), "w") as handle:
        for _line in range(log_mib * MIB // len(line)):
            handle.write(line)
    return rows


def change_one_percent(state, rows):
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("UPDATE messages SET body = upper(body) WHERE id % 100 = 0")
    conn.commit()
    conn.close()
    with open(str(state / "logs" / "victor.log"), "a") as handle:
        handle.write("x" * (os.path.getsize(str(state / "logs" / "victor.log")) // 100))
    return rows // 100


def page_scan(db):
    """Hash every page of one consistent view of db through sqlite_dbpage, or None without it.

    This is the least any page-level incremental has to do (find the changed pages), so its
    time over a full backup's is the best incremental/full ratio such a design can reach.
    Debian's SQLite lacks sqlite_dbpage; the sqlean.py wheel (requirements-dev.txt) has it.
    """
    try:
        import sqlean  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    conn = sqlean.connect("file:%s?mode=ro" % db, uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one read transaction: every page from the same snapshot
        pages = 0
        for _pgno, data in conn.execute("SELECT pgno, data FROM sqlite_dbpage"):
            hashlib.sha1(data).digest()
            pages += 1
        return pages
    finally:
        conn.close()


def timed(func):
    os.sync()  # no step pays for the writeback of the previous one's files
    started = time.monotonic()
    value = func()
    return time.monotonic() - started, value


def du(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def raw_pipeline(state, out, tag):
    snap = out / ("raw-%s" % tag)
    snap.mkdir()
    subprocess.run(["sqlite3", str(state / "victor.db"), ".backup '%s'" % (snap / "victor.db")], check=True)
    for name in ("logs", "rl_data", "profiles.yaml"):
        src = state / name
        if src.is_dir():
            shutil.copytree(str(src), str(snap / name))
        else:
            shutil.copy2(str(src), str(snap / name))
    archive = out / ("raw-%s.tar.zst" % tag)
    subprocess.run(["tar", "-I", "zstd -T0 -3", "-cf", str(archive), "-C", str(snap), "."], check=True)
    shutil.rmtree(str(snap))
    return os.path.getsize(str(archive))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-mib", type=int, default=1024)
    parser.add_argument("--log-mib", type=int, default=256)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir, removed)")
    parser.add_argument("--repeat", type=int, default=3, help="full backups, ours and raw alternating; best and median are shown")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="victor-backup-bench-", dir=args.dir)
    from pathlib import Path
    root = Path(base)
    try:
        state = root / "state"
        t_build, rows = timed(lambda: build_state(state, args.db_mib, args.log_mib))
        data = du(str(state))
        print("state: %.0f MiB (%d rows), built in %.1f s; SQLite %s; load average %s"
              % (data / MIB, rows, t_build, sqlite3.sqlite_version, " ".join("%.2f" % v for v in os.getloadavg())))
        store = bk.LocalStore(str(root / "repo"))
        tools = bk.Tools(compression_level=3, threads=0)
        results = []
        snap = str(root / "stage-snapshot.db")
        t = timed(lambda: bk.snapshot_sqlite(str(state / "victor.db"), snap))[0]
        results.append(("stage: snapshot of victor.db (online backup + quick_check)", t, os.path.getsize(snap)))
        t = timed(lambda: bk.sha256_file(snap))[0]
        results.append(("stage: sha256 of that snapshot", t, os.path.getsize(snap)))
        os.unlink(snap)
        t_pages, pages = timed(lambda: page_scan(str(state / "victor.db")))
        if pages is not None:
            results.append(("stage: sha1 of every page of one read transaction (sqlite_dbpage)", t_pages, os.path.getsize(str(state / "victor.db"))))
        out = root / "raw"
        out.mkdir()
        ours_times, raw_times = [], []
        for run in range(max(1, args.repeat)):
            # alternate the two so that a load change on a shared machine hits both alike
            t, full = timed(lambda: bk.create_backup(store, str(state), str(root / "work"), tools))
            ours_times.append(t)
            t, size = timed(lambda: raw_pipeline(state, out, "full%d" % run))
            raw_times.append(t)
        results.append(("ours full (best of %d; median %.2f s)" % (len(ours_times), statistics.median(ours_times)),
                        min(ours_times), full["archive"]["size"]))
        results.append(("raw full (sqlite3 .backup + tar|zstd -T0; best of %d; median %.2f s)"
                        % (len(raw_times), statistics.median(raw_times)), min(raw_times), size))
        restic = shutil.which("restic")
        env = dict(os.environ)
        if restic:
            pw = root / "restic.pw"
            pw.write_text("bench-only\n")
            env.update(RESTIC_REPOSITORY=str(root / "restic"), RESTIC_PASSWORD_FILE=str(pw), RESTIC_CACHE_DIR=str(root / "restic-cache"))
            subprocess.run([restic, "init", "-q"], env=env, check=True)
            t = timed(lambda: subprocess.run([restic, "backup", "-q", str(state)], env=env, check=True))[0]
            results.append(("restic full (raw files, not a consistent DB copy)", t, du(str(root / "restic"))))
        changed = change_one_percent(state, rows)
        t, inc = timed(lambda: bk.create_backup(store, str(state), str(root / "work"), tools, backup_type="incremental"))
        results.append(("ours incremental (1 %% = %d rows changed)" % changed, t, inc["archive"]["size"]))
        t, size = timed(lambda: raw_pipeline(state, out, "again"))
        results.append(("raw full again", t, size))
        if restic:
            before = du(str(root / "restic"))
            t = timed(lambda: subprocess.run([restic, "backup", "-q", str(state)], env=env, check=True))[0]
            results.append(("restic incremental", t, du(str(root / "restic")) - before))
        listed = store.list_manifests()[0]
        t, ver = timed(lambda: bk.verify_backup(store, listed, inc, tools, str(root / "work"), record=False))
        assert ver["ok"], ver
        results.append(("ours verify (chain, sha256 + integrity_check)", t, 0))
        if restic:
            t = timed(lambda: subprocess.run([restic, "check", "-q", "--read-data"], env=env, check=True))[0]
            results.append(("restic check --read-data", t, 0))
        target = root / "restored"
        t = timed(lambda: bk.restore_backup(store, store.list_manifests()[0], inc, tools, str(target)))[0]
        results.append(("ours restore (chain, staged, checked)", t, du(str(target))))
        (root / "rawx").mkdir()
        t = timed(lambda: subprocess.run("zstd -d -c %s | tar -x -C %s" % (out / "raw-again.tar.zst", root / "rawx"), shell=True, check=True))[0]
        results.append(("raw restore (zstd -d | tar -x)", t, du(str(root / "rawx"))))
        if restic:
            t = timed(lambda: subprocess.run([restic, "restore", "-q", "latest", "--target", str(root / "resticx")], env=env, check=True))[0]
            results.append(("restic restore", t, du(str(root / "resticx"))))
        print("\n%-72s %9s %10s %12s" % ("step", "seconds", "MiB", "MiB/s in"))
        for name, seconds, size in results:
            print("%-72s %9.2f %10.1f %12.1f" % (name, seconds, size / MIB, data / MIB / seconds if seconds else 0))
        by = dict((r[0].split(" (")[0], r[1]) for r in results)
        print("\nload average at the end: %s" % " ".join("%.2f" % v for v in os.getloadavg()))
        print("ratios: ours full / raw full throughput = %.2f best, %.2f median (goal >= 0.9); "
              "ours incremental / ours full time = %.2f (goal <= 0.10)"
              % (by["raw full"] / by["ours full"], statistics.median(raw_times) / statistics.median(ours_times),
                 by["ours incremental"] / statistics.median(ours_times)))
        if pages is not None:
            print("floor of any page-level incremental (page scan / ours full median) = %.2f"
                  % (t_pages / statistics.median(ours_times)))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
