"""Inventory values cannot become directives or commands (issue 13, injection part).

Each role's own validation is evaluated from its task files (the assert tasks, run through Ansible's
templating) and its meta/argument_specs.yml (ArgumentSpecValidator); templates are rendered with
Ansible's Templar and the victor.ops quoting filters. A value is either refused by the role or the
rendered file parses to exactly the directives it has with a harmless value. Real logrotate, nginx
and systemd-analyze check the regression cases of the issue in
tests/functional/test_template_injection_tools.py.
"""
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from ansible.utils.collection_loader import AnsibleCollectionConfig
from hypothesis import HealthCheck, assume, given, settings, strategies as st
# role files are templates to Ansible, inventory values (the overrides here) are not
from test_nginx_lb_template import _trusted

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
PWNED_ALPHABET = "\n\r\t\x00\x0b\x0c\x85\u2028\u2029 ;{}'\"$`\\#%=&|<>()*!~"
# Every character that could end a line, a word, a string, a block or a directive, mixed with ordinary ones.
HOSTILE = st.text(alphabet=st.sampled_from(PWNED_ALPHABET + "aZ09.-_/:@"), min_size=1, max_size=12)

# Each example renders a template and evaluates the role's checks (~50 ms): fewer examples than the
# profile's default keep the ci run short; the fuzz profile still gets many more.
PROPERTY = settings(max_examples=max(30, settings.default.max_examples // 10), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# victor.ops.* filters are found through the collection loader, as ansible-playbook does
# (test_nginx_lb_template may have set it up already).
if AnsibleCollectionConfig.collection_finder is None:
    init_plugin_loader()


@lru_cache(maxsize=None)
def _yaml(path):
    return yaml.safe_load((ROLES / path).read_text(encoding="utf-8")) or {}


def _variables(role, overrides):
    variables = {}
    for part in ("defaults", "vars"):
        if (ROLES / role / part / "main.yml").exists():
            variables.update(_trusted(_yaml(f"{role}/{part}/main.yml")))
    variables.update(overrides)
    variables.setdefault("ansible_managed", "managed")
    return variables


def render(role, template, **overrides):
    templar = Templar(loader=DataLoader(), variables=_variables(role, overrides))
    return templar.template(trust_as_template((ROLES / role / "templates" / template).read_text(encoding="utf-8")))


def _tasks(tasks):
    for task in tasks:
        if "block" in task:
            yield from ({**inner, "when": [task.get("when", True), inner.get("when", True)]} for inner in task["block"])
        else:
            yield task


def _conditions(value):
    if isinstance(value, list):
        return [item for entry in value for item in _conditions(entry)]
    return [value]


def _focus(overrides):
    """The role variables a call sets (host variables included); None: all of them."""
    names = {k for k in overrides if not k.startswith("__") and k not in ("hostvars", "groups")}
    for host in overrides.get("hostvars", {}).values():
        names |= {k for k in host if k != "inventory_hostname"}
    return names or None


def _mentions(piece, focus):
    return focus is None or any(name in repr(piece) for name in focus)


def refusals(role, tasks_file, **overrides):
    """Messages of the role's assert tasks (in tasks_file) and argument spec that refuse these values.

    Only the asserts (and literal loop items) that mention a variable set here are evaluated: the others
    cannot refuse it, and compiling every expression for every example would be slow.
    """
    spec = _yaml(f"{role}/meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    variables, focus = _variables(role, overrides), _focus(overrides)
    messages = ArgumentSpecValidator(spec).validate({k: v for k, v in overrides.items() if k in spec}).error_messages
    for task in _tasks(_yaml(f"{role}/tasks/{tasks_file}")):
        check = task.get("ansible.builtin.assert")
        if check is None or not _mentions(task, focus):
            continue
        local = dict(variables, **_trusted(task.get("vars", {})))
        templar = Templar(loader=DataLoader(), variables=local)
        if not all(templar.evaluate_conditional(_trusted(c)) for c in _conditions(task.get("when", True)) if c is not True):
            continue
        if isinstance(task.get("loop"), list):
            items = templar.template(_trusted([item for item in task["loop"] if _mentions(item, focus)]))
        else:
            items = templar.template(_trusted(task["loop"])) if "loop" in task else [None]
        for item in items:
            templar = Templar(loader=DataLoader(), variables=dict(local, item=item))
            try:
                ok = all(templar.evaluate_conditional(_trusted(c)) for c in _conditions(check["that"]))
            except Exception as exc:  # an assert that errors stops the play too
                ok, check = False, dict(check, fail_msg=f"error: {exc}")
            if not ok:
                messages.append(str(templar.template(_trusted(check["fail_msg"]))))
    return messages


def render_or_error(role, template, **overrides):
    try:
        return render(role, template, **overrides)
    except Exception as exc:  # a quoting filter refused the value: nothing is written
        assert "quote" in str(exc), exc
        return None


# ---------------------------------------------------------------- parsers of the target syntaxes

def logrotate_parse(conf):
    """(header, directives, scripts) of a one-block logrotate file, script lines kept apart."""
    lines = [line.strip() for line in conf.splitlines() if line.strip() and not line.strip().startswith("#")]
    header, body = lines[0], lines[1:]
    assert header.endswith("{") and body[-1] == "}", conf
    directives, scripts, current = [], {}, None
    for line in body[:-1]:
        if current is not None:
            if line == "endscript":
                current = None
            else:
                scripts[current].append(line)
        elif line in ("prerotate", "postrotate", "firstaction", "lastaction", "preremove"):
            current = line
            scripts[line] = []
            directives.append(line)
        else:
            directives.append(line.split()[0])
    return header, directives, scripts


def nginx_tokens(conf):
    """nginx's tokenizer: words, quoted strings (with \\ escapes), ; { } and # comments."""
    tokens, i = [], 0
    while i < len(conf):
        char = conf[i]
        if char.isspace():
            i += 1
        elif char == "#":
            i = conf.find("\n", i) if "\n" in conf[i:] else len(conf)
        elif char in ";{}":
            tokens.append(char)
            i += 1
        elif char in "\"'":
            j, word = i + 1, ""
            while conf[j] != char:
                if conf[j] == "\\" and conf[j + 1] in (char, "\\"):
                    j += 1
                word += conf[j]
                j += 1
            tokens.append(("str", word))
            i = j + 1
        else:
            j = i
            while j < len(conf) and not conf[j].isspace() and conf[j] not in ";{}\"'":
                j += 1
            tokens.append(conf[i:j])
            i = j
    return tokens


def nginx_directives(conf):
    """[(block path, directive name, arguments)] of an nginx configuration."""
    out, stack, words = [], [], []
    for token in nginx_tokens(conf):
        if token in (";", "{"):
            name, args = words[0], [w[1] if isinstance(w, tuple) else w for w in words[1:]]
            out.append(("/".join(stack), name, args))
            if token == "{":
                stack.append(name)
            words = []
        elif token == "}":
            assert not words, words
            stack.pop()
        else:
            words.append(token)
    assert not stack and not words
    return out


def unit_parse(text):
    """[(section, key)] and {key: [raw values]} of a systemd unit or environment file (no continuations)."""
    keys, values, section = [], {}, ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        key, value = line.split("=", 1) if "=" in line else (line, "")
        keys.append((section, key))
        values.setdefault(key, []).append(value)
    return keys, values


_C_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def systemd_words(value):
    """systemd's split of a command line: quoted words with C escapes, then %% and $$."""
    words, i = [], 0
    while i < len(value):
        if value[i] == " ":
            i += 1
            continue
        word = ""
        if value[i] == '"':
            i += 1
            while value[i] != '"':
                if value[i] == "\\":
                    kind = value[i + 1]
                    if kind in _C_ESCAPES:
                        word += _C_ESCAPES[kind]
                        i += 2
                    else:
                        width = {"x": 2, "u": 4, "U": 8}[kind]
                        word += chr(int(value[i + 2:i + 2 + width], 16))
                        i += 2 + width
                else:
                    word += value[i]
                    i += 1
            i += 1
        else:
            while i < len(value) and value[i] != " ":
                word += value[i]
                i += 1
        words.append(word.replace("%%", "\0").replace("$$", "$").replace("\0", "%"))
    return words


def pg_settings(conf):
    """{name: value} as PostgreSQL's configuration lexer reads it (quoted strings with '' and \\ escapes)."""
    settings = {}
    token = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*('(?:[^'\\\n]|\\.|'')*'|[^\s#']+)\s*(#.*)?\Z")
    for line in conf.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        match = token.match(line)
        assert match, f"postgresql.conf syntax error: {line!r}"
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1].replace("''", "'"))
        settings[match.group(1)] = value
    return settings


