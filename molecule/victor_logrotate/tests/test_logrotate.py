"""victor_logrotate: forced rotations while the real Victor writes lose no line."""
import json
import pathlib
import time

import pytest

LOGDIR = "/var/lib/victor/.victor/logs"
CONF = "/etc/logrotate.d/victor-ai"
PROOF = (pathlib.Path(__file__).parent / "rotation_proof.sh").read_text(encoding="utf-8")
PROBE = """
set -u
rm -rf /tmp/probe && install -d -o victor -g victor /tmp/probe
setpriv --reuid victor --regid victor --init-groups env HOME=/tmp/probe /opt/victor/current/bin/victor serve --host 127.0.0.1 --port 8799 \
    >/tmp/probe/serve.out 2>&1 &
pid=$!
for _ in $(seq 1 90); do curl -sf -o /dev/null http://127.0.0.1:8799/health && break; sleep 1; done
curl -sf -o /dev/null http://127.0.0.1:8799/health || { echo not-started; kill $pid; exit 1; }
mv /tmp/probe/.victor/logs/victor.log /tmp/probe/.victor/logs/victor.log.moved
kill -%s $pid
sleep 3
if kill -0 $pid 2>/dev/null; then
    curl -s -o /dev/null -X POST -H 'content-type: application/json' -d '{"query":"probe"}' http://127.0.0.1:8799/search/code
    sleep 1
    if [ -e /tmp/probe/.victor/logs/victor.log ]; then echo reopened; else echo alive-not-reopened; fi
    kill $pid
else
    echo died
fi
"""


@pytest.mark.parametrize("signal", ["HUP", "USR1"])
def test_victor_does_not_reopen_its_log_on_a_signal(host, signal):
    """Why copytruncate: a second Victor instance is sent the signal after its log moved."""
    out = host.check_output("bash -c %s", PROBE % signal)
    assert out.splitlines()[-1] == "died", out


def test_configuration_passes_logrotate_debug(host):
    result = host.run("logrotate -d %s", CONF)
    assert result.rc == 0, result.stderr
    assert "error:" not in result.stdout + result.stderr
    conf = host.file(CONF).content_string
    for directive in ("su victor victor", "daily", "rotate 30", "maxsize 5M", "missingok", "notifempty",
                      "compress", "delaycompress", "copytruncate", "prerotate", "postrotate"):
        assert "\n    %s\n" % directive in conf or "\n    %s " % directive in conf, directive
    assert "victor api reload" not in conf


def test_forced_rotations_while_victor_writes_lose_no_line(host):
    pid_before = host.check_output("systemctl show --property=MainPID --value victor-api")
    summary = json.loads(host.check_output("bash -c %s", PROOF).splitlines()[-1])
    print("rotation proof:", summary)
    assert summary["logrotate_failures"] == 0
    assert summary["written"] >= 20
    # every record Victor wrote is in the live file or a rotated generation, exactly once
    assert summary["after"] - summary["before"] == summary["written"]
    # compressed generations appeared (delaycompress keeps the newest one plain)
    assert summary["gz"] >= 3
    # the same process kept running (never restarted, not left stopped)
    assert str(summary["pid"]) == pid_before
    assert "T" not in host.check_output("ps -o stat= -p %s", pid_before)


def test_victor_keeps_writing_the_live_file(host):
    """Same inode as before the rotations (copytruncate), and a new record lands in it."""
    live = LOGDIR + "/victor.log"
    assert host.check_output("stat -c %%i %s", live) == host.check_output("cat /tmp/rotation-live.inode")
    size = host.file(live).size
    host.check_output("curl -sf -X POST -H 'content-type: application/json' -d '{\"query\":\"live\"}' "
                      "http://127.0.0.1:8765/search/code")
    time.sleep(0.5)
    assert host.file(live).size > size
    assert host.check_output("tail -c 20000 %s | grep -c -F 'Code search error'", live) != "0"


def test_rotated_generations_keep_owner_and_mode(host):
    files = host.check_output("find %s -name 'victor.log*' -type f", LOGDIR).split()
    assert len(files) >= 4
    for path in files:
        rotated = host.file(path)
        assert rotated.mode == 0o640, path
        assert (rotated.user, rotated.group) == ("victor", "victor"), path
