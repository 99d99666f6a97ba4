"""victor_nginx_lb: requests through a real nginx to three real Victor backends."""
import concurrent.futures
import hashlib
import json
import os
import subprocess
import time
import uuid

import testinfra

LB = "victor-ops-nginx-lb-lb"
BACKENDS = {"victor-ops-nginx-lb-b1": 3, "victor-ops-nginx-lb-b2": 2, "victor-ops-nginx-lb-b3": 1}
CONF = "/etc/nginx/nginx.conf"
testinfra_hosts = [LB]


def _other(name):
    return testinfra.get_host("ansible://" + name, ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def _status(host, url):
    return int(host.check_output("curl -s -o /dev/null -w '%%{http_code}' --max-time 10 %s", url))


def _nginx_state(host):
    """Checksum of the live configuration and the pids of master and workers."""
    conf = hashlib.sha256(host.file(CONF).content).hexdigest()
    pids = host.check_output("pgrep -d, -f '^nginx: (master|worker) process'")
    return conf, pids


def _playbook(extra_vars):
    """Run victor.ops.load_balancer against this scenario's inventory."""
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "victor.ops.load_balancer",
           "-e", json.dumps(extra_vars)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def _ip_of(host, name):
    return host.check_output("getent hosts %s", name).split()[0]


def test_upstream_is_generated_from_the_inventory(host):
    conf = host.check_output("nginx -T 2>/dev/null")
    assert "least_conn;" in conf
    assert "keepalive 32;" in conf
    for name, weight in BACKENDS.items():
        assert "server %s:8765 weight=%d max_fails=3 fail_timeout=10s; # victor-backend: %s" % (name, weight, name) in conf
    assert "check interval" not in conf
    for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $proxy_add_x_forwarded_for",
                   "X-Forwarded-Proto $scheme"):
        assert "proxy_set_header %s;" % header in conf
    assert "proxy_read_timeout 300s;" in conf


def test_distribution_follows_weights(host):
    tag = uuid.uuid4().hex
    host.check_output("for i in $(seq 1 60); do curl -s -o /dev/null --max-time 10 http://127.0.0.1/lb-probe-%s; done", tag)
    time.sleep(1)
    lines = host.check_output("grep -F 'lb-probe-%s' /var/log/nginx/access.log", tag).splitlines()
    assert len(lines) == 60
    counts = {name: sum(1 for line in lines if "upstream=%s:8765 " % _ip_of(host, name) in line) for name in BACKENDS}
    print("distribution over 60 requests (weights 3/2/1):", counts)
    assert sum(counts.values()) == 60
    for name, weight in BACKENDS.items():
        assert abs(counts[name] - 10 * weight) <= 3, counts


def test_health_is_proxied_without_access_log(host):
    before = host.check_output("wc -l < /var/log/nginx/access.log")
    body = json.loads(host.check_output("curl -sf --max-time 10 http://127.0.0.1/health"))
    assert body["status"] == "healthy"
    assert host.check_output("wc -l < /var/log/nginx/access.log") == before


def test_requests_succeed_with_one_backend_stopped(host):
    backend = _other("victor-ops-nginx-lb-b1")
    backend.check_output("systemctl stop victor-api")
    try:
        codes = [_status(host, "http://127.0.0.1/health") for dummy in range(30)]
        assert codes == [200] * 30
    finally:
        backend.check_output("systemctl start victor-api")
        backend.check_output("for i in $(seq 1 60); do curl -sf http://127.0.0.1:8765/health && exit 0; sleep 1; done; exit 1")


def test_tls_with_the_self_signed_certificate(host):
    out = host.check_output(
        "curl -sf --max-time 10 --cacert /etc/ssl/victor-lb/cert.pem --resolve victor-lb.test:443:127.0.0.1 https://victor-lb.test/health")
    assert json.loads(out)["status"] == "healthy"
    # a client that does not trust the certificate is refused
    assert host.run("curl -s --max-time 10 --resolve victor-lb.test:443:127.0.0.1 https://victor-lb.test/health").rc == 60


def test_maintenance_flag_answers_503_with_retry_after(host):
    host.check_output("touch /etc/nginx/victor-maintenance.on")
    try:
        headers = host.check_output("curl -s -D - -o /tmp/page.html --max-time 10 http://127.0.0.1/chat")
        assert headers.startswith("HTTP/1.1 503")
        assert "Retry-After: 300" in headers
        assert "Scheduled maintenance in progress" in host.file("/tmp/page.html").content_string
        assert _status(host, "http://127.0.0.1/health") == 503
    finally:
        host.check_output("rm -f /etc/nginx/victor-maintenance.on")
    assert _status(host, "http://127.0.0.1/health") == 200


def test_maintenance_variable_switches_without_reload(host):
    before = _nginx_state(host)
    rc, out = _playbook({"victor_nginx_lb_maintenance": True})
    assert rc == 0, out
    try:
        assert _status(host, "http://127.0.0.1/health") == 503
        assert _nginx_state(host) == before
    finally:
        rc, out = _playbook({"victor_nginx_lb_maintenance": False})
    assert rc == 0, out
    assert _status(host, "http://127.0.0.1/health") == 200


def test_config_nginx_rejects_never_replaces_the_running_one(host):
    before = _nginx_state(host)
    # passes the role's own checks (digits and a unit), nginx -t rejects it (the size overflows)
    rc, out = _playbook({"victor_nginx_lb_client_max_body_size": "99999999999999999999m"})
    assert rc != 0
    assert "client_max_body_size" in out and "invalid value" in out
    assert _nginx_state(host) == before
    assert _status(host, "http://127.0.0.1/health") == 200


BAD_INPUT = [
    ({"victor_nginx_lb_backend_group": "victor_empty"}, "victor_nginx_lb_backend_group"),
    ({"victor_nginx_lb_client_max_body_size": "10m; include /etc/shadow"}, "victor_nginx_lb_client_max_body_size"),
    ({"victor_nginx_lb_weight": 0}, "victor_nginx_lb_weight"),
    ({"victor_nginx_lb_proxy_read_timeout": -5}, "victor_nginx_lb_proxy_read_timeout"),
    ({"victor_nginx_lb_tls_certificate": "/etc/ssl/victor-lb/missing.pem"}, "victor_nginx_lb_tls_certificate"),
]


def test_bad_input_fails_before_touching_nginx(host):
    """The runs only read, so they run side by side."""
    before = _nginx_state(host)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(BAD_INPUT)) as pool:
        results = list(pool.map(_playbook, [extra_vars for extra_vars, variable in BAD_INPUT]))
    for (extra_vars, variable), (rc, out) in zip(BAD_INPUT, results):
        assert rc != 0, (extra_vars, out)
        # the failure message itself (not a task title) names the variable
        failed = [line for line in out.splitlines() if line.startswith(("fatal:", "failed:"))]
        assert any(variable in line.split('"msg"', 1)[-1] for line in failed if '"msg"' in line), (extra_vars, out)
        assert "Install nginx" not in out, extra_vars
    assert _nginx_state(host) == before
