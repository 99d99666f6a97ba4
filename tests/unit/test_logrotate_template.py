"""victor_logrotate: the rendered logrotate file is what the seed asks for (logrotate -d reads it in
tests/functional/test_logrotate_debug.py)."""
from pathlib import Path

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[2] / "roles" / "victor_logrotate"


def _trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    return value


def _render(**overrides):
    variables = {}
    for part in ("defaults", "vars"):  # vars: the method switch (__victor_logrotate_*) the template uses
        loaded = yaml.safe_load((ROLE / part / "main.yml").read_text(encoding="utf-8"))
        variables.update((key, _trusted(value)) for key, value in loaded.items())
    variables.update(overrides)
    variables["ansible_managed"] = "managed"
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(trust_as_template((ROLE / "templates" / "victor-ai.logrotate.j2").read_text(encoding="utf-8")))


def _directives(conf):
    body = conf.split("{", 1)[1].rsplit("}", 1)[0]
    return [line.strip() for line in body.splitlines() if line.strip()]


def test_seed_policy_with_copytruncate_and_freeze():
    conf = _render()
    header = [line for line in conf.splitlines() if line.endswith("{")][0]
    assert header == "/var/lib/victor/.victor/logs/*.log /var/lib/victor/.victor/logs/usage.jsonl {"
    directives = _directives(conf)
    for directive in ("su victor victor", "daily", "rotate 30", "maxsize 5M", "missingok", "notifempty",
                      "compress", "delaycompress", "dateext", "copytruncate", "sharedscripts"):
        assert directive in directives, directive
    # the seed's postrotate command does not exist in Victor 0.9
    assert "victor api reload" not in conf
    # "create" would be ignored with copytruncate; the mode is kept from the live file
    assert not any(d.startswith("create") for d in directives)
    prerotate = directives[directives.index("prerotate") + 1]
    postrotate = directives[directives.index("postrotate") + 1]
    assert prerotate == "/usr/local/sbin/victor-logrotate-freeze stop victor-api 30"
    assert postrotate == "/usr/local/sbin/victor-logrotate-freeze cont victor-api"


def test_without_freeze_there_are_no_scripts():
    directives = _directives(_render(victor_logrotate_freeze=False))
    assert "copytruncate" in directives
    assert "prerotate" not in directives and "postrotate" not in directives


def test_rotated_names_cannot_collide_with_victors_own_rotation():
    # Victor's RotatingFileHandler renames victor.log to victor.log.1 .. .5 at 10 MB
    directives = _directives(_render())
    assert "dateformat -%Y%m%d-%s" in directives
