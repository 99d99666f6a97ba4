"""victor_certificates against a real ACME server (pebble) and the collection's nginx.

Order matters: the failure case (pebble stopped) runs last.
"""
import json
import os
import pathlib
import shutil
import subprocess
import time

# a constant, written into commands as is (testinfra would quote it as one word)
SCRIPT = "/usr/bin/python3 /usr/local/lib/victor-certificates/victor_certificates.py"
CERT = "/etc/nginx/tls/victor-lb.crt"
KEY = "/etc/nginx/tls/victor-lb.key"
LINEAGE = "/etc/letsencrypt/live/victor-lb.test"
TEXTFILE = "/var/lib/prometheus/node-exporter"
ROOT = "/tmp/pebble-root.pem"
LOAD = (pathlib.Path(__file__).parent / "https_load.py").read_text(encoding="utf-8")
# every wait in the container is bounded by `timeout`
SERVED = ("timeout 20 openssl s_client -connect 127.0.0.1:443 -servername victor-lb.test </dev/null 2>/dev/null"
          " | openssl x509 -noout -fingerprint -sha256 -issuer")


def _served(host):
    out = host.check_output(SERVED)
    assert "Fingerprint=" in out, out
    return out


def _workers(host):
    """nginx worker pids: a reload replaces them, so an unchanged set means no reload."""
    return sorted(host.check_output("pgrep -P $(cat /run/nginx.pid)").split())


def _metrics(host, name):
    values = {}
    for line in host.file("%s/%s" % (TEXTFILE, name)).content_string.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series.split("{")[0]] = float(value)
    return values


def _pebble_root(host):
    host.check_output("timeout 20 curl -sf --cacert /etc/pebble/ca.pem -o %s https://127.0.0.1:15000/roots/0", ROOT)


def test_nginx_serves_the_certificate_pebble_issued(host):
    served = _served(host)
    assert "Pebble" in served, served  # not the self-signed placeholder (issuer CN=victor-lb.test)
    lineage = host.check_output("openssl x509 -noout -fingerprint -sha256 -in %s/cert.pem", LINEAGE)
    assert lineage.split("=", 1)[1] in served
    # the chain verifies for both names against pebble's root, through nginx to the backend
    _pebble_root(host)
    for name in ("victor-lb.test", "www.victor-lb.test"):
        out = host.check_output("timeout 20 curl -s --cacert %s -o /dev/null -w '%%{http_code}' https://%s/health", ROOT, name)
        assert out == "200", (name, out)
    # plain HTTP still redirects; only the challenge path is served without TLS
    assert host.check_output("timeout 20 curl -s -o /dev/null -w '%{http_code}' http://victor-lb.test/health") == "301"


def test_files_modes_and_timer(host):
    assert host.file(KEY).mode == 0o600
    assert host.file("/etc/victor-certificates/config.json").mode == 0o600
    assert host.service("victor-certificates-renew.timer").is_enabled
    assert host.service("victor-certificates-renew.timer").is_running
    assert not host.service("certbot.timer").is_enabled
    renewal = host.file("/etc/letsencrypt/renewal/victor-lb.test.conf").content_string
    assert "renew_hook = %s deploy" % SCRIPT in renewal
    assert "server = https://127.0.0.1:14000/dir" in renewal
    # the timer's unit as systemd runs it: nothing is due, the run succeeds and says so
    assert host.run("timeout 120 systemctl start victor-certificates-renew.service").rc == 0
    assert _metrics(host, "victor_ops_certificate_renewal.prom")["victor_ops_certificate_renewal_success"] == 1


