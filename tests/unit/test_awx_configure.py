"""AWX configuration as data: what a real AWX cannot check for us.

AWX's own rules (rrule syntax, survey field types, choices and defaults, playbooks present
in the project) are asserted against a real AWX server in tests/awx/. These checks are
the collection's: every job template's playbook exists here; every survey variable is an
option of an argument spec the playbook validates (a role's meta/argument_specs.yml entry
point it runs, or its own validate_argument_spec), with a compatible type and choices, and
a text default within the question's min/max (AWX checks those only at launch); every
schedule's next occurrences fall inside the maintenance window it declares, which the job
template's timeout must not overrun. The playbook itself, run by ansible-playbook, is in
tests/functional/test_awx_configure_playbook.py.
"""
import datetime
import re
from pathlib import Path

import pytest
import yaml
from dateutil import rrule as dateutil_rrule

ROOT = Path(__file__).resolve().parents[2]
VARS = yaml.safe_load((ROOT / "playbooks" / "vars" / "awx_configure.yml").read_text(encoding="utf-8"))
TEMPLATES = VARS["victor_awx_job_templates"]
SCHEDULES = VARS["victor_awx_schedules"]
WEEKDAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
ROLE_KEYS = ("ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role")
TASK_FILE_KEYS = ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks", "include_tasks", "import_tasks")
SPEC_KEYS = ("ansible.builtin.validate_argument_spec", "validate_argument_spec")


# ---------------------------------------------------------------- argument specs


def _role_entry_options(role, entry):
    """Options Ansible validates when the role's entry point runs ({} when it has no spec)."""
    name = role.split(".")[-1]
    path = ROOT / "roles" / name / "meta" / "argument_specs.yml"
    if not path.is_file():
        return {}
    specs = yaml.safe_load(path.read_text(encoding="utf-8"))["argument_specs"]
    return (specs.get(entry) or {}).get("options") or {}


def _walk_tasks(tasks, base, options, seen, play_vars):
    for task in tasks or []:
        for key in ("block", "rescue", "always"):
            _walk_tasks(task.get(key), base, options, seen, play_vars)
        for key in ROLE_KEYS:
            if key in task:
                args = task[key]
                entry = Path(args.get("tasks_from", "main")).stem
                options.update(_role_entry_options(args["name"], entry))
        for key in SPEC_KEYS:
            spec = task.get(key, {}).get("argument_spec")
            if isinstance(spec, dict):
                options.update(spec)
            elif isinstance(spec, str):
                # A templated spec built from play variables, e.g. "{{ common | combine(own) }}".
                for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", spec):
                    if isinstance(play_vars.get(name), dict):
                        options.update(play_vars[name])
        for key in TASK_FILE_KEYS:
            if key in task:
                ref = task[key] if isinstance(task[key], str) else task[key].get("file")
                path = (base / ref).resolve()
                if "{{" not in str(ref) and path.is_file() and path not in seen:
                    seen.add(path)
                    _walk_tasks(yaml.safe_load(path.read_text(encoding="utf-8")), path.parent, options, seen, play_vars)


def playbook_options(playbook):
    """Options of every argument spec the playbook validates (roles it runs, its own specs)."""
    path = ROOT / playbook
    options = {}
    for play in yaml.safe_load(path.read_text(encoding="utf-8")):
        if "import_playbook" in play or "ansible.builtin.import_playbook" in play:
            ref = play.get("import_playbook") or play.get("ansible.builtin.import_playbook")
            options.update(playbook_options(str((path.parent / ref).relative_to(ROOT))))
            continue
        for role in play.get("roles") or []:
            name = role if isinstance(role, str) else role.get("role") or role.get("name")
            options.update(_role_entry_options(name, "main"))
        play_vars = {}
        for ref in play.get("vars_files") or []:
            if "{{" not in ref and (path.parent / ref).is_file():
                play_vars.update(yaml.safe_load((path.parent / ref).read_text(encoding="utf-8")) or {})
        play_vars.update(play.get("vars") or {})
        for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            _walk_tasks(play.get(key), path.parent, options, set(), play_vars)
    return options


# ---------------------------------------------------------------- schedule occurrences


def _occurrences(value, count=24):
    rule_set = dateutil_rrule.rrulestr(value.replace(" ", "\n"), forceset=True)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    found = []
    for occurrence in rule_set:
        if occurrence >= start:
            found.append(occurrence)
        if len(found) == count:
            break
    return found


# ---------------------------------------------------------------- job templates


def test_template_names_unique_and_playbooks_exist():
    names = [t["name"] for t in TEMPLATES]
    assert len(names) == len(set(names))
    for template in TEMPLATES:
        path = ROOT / template["playbook"]
        assert path.is_file(), "%s: %s does not exist" % (template["name"], template["playbook"])
        plays = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(plays, list) and all("hosts" in p or "import_playbook" in p or "ansible.builtin.import_playbook" in p for p in plays), path


def test_templates_cover_every_operation_playbook_present():
    """When an operations playbook exists, AWX gets a job template for it."""
    wanted = ["deploy.yml", "rollback.yml", "backup.yml", "restore.yml", "daily_health_check.yml",
              "weekly_maintenance.yml", "monthly_maintenance.yml"]
    templated = {Path(t["playbook"]).name for t in TEMPLATES}
    for name in wanted:
        if (ROOT / "playbooks" / name).is_file():
            assert name in templated, "playbooks/%s has no job template" % name


