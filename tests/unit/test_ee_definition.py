"""The execution environment definition: execution-environment.yml, its requirements.txt and
bindep.txt, and the collection's meta/execution-environment.yml (read as files; the context
`ansible-builder create` makes from them is tested in tests/functional/test_ee_builder.py)."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _requirement_names(path):
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split("[", 1)[0].split(">", 1)[0].split("=", 1)[0].strip().lower())
    return names


def test_definition_is_version_3_with_collection_and_dependency_files():
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text(encoding="utf-8"))
    assert ee["version"] == 3
    deps = ee["dependencies"]
    assert deps["python"] == "requirements.txt"
    assert deps["system"] == "bindep.txt"
    assert "<" not in deps["ansible_core"]["package_pip"], "no upper bound on ansible-core"


def test_python_requirements_cover_the_modules_needs():
    names = _requirement_names(ROOT / "requirements.txt")
    for needed in ("boto3", "psycopg", "redis"):
        assert needed in names


def test_bindep_lists_clients_for_both_package_families():
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "bindep.txt").read_text(encoding="utf-8").splitlines()]
    entries = [line for line in lines if line]
    dpkg = {e.split()[0] for e in entries if "platform:rpm" not in e}
    rpm = {e.split()[0] for e in entries if "platform:dpkg" not in e}
    for needed in ("postgresql-client", "zstd", "age", "sqlite3"):
        assert needed in dpkg, needed
    for needed in ("postgresql", "zstd", "age", "sqlite"):
        assert needed in rpm, needed


def test_collection_meta_declares_the_same_files():
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text(encoding="utf-8"))
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}
