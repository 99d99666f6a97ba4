"""victor_nginx_lb: the nginx.conf template and the drain/undrain edit of its server lines."""
import re
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[2] / "roles" / "victor_nginx_lb"
BACKENDS = ["api-1", "api-2", "api-3"]

# the template quotes with victor.ops.nginx_quote, found through the collection loader as in a play
init_plugin_loader()


def _trusted(value):
    """Variables from role files are templates to Ansible; mark them the same way."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    return value


def _role_vars(name):
    return _trusted(yaml.safe_load((ROLE / name / "main.yml").read_text(encoding="utf-8")))


def _render(drained=(), hostvars=None, **overrides):
    variables = _role_vars("defaults")
    variables.update(overrides)
    variables.update(_role_vars("vars"))
    hostvars = hostvars or {}
    variables["hostvars"] = {name: dict({"inventory_hostname": name}, **hostvars.get(name, {})) for name in BACKENDS}
    variables["groups"] = {"victor_api": BACKENDS, "victor_lb": ["lb-1"]}
    variables["ansible_managed"] = "managed"
    variables["__victor_nginx_lb_drained"] = list(drained)
    templar = Templar(loader=DataLoader(), variables=variables)
    source = (ROLE / "templates" / "nginx.conf.j2").read_text(encoding="utf-8")
    return templar.template(trust_as_template(source))


def _upstream(conf):
    return re.search(r"upstream victor_backend \{\n(.*?)\n    \}", conf, re.S).group(1)


def _backend_state_regex(host, drained):
    """The replace task of tasks/backend_state.yml, applied the way ansible.builtin.replace does."""
    tasks = yaml.safe_load((ROLE / "tasks" / "backend_state.yml").read_text(encoding="utf-8"))
    block = next(t for t in tasks if t.get("block") and "Change the backend" in t["name"])["block"]
    task = next(t for t in block if "ansible.builtin.replace" in t)["ansible.builtin.replace"]
    variables = {"victor_nginx_lb_drain_host": host, "__victor_nginx_lb_state": "drained" if drained else "active",
                 "__victor_nginx_lb_down": drained}
    templar = Templar(loader=DataLoader(), variables=variables)
    regexp = templar.template(trust_as_template(task["regexp"]))
    replace = templar.template(trust_as_template(task["replace"]))
    assert "nginx -t" in task["validate"]
    return re.compile(regexp, re.MULTILINE), replace


def test_default_is_least_conn_with_weights_passive_checks_and_keepalive():
    conf = _render(hostvars={"api-1": {"victor_nginx_lb_weight": 3}, "api-2": {"ansible_host": "10.0.0.2"},
                             "api-3": {"victor_deploy_port": 9000}})
    upstream = _upstream(conf)
    assert upstream.splitlines()[0].strip() == "least_conn;"
    assert "server api-1:8765 weight=3 max_fails=3 fail_timeout=10s; # victor-backend: api-1" in upstream
    assert "server 10.0.0.2:8765 weight=1 max_fails=3 fail_timeout=10s; # victor-backend: api-2" in upstream
    assert "server api-3:9000 weight=1" in upstream
    # keepalive comes after the balancing method, as nginx requires
    assert upstream.index("least_conn;") < upstream.index("keepalive 32;")
    assert "check interval" not in conf


@pytest.mark.parametrize("method, line", [
    ("ip_hash", "ip_hash;"),
    ("hash", "hash $remote_addr consistent;"),
])
def test_other_balancing_methods(method, line):
    assert _upstream(_render(victor_nginx_lb_method=method)).splitlines()[0].strip() == line


def test_round_robin_emits_no_method():
    first = _upstream(_render(victor_nginx_lb_method="round_robin")).splitlines()[0].strip()
    assert first.startswith("server ")


def test_backup_and_drained_servers():
    upstream = _upstream(_render(drained=["api-2"], hostvars={"api-3": {"victor_nginx_lb_backup": True}}))
    assert "fail_timeout=10s down; # victor-backend: api-2" in upstream
    assert "fail_timeout=10s backup; # victor-backend: api-3" in upstream
    assert "fail_timeout=10s; # victor-backend: api-1" in upstream


def test_seed_timeouts_headers_and_health_without_access_log():
    conf = _render()
    for directive in ("proxy_connect_timeout 60s;", "proxy_send_timeout 60s;", "proxy_read_timeout 300s;",
                      "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_set_header X-Real-IP $remote_addr;"):
        assert directive in conf
    health = re.search(r"location = /health \{(.*?)\}", conf, re.S).group(1)
    assert "access_log off;" in health


def test_rate_limit_only_when_set():
    assert "limit_req" not in _render()
    conf = _render(victor_nginx_lb_rate_limit="10r/s", victor_nginx_lb_rate_limit_burst=5)
    assert "limit_req_zone $binary_remote_addr zone=victor_lb:10m rate=10r/s;" in conf
    assert "limit_req zone=victor_lb burst=5 nodelay;" in conf


def test_tls_with_redirect():
    conf = _render(victor_nginx_lb_tls_enabled=True, victor_nginx_lb_tls_redirect=True,
                   victor_nginx_lb_tls_certificate="/c.pem", victor_nginx_lb_tls_certificate_key="/k.pem")
    assert "listen 443 ssl;" in conf
    assert "ssl_certificate /c.pem;" in conf
    assert "return 301 https://$host$request_uri;" in conf


@pytest.mark.parametrize("redirect", [False, True])
def test_acme_challenges_served_on_plain_http_only_when_a_webroot_is_set(redirect):
    tls = dict(victor_nginx_lb_tls_enabled=True, victor_nginx_lb_tls_redirect=redirect,
               victor_nginx_lb_tls_certificate="/c.pem", victor_nginx_lb_tls_certificate_key="/k.pem")
    assert "acme-challenge" not in _render(**tls)
    conf = _render(victor_nginx_lb_acme_webroot="/var/www/victor-acme", **tls)
    location = "location ^~ /.well-known/acme-challenge/ {\n            root /var/www/victor-acme;"
    assert conf.count(location) == 1
    # in the server that listens on port 80: the redirecting one, else the only one
    server = conf[conf.rindex("server {", 0, conf.index(location)):conf.index(location)]
    assert "listen 80;" in server


def test_maintenance_answers_503_from_the_flag_file():
    conf = _render()
    assert "if (-f /etc/nginx/victor-maintenance.on) {\n            return 503;" in conf
    assert "add_header Retry-After 300 always;" in conf


@pytest.mark.parametrize("host", BACKENDS)
def test_drain_marks_only_that_server_down_and_undrain_restores_it(host):
    original = _render(hostvars={"api-3": {"victor_nginx_lb_backup": True}})
    regex, replace = _backend_state_regex(host, drained=True)
    drained = regex.sub(replace, original)
    assert drained == _render(drained=[host], hostvars={"api-3": {"victor_nginx_lb_backup": True}})
    # idempotent: draining again changes nothing
    assert regex.sub(replace, drained) == drained
    regex, replace = _backend_state_regex(host, drained=False)
    assert regex.sub(replace, drained) == original


def test_drain_of_a_prefix_name_does_not_touch_longer_names():
    hosts = {"api-1": {}, "api-10": {}}
    conf = "        server a:1 weight=1; # victor-backend: api-1\n        server b:1 weight=1; # victor-backend: api-10\n"
    assert hosts
    regex, replace = _backend_state_regex("api-1", drained=True)
    assert regex.sub(replace, conf) == conf.replace("weight=1; # victor-backend: api-1\n", "weight=1 down; # victor-backend: api-1\n")


@pytest.mark.parametrize("active", ["blue", "green"])
def test_blue_green_sends_traffic_only_to_the_active_slot(active):
    slots = {"api-1": {"victor_nginx_lb_slot": "blue"}, "api-2": {"victor_nginx_lb_slot": "green"},
             "api-3": {"victor_nginx_lb_slot": "green"}}
    conf = _render(hostvars=slots, drained=["api-3"], __victor_nginx_lb_slot=active)
    down = {line.rsplit(" ", 1)[-1] for line in _upstream(conf).splitlines() if " down; # victor-backend: " in line}
    up = {line.rsplit(" ", 1)[-1] for line in _upstream(conf).splitlines() if "; # victor-backend: " in line} - down
    assert up == ({"api-1"} if active == "blue" else {"api-2"})  # api-3 is green but drained
    assert down == set(BACKENDS) - up
    assert "(active slot: %s)" % active in conf


def test_without_blue_green_the_slots_change_nothing():
    slots = {"api-1": {"victor_nginx_lb_slot": "blue"}, "api-2": {"victor_nginx_lb_slot": "green"}}
    assert " down;" not in _upstream(_render(hostvars=slots))