# ---------------------------------------------------------------- victor_logrotate

LOGROTATE = "victor_logrotate"


def _logrotate(**overrides):
    return render(LOGROTATE, "victor-ai.logrotate.j2", **overrides)


LOGROTATE_VARS = ["victor_logrotate_service_name", "victor_logrotate_freeze_script", "victor_logrotate_log_dir",
                  "victor_logrotate_user", "victor_logrotate_group", "victor_logrotate_maxsize"]


@PROPERTY
@given(name=st.sampled_from(LOGROTATE_VARS), valid=st.sampled_from(["victor-api", "/var/lib/x", "5M"]), hostile=HOSTILE)
def test_logrotate_hostile_values_are_refused_or_stay_one_word(name, valid, hostile):
    value = valid + hostile
    if refusals(LOGROTATE, "main.yml", **{name: value}):
        return
    header, directives, scripts = logrotate_parse(_logrotate(**{name: value}))
    assert (directives, len(header.split())) == (_logrotate_shape()[1], _logrotate_shape()[0])
    assert [shlex.split(line) for line in scripts["prerotate"]] == [
        [_var(name, value, "victor_logrotate_freeze_script"), "stop", _var(name, value, "victor_logrotate_service_name"), "30"]]


@lru_cache(maxsize=None)
def _logrotate_shape():
    header, directives, scripts = logrotate_parse(_logrotate())
    assert "prerotate" in scripts
    return len(header.split()), directives


