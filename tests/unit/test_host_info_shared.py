"""victor_host_info reads what victor_health reads with victor_health's code, and comes to the same answers:
memory, disk, error lines, the log tail and timestamps, /health; Redis with victor_db_maintenance's client
(against a real redis-server: tests/functional/test_host_info_shared_redis.py)."""
import argparse
import http.server
import os
import sqlite3
import threading
import time

import module_runner
import pytest

from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_redis
from ansible_collections.victor.ops.plugins.module_utils import health
from ansible_collections.victor.ops.plugins.module_utils import host_info
from ansible_collections.victor.ops.plugins.module_utils import host_probe
from ansible_collections.victor.ops.plugins.module_utils import node_facts
from ansible_collections.victor.ops.plugins.modules import victor_host_info

OLD_KERNEL_MEMINFO = "MemTotal:        1000000 kB\nMemFree:          200000 kB\nBuffers:           50000 kB\nCached:           250000 kB\n"


def _args(**kw):
    values = {"service": "victor-api-test-absent", "host": "127.0.0.1", "port": 1, "health_path": "/health", "timeout": 2.0,
              "state_dir": "/nonexistent", "journal_lines": 10, "error_limit": 50, "top": 3,
              "redis_url": "", "redis_pattern": "", "redis_batch": 100}
    values.update(kw)
    return argparse.Namespace(**values)


# ---------------------------------------------------------------- memory
@pytest.mark.parametrize("text, used", [
    (OLD_KERNEL_MEMINFO, 50.0),  # no MemAvailable: MemFree + Buffers + Cached are available (was 100 %)
    (OLD_KERNEL_MEMINFO + "MemAvailable:     600000 kB\n", 40.0),
    ("MemTotal: 1000 kB\nHugePages_Total:       0\nMemAvailable: 250 kB\nDirectMap4k: junk\n", 75.0),
])
def test_memory_is_the_health_checks_figure(tmp_path, text, used):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(text)
    report = host_info.section_memory(_args(), set(), meminfo=str(meminfo))
    assert report["used_percent"] == used == health.memory_usage_percent(str(meminfo))
    assert report["mem_total_kb"] - report["mem_available_kb"] == report["mem_total_kb"] * used / 100


def test_memory_without_meminfo_is_reported_as_unknown(tmp_path):
    (tmp_path / "empty").write_text("")
    for path in (tmp_path / "absent", tmp_path / "empty"):
        report = host_info.section_memory(_args(), set(), meminfo=str(path))
        assert report["used_percent"] is None and report["mem_total_kb"] == 0 and report["top"]


def test_memory_of_this_host_matches_the_health_check():
    assert node_facts.memory_usage("/proc/meminfo")["total_kb"] > 0
    assert host_info.section_memory(_args(), set())["mem_total_kb"] == node_facts.read_meminfo("/proc/meminfo")["MemTotal"]


# ---------------------------------------------------------------- disk
def test_capacity_is_the_health_checks_disk_figure_also_without_blocks(tmp_path, monkeypatch):
    real = node_facts.disk_usage(str(tmp_path))
    assert real["total_bytes"] >= real["used_bytes"] > 0 and 0 < real["used_pct"] <= 100

    class Empty:  # a file system without blocks (proc, sysfs): no division by zero, 0 as victor_health says
        f_frsize, f_blocks, f_bfree, f_bavail = 4096, 0, 0, 0

    monkeypatch.setattr(os, "statvfs", lambda _path: Empty)
    filesystem = host_probe.capacity({"state": str(tmp_path)})["filesystem"]
    assert filesystem["used_pct"] == health.disk_usage_percent(str(tmp_path)) == 0.0
    assert filesystem["path"] == str(tmp_path) and filesystem["total_bytes"] == 0


# ---------------------------------------------------------------- error lines, the log tail, timestamps
LOG = "\n".join([
    "2026-12-02 16:02:49,674 - victor-1 - victor.api - INFO - retrying after a provider error",
    "2026-12-02 16:02:50,001 - victor-1 - victor.api - ERROR - provider timeout",
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "ValueError: fatal exception in the parser",
    "2026-12-02 16:02:51,002 - victor-1 - victor.api - CRITICAL - database unavailable",
    "2026-12-02 16:02:52,003 - victor-1 - victor.api - WARNING - an Error in lower case",
]) + "\n"


def _victor_log(tmp_path, text):
    logs = tmp_path / ".victor" / "logs"
    logs.mkdir(parents=True)
    (logs / "victor.log").write_text(text)
    return str(logs / "victor.log")


def test_error_lines_are_the_lines_the_health_check_counts(tmp_path):
    path = _victor_log(tmp_path, LOG)
    report = host_info.section_errors(_args(state_dir=str(tmp_path)))
    check, shown = health.check_log(path, None, 1000, [health.DEFAULT_LOG_PATTERN], 1, 50, 50, 50 * 1024 * 1024, None)
    assert report["victor_log"] == shown and check["value"] == 3
    assert [line.split(" - ")[-1] for line in report["victor_log"]] == [
        "provider timeout", "Traceback (most recent call last):", "database unavailable"]