def test_forced_renewal_under_load_serves_the_new_certificate_without_a_failed_request(host):
    _pebble_root(host)
    before = _served(host)
    host.check_output("cat > /tmp/https_load.py <<'EOF'\n%sEOF" % LOAD)
    started = time.time()
    # load starts, the timer's own command renews (certbot -> deploy hook -> nginx -t -> reload), load stops 2 s later
    out = host.run(
        "rm -f /tmp/load.stop; python3 /tmp/https_load.py %s /tmp/load.stop 240 > /tmp/load.json & lp=$!; sleep 2; "
        "timeout 180 " + SCRIPT + " renew --force-renewal > /tmp/renew.out 2>&1; echo $? > /tmp/renew.rc; sleep 2; touch /tmp/load.stop; wait $lp",
        ROOT)
    seconds = time.time() - started
    assert out.rc == 0, out.stderr
    renew_output = host.file("/tmp/renew.out").content_string
    assert host.file("/tmp/renew.rc").content_string.strip() == "0", renew_output
    load = json.loads(host.file("/tmp/load.json").content_string)
    record = dict(load, seconds=round(seconds, 1))
    print("certificate renewal under load: %s" % json.dumps(record))
    if os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY"):
        pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "certificate_renewal.json").write_text(json.dumps(record))
    assert load["failures"] == 0, load
    assert load["requests"] >= 10, load
    after = _served(host)
    assert after != before
    lineage = host.check_output("openssl x509 -noout -fingerprint -sha256 -in %s/cert.pem", LINEAGE)
    assert lineage.split("=", 1)[1] in after
    # the clients saw the old certificate, then the new one: served across the reload
    assert len(load["fingerprints"]) == 2, load
    assert "deployed the renewed certificate" in renew_output
    assert _metrics(host, "victor_ops_certificate_renewal.prom")["victor_ops_certificate_renewal_success"] == 1
    assert _metrics(host, "victor_ops_certificate_deploy.prom")["victor_ops_certificate_deploy_success"] == 1
    expiry = _metrics(host, "victor_ops_certificate_expiry.prom")["victor_ops_certificate_not_after_timestamp_seconds"]
    assert expiry > time.time() + 86400


def test_deploy_hook_reloads_only_when_the_certificate_changed(host):
    workers = _workers(host)
    out = host.run("RENEWED_LINEAGE=%s " + SCRIPT + " deploy", LINEAGE)
    assert out.rc == 0, out.stdout + out.stderr
    assert "no reload" in out.stdout
    assert _workers(host) == workers


def test_a_certificate_nginx_rejects_is_never_deployed(host):
    """A renewed chain with a key that does not match: nginx -t fails, the served pair is put back, no reload."""
    before = host.check_output("sha256sum %s %s", CERT, KEY)
    workers = _workers(host)
    host.check_output("rm -rf /tmp/bad && mkdir -p /tmp/bad/victor-lb.test && cp %s/fullchain.pem /tmp/bad/victor-lb.test/ && "
                      "openssl ecparam -name prime256v1 -genkey -noout -out /tmp/bad/victor-lb.test/privkey.pem", LINEAGE)
    out = host.run("RENEWED_LINEAGE=/tmp/bad/victor-lb.test " + SCRIPT + " deploy")
    assert out.rc == 1, out.stdout + out.stderr
    assert "nginx -t rejected the renewed certificate" in out.stdout
    assert host.check_output("sha256sum %s %s", CERT, KEY) == before
    assert _workers(host) == workers
    assert _metrics(host, "victor_ops_certificate_deploy.prom")["victor_ops_certificate_deploy_success"] == 0
    assert host.check_output("timeout 20 curl -s --cacert %s -o /dev/null -w '%%{http_code}' https://victor-lb.test/health", ROOT) == "200"


def test_a_failed_renewal_writes_the_failure_metric_and_leaves_nginx_alone(host):
    before = _served(host)
    workers = _workers(host)
    last_success = _metrics(host, "victor_ops_certificate_renewal.prom")["victor_ops_certificate_renewal_last_success_timestamp_seconds"]
    host.check_output("systemctl stop pebble")
    try:
        # forced: without it certbot would not contact the ACME server before 30 days are left
        out = host.run("timeout 180 " + SCRIPT + " renew --force-renewal")
    finally:
        host.check_output("systemctl start pebble")
    assert out.rc == 1, out.stdout + out.stderr
    assert "renewal FAILED" in out.stdout
    metrics = _metrics(host, "victor_ops_certificate_renewal.prom")
    assert metrics["victor_ops_certificate_renewal_success"] == 0
    assert metrics["victor_ops_certificate_renewal_last_success_timestamp_seconds"] == last_success
    assert metrics["victor_ops_certificate_renewal_last_run_timestamp_seconds"] > last_success
    assert _served(host) == before
    assert _workers(host) == workers
    for name in ("renewal", "deploy", "expiry"):
        text = host.file("%s/victor_ops_certificate_%s.prom" % (TEXTFILE, name)).content_string
        lint = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "metrics"], input=text,
                              capture_output=True, text=True, check=False)
        assert lint.returncode == 0, name + lint.stdout + lint.stderr
