"""Benchmark victor_backup against the raw pipeline and restic on one Victor state dir.

    python bench/backup_bench.py --db-mib 1024 --log-mib 256      # the issue's size, both data profiles
    python bench/backup_bench.py --db-mib 128 --log-mib 32 --profile compressible   # quick

For each data profile (compressible: words, as Victor's text; incompressible: random hex in
rows and logs, about 2:1 for zstd) builds a state dir (SQLite WAL DB + logs), then times:
  full:        ours vs the raw pipeline (sqlite3 .backup + tar -I 'zstd -T0'), alternating, best/median
  verify:      ours (that full backup) vs restic check --read-data (one snapshot of the same state)
  restore:     ours (that full backup) vs zstd -d | tar -x of the same archive, and restic restore
  incremental: ours vs restic, time and stored bytes, after (a) 1 % of rows updated across all
               pages + 1 % appended to the log, (b) appends to conversations (new rows at the end)
and prints both profiles side by side, every ratio with its goal and PASS/MISS, and the
machine's load average.  Run from the collection root with PYTHONPATH pointing at the
directory holding ansible_collections (scripts/env.sh + .cache/collections).
"""
import argparse
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ansible_collections.victor.ops.plugins.module_utils.backup_archive import Tools
from ansible_collections.victor.ops.plugins.module_utils.backup_create import create_backup
from ansible_collections.victor.ops.plugins.module_utils.backup_restore import restore_backup
from ansible_collections.victor.ops.plugins.module_utils.backup_store import LocalStore
from ansible_collections.victor.ops.plugins.module_utils.backup_verify import verify_backup

MIB = 1024 * 1024
FULL = ("full", "full", [], [], False)  # type, scope, include, exclude, include_cache: what victor_backup takes by default
PROFILES = ("compressible", "incompressible")
WORDS = ["victor", "agent", "tool", "call", "result", "error", "token", "model", "cache", "prompt", "embedding"]


