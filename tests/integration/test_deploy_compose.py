"""victor_deploy method compose against this machine's docker engine and Debian's docker-compose 1.29.

1. The full stack of seed 001 (Victor, nginx, PostgreSQL, Redis) is rendered by the role and
   checked by the role with `docker-compose config` (its template `validate:`), then read back
   through `docker-compose config`: services, the shared state volume, ports on 127.0.0.1
   only, secrets only in the 0600 env files.
2. Victor and nginx are brought up by the role (`docker-compose up -d` + the /health gate
   through nginx): Victor runs with a read-only root filesystem, /tmp on tmpfs, non-root,
   no capabilities, its HOME on the named volume, json-file log limits. A second run changes
   nothing. PostgreSQL and Redis are not started: no registry is reachable, so their images do
   not exist here (only `config` checks them).
Victor and nginx run from the locally built image victor-ops/victor:0.9.5 (Debian 12 with
nginx and a victor-ai venv), with a thin layer adding the docker method's user and HOME.
Everything is torn down with `docker-compose down -v` under the test's own project name.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = "victor-ops/victor:0.9.5"
IMAGE = "victor-ops-itest/compose-victor:0.9.5"
PROJECT = "victor-ops-itest-compose"
VOLUME = "victor-ops-itest-compose-data"
SECRET = "sk-itest-compose-never-printed-42"
PG_SECRET = "pg-itest-never-printed-4711"
# The docker method's image layout (roles/victor_deploy/templates/docker/Dockerfile.j2) on the test image.
DOCKERFILE = """FROM %s
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/victor --shell /usr/sbin/nologin victor \\
 && mkdir -p /var/lib/victor/.victor && chown -R 10001:10001 /var/lib/victor && chmod 0750 /var/lib/victor
