"""playbooks/awx_configure.yml end to end against an in-memory AWX API on 127.0.0.1.

The fake implements the small part of AWX's REST API the awx.awx modules use (list with
filters, create, update, related lists with associate/disassociate, survey_spec) and
records what the playbook created. The test runs the playbook twice: the first run must
create every object of playbooks/vars/awx_configure.yml exactly as declared, the second
must change nothing.
"""
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
VARS = yaml.safe_load((ROOT / "playbooks" / "vars" / "awx_configure.yml").read_text(encoding="utf-8"))
RELATED = ("credentials", "labels", "instance_groups", "survey_spec", "notification_templates_started",
           "notification_templates_success", "notification_templates_error", "galaxy_credentials", "update")


class Store:
    def __init__(self):
        self.ids = itertools.count(100)
        self.objects = {}
        self.links = {}
        self.surveys = {}
        self.writes = []
        for kind, name in (("ssh", "Machine"), ("vault", "Vault")):
            self.create("credential_types", {"name": name, "kind": kind, "managed": True}, record=False)

    def create(self, endpoint, data, record=True):
        oid = next(self.ids)
        obj = dict(data, id=oid, url="/api/v2/%s/%d/" % (endpoint, oid), type=endpoint.rstrip("s"),
                   summary_fields={}, scm_revision="")
        obj["related"] = {sub: "/api/v2/%s/%d/%s/" % (endpoint, oid, sub) for sub in RELATED}
        self.objects.setdefault(endpoint, {})[oid] = obj
        if record:
            self.writes.append(("POST", endpoint, data.get("name")))
        return obj

    def listing(self, endpoint, query):
        if endpoint == "unified_job_templates":
            pool = [o for ep in ("job_templates", "projects", "inventory_sources") for o in self.objects.get(ep, {}).values()]
        else:
            pool = list(self.objects.get(endpoint, {}).values())
        ors = {k[4:]: v for k, v in query.items() if k.startswith("or__")}
        ands = {k: v for k, v in query.items() if not k.startswith("or__") and k not in ("page_size", "page")}
        found = []
        for obj in pool:
            if any(str(obj.get(k)) != v for k, v in ands.items()):
                continue
            if ors and not any(str(obj.get(k)) == v for k, v in ors.items()):
                continue
            found.append(obj)
        return {"count": len(found), "results": found, "next": None, "previous": None}


def make_handler(store):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # pylint: disable=arguments-differ
            pass

        def _send(self, code, body=None):
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-API-Product-Name", "AWX")
            self.send_header("X-API-Product-Version", "24.6.1")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _parts(self):
            parsed = urllib.parse.urlparse(self.path)
            query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
            parts = [p for p in parsed.path.split("/") if p][2:]  # drop api, v2
            return parts, query

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self):  # noqa: N802
            if self.headers.get("Authorization") != "Bearer fake-token":
                return self._send(401, {"detail": "no"})
            parts, query = self._parts()
            if len(parts) == 1:
                return self._send(200, store.listing(parts[0], query))
            if len(parts) >= 2 and parts[1].isdigit():
                obj = store.objects.get(parts[0], {}).get(int(parts[1]))
                if obj is None:
                    return self._send(404, {"detail": "not found"})
                if len(parts) == 2:
                    return self._send(200, obj)
                if parts[2] == "survey_spec":
                    return self._send(200, store.surveys.get(obj["id"], {}))
                linked = [{"id": i} for i in store.links.get((obj["id"], parts[2]), [])]
                return self._send(200, {"count": len(linked), "results": linked, "next": None})
            return self._send(200, {})

        def do_POST(self):  # noqa: N802
            parts, _query = self._parts()
            data = self._body()
            if len(parts) == 1:
                return self._send(201, store.create(parts[0], data))
            oid = int(parts[1])
            if parts[2] == "survey_spec":
                store.surveys[oid] = data
                store.writes.append(("POST", "survey_spec", oid))
                return self._send(200, {})
            links = store.links.setdefault((oid, parts[2]), [])
            if data.get("disassociate"):
                links.remove(data["id"])
            else:
                links.append(data["id"])
            store.writes.append(("ASSOCIATE", parts[2], oid))
            return self._send(204)

        def do_PATCH(self):  # noqa: N802
            parts, _query = self._parts()
            obj = store.objects[parts[0]][int(parts[1])]
            data = self._body()
            obj.update(data)
            store.writes.append(("PATCH", parts[0], obj.get("name"), sorted(data)))
            return self._send(200, obj)

        do_PUT = do_PATCH

    return Handler


