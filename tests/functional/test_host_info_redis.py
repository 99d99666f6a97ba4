"""victor_host_info's Redis section and victor_db_maintenance's Redis clear against a real redis-server at its
memory limit (the rest of victor_host_info: tests/unit/test_host_info.py, whose argument builder this uses)."""
import shutil
import socket
import subprocess
import time

import pytest
from test_host_info import _args  # pylint: disable=import-error

from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_redis
from ansible_collections.victor.ops.plugins.module_utils import host_info as diag


@pytest.fixture
def redis_url():
    server = shutil.which("redis-server")
    if not server:
        pytest.skip("redis-server is not installed (tests/host-packages.txt)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--maxmemory", "2mb", "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL)
    try:
        for _attempt in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield "redis://127.0.0.1:%d/0" % port
    finally:
        proc.kill()
        proc.wait()


def test_redis_at_its_limit_is_cleared_by_pattern_only(redis_url):
    client = diag.Redis(redis_url, 2.0)
    client.call("SET", "session:keep", "a")
    client.call("CONFIG", "SET", "maxmemory", "0")
    for start in range(0, 3000, 500):
        client.call("MSET", *[w for i in range(start, start + 500) for w in ("victor:cache:%d" % i, "x" * 400)])
    client.call("CONFIG", "SET", "maxmemory", "2mb")
    with pytest.raises(diag.RedisError, match="OOM"):
        client.call("SET", "victor:cache:more", "x")
    counted = diag.section_redis(_args(redis_url=redis_url, redis_pattern="victor:cache:*", redis_batch=100))
    assert counted["ok"] and counted["matching_keys"] == 3000 and counted["keys"] == 3001
    assert counted["used_percent_of_max"] > 100 and counted["maxmemory_policy"] == "noeviction"
    assert client.call("DBSIZE") == 3001  # inspection never removes
    # the runbook clears with victor_db_maintenance (redis-py), the same SCAN + UNLINK as everywhere
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    conn_params = {"host": "127.0.0.1", "port": port, "password": None, "db": 0, "user": None, "tls": False, "connect_timeout": 10}
    changed, results = db_maintenance_redis.run_operations(conn_params, ["clear"], check_mode=False, pattern="victor:cache:*",
                                                           scan_count=100)
    assert changed and results["clear"]["removed"] == 3000
    assert client.call("DBSIZE") == 1 and client.call("GET", "session:keep") == b"a"
    after = diag.section_redis(_args(redis_url=redis_url, redis_pattern="victor:cache:*", redis_batch=100))
    assert after["used_memory"] < counted["used_memory"] and after["matching_keys"] == 0