def _var(name, value, wanted):
    return value if name == wanted else _yaml(f"{LOGROTATE}/defaults/main.yml")[wanted]


def test_logrotate_files_with_separators_are_refused():
    for pattern in ["*.log\n", "a b", "x{", "../*.log", '"q"']:
        assert refusals(LOGROTATE, "main.yml", victor_logrotate_files=[pattern]), pattern
    assert not refusals(LOGROTATE, "main.yml")


# ---------------------------------------------------------------- victor_nginx_lb

NGINX = "victor_nginx_lb"
BACKENDS = ["api-1", "api-2"]


def _nginx(hostvars=None, **overrides):
    hostvars = hostvars or {}
    overrides["hostvars"] = {h: dict({"inventory_hostname": h, "ansible_host": "127.0.0.1"}, **hostvars.get(h, {}))
                             for h in BACKENDS}
    overrides["groups"] = {"victor_api": BACKENDS, "victor_lb": ["lb-1"]}
    overrides.setdefault("__victor_nginx_lb_drained", [])
    return overrides


def nginx_refusals(hostvars=None, **overrides):
    return refusals(NGINX, "validate.yml", **_nginx(hostvars, **overrides))


def nginx_render(hostvars=None, **overrides):
    return render_or_error(NGINX, "nginx.conf.j2", **_nginx(hostvars, **overrides))


def test_nginx_client_max_body_size_cannot_include_a_file():
    hostile = "10m; include /etc/shadow"
    assert any("victor_nginx_lb_client_max_body_size" in m
               for m in nginx_refusals(victor_nginx_lb_client_max_body_size=hostile))
    directives = nginx_directives(nginx_render(victor_nginx_lb_client_max_body_size=hostile))
    assert ("http", "client_max_body_size", [hostile]) in directives
    assert not [d for d in directives if d[1] == "include" and "/etc/shadow" in d[2]]


