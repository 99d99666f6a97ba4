"""playbooks/awx_configure.yml against a real AWX 24.6.1 API (see conftest.py).

The playbook runs with the collection's own configuration (playbooks/vars/awx_configure.yml)
and a controller token from the environment. Every object it declares is then read back
through the REST API and compared field by field; a second run (with -vvv) changes nothing
and prints no secret; --check reports a drifted object without touching it.
"""
import json
import re
from pathlib import Path

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The vars file as Ansible sees it: its "{{ '{{' }}" escapes rendered.
_RAW = yaml.safe_load((ROOT / "playbooks" / "vars" / "awx_configure.yml").read_text(encoding="utf-8"))


def changed_count(result):
    if result.stdout.lstrip().startswith("{"):
        return json.loads(result.stdout)["stats"]["localhost"]["changed"]
    return int(re.search(r"localhost\s*:.*changed=(\d+)", result.stdout).group(1))


def _render(value):
    if isinstance(value, str):
        return jinja2.Template(value).render()
    if isinstance(value, list):
        return [_render(v) for v in value]
    if isinstance(value, dict):
        return {k: _render(v) for k, v in value.items()}
    return value


VARS = _render(_RAW)
ORG = VARS["victor_awx_organization"]
VAULT_PASSWORDS = {env: (ROOT / "inventories" / env / "vault-password.example").read_text(encoding="utf-8").strip()
                   for env in ("staging", "production")}


# ---------------------------------------------------------------- created as declared


def test_first_run_changes_something(first_run):
    assert changed_count(first_run) > 0


def test_organization_and_execution_environment(api, first_run):
    org = api.one("organizations", ORG)
    declared = VARS["victor_awx_execution_environment"]
    ee = api.one("execution_environments", declared["name"])
    assert (ee["image"], ee["pull"], ee["organization"]) == (declared["image"], declared.get("pull", "missing"), org["id"])


def test_credential_types(api, first_run):
    for declared in VARS["victor_awx_credential_types"]:
        created = api.one("credential_types", declared["name"])
        assert created["kind"] == "cloud" and created["managed"] is False
        assert created["description"] == declared.get("description", "")
        assert created["inputs"] == declared["inputs"]
        assert created["injectors"] == declared["injectors"]


def test_credentials_hold_what_is_declared_and_secrets_stay_encrypted(api, first_run):
    org = api.one("organizations", ORG)
    for declared in VARS["victor_awx_credentials"]:
        created = api.one("credentials", declared["name"])
        assert created["organization"] == org["id"]
        assert created["summary_fields"]["credential_type"]["name"] == declared["credential_type"]
        assert created["inputs"] == declared["inputs"]
    for env, password in VAULT_PASSWORDS.items():
        vault = api.one("credentials", "Victor vault (%s)" % env)
        assert vault["summary_fields"]["credential_type"]["name"] == "Vault"
        # AWX answers secrets as $encrypted$, never the value.
        assert vault["inputs"] == {"vault_id": env, "vault_password": "$encrypted$"}
        assert password not in json.dumps(vault)


def test_project(api, first_run):
    declared = VARS["victor_awx_project"]
    project = api.one("projects", declared["name"])
    for field in ("scm_type", "scm_url", "scm_branch", "scm_update_on_launch", "scm_update_cache_timeout"):
        assert project[field] == declared[field], field
    assert project["organization"] == api.one("organizations", ORG)["id"]
    assert project["default_environment"] == api.one("execution_environments", VARS["victor_awx_execution_environment"]["name"])["id"]
    # The job templates' playbooks are among what AWX found in the project.
    playbooks = api.get("/api/v2/projects/%d/playbooks/" % project["id"])
    assert {t["playbook"] for t in VARS["victor_awx_job_templates"]} <= set(playbooks)


def test_inventories_and_sources(api, first_run):
    project = api.one("projects", VARS["victor_awx_project"]["name"])
    org = api.one("organizations", ORG)
    for declared in VARS["victor_awx_inventories"]:
        inventory = api.one("inventories", declared["name"])
        assert inventory["organization"] == org["id"] and inventory["kind"] == ""
        assert inventory["description"] == "victor.ops %s (synced from %s)" % (declared["environment"], declared["source_path"])
        source = api.one("inventory_sources", declared["name"] + " from project")
        expected = {"inventory": inventory["id"], "source": "scm", "source_project": project["id"],
                    "source_path": declared["source_path"], "overwrite": True, "overwrite_vars": True,
                    "update_on_launch": True, "update_cache_timeout": 300}
        assert {k: source[k] for k in expected} == expected


