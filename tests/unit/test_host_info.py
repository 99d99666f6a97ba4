"""victor_host_info (module_utils/host_info.py) and SQLite clear_locks against real processes, sockets and SQLite locks
(a real redis-server: tests/functional/test_host_info_redis.py)."""
import argparse
import datetime
import http.server
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import module_runner
import pytest


from ansible_collections.victor.ops.plugins.module_utils import host_info as diag
from ansible_collections.victor.ops.plugins.modules import victor_db_maintenance, victor_host_info

LOCKER = """
import signal, sqlite3, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
c.execute("CREATE TABLE IF NOT EXISTS t(x)")
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def database(tmp_path):
    path = str(tmp_path / "victor.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def locker(database):
    started = []

    def start(mode="normal"):
        proc = subprocess.Popen([sys.executable, "-c", LOCKER, database, mode], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"locked"
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _args(**kw):
    values = {"service": "victor-api-test-absent", "host": "127.0.0.1", "port": 1, "health_path": "/health", "timeout": 2.0,
              "state_dir": "/nonexistent", "db": "", "db_timeout": 0.3, "journal_lines": 10, "error_limit": 5, "top": 5,
              "sections": [], "redis_url": "", "redis_pattern": "", "redis_batch": 500}
    values.update(kw)
    return argparse.Namespace(**values)


def test_locked_database_is_seen_with_its_foreign_holder(database, locker):
    proc = locker()
    result = diag.section_database(_args(db=database), unit_pids=set())
    assert result["exists"] and result["locked"]
    assert result["probe"]["writable"] is False and "locked" in result["probe"]["error"]
    assert result["foreign_holders"] == [proc.pid]
    holder = result["holders"][0]
    assert database in holder["files"] and not holder["in_unit"]


def test_unlocked_database_is_writable_and_unheld(database):
    result = diag.section_database(_args(db=database), unit_pids=set())
    assert not result["locked"] and result["probe"]["writable"] and result["probe"]["journal_mode"] == "wal"
    assert result["holders"] == []


def test_missing_database_is_reported_not_created(tmp_path):
    path = str(tmp_path / "absent.db")
    result = diag.section_database(_args(db=path), unit_pids=set())
    assert result["exists"] is False and result["probe"] is None
    assert not os.path.exists(path)


def test_terminate_ends_foreign_holders_and_spares_the_unit(database, locker):
    foreign = locker()
    result = diag.terminate_foreign_holders(database, unit_pids=set(), grace=3)
    assert [h["pid"] for h in result["terminated"]] == [foreign.pid] and result["changed"]
    assert foreign.wait(timeout=5) is not None
    assert diag.section_database(_args(db=database), unit_pids=set())["probe"]["writable"]


def test_terminate_leaves_processes_of_the_unit_alone(database, locker):
    own = locker()
    result = diag.terminate_foreign_holders(database, unit_pids={own.pid}, grace=1)
    assert result == {"terminated": [], "killed": [], "changed": False}
    assert own.poll() is None


def test_terminate_kills_a_holder_that_ignores_sigterm(database, locker):
    stubborn = locker("ignore-term")
    started = time.monotonic()
    result = diag.terminate_foreign_holders(database, unit_pids=set(), grace=1)
    assert result["killed"] == [stubborn.pid]
    assert stubborn.wait(timeout=5) == -9
    assert time.monotonic() - started < 10


def test_listeners_name_the_owner_of_the_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        mine = diag.listeners(port, unit_pids={os.getpid()})
        foreign = diag.listeners(port, unit_pids=set())
    assert mine["listening"] and [o["pid"] for o in mine["owners"]] == [os.getpid()] and not mine["foreign_owner"]
    assert foreign["foreign_owner"]
    assert diag.listeners(port, unit_pids=set())["listening"] is False


class _Handler(http.server.BaseHTTPRequestHandler):
    answer = (200, {"status": "healthy", "version": "0.9.5"})

    def do_GET(self):  # noqa: N802 - http.server's naming
        code, body = self.answer
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


@pytest.fixture
def api():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_health_ok_only_for_a_healthy_answer(api):
    port = api.server_address[1]
    _Handler.answer = (200, {"status": "healthy", "version": "0.9.5"})
    assert diag.section_health(_args(port=port))["ok"]
    _Handler.answer = (200, {"status": "degraded"})
    assert not diag.section_health(_args(port=port))["ok"]
    _Handler.answer = (503, {"status": "unhealthy"})
    result = diag.section_health(_args(port=port))
    assert not result["ok"] and result["status_code"] == 503 and result["body"] == {"status": "unhealthy"}


def test_health_reports_a_refused_connection():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = diag.section_health(_args(port=port))
    assert not result["ok"] and result["status_code"] is None and "refused" in result["error"].lower()


def test_memory_lists_top_consumers_and_the_units_share():
    result = diag.section_memory(_args(top=50), unit_pids={os.getpid()})
    assert result["mem_total_kb"] > 0 and 0 <= result["used_percent"] <= 100
    assert result["unit_rss_kb"] > 0
    assert any(p["pid"] == os.getpid() and p["in_unit"] for p in result["top"])
    rss = [p["rss_kb"] for p in result["top"]]
    assert rss == sorted(rss, reverse=True)


def test_cgroup_membership_finds_this_process():
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        cgroup = handle.read().splitlines()[0].split(":", 2)[2]
    assert os.getpid() in diag.pids_in_cgroup(cgroup)
    assert diag.pids_in_cgroup("") == []


def test_error_lines_keep_only_errors_and_the_last_ones():
    text = "\n".join(["INFO started", "ERROR one", "Traceback (most recent call last):", "warning x", "CRITICAL two"])
    assert diag.error_lines(text, 2) == ["Traceback (most recent call last):", "CRITICAL two"]


run_module = module_runner.run_module


@pytest.mark.parametrize("args, message", [
    ({"sections": ["service", "bogus"]}, "value of sections must be one or more of"),
    ({"port": 0}, "port must be at least 1"),
    ({"cpu_interval": 0.0}, "cpu_interval must be greater than 0"),
    ({"timeout": float("nan")}, "timeout must be a finite number"),
    ({"health_path": "health"}, "health_path must start with /"),
    ({"redis_url": "http://x:secret@127.0.0.1/"}, "redis_url must start with redis://"),
])
def test_module_refuses_bad_arguments_clearly(args, message, capsys):
    failed, result = run_module(victor_host_info, args, capsys)
    assert failed and message in result["msg"]
    assert "secret" not in json.dumps(result)


def test_module_reports_the_sections_asked_for_and_changes_nothing(database, capsys):
    for check_mode in (False, True):
        failed, result = run_module(victor_host_info, {"sections": ["database", "memory"], "db": database,
                                                       "service": "victor-api-test-absent"}, capsys, check_mode)
        assert not failed and result["changed"] is False
        report = result["report"]
        assert report["database"]["probe"]["writable"] and report["memory"]["top"]
        assert "service" not in report and "health" not in report


def test_sqlite_clear_locks_ends_the_foreign_holder_and_check_mode_only_lists_it(database, locker, capsys):
    holder = locker()
    args = {"engine": "sqlite", "path": database, "operations": ["clear_locks"], "service": "victor-api-test-absent",
            "lock_grace": 2}
    failed, result = run_module(victor_db_maintenance, args, capsys, check_mode=True)
    assert not failed and result["changed"] is True
    assert result["report"]["clear_locks"]["would_terminate"] == [holder.pid] and holder.poll() is None
    failed, result = run_module(victor_db_maintenance, args, capsys)
    assert not failed and result["changed"] is True
    assert result["report"]["clear_locks"]["terminated"] == [holder.pid]
    holder.wait(10)
    assert diag.section_database(_args(db=database), unit_pids=set())["probe"]["writable"]
    failed, result = run_module(victor_db_maintenance, args, capsys)
    assert not failed and result["changed"] is False and result["report"]["clear_locks"]["holders"] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another uid and gid")
def test_fd_map_falls_back_to_the_owners_uid_and_gid(monkeypatch):
    """Without CAP_SYS_PTRACE (containers) root reads another user's descriptors from a child
    running as that user; the kernel also wants the gid to match, and a gid is often not the uid."""
    workdir = tempfile.mkdtemp(prefix="victor-diag-", dir="/tmp")  # /tmp: reachable by uid 65534 whatever TMPDIR is
    os.chmod(workdir, 0o777)
    held = os.path.join(workdir, "held.db")
    holder = subprocess.Popen(["/usr/bin/python3", "-c", "import sys, time; f = open(sys.argv[1], 'w'); print('open', flush=True); time.sleep(60)", held],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, user=65534, group=12345, extra_groups=[])
    try:
        opened = holder.stdout.readline().strip()
        assert opened == b"open", holder.stderr.read(4096) if holder.poll() is not None else opened
        real = diag._fd_targets  # pylint: disable=protected-access
        # root sees nothing directly, as in a container; the unprivileged child reads for real
        monkeypatch.setattr(diag, "_fd_targets", lambda pid: None if os.geteuid() == 0 else real(pid))
        assert held in diag.fd_map([holder.pid]).get(holder.pid, [])
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- logs, cpu, redis
def _log_line(when, level, message):
    return "%s,123 - victor-1a2b3c4d - victor.framework.agentic_loop - %s - %s" % (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)), level, message)


def _usage(when, session, kind):
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat()
    return json.dumps({"session_id": session, "timestamp": stamp, "event_type": kind, "data": {}})


def test_logs_count_errors_requests_rate_limits_and_slow_requests_around_the_deploy(tmp_path):
    """The formats Victor 0.9.5 writes (victor.log entries with continuation lines, usage.jsonl events)."""
    logs = tmp_path / ".victor" / "logs"
    logs.mkdir(parents=True)
    now = time.time()
    deploy = now - 300
    (logs / "victor.log").write_text("\n".join([
        _log_line(now - 500, "ERROR", "Agentic loop error: old, before the deploy"),
        _log_line(now - 200, "INFO", "Starting Victor FastAPI server"),
        _log_line(now - 100, "ERROR", "Agentic loop error: [8d521d98] rate limited (429)"),
        "Recovery hint: Wait and retry later. (provider=ollama, status_code=429)",
        "Traceback (most recent call last):",
        _log_line(now - 90, "WARNING", "Recovery attempt 1 hit rate limit; sleeping 15s before retry"),
        _log_line(now - 60, "ERROR", "Agentic loop error: [c4c2896e] transport error"),
        "not a log line and no entry before it is kept",
    ]) + "\n")
    (logs / "usage.jsonl").write_text("\n".join([
        _usage(now - 110, "s1", "user_prompt"), _usage(now - 50, "s1", "assistant_response"),
        _usage(now - 40, "s1", "user_prompt"), _usage(now - 38, "s1", "assistant_response"),
        "{broken json",
    ]) + "\n")
    since = datetime.datetime.fromtimestamp(deploy, datetime.timezone.utc).isoformat()
    report = diag.section_logs(_args(state_dir=str(tmp_path), window_minutes=60.0, since=since, slow_seconds=30.0))
    after, before = report["after"], report["before"]
    assert after["errors"] == 2 and after["requests"] == 2 and after["error_rate_percent"] == 100.0
    assert before["errors"] == 1 and before["requests"] == 0 and before["error_rate_percent"] is None
    assert after["errors_per_minute"] > before["errors_per_minute"]
    assert after["rate_limited"] == 2 and after["rate_limited_providers"] == {"ollama": 1, "unknown": 1}
    assert after["slow_requests"] == 1 and after["slow_request_seconds"] == [60.0]
    assert after["samples"][-1] == "Agentic loop error: [c4c2896e] transport error"


def test_logs_count_a_chat_without_user_prompt_by_its_turn_in_victor_log(tmp_path):
    """Seen in molecule victor_runbooks: four chats on a provider answering 429, one user_prompt
    in usage.jsonl (the three that failed fast on "circuit open" wrote none), four turns in victor.log."""
    logs = tmp_path / ".victor" / "logs"
    logs.mkdir(parents=True)
    now = time.time()
    lines = []
    for offset, reason in ((100, "rate limited (429)"), (60, "rate limited (429)"), (59, "circuit open (upstream failing)"),
                           (58, "circuit open (upstream failing)")):
        lines += [_log_line(now - offset, "INFO", "[Topology] action=single_agent topology=single_agent provider=None"),
                  _log_line(now - offset + 0.5, "ERROR", "Agentic loop error: [974c2ffb] " + reason)]
    lines.append(_log_line(now - 50, "INFO", "[Iteration 1/10] PLAN"))
    (logs / "victor.log").write_text("\n".join(lines) + "\n")
    (logs / "usage.jsonl").write_text(_usage(now - 100, "s1", "user_prompt") + "\n")
    after = diag.section_logs(_args(state_dir=str(tmp_path), window_minutes=60.0, since="", slow_seconds=30.0))["after"]
    assert after["errors"] == 4 and after["requests"] == 4 and after["error_rate_percent"] == 100.0, after


def test_logs_without_files_report_zero(tmp_path):
    report = diag.section_logs(_args(state_dir=str(tmp_path), window_minutes=5.0, since="not a time", slow_seconds=1.0))
    assert report["after"]["errors"] == 0 and report["after"]["requests"] == 0 and report["after"]["rate_limited"] == 0


def test_cpu_sees_a_busy_process_of_the_group():
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        cgroup = handle.read().splitlines()[0].split(":", 2)[2]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        report = diag.section_cpu(_args(cpu_samples=2, cpu_interval=0.5), {"ControlGroup": cgroup})
    finally:
        busy.kill()
        busy.wait()
    assert len(report["samples_percent"]) == 2 and report["max_percent"] > 5, report
    assert any(p["pid"] == busy.pid for p in report["top"]), report["top"]


def test_redis_errors_are_reported_not_raised():
    assert diag.section_redis(_args(redis_pattern="", redis_batch=10))["error"] == "no Redis URL configured"
    assert "redis://" in diag.section_redis(_args(redis_url="http://127.0.0.1:1/", redis_pattern="", redis_batch=10))["error"]
    result = diag.section_redis(_args(redis_url="redis://127.0.0.1:1/0", redis_pattern="", redis_batch=10))
    assert not result["ok"] and result["error"]