NGINX_VARS = {
    "victor_nginx_lb_client_max_body_size": "10m",
    "victor_nginx_lb_worker_processes": "auto",
    "victor_nginx_lb_maintenance_flag": "/etc/nginx/x.on",
    "victor_nginx_lb_maintenance_root": "/var/www/x",
    "victor_nginx_lb_server_name": "victor.example",
    "victor_nginx_lb_hash_key": "$remote_addr",
    "victor_nginx_lb_rate_limit": "10r/s",
}
NGINX_HOSTVARS = {"victor_nginx_lb_address": "10.0.0.5", "ansible_host": "api.example", "victor_nginx_lb_port": "8765",
                  "victor_nginx_lb_weight": "2"}


@lru_cache(maxsize=None)
def _nginx_shape(method):
    rendered = nginx_render(victor_nginx_lb_method=method, victor_nginx_lb_rate_limit="10r/s")
    return [(block, name) for block, name, args in nginx_directives(rendered)]


@PROPERTY
@given(name=st.sampled_from(sorted(NGINX_VARS) + sorted(NGINX_HOSTVARS)), hostile=HOSTILE)
def test_nginx_hostile_values_are_refused_or_stay_one_argument(name, hostile):
    if name in NGINX_HOSTVARS:
        value = NGINX_HOSTVARS[name] + hostile
        kwargs = {"hostvars": {"api-2": {name: value}}}
    else:
        value = NGINX_VARS[name] + hostile
        kwargs = {name: value}
    method = "hash" if name == "victor_nginx_lb_hash_key" else "least_conn"
    kwargs.update(victor_nginx_lb_method=method, victor_nginx_lb_rate_limit=kwargs.get("victor_nginx_lb_rate_limit", "10r/s"))
    if nginx_refusals(**kwargs):
        return
    conf = nginx_render(**kwargs)
    assume(conf is not None)  # refused by the quoting filter: nothing written
    assert [(block, directive) for block, directive, args in nginx_directives(conf)] == _nginx_shape(method)


# ---------------------------------------------------------------- systemd: victor_backup and victor_deploy

BACKUP = "victor_backup"
DEPLOY = "victor_deploy"


def _schedule(**changes):
    return [dict({"name": "daily", "type": "full", "scope": "full", "on_calendar": "daily"}, **changes)]


@pytest.mark.parametrize("changes, variable", [
    ({"type": "full\nPYTHONPATH=/tmp/attacker\nIGNORED="}, "type"),
    ({"on_calendar": "daily\nOnBootSec=1"}, "on_calendar"),
    ({"name": "x.service\nExecStart=/bin/sh"}, "name"),
    ({"scope": "full --config /tmp/evil.json"}, "scope"),
])
def test_backup_schedules_cannot_add_lines(changes, variable):
    messages = refusals(BACKUP, "main.yml", victor_backup_schedules=_schedule(**changes))
    assert any("victor_backup_schedules" in m and variable in m for m in messages), messages


def _env_file(schedule):
    """The content of the per-schedule environment file, from the role's own copy task."""
    task = next(t for t in _tasks(_yaml(f"{BACKUP}/tasks/main.yml")) if t["name"] == "Write the arguments of each schedule")
    templar = Templar(loader=DataLoader(), variables={"item": schedule})
    return templar.template(trust_as_template(task["ansible.builtin.copy"]["content"]))