def test_job_templates(api, first_run):
    project = api.one("projects", VARS["victor_awx_project"]["name"])
    default_inventory = api.one("inventories", VARS["victor_awx_default_inventory"])
    ee = api.one("execution_environments", VARS["victor_awx_execution_environment"]["name"])
    created_names = {t["name"] for t in api.all("/api/v2/job_templates/?organization__name=%s" % ORG.replace(" ", "%20"))}
    assert created_names == {t["name"] for t in VARS["victor_awx_job_templates"]}
    for declared in VARS["victor_awx_job_templates"]:
        jt = api.one("job_templates", declared["name"])
        expected = {
            "description": declared.get("description", ""), "project": project["id"], "playbook": declared["playbook"],
            "inventory": api.one("inventories", declared["inventory"])["id"] if "inventory" in declared else default_inventory["id"],
            "execution_environment": ee["id"], "job_type": declared.get("job_type", "run"),
            "timeout": declared.get("timeout", 0), "survey_enabled": bool(declared.get("survey")),
            "ask_inventory_on_launch": True, "ask_limit_on_launch": True, "ask_job_type_on_launch": True,
            "ask_diff_mode_on_launch": True, "ask_verbosity_on_launch": True, "allow_simultaneous": False,
            "diff_mode": declared.get("diff_mode", False),
        }
        assert {k: jt[k] for k in expected} == expected, declared["name"]
        assert (yaml.safe_load(jt["extra_vars"]) or {}) == declared.get("extra_vars", {}), declared["name"]
        credentials = sorted(c["name"] for c in api.all("/api/v2/job_templates/%d/credentials/" % jt["id"]))
        assert credentials == sorted(["Victor SSH", "Victor vault (staging)", "Victor vault (production)"] + declared.get("credentials", []))
        spec = api.get("/api/v2/job_templates/%d/survey_spec/" % jt["id"])
        assert spec.get("spec", []) == declared.get("survey", []), declared["name"]


def test_schedules(api, first_run):
    for declared in VARS["victor_awx_schedules"]:
        schedule = api.one("schedules", declared["name"])
        jt = api.one("job_templates", declared["job_template"])
        assert (schedule["rrule"], schedule["unified_job_template"], schedule["enabled"]) == (
            declared["rrule"], jt["id"], declared.get("enabled", True))
        assert schedule["description"] == declared.get("description", "")
        # The playbook answers the template's survey with its defaults (AWX refuses a
        # schedule leaving a required question unanswered), then the schedule's own data.
        survey = next(t for t in VARS["victor_awx_job_templates"] if t["name"] == declared["job_template"]).get("survey", [])
        expected = {q["variable"]: q["default"] for q in survey if "default" in q}
        expected.update(declared.get("extra_data", {}))
        assert (schedule["extra_data"] or {}) == expected
        assert schedule["next_run"], "AWX computes the next run from the rrule"


# ---------------------------------------------------------------- idempotence, check mode, secrets


def test_second_run_changes_nothing_and_verbose_output_holds_no_secret(playbook, awx, token, first_run):
    """The second run logs in with username and password instead of the token, at -vvv."""
    result = playbook("-vvv", json_output=False, username="admin", password=awx.password)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert changed_count(result) == 0, output[-6000:]
    assert "ESTABLISH LOCAL CONNECTION" in output  # really -vvv
    for secret in [awx.password, token, *VAULT_PASSWORDS.values()]:
        assert secret not in output
    for secret in [token, *VAULT_PASSWORDS.values()]:
        assert secret not in first_run.stdout + first_run.stderr


def test_wrong_password_fails_cleanly_without_echoing_it(playbook, awx, first_run):
    wrong = "wrong-pw-" + awx.password[::-1]
    result = playbook("-vvv", json_output=False, username="admin", password=wrong)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-4000:]
    assert "TASK [Create the organization]" in output
    assert "401" in output or "Invalid" in output or "Authentication" in output, output[-4000:]
    assert "Traceback" not in output
    assert wrong not in output and awx.password not in output


def test_wrong_token_fails_cleanly_without_echoing_it(playbook, awx, first_run):
    wrong = "wrongtoken" + "x" * 20
    result = playbook("-vvv", json_output=False, oauth_token=wrong)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-4000:]
    assert wrong not in output


def _modified(api):
    """Every object the playbook manages, with AWX's last-modified time."""
    found = {}
    for endpoint in ("organizations", "execution_environments", "credential_types", "credentials", "projects", "inventories",
                     "inventory_sources", "job_templates", "schedules"):
        for obj in api.all("/api/v2/%s/?page_size=200" % endpoint):
            found[(endpoint, obj["name"])] = obj["modified"]
    return found


def test_check_mode_reports_drift_and_changes_nothing(playbook, api, token, first_run):
    jt = api.one("job_templates", VARS["victor_awx_job_templates"][0]["name"])
    code, body = api.call("PATCH", "/api/v2/job_templates/%d/" % jt["id"], {"description": "drifted"})
    assert code == 200, body
    before = _modified(api)
    result = playbook("--check", oauth_token=token)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    changed = sorted(task["task"]["name"] for task in report["plays"][0]["tasks"]
                     if any(host.get("changed") for host in task["hosts"].values()))
    print("\n--check reported changes in:", changed)
    assert "Create the job templates with their surveys" in changed  # it sees the drift
    assert _modified(api) == before  # and AWX was not touched
    assert api.one("job_templates", jt["name"])["description"] == "drifted"