@pytest.fixture(scope="module")
def controller():
    store = Store()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(store))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store, "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def _run(url):
    env = dict(os.environ, CONTROLLER_HOST=url, CONTROLLER_OAUTH_TOKEN="fake-token", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    playbook = shutil.which("ansible-playbook") or str(BIN / "ansible-playbook")
    result = subprocess.run([playbook, str(ROOT / "playbooks" / "awx_configure.yml")], capture_output=True, text=True,
                            env=env, check=False, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def runs(controller):
    store, url = controller
    first = _run(url)
    writes_after_first = len(store.writes)
    second = _run(url)
    return {"store": store, "first": first, "second": second, "writes_after_first": writes_after_first}


def _by_name(store, endpoint):
    return {o["name"]: o for o in store.objects.get(endpoint, {}).values()}


def test_first_run_creates_every_declared_object(runs):
    store = runs["store"]
    assert runs["first"]["stats"]["localhost"]["changed"] > 0
    templates = _by_name(store, "job_templates")
    assert sorted(templates) == sorted(t["name"] for t in VARS["victor_awx_job_templates"])
    project = _by_name(store, "projects")[VARS["victor_awx_project"]["name"]]
    inventories = _by_name(store, "inventories")
    for declared in VARS["victor_awx_job_templates"]:
        created = templates[declared["name"]]
        assert created["playbook"] == declared["playbook"]
        assert created["project"] == project["id"]
        assert created["inventory"] == inventories[VARS["victor_awx_default_inventory"]]["id"]
        assert created["timeout"] == declared["timeout"]
        assert created["survey_enabled"] is bool(declared.get("survey"))
        assert store.surveys[created["id"]]["spec"] == declared.get("survey", [])
        credentials = {o["id"]: o["name"] for o in store.objects["credentials"].values()}
        attached = sorted(credentials[i] for i in store.links[(created["id"], "credentials")])
        assert attached == ["Victor SSH", "Victor vault (production)", "Victor vault (staging)"]


def test_schedules_and_inventory_sources_are_as_declared(runs):
    store = runs["store"]
    schedules = _by_name(store, "schedules")
    templates = {o["id"]: o["name"] for o in store.objects["job_templates"].values()}
    for declared in VARS["victor_awx_schedules"]:
        created = schedules[declared["name"]]
        assert created["rrule"] == declared["rrule"]
        assert templates[created["unified_job_template"]] == declared["job_template"]
    sources = _by_name(store, "inventory_sources")
    for declared in VARS["victor_awx_inventories"]:
        source = sources[declared["name"] + " from project"]
        assert source["source"] == "scm" and source["source_path"] == declared["source_path"]


def test_credentials_hold_no_secret_but_the_vault_passwords(runs):
    store = runs["store"]
    credentials = _by_name(store, "credentials")
    assert credentials["Victor SSH"]["inputs"] == {"username": "deploy", "become_method": "sudo"}
    assert credentials["Victor backup storage"].get("inputs", {}) == {}
    for env in ("staging", "production"):
        vault = credentials["Victor vault (%s)" % env]["inputs"]
        demo = (ROOT / "inventories" / env / "vault-password.example").read_text(encoding="utf-8").strip()
        assert vault == {"vault_id": env, "vault_password": demo}
    types = _by_name(store, "credential_types")
    assert types["Victor PostgreSQL (shared state)"]["injectors"]["env"]["PGPASSWORD"] == "{{ password }}"


def test_vault_passwords_never_reach_the_output(runs):
    for env in ("staging", "production"):
        demo = (ROOT / "inventories" / env / "vault-password.example").read_text(encoding="utf-8").strip()
        assert demo not in json.dumps(runs["first"])


def test_second_run_changes_nothing(runs):
    assert runs["second"]["stats"]["localhost"]["changed"] == 0, runs["store"].writes[runs["writes_after_first"]:]
    assert runs["store"].writes[runs["writes_after_first"]:] == []