@PROPERTY
@given(key=st.sampled_from(["name", "type", "scope", "on_calendar"]), hostile=HOSTILE)
def test_backup_hostile_schedules_are_refused_or_keep_their_lines(key, hostile):
    schedules = _schedule(**{key: _schedule()[0][key] + hostile})
    if refusals(BACKUP, "main.yml", victor_backup_schedules=schedules):
        return
    schedule = schedules[0]
    keys, values = unit_parse(render(BACKUP, "victor-backup.timer.j2", __victor_backup_schedule=schedule))
    assert keys == unit_parse(render(BACKUP, "victor-backup.timer.j2", __victor_backup_schedule=_schedule()[0]))[0]
    assert values["OnCalendar"] == [schedule["on_calendar"]]
    assert unit_parse(_env_file(schedule))[1] == {"VICTOR_BACKUP_ARGS": [f"--type {schedule['type']} --scope {schedule['scope']}"]}


@PROPERTY
@given(name=st.sampled_from(["victor_backup_lib_dir", "victor_backup_config_file"]), hostile=HOSTILE)
def test_backup_unit_paths_are_refused_or_quoted(name, hostile):
    value = "/etc/victor/x" + hostile
    if refusals(BACKUP, "main.yml", **{name: value}):
        return
    unit = render_or_error(BACKUP, "victor-backup@.service.j2", **{name: value})
    assume(unit is not None)
    assert unit_parse(unit)[0] == unit_parse(render(BACKUP, "victor-backup@.service.j2"))[0]


DEPLOY_VALID = {"victor_deploy_version": "0.9.5"}


def _deploy_unit(**overrides):
    return render(DEPLOY, "victor-api.service.j2", **dict(DEPLOY_VALID, **overrides))


def test_deploy_environment_name_cannot_add_a_line():
    messages = refusals(DEPLOY, "validate.yml", **DEPLOY_VALID, victor_deploy_environment={"X=1\nLD_PRELOAD": "/tmp/x.so"})
    assert any("victor_deploy_environment" in m for m in messages), messages
    assert not refusals(DEPLOY, "validate.yml", **DEPLOY_VALID, victor_deploy_environment={"ANTHROPIC_API_KEY": "a\nb"})


@PROPERTY
@given(name=st.sampled_from(["victor_deploy_host", "victor_deploy_current_link", "victor_deploy_user",
                             "victor_deploy_state_dir", "victor_deploy_env_file"]), hostile=HOSTILE)
def test_deploy_unit_values_are_refused_or_stay_one_word(name, hostile):
    value = {"victor_deploy_host": "127.0.0.1", "victor_deploy_user": "victor"}.get(name, "/opt/victor/x") + hostile
    if refusals(DEPLOY, "validate.yml", **DEPLOY_VALID, **{name: value}):
        return
    keys, values = unit_parse(_deploy_unit(**{name: value}))
    assert keys == unit_parse(_deploy_unit())[0]
    words = systemd_words(values["ExecStart"][0])
    assert len(words) == 6 and words[3] == (value if name == "victor_deploy_host" else "127.0.0.1")


@PROPERTY
@given(name=st.text(alphabet=st.sampled_from(PWNED_ALPHABET + "AZ_1"), min_size=1, max_size=8),
       value=st.text(alphabet=st.sampled_from(PWNED_ALPHABET + "ab"), max_size=8))
def test_deploy_environment_is_refused_or_one_line_per_variable(name, value):
    environment = {name: value}
    if refusals(DEPLOY, "validate.yml", **DEPLOY_VALID, victor_deploy_environment=environment):
        return
    keys = unit_parse(render(DEPLOY, "victor.env.j2", **DEPLOY_VALID, victor_deploy_environment=environment))[0]
    assert keys == [("", "HOME"), ("", "VICTOR_LOG_LEVEL"), ("", name)]


# ---------------------------------------------------------------- victor_postgresql

PG = "victor_postgresql"
PG_VALID = {"victor_postgresql_db_password": "secret"}


def test_postgresql_listen_addresses_cannot_add_a_setting():
    hostile = "*'\nssl = off"
    assert any("victor_postgresql_listen_addresses" in m
               for m in refusals(PG, "main.yml", **PG_VALID, victor_postgresql_listen_addresses=hostile))
    conf = render_or_error(PG, "victor.conf.j2", victor_postgresql_listen_addresses=hostile)
    assert conf is None or "ssl" not in pg_settings(conf)


