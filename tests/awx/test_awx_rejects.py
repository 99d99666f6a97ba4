"""AWX itself rejects what it should: its answers, not our re-implementation of its rules.

Each case starts from an object of the collection's configuration (already created by the
first playbook run) and breaks one thing: the schedule's rrule, a survey default, the job
template's playbook. AWX's 400 answer and its message are asserted; the valid originals
were accepted by the playbook run (tests in test_awx_configure_real.py).
"""
import copy

import pytest
import yaml

from test_awx_configure_real import VARS  # pylint: disable=import-error

MONTHLY = next(s for s in VARS["victor_awx_schedules"] if "MONTHLY" in s["rrule"])


def _template(api, first_run, name):
    assert first_run.returncode == 0
    return api.one("job_templates", name)


@pytest.mark.parametrize("rrule, message", [
    # "first Saturday" written the iCalendar way: AWX wants BYDAY=SA;BYSETPOS=1 instead.
    (MONTHLY["rrule"].replace("BYDAY=SA;BYSETPOS=1", "BYDAY=1SA"), "BYDAY with numeric prefix not supported"),
    (MONTHLY["rrule"].replace(";INTERVAL=1", ""), "INTERVAL required in rrule"),
    (MONTHLY["rrule"].replace("T020000Z", "T020000"), "DTSTART cannot be a naive datetime"),
    (MONTHLY["rrule"].split(" ")[1], "Valid DTSTART required in rrule"),
    (MONTHLY["rrule"].split(" ")[0], "One or more rule required in rrule"),
    ("DTSTART:20260103T020000Z RRULE:FREQ=DAILY;INTERVAL=1;COUNT=1000", "COUNT > 999 is unsupported"),
    ("DTSTART:20260103T020000Z RRULE:FREQ=SECONDLY;INTERVAL=1", "SECONDLY is not supported"),
    ("DTSTART:20260103T020000Z RRULE:FREQ=FORTNIGHTLY;INTERVAL=1", "rrule parsing failed validation"),
])
def test_awx_rejects_an_invalid_rrule(api, first_run, rrule, message):
    jt = _template(api, first_run, MONTHLY["job_template"])
    code, body = api.call("POST", "/api/v2/job_templates/%d/schedules/" % jt["id"], {"name": "victor.ops bad rrule", "rrule": rrule})
    assert code == 400, body
    assert message in str(body["rrule"]), body


def test_awx_accepts_the_shipped_rrules_and_a_local_timezone(api, first_run):
    """The preview endpoint runs the same rrule validation and answers the next runs."""
    for rrule in [s["rrule"] for s in VARS["victor_awx_schedules"]] + ["DTSTART;TZID=Europe/Berlin:20260101T070000 RRULE:FREQ=DAILY;INTERVAL=1"]:
        code, body = api.call("POST", "/api/v2/schedules/preview/", {"rrule": rrule})
        assert code == 200 and body["utc"], (rrule, body)


def _survey_post(api, jt, spec):
    return api.call("POST", "/api/v2/job_templates/%d/survey_spec/" % jt["id"], {"name": jt["name"], "description": "", "spec": spec})


def test_awx_rejects_a_survey_default_not_among_its_choices(api, first_run):
    declared = next(t for t in VARS["victor_awx_job_templates"] if t["name"] == "Victor backup")
    jt = _template(api, first_run, declared["name"])
    spec = copy.deepcopy(declared["survey"])
    spec[0]["default"] = "differential"
    code, body = _survey_post(api, jt, spec)
    assert code == 400 and "Default choice must be answered from the choices listed" in body["error"], body
    # AWX kept the shipped survey.
    assert api.get("/api/v2/job_templates/%d/survey_spec/" % jt["id"])["spec"] == declared["survey"]


@pytest.mark.parametrize("change, message", [
    ({"type": "dropdown"}, "is not one of"),
    ({"variable": None}, "'variable' missing from survey question 0"),
    ({"default": 5}, "expected to be string"),
])
def test_awx_rejects_other_broken_survey_questions(api, first_run, change, message):
    declared = next(t for t in VARS["victor_awx_job_templates"] if t["name"] == "Victor deploy")
    jt = _template(api, first_run, declared["name"])
    spec = copy.deepcopy(declared["survey"])
    spec[0].update(change)
    spec[0] = {k: v for k, v in spec[0].items() if v is not None}
    code, body = _survey_post(api, jt, spec)
    assert code == 400 and message in body["error"], body


def test_awx_rejects_duplicate_survey_variables(api, first_run):
    declared = next(t for t in VARS["victor_awx_job_templates"] if t["name"] == "Victor deploy")
    jt = _template(api, first_run, declared["name"])
    code, body = _survey_post(api, jt, declared["survey"] * 2)
    assert code == 400 and "duplicated" in body["error"], body


def test_awx_rejects_a_job_template_naming_a_missing_playbook(api, first_run):
    project = api.one("projects", VARS["victor_awx_project"]["name"])
    inventory = api.one("inventories", VARS["victor_awx_default_inventory"])
    code, body = api.call("POST", "/api/v2/job_templates/", {
        "name": "victor.ops missing playbook", "project": project["id"], "inventory": inventory["id"],
        "playbook": "playbooks/no_such_playbook.yml"})
    assert code == 400 and body["playbook"] == ["Playbook not found for project."], body
    # The same template with a playbook the project has is accepted (then removed again).
    code, body = api.call("POST", "/api/v2/job_templates/", {
        "name": "victor.ops missing playbook", "project": project["id"], "inventory": inventory["id"],
        "playbook": VARS["victor_awx_job_templates"][0]["playbook"]})
    assert code == 201, body
    assert api.call("DELETE", "/api/v2/job_templates/%d/" % body["id"])[0] == 204


def test_the_playbook_reports_awx_rejection_clearly(playbook, token, first_run, tmp_path):
    """A site's configuration naming a missing playbook: the run fails at that template,
    with AWX's message, and no traceback."""
    broken = copy.deepcopy(VARS["victor_awx_job_templates"][:1])
    broken[0].update(name="victor.ops broken template", playbook="playbooks/no_such_playbook.yml")
    extra = tmp_path / "broken.yml"
    # Only the broken template (the other objects exist from the first run): a short run.
    extra.write_text(yaml.safe_dump({"victor_awx_job_templates": broken, "victor_awx_schedules": [], "victor_awx_credential_types": [],
                                     "victor_awx_credentials": [], "victor_awx_inventories": []}), encoding="utf-8")
    result = playbook("-e", "@%s" % extra, json_output=False, oauth_token=token)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-4000:]
    assert "Playbook not found for project" in output, output[-4000:]
    assert "Traceback" not in output