@pytest.mark.parametrize("template", TEMPLATES, ids=[t["name"] for t in TEMPLATES])
def test_survey_variables_are_validated_options_of_the_playbook(template):
    options = playbook_options(template["playbook"])
    survey = template.get("survey") or []
    for question in survey:
        var = question["variable"]
        assert var in options, "%s: survey variable %s is not an option the playbook validates" % (template["name"], var)
        spec = options[var]
        kind = question["type"]
        spec_type = spec.get("type", "str")
        if kind == "integer":
            assert spec_type == "int", var
        elif kind == "float":
            assert spec_type == "float", var
        elif kind == "multiselect":
            assert spec_type == "list", var
        else:
            assert spec_type in ("str", "path", "raw", "bool"), (var, spec_type)
        if spec.get("no_log"):
            assert kind == "password", "%s is no_log in the spec; ask it as a password" % var
        if kind in ("multiplechoice", "multiselect") and "choices" in spec:
            assert set(str(c) for c in question["choices"]) <= set(str(c) for c in spec["choices"]), var
        # AWX refuses a survey whose min or max is not an integer, even for a float question.
        assert all(isinstance(question.get(key, 0), int) for key in ("min", "max")), var
        # AWX checks min/max of an answer at launch only, not the default when the survey is saved.
        if kind in ("text", "textarea", "password") and question.get("default"):
            assert question.get("min", 0) <= len(question["default"]) <= question.get("max", 1024), var
        if spec.get("required"):
            assert question["required"], "%s is required by the spec; the survey must require it" % var


def test_playbook_option_discovery_sees_roles_and_own_specs():
    """The helper above must actually find options, or the survey test proves nothing."""
    assert "victor_deploy_version" in playbook_options("playbooks/deploy.yml")
    assert "victor_awx_job_templates" in playbook_options("playbooks/awx_configure.yml")
    assert "no_such_variable" not in playbook_options("playbooks/deploy.yml")
    runbook = playbook_options("playbooks/runbooks/high_memory.yml")
    assert "victor_runbook_memory_threshold_mb" in runbook and "victor_runbook_service_name" in runbook
    assert "victor_runbook_force" not in runbook


# ---------------------------------------------------------------- schedules


def test_schedules_target_defined_templates():
    names = {t["name"] for t in TEMPLATES}
    for schedule in SCHEDULES:
        assert schedule["job_template"] in names, schedule["name"]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=[s["name"] for s in SCHEDULES])
def test_schedule_runs_inside_its_window(schedule):
    window = schedule["window"]
    start_h, start_m = (int(x) for x in window["start"].split(":"))
    end_h, end_m = (int(x) for x in window["end"].split(":"))
    occurrences = _occurrences(schedule["rrule"])
    assert len(occurrences) == 24
    for when in occurrences:
        when = when.astimezone(datetime.timezone.utc)
        assert (when.hour, when.minute) == (start_h, start_m), when
        if "weekday" in window:
            assert WEEKDAYS[when.weekday()] == window["weekday"], when
        if window.get("first_in_month"):
            assert when.day <= 7, when
    template = next(t for t in TEMPLATES if t["name"] == schedule["job_template"])
    window_seconds = ((end_h * 60 + end_m) - (start_h * 60 + start_m)) * 60
    assert 0 < template.get("timeout", 0) <= window_seconds, "the job must be stopped inside its window"


def test_seed_schedules_present_for_existing_playbooks():
    """Seed 004: weekly Sunday 02:00-04:00 UTC, monthly first Saturday 02:00 UTC; seed 000: morning health."""
    by_playbook = {}
    for schedule in SCHEDULES:
        template = next(t for t in TEMPLATES if t["name"] == schedule["job_template"])
        by_playbook[Path(template["playbook"]).name] = schedule
    expected = {
        "weekly_maintenance.yml": ("FREQ=WEEKLY;INTERVAL=1;BYDAY=SU", "T020000Z"),
        "monthly_maintenance.yml": ("FREQ=MONTHLY;INTERVAL=1;BYDAY=SA;BYSETPOS=1", "T020000Z"),
        "daily_health_check.yml": ("FREQ=DAILY;INTERVAL=1", None),
    }
    for playbook, (rule, start) in expected.items():
        if not (ROOT / "playbooks" / playbook).is_file():
            continue
        assert playbook in by_playbook, "playbooks/%s has no schedule" % playbook
        value = by_playbook[playbook]["rrule"]
        assert value.endswith("RRULE:" + rule), value
        if start:
            assert start in value, value
        else:
            hour = _occurrences(value, 1)[0].hour
            assert 5 <= hour <= 9, "daily health runs in the morning (UTC), not at %d:00" % hour


def test_monthly_rule_means_first_saturday():
    """The exact rule AWX needs for "first Saturday", checked against the calendar."""
    occurrences = _occurrences("DTSTART:20260103T020000Z RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=SA;BYSETPOS=1", 12)
    assert [o.date() for o in occurrences][:3] == [datetime.date(2026, 1, 3), datetime.date(2026, 2, 7), datetime.date(2026, 3, 7)]
    assert all(o.weekday() == 5 and o.day <= 7 for o in occurrences)