ENV PATH=/opt/victor/releases/0.9.5/bin:/usr/local/bin:/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1
""" % BASE


def _run(argv, check=True, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=300, **kwargs)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", name="env")
def env_fixture(tmp_path_factory):
    if shutil.which("docker") is None or _run(["docker", "info"], check=False).returncode != 0:
        pytest.skip("no docker engine")
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose missing: apt-get install docker-compose (tests/host-packages.txt)")
    if _run(["docker", "image", "inspect", BASE], check=False).returncode != 0:
        pytest.skip("image %s missing (make images)" % BASE)
    work = tmp_path_factory.mktemp("compose")
    (work / "image").mkdir()
    (work / "image" / "Dockerfile").write_text(DOCKERFILE)
    _run(["docker", "build", "--quiet", "-t", IMAGE, str(work / "image")], env=dict(os.environ, DOCKER_BUILDKIT="0"))
    yield work
    compose_file = work / "up" / "compose" / "docker-compose.yml"
    if compose_file.exists():
        _run(["docker-compose", "--project-name", PROJECT, "--file", str(compose_file), "down", "--volumes",
              "--remove-orphans"], check=False)
    _run(["docker", "volume", "rm", "-f", VOLUME], check=False)
    _run(["docker", "image", "rm", "-f", IMAGE], check=False)


def _role(work, name, **variables):
    """Run the role (method compose) on localhost; returns (returncode, output)."""
    base = {"victor_deploy_method": "compose", "victor_deploy_version": "0.9.5",
            "victor_deploy_service_manager": "process", "victor_deploy_root": str(work / name),
            "victor_deploy_docker_volume": VOLUME, "victor_deploy_compose_project": PROJECT,
            "victor_deploy_compose_image": IMAGE, "victor_deploy_environment": {"ANTHROPIC_API_KEY": SECRET},
            "victor_deploy_health_timeout": 180}
    base.update(variables)
    (work / (name + ".json")).write_text(json.dumps(base))
    (work / "play.yml").write_text(yaml.safe_dump([{
        "name": "Compose", "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "victor.ops.victor_deploy"}]}]))
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = _run(["ansible-playbook", "-i", "localhost,", "-c", "local", "--diff", "-v", str(work / "play.yml"),
                 "-e", "@" + str(work / (name + ".json"))], check=False, env=env, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


def test_full_stack_passes_docker_compose_config(env):
    rc, out = _role(env, "full", victor_deploy_compose_render_only=True, victor_deploy_compose_nginx_enabled=True,
                    victor_deploy_compose_postgres_enabled=True, victor_deploy_compose_postgres_password=PG_SECRET,
                    victor_deploy_compose_redis_enabled=True, victor_deploy_compose_port=18080)
    assert rc == 0, out[-4000:]
    assert SECRET not in out and PG_SECRET not in out
    directory = env / "full" / "compose"
    for name in ("victor.env", "postgres.env"):
        assert oct((directory / name).stat().st_mode & 0o777) == "0o600"
    text = (directory / "docker-compose.yml").read_text()
    assert SECRET not in text and PG_SECRET not in text
    config = yaml.safe_load(_run(["docker-compose", "--project-name", PROJECT, "--file", str(directory / "docker-compose.yml"),
                                  "config"]).stdout)
    services = config["services"]
    assert sorted(services) == ["nginx", "postgres", "redis", "victor"]
    assert config["volumes"]["victor-data"]["name"] == VOLUME
    victor = services["victor"]
    assert victor["environment"]["ANTHROPIC_API_KEY"] == SECRET  # from the 0600 env file
    assert victor["volumes"] == ["victor-data:/var/lib/victor:rw"]
    assert victor["read_only"] is True and victor["cap_drop"] == ["ALL"] and victor["user"] == "10001:10001"
    assert sorted(victor["depends_on"]) == ["postgres", "redis"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == PG_SECRET
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published == ["127.0.0.1:18080:8080/tcp"]  # only nginx publishes, and only on loopback


def test_bad_compose_input_fails_before_anything_is_written(env):
    rc, out = _role(env, "bad", victor_deploy_compose_render_only=True, victor_deploy_compose_postgres_enabled=True)
    assert rc != 0 and "victor_deploy_compose_postgres_password" in out
    assert not (env / "bad" / "compose").exists()


def test_victor_and_nginx_come_up_hardened_and_rerun_changes_nothing(env):
    port = _free_port()
    variables = dict(victor_deploy_compose_nginx_enabled=True, victor_deploy_compose_nginx_image=BASE,
                     victor_deploy_compose_port=port)
    rc, out = _role(env, "up", **variables)
    assert rc == 0, out[-4000:]
    assert SECRET not in out
    with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=10) as response:
        assert json.load(response) == {"status": "healthy", "version": "0.9.5"}
    ids = _run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    assert len(ids) == 2
    info = {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in json.loads(_run(["docker", "inspect"] + ids).stdout)}
    victor = info["victor"]
    assert victor["HostConfig"]["ReadonlyRootfs"] is True
    assert victor["Config"]["User"] == "10001:10001"
    assert victor["HostConfig"]["CapDrop"] == ["ALL"]
    assert "/tmp" in victor["HostConfig"]["Tmpfs"]
    assert victor["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "5", "max-size": "50m"}}
    assert [(m["Name"], m["Destination"]) for m in victor["Mounts"]] == [(VOLUME, "/var/lib/victor")]
    assert not victor["HostConfig"]["PortBindings"]  # not published: only through nginx
    state = _run(["docker", "exec", victor["Id"], "ls", "-A", "/var/lib/victor/.victor"]).stdout.split()
    assert {"cache", "logs"} <= set(state)  # Victor writes its state onto the named volume
    rc, out = _role(env, "up", **variables)
    assert rc == 0, out[-4000:]
    assert "changed=0" in out, out[-3000:]
    again = _run(["docker", "ps", "-q", "--filter", "label=com.docker.compose.project=%s" % PROJECT]).stdout.split()
    assert sorted(again) == sorted(ids)
