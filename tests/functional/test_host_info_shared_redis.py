"""victor_host_info's Redis section is victor_db_maintenance's client and figures, against a real redis-server at its
memory limit with a password (the rest: tests/unit/test_host_info_shared.py, whose argument builder this uses)."""
import json
import shutil
import socket
import subprocess

import pytest
from test_host_info_shared import _args  # pylint: disable=import-error

from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_redis
from ansible_collections.victor.ops.plugins.module_utils import host_info


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_port():
    """A redis-server of its own, with a password and at most 2 MB of memory."""
    if not shutil.which("redis-server") or not db_maintenance_redis.HAS_REDIS:
        pytest.skip("redis-server or redis-py is not installed (tests/host-packages.txt)")
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--maxmemory", "2mb", "--maxmemory-policy", "noeviction", "--requirepass", "s3cret"],
                            stdout=subprocess.PIPE, universal_newlines=True)
    assert any("Ready to accept connections" in line for line in proc.stdout), "redis-server did not start"
    yield port
    proc.kill()
    proc.wait()


def test_redis_figures_are_victor_db_maintenances(redis_port):
    connection = {"host": "127.0.0.1", "port": redis_port, "password": "s3cret", "db": 2, "user": None, "tls": False,
                  "connect_timeout": 2}
    client = db_maintenance_redis.connect(**connection)
    client.config_set("maxmemory", 0)
    client.mset({"victor:cache:%d" % i: "x" * 400 for i in range(3000)})
    client.set("session:keep", "a")
    client.config_set("maxmemory", "2mb")
    with pytest.raises(db_maintenance_redis.redis.exceptions.ResponseError, match="maxmemory"):
        client.set("victor:cache:more", "x")
    url = "redis://:s3cret@127.0.0.1:%d/2" % redis_port
    report = host_info.section_redis(_args(redis_url=url, redis_pattern="victor:cache:*"))
    stats = db_maintenance_redis.stats(client)
    assert report["ok"] and report["error"] is None and report["target"] == "127.0.0.1:%d" % redis_port
    assert report["matching_keys"] == 3000 and report["keys"] == stats["keys"] == 3001
    assert report["maxmemory"] == stats["maxmemory"] == 2 * 1024 * 1024 and report["maxmemory_policy"] == "noeviction"
    assert report["used_percent_of_max"] > 100 and report["hit_rate_pct"] is None  # nothing was read yet
    assert report["rejected_connections"] == 0 and report["blocked_clients"] == 0
    assert client.dbsize() == 3001  # inspection never removes
    # the runbook clears with victor_db_maintenance, then inspects again
    changed, results = db_maintenance_redis.run_operations(connection, ["clear"], False, "victor:cache:*", 100)
    assert changed and results["clear"]["removed"] == 3000
    after = host_info.section_redis(_args(redis_url=url, redis_pattern="victor:cache:*"))
    assert after["ok"] and after["matching_keys"] == 0 and after["keys"] == 1 and after["used_memory"] < report["used_memory"]
    assert client.get("session:keep") == b"a"
    client.close()
    wrong = host_info.section_redis(_args(redis_url="redis://:wrong-pass@127.0.0.1:%d/0" % redis_port))
    assert not wrong["ok"] and wrong["error"] and "wrong-pass" not in json.dumps(wrong)
