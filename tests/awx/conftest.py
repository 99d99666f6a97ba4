"""A real AWX API server for the tests of this folder (see awx_server.py and docs/awx.md).

One server per session: its own PostgreSQL (a copy of the cached migrated database) and
Redis, both on unix sockets in a temporary run directory, and `awx-manage runserver` on
127.0.0.1. Everything is stopped by pid and the run directory removed at the end, also
when a test fails.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import awx_server  # noqa: E402  pylint: disable=wrong-import-position

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "awx_configure.yml"
# What a project update of the victor.ops project checks out and AWX scans for playbooks
# and inventories (the rest of the repository does not change what AWX records).
PROJECT_CONTENT = ("playbooks", "inventories")

# AWX records a project update's result (playbook_files, inventory_files) when the update
# job ends. Jobs run through receptor, which is not available here, so this loop ends
# every pending project update the way a successful one ends, with AWX's own models: the
# checkout is a copy of PROJECT_CONTENT, then Project.playbooks / .inventories (AWX's own
# scan) are recorded exactly as RunProjectUpdate.post_run_hook does.
PROJECT_SYNC = r'''
import os, shutil, sys, time
from django.utils.timezone import now
from awx.main.models import ProjectUpdate
source = os.environ["VICTOR_AWX_PROJECT_SOURCE"]
while True:
    for update in ProjectUpdate.objects.filter(status__in=("new", "pending", "waiting", "running")):
        project = update.project
        path = project.get_project_path(check_if_exists=False)
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(source, path)
        project.scm_revision = "0" * 40
        project.playbook_files = project.playbooks
        project.inventory_files = project.inventories
        project.save(update_fields=["scm_revision", "playbook_files", "inventory_files"])
        update.status = "successful"
        update.failed = False
        update.started = update.started or now()
        update.finished = now()
        update.scm_revision = project.scm_revision
        update.save()
        print("synced", project.name, len(project.playbook_files), "playbooks", flush=True)
    time.sleep(1)
'''


class Api:
    """The REST API with basic auth, answering (status, json)."""

    def __init__(self, url, user, password):
        self.url = url
        self.auth = "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": self.auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw else None

    def get(self, path):
        code, body = self.call("GET", path)
        assert code == 200, (path, code, body)
        return body

    def one(self, endpoint, name):
        found = self.get("/api/v2/%s/?name=%s" % (endpoint, urllib.request.quote(name)))["results"]
        assert len(found) == 1, (endpoint, name, found)
        return found[0]

    def all(self, path):
        results = []
        while path:
            page = self.get(path)
            results.extend(page["results"])
            path = page["next"]
        return results


@pytest.fixture(scope="session")
def awx():
    run_dir = Path(tempfile.mkdtemp(prefix="victor-awx-"))
    server = None
    sync = None
    try:
        build = awx_server.Build()
        built = build.ensure()
        server = awx_server.Server(build, run_dir).start()
        print("\nAWX %s at %s: %s build, started in %.1f s (run dir %s)" % (
            awx_server.AWX_VERSION, server.url, "cold" if built else "warm", server.startup_seconds, run_dir))
        source = run_dir / "project-source"
        for name in PROJECT_CONTENT:
            shutil.copytree(ROOT / name, source / name)
        server.env["VICTOR_AWX_PROJECT_SOURCE"] = str(source)
        with open(run_dir / "log" / "project-sync.log", "ab") as out:
            sync = subprocess.Popen([build.venv / "bin/awx-manage", "shell", "-c", PROJECT_SYNC], env=server.env,
                                    cwd=run_dir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        yield server
    finally:
        if sync is not None:
            sync.terminate()
            sync.wait(30)
        if server is not None:
            server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def api(awx):
    return Api(awx.url, awx_server.ADMIN_USER, awx.password)


@pytest.fixture(scope="session")
def token(api):
    """An OAuth2 token of the admin, as a site's automation would use."""
    code, body = api.call("POST", "/api/v2/tokens/", {"description": "victor.ops tests", "scope": "write"})
    assert code == 201, body
    return body["token"]


@pytest.fixture(scope="session")
def playbook(awx):
    """Run playbooks/awx_configure.yml against the server; controller settings only in the
    environment (CONTROLLER_<KEY>), as a site passes them, never on the command line."""
    def run(*args, json_output=True, **controller):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLLER_", "TOWER_"))}
        env.update(CONTROLLER_HOST=awx.url, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0")
        env.update({"CONTROLLER_" + k.upper(): v for k, v in controller.items()})
        if json_output:
            env.update(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
        binary = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
        return subprocess.run([binary, str(PLAYBOOK), *args], capture_output=True, text=True, env=env, check=False,
                              timeout=900)
    return run


@pytest.fixture(scope="session")
def first_run(playbook, token):
    """The first run of the playbook with the collection's own configuration."""
    result = playbook(oauth_token=token)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result