def row_body(rng, profile, size=1024):
    if profile == "incompressible":
        return rng.randbytes(size // 2).hex()
    return " ".join(rng.choice(WORDS) for _word in range(size // 7))[:size]


def log_line(rng, profile):
    if profile == "incompressible":
        return "2025-01-20 10:00:00 INFO victor.api request %s handled\n" % rng.randbytes(24).hex()
    return "2025-01-20 10:00:00 INFO victor.api request handled in 12 ms path=/health status=200\n"


def build_state(state, db_mib, log_mib, seed=1, profile="compressible"):
    rng = random.Random(seed)
    (state / "logs").mkdir(parents=True)
    (state / "rl_data").mkdir()
    (state / "profiles.yaml").write_text("default:\n  provider: ollama\n")
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, session TEXT, body TEXT)")
    rows = db_mib * MIB // (1024 + 40)
    batch = []
    for i in range(rows):
        batch.append(("s%d" % (i % 997), row_body(rng, profile)))
        if len(batch) == 5000:
            conn.executemany("INSERT INTO messages (session, body) VALUES (?, ?)", batch)
            conn.commit()
            batch = []
    if batch:
        conn.executemany("INSERT INTO messages (session, body) VALUES (?, ?)", batch)
        conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    append_log(state, log_mib * MIB, rng, profile)
    return rows


def append_log(state, size, rng, profile):
    written = 0
    with open(str(state / "logs" / "victor.log"), "a") as handle:
        while written < size:
            line = log_line(rng, profile)
            handle.write(line)
            written += len(line)


def change_one_percent(state, rows, rng, profile):
    """1 % of the rows updated, spread over every page, and 1 % appended to the log."""
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("UPDATE messages SET body = upper(body) WHERE id % 100 = 0")
    conn.commit()
    conn.close()
    append_log(state, os.path.getsize(str(state / "logs" / "victor.log")) // 100, rng, profile)
    return rows // 100


def append_conversations(state, rows, rng, profile):
    """Victor's own workload: new messages at the end of conversations (1 % more rows), and log lines."""
    new = rows // 100
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.executemany("INSERT INTO messages (session, body) VALUES (?, ?)",
                     [("s%d" % (i % 997), row_body(rng, profile)) for i in range(new)])
    conn.commit()
    conn.close()
    append_log(state, os.path.getsize(str(state / "logs" / "victor.log")) // 100, rng, profile)
    return new


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


class Restic:
    def __init__(self, root):
        self.exe = shutil.which("restic")
        self.repo = root / "restic"
        self.env = dict(os.environ)
        if self.exe:
            pw = root / "restic.pw"
            pw.write_text("bench-only\n")
            self.env.update(RESTIC_REPOSITORY=str(self.repo), RESTIC_PASSWORD_FILE=str(pw),
                            RESTIC_CACHE_DIR=str(root / "restic-cache"))
            self.run("init")

    def run(self, *argv):
        subprocess.run([self.exe, "-q"] + list(argv), env=self.env, check=True, stdout=subprocess.DEVNULL)

    def backup(self, state):
        """(seconds, bytes the repository grew by)"""
        before = du(str(self.repo))
        seconds = timed(lambda: self.run("backup", str(state)))[0]
        return seconds, du(str(self.repo)) - before


def run_profile(root, profile, args):
    """Every measurement of one data profile; returns {name: value}."""
    r = {}
    rng = random.Random(2)
    state = root / "state"
    t_build, rows = timed(lambda: build_state(state, args.db_mib, args.log_mib, profile=profile))
    r["state MiB"] = du(str(state)) / MIB
    print("[%s] state %.0f MiB (%d rows) built in %.0f s; load %s" % (profile, r["state MiB"], rows, t_build, load()), flush=True)
    store = LocalStore(str(root / "repo"))
    tools = Tools(compression_level=3, threads=0)
    out = root / "raw"
    out.mkdir()
    ours, raw = [], []
    for run in range(max(1, args.repeat)):
        # alternate the two so that a load change on a shared machine hits both alike
        t, full = timed(lambda: create_backup(store, str(state), str(root / "work"), tools, *FULL))
        ours.append(t)
        t, raw_size = timed(lambda: raw_pipeline(state, out, "full%d" % run))
        raw.append(t)
        if run:
            LocalStore.delete(store, listed_before)  # keep one full: the chain below starts at the last
        listed_before = full
    r.update({"full ours best": min(ours), "full ours median": statistics.median(ours), "full raw best": min(raw),
              "full raw median": statistics.median(raw), "full ours MiB": full["archive"]["size"] / MIB,
              "full raw MiB": raw_size / MIB})
    print("[%s] full: ours %s, raw %s; load %s" % (profile, fmt(ours), fmt(raw), load()), flush=True)
    restic = Restic(root)
    listed = store.list_manifests()[0]
    if restic.exe:
        r["full restic"], size = restic.backup(state)
        r["full restic MiB"] = size / MIB
    archive = os.path.join(store.path, full["archive"]["name"])
    steps = {"verify ours": [], "verify restic": [], "restore ours": [], "restore raw": [], "restore restic": []}
    for _run in range(max(1, args.repeat)):
        # alternated like the full backups; the first pass of a step is often slower (cold caches)
        t, result = timed(lambda: verify_backup(store, listed, full, tools, str(root / "work"), record=False))
        assert result["ok"], result
        steps["verify ours"].append(t)
        if restic.exe:
            steps["verify restic"].append(timed(lambda: restic.run("check", "--read-data"))[0])
        steps["restore ours"].append(timed(lambda: restore_backup(store, listed, full, tools, str(root / "restored"), "full", True))[0])
        (root / "rawx").mkdir()
        steps["restore raw"].append(timed(lambda: subprocess.run("zstd -d -q -c '%s' | tar -x -C '%s'" % (archive, root / "rawx"),
                                                                 shell=True, check=True))[0])
        if restic.exe:
            steps["restore restic"].append(timed(lambda: restic.run("restore", "latest", "--target", str(root / "resticx")))[0])
        for tree in ("restored", "rawx", "resticx"):
            shutil.rmtree(str(root / tree), ignore_errors=True)
    r.update((name, min(values)) for name, values in steps.items() if values)
    print("[%s] verify/restore: %s; load %s" % (profile, ", ".join("%s %s" % (n, fmt(v)) for n, v in steps.items() if v), load()),
          flush=True)
    for key, change in (("spread", change_one_percent), ("append", append_conversations)):
        change(state, rows, rng, profile)
        t, inc = timed(lambda: create_backup(store, str(state), str(root / "work"), tools, "incremental", *FULL[1:]))
        r["inc %s ours" % key], r["inc %s ours MiB" % key], r["inc %s type" % key] = t, inc["archive"]["size"] / MIB, inc["type"]
        # what a full of the same state stores (another repository, so the chain above is untouched)
        same = create_backup(LocalStore(str(root / "repo-full")), str(state), str(root / "work-full"), tools, *FULL)
        r["inc %s full MiB" % key] = same["archive"]["size"] / MIB
        shutil.rmtree(str(root / "repo-full"))
        if restic.exe:
            t, size = restic.backup(state)
            r["inc %s restic" % key], r["inc %s restic MiB" % key] = t, size / MIB
    print("[%s] incrementals done; load %s" % (profile, load()), flush=True)
    return r


def zstd_version():
    found = re.search(r"v(\d+\.\d+\.\d+)", subprocess.run(["zstd", "-V"], capture_output=True, text=True, check=False).stdout)
    return found.group(1) if found else "?"


def load():
    return "%.2f %.2f %.2f" % os.getloadavg()


def fmt(values):
    return "/".join("%.2f" % v for v in values)


def verdict(value, goal, higher_is_better=False):
    ok = value >= goal if higher_is_better else value <= goal
    return "%.2fx (goal %s %.2f) %s" % (value, ">=" if higher_is_better else "<=", goal, "PASS" if ok else "MISS")


def report(results):
    names = list(results)
    rows = []

    def row(label, func):
        cells = []
        for name in names:
            try:
                cells.append(func(results[name]))
            except KeyError:
                cells.append("n/a (no restic)")
        rows.append((label, cells))

    row("state (MiB)", lambda r: "%.0f" % r["state MiB"])
    row("full: ours s best/median (MiB)", lambda r: "%.2f/%.2f (%.1f)" % (r["full ours best"], r["full ours median"], r["full ours MiB"]))
    row("full: raw tar|zstd s best/median (MiB)", lambda r: "%.2f/%.2f (%.1f)" % (r["full raw best"], r["full raw median"], r["full raw MiB"]))
    row("full: raw/ours throughput, best", lambda r: verdict(r["full raw best"] / r["full ours best"], 0.9, True))
    row("full: raw/ours throughput, median", lambda r: verdict(r["full raw median"] / r["full ours median"], 0.9, True))
    row("full: restic s (MiB)", lambda r: "%.2f (%.1f)" % (r["full restic"], r["full restic MiB"]))
    row("verify: ours s / restic check --read-data s", lambda r: "%.2f / %.2f" % (r["verify ours"], r["verify restic"]))
    row("verify: ours/restic", lambda r: verdict(r["verify ours"] / r["verify restic"], 1.5))
    row("restore: ours s / zstd -d|tar -x s / restic s", lambda r: "%.2f / %.2f / %.2f" % (r["restore ours"], r["restore raw"], r["restore restic"]))
    row("restore: ours/raw", lambda r: verdict(r["restore ours"] / r["restore raw"], 2.0))
    for key, label in (("spread", "1 % of rows updated everywhere"), ("append", "appends to conversations")):
        row("inc (%s): ours s (MiB, stored as)" % label, lambda r, k=key: inc_ours(r, k))
        row("inc (%s): restic s (MiB)" % label, lambda r, k=key: "%.2f (%.1f)" % (r["inc %s restic" % k], r["inc %s restic MiB" % k]))
        row("inc (%s): stored - a full of the same state" % label, lambda r, k=key: inc_vs_full(r, k))
        row("inc (%s): ours/restic time, bytes" % label, lambda r, k=key: inc_vs_restic(r, k))
    width = max(len(label) for label, _cells in rows)
    print("\n%-*s | %s" % (width, "step", " | ".join("%-34s" % n for n in names)))
    for label, cells in rows:
        print("%-*s | %s" % (width, label, " | ".join("%-34s" % c for c in cells)))


def inc_ours(r, k):
    return "%.2f (%.1f, %s)" % (r["inc %s ours" % k], r["inc %s ours MiB" % k], r["inc %s type" % k])


def inc_vs_full(r, k):
    extra = r["inc %s ours MiB" % k] - r["inc %s full MiB" % k]
    return "%+.0f KiB (goal <= 0) %s" % (extra * 1024, "PASS" if extra <= 0 else "MISS")


def inc_vs_restic(r, k):
    time_ratio = r["inc %s ours" % k] / r["inc %s restic" % k]
    bytes_ratio = r["inc %s ours MiB" % k] / r["inc %s restic MiB" % k]
    return "%.2fx, %.2fx (%s)" % (time_ratio, bytes_ratio, winner(r, k))


def winner(r, k):
    t = r["inc %s ours" % k] <= r["inc %s restic" % k]
    b = r["inc %s ours MiB" % k] <= r["inc %s restic MiB" % k]
    if t and b:
        return "ours wins"
    if not t and not b:
        return "restic wins"
    return "ours faster, restic smaller" if t else "restic faster, ours smaller"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-mib", type=int, default=1024)
    parser.add_argument("--log-mib", type=int, default=256)
    parser.add_argument("--profile", choices=PROFILES + ("both",), default="both",
                        help="compressible (words, as before), incompressible (random hex in rows and logs), or both side by side")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir, removed)")
    parser.add_argument("--repeat", type=int, default=3, help="full backups (ours and raw alternating; best and median), "
                        "verify and restore (ours and the anchors alternating; best)")
    args = parser.parse_args()
    profiles = PROFILES if args.profile == "both" else (args.profile,)
    print("SQLite %s, zstd %s, %d cores; load average at the start %s"
          % (sqlite3.sqlite_version, zstd_version(),
             os.cpu_count(), load()), flush=True)
    results = {}
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    for profile in profiles:
        base = tempfile.mkdtemp(prefix="victor-backup-bench-", dir=args.dir)
        try:
            results[profile] = run_profile(Path(base), profile, args)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        if len(results) < len(profiles):
            report(results)  # what is done so far, in case a long run is stopped
    report(results)
    print("\nload average at the end: %s" % load())
    return 0


if __name__ == "__main__":
    sys.exit(main())