@PROPERTY
@given(where=st.sampled_from(["listen", "setting_value", "setting_name", "db_name", "hba"]), hostile=HOSTILE)
def test_postgresql_hostile_values_are_refused_or_stay_one_setting(where, hostile):
    overrides = dict(PG_VALID)
    if where == "listen":
        overrides["victor_postgresql_listen_addresses"] = "localhost" + hostile
    elif where == "setting_value":
        overrides["victor_postgresql_settings"] = {"shared_buffers": "256MB" + hostile}
    elif where == "setting_name":
        overrides["victor_postgresql_settings"] = {"shared_buffers" + hostile: "256MB"}
    elif where == "db_name":
        overrides["victor_postgresql_db_name"] = "victor" + hostile
    else:
        overrides["victor_postgresql_hba_addresses"] = ["10.0.0.0/8" + hostile]
    if refusals(PG, "main.yml", **overrides):
        return
    conf = render_or_error(PG, "victor.conf.j2", **overrides)
    assume(conf is not None)
    settings_ = pg_settings(conf)
    expected = {"listen_addresses", "port", "max_connections", "password_encryption"} | set(overrides.get("victor_postgresql_settings", {}))
    assert set(settings_) == expected
    for name, value in overrides.get("victor_postgresql_settings", {}).items():
        assert settings_[name] == value
    assert settings_["listen_addresses"] == overrides.get("victor_postgresql_listen_addresses", "*")


def test_postgresql_valid_values_render_as_before():
    conf = render(PG, "victor.conf.j2", victor_postgresql_listen_addresses="localhost, 10.0.0.5",
                  victor_postgresql_settings={"shared_buffers": "256MB", "search_path": "'$user', public"})
    assert "listen_addresses = 'localhost, 10.0.0.5'\n" in conf
    assert "search_path = '''$user'', public'\n" in conf
    assert not refusals(PG, "main.yml", **PG_VALID, victor_postgresql_hba_addresses=["10.0.0.0/8", "samenet", "fd00::/8"])


# ---------------------------------------------------------------- victor_monitoring

MONITORING = "victor_monitoring"


@PROPERTY
@given(name=st.sampled_from(["victor_monitoring_scrape_interval", "victor_monitoring_evaluation_interval",
                             "victor_monitoring_victor_down_for"]), hostile=HOSTILE)
def test_monitoring_durations_are_refused_or_stay_one_value(name, hostile):
    value = "30s" + hostile
    if refusals(MONITORING, "main.yml", **{name: value}):
        return
    template = "victor-ops.rules.yml.j2" if name == "victor_monitoring_victor_down_for" else "prometheus.yml.j2"
    assert yaml.safe_load(render(MONITORING, template, **{name: value})) == yaml.safe_load(render(MONITORING, template))


def test_monitoring_duration_with_a_newline_is_refused():
    assert any("victor_monitoring_evaluation_interval" in m
               for m in refusals(MONITORING, "main.yml", victor_monitoring_evaluation_interval="30s\n    rules: []"))


# ---------------------------------------------------------------- every role: defaults pass, every refusal names its variable

@pytest.mark.parametrize("role, tasks_file, overrides", [
    (LOGROTATE, "main.yml", {}),
    (NGINX, "validate.yml", _nginx()),
    (BACKUP, "main.yml", {}),
    (DEPLOY, "validate.yml", DEPLOY_VALID),
    (PG, "main.yml", PG_VALID),
    (MONITORING, "main.yml", {}),
    ("victor_restore", "main.yml", {}),
])
def test_defaults_pass_every_check(role, tasks_file, overrides):
    assert refusals(role, tasks_file, **overrides) == []


def test_restore_service_name_cannot_be_an_option():
    assert any("victor_restore_service_name" in m for m in refusals("victor_restore", "main.yml", victor_restore_service_name="--version"))