def test_the_log_tail_drops_the_cut_first_line_as_the_health_check_does(tmp_path):
    filler = "2026-12-02 16:00:00,000 - victor-1 - victor.api - ERROR - %s\n" % ("x" * 200)
    path = _victor_log(tmp_path, filler * 2000 + LOG)  # ~470 KiB: the 256 KiB tail starts inside a line
    lines = host_info.tail_lines(path, 256 * 1024)
    assert lines == health.tail_lines(path, 256 * 1024)
    assert lines[0] == filler.rstrip("\n") and lines[-1].endswith("an Error in lower case")
    assert host_info.tail_lines(str(tmp_path / "absent.log"), 1024) == [] == host_info.tail_lines(str(tmp_path), 1024)


def test_log_summary_skips_a_line_that_looks_stamped_but_is_no_time(tmp_path):
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    (tmp_path / "victor.log").write_text("2026-13-45 10:00:00,000 - victor.api - ERROR - not a date\n"
                                         "%s,000 - victor.api - ERROR - real\n" % now)
    result = host_probe.logs(str(tmp_path), 1)
    assert result["counts"]["ERROR"] == 1 and result["top_errors"] == [{"message": "real", "count": 1}]


# ---------------------------------------------------------------- /health
class _Handler(http.server.BaseHTTPRequestHandler):
    answer = (200, "application/json", "{}")

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(self.answer[0])
        self.send_header("Content-Type", self.answer[1])
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes
        self.wfile.write(self.answer[2].encode())

    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


@pytest.fixture
def api():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("answer, ok, error", [
    ((200, "application/json", '{"status": "ok"}'), True, None),  # a word victor_health takes for healthy
    ((200, "application/json", '{"status": "healthy", "components": {"db": "down"}}'), False, "not healthy: db"),
    ((200, "text/html", "<html>up</html>"), False, "where JSON was expected"),
    ((503, "application/json", '{"status": "unhealthy"}'), False, "answered 503, expected [200]"),
    ((200, "application/json", "[" * 100 + "]" * 100), False, "nested deeper than 64"),
])
def test_health_ok_is_the_verdict_of_the_health_check(api, answer, ok, error):
    _Handler.answer = answer
    report = host_info.section_health(_args(port=api))
    base = "http://127.0.0.1:%d" % api
    checks = health.check_http(base, "/health", {}, 2.0, True, None, False, [200], None, None, None, health.http_get)
    assert report["ok"] is ok is (health.verdict(checks) == health.HEALTHY)
    assert report["status_code"] == answer[0] and report["latency_ms"] >= 0
    assert report["url"] == "http://127.0.0.1:%d/health" % api
    if error:
        assert error in report["error"]
    else:
        assert report["error"] is None and report["body"] == {"status": "ok"}
    if answer[1] == "text/html":
        assert report["body"] == "<html>up</html>"


# ---------------------------------------------------------------- service name, SQLite path
@pytest.mark.parametrize("service", ["--help", "-H evil", "a b"])
def test_module_refuses_a_service_that_is_no_unit_name(service, capsys):
    failed, result = module_runner.run_module(victor_host_info, {"sections": ["service"], "service": service}, capsys)
    assert failed and "is not a systemd unit name" in result["msg"]
    assert "not a systemd unit name" in host_info.systemctl_show(service)["error"]


def test_write_probe_of_a_path_with_uri_characters(tmp_path):
    path = str(tmp_path / "state#1?.db")
    sqlite3.connect(path).execute("CREATE TABLE t(x)").connection.close()
    report = host_info.section_database(_args(db=path, db_timeout=0.3), unit_pids=set())
    assert report["probe"]["writable"] and not report["locked"]
    assert sorted(os.listdir(str(tmp_path))) == ["state#1?.db"]


# ---------------------------------------------------------------- redis
@pytest.mark.parametrize("url, error", [
    ("", "no Redis URL configured"),
    ("http://127.0.0.1:1/", "must start with redis:// or rediss://"),
    ("redis://127.0.0.1:6379/cache", "must be a database number"),
    ("redis://127.0.0.1:port/0", "Port could not be cast"),
])
def test_redis_url_problems_are_reported_not_raised(url, error):
    report = host_info.section_redis(_args(redis_url=url))
    assert not report["ok"] and error in report["error"]


def test_redis_unreachable_or_without_redis_py_is_an_error_not_a_traceback(monkeypatch):
    unreachable = host_info.section_redis(_args(redis_url="redis://:pw@127.0.0.1:1/0"))
    assert not unreachable["ok"] and unreachable["error"] and unreachable["target"] == "127.0.0.1:1"
    monkeypatch.setattr(db_maintenance_redis, "HAS_REDIS", False)
    missing = host_info.section_redis(_args(redis_url="redis://127.0.0.1:1/0"))
    assert not missing["ok"] and "needs the Python library redis" in missing["error"]
