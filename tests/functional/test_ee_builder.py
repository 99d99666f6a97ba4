"""The execution environment definition produces a usable ansible-builder context.

`ansible-builder create` runs for real (it needs no registry); the test then checks the
generated Containerfile and the files copied into the context, and runs the context's own
introspection script on the collection tarball installed in a temporary collections path,
the way the builder stage of the image build does. The definition files themselves are
checked in tests/unit/test_ee_definition.py.
"""
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name):
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    assert found, "%s is not installed (requirements-dev.txt)" % name
    return found


def _clean_env():
    env = dict(os.environ)
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Collection tarball, EE sources laid out as in the repo, and the generated context."""
    work = tmp_path_factory.mktemp("ee")
    src = work / "src"
    dist = src / ".cache" / "dist"
    dist.mkdir(parents=True)
    for name in ("execution-environment.yml", "requirements.txt", "bindep.txt"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([_tool("ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(ROOT)],
                   check=True, capture_output=True, text=True, env=_clean_env())
    context = work / "context"
    result = subprocess.run([_tool("ansible-builder"), "create", "-f", str(src / "execution-environment.yml"),
                             "-c", str(context), "--output-filename", "Containerfile"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"work": work, "context": context, "tarball": next(dist.glob("victor-ops-*.tar.gz"))}


def test_context_has_containerfile_and_dependency_files(built):
    context = built["context"]
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    assert 'ARG EE_BASE_IMAGE="quay.io/fedora/fedora:40"' in containerfile
    assert "ansible-core>=2.17.0" in containerfile
    assert "introspect.py introspect --user-pip=requirements.txt --user-bindep=bindep.txt" in containerfile
    assert "/build/collections/victor-ops-*.tar.gz" in containerfile
    # The victor.ops install happens in the galaxy stage, before the builder stage copies
    # /usr/share/ansible and introspects it.
    galaxy_stage = containerfile.split("FROM base AS galaxy", 1)[1].split("FROM base AS builder", 1)[0]
    assert "ansible-galaxy collection install --offline --no-deps" in galaxy_stage
    build = context / "_build"
    assert (build / "requirements.txt").read_text(encoding="utf-8") == (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert (build / "bindep.txt").read_text(encoding="utf-8") == (ROOT / "bindep.txt").read_text(encoding="utf-8")
    galaxy = yaml.safe_load((build / "requirements.yml").read_text(encoding="utf-8"))
    names = {c["name"] for c in galaxy["collections"]}
    assert {"awx.awx", "community.docker", "community.postgresql", "kubernetes.core"} <= names
    assert (build / "scripts" / "introspect.py").is_file()


def test_context_carries_the_collection_with_its_ee_metadata(built):
    copied = built["context"] / "_build" / "collections" / built["tarball"].name
    assert copied.is_file()
    galaxy_version = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))["version"]
    assert copied.name == "victor-ops-%s.tar.gz" % galaxy_version
    with tarfile.open(copied) as tar:
        members = set(tar.getnames())
    for needed in ("meta/execution-environment.yml", "requirements.txt", "bindep.txt", "roles/victor_deploy/tasks/main.yml"):
        assert needed in members, needed
    for leaked in (".venv", ".cache", "molecule"):
        assert not any(m == leaked or m.startswith(leaked + "/") for m in members), leaked


def test_introspection_of_installed_collection_yields_its_requirements(built):
    """What the image's builder stage does: install the tarball, introspect the path."""
    colls = built["work"] / "collections"
    # cwd outside the checkout: its ansible.cfg would show this checkout as victor.ops, "already installed"
    subprocess.run([_tool("ansible-galaxy"), "collection", "install", "--offline", "--no-deps", "-p", str(colls),
                    str(built["tarball"])], check=True, capture_output=True, text=True, env=_clean_env(),
                   cwd=str(built["work"]))
    assert (colls / "ansible_collections" / "victor" / "ops" / "meta" / "execution-environment.yml").is_file()
    script = built["context"] / "_build" / "scripts" / "introspect.py"
    result = subprocess.run([sys.executable, str(script), "introspect", str(colls)],
                            capture_output=True, text=True, check=True)
    data = yaml.safe_load(result.stdout)
    python = [line for line in data["python"] if line.endswith("# from collection victor.ops")]
    system = [line for line in data["system"] if line.endswith("# from collection victor.ops")]
    assert any(line.startswith("boto3") for line in python)
    assert any(line.startswith("psycopg[binary]") for line in python)
    assert any(line.startswith("redis") for line in python)
    assert any(line.startswith("postgresql-client [platform:dpkg]") for line in system)
    assert any(line.startswith("zstd") for line in system)
    assert any(line.startswith("age") for line in system)
