"""The built collection installs into an empty collections path, its galaxy.yml dependencies
resolved offline from the collections the PyPI `ansible` package bundles (Galaxy is not reachable)."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import ansible
import pytest

ROOT = Path(__file__).resolve().parents[2]
# the ansible package's own collections (not this checkout's .cache/collections, also on sys.path)
BUNDLED = str(Path(ansible.__file__).resolve().parents[1])
BIN = Path(sys.executable).parent  # the venv's bin: ansible-galaxy and ansible-doc are beside python


def _run(args, collections_path):
    # only the paths given: no implicit scan of sys.path (where the bundled collections also are)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false',
               ANSIBLE_NOCOLOR='1')
    return subprocess.run([str(BIN / args[0])] + args[1:], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope='module')
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    built = _run(['ansible-galaxy', 'collection', 'build', '--output-path', str(out), '.'], BUNDLED)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob('victor-ops-*.tar.gz')
    return path


def test_install_resolves_dependencies_from_the_bundled_collections(tarball, tmp_path):
    target = tmp_path / 'collections'
    installed = _run(['ansible-galaxy', 'collection', 'install', '--offline', '-p', str(target), str(tarball)],
                     '%s:%s' % (target, BUNDLED))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    for dependency in ('community.docker', 'community.postgresql', 'kubernetes.core', 'awx.awx'):
        assert "'%s:" % dependency in installed.stdout and 'already installed' in installed.stdout, installed.stdout
    assert sorted(p.name for p in (target / 'ansible_collections').iterdir()) == ['victor']
    doc = _run(['ansible-doc', 'victor.ops.victor_backup'], '%s:%s' % (target, BUNDLED))
    assert doc.returncode == 0 and 'victor_backup' in doc.stdout, doc.stderr


def test_installed_playbooks_resolve_every_module_from_the_dependencies(tarball, tmp_path):
    # --syntax-check resolves every task's action: a module of an undeclared collection fails here
    target = tmp_path / 'collections'
    installed = _run(['ansible-galaxy', 'collection', 'install', '--offline', '-p', str(target), str(tarball)],
                     '%s:%s' % (target, BUNDLED))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    root = target / 'ansible_collections' / 'victor' / 'ops' / 'playbooks'
    names = sorted('victor.ops.' + str(p.relative_to(root).with_suffix('')).replace('/', '.')
                   for p in root.glob('**/*.yml') if p.parent.name not in ('tasks', 'vars'))
    assert 'victor.ops.monthly_maintenance' in names and 'victor.ops.runbooks.api_server_down' in names, names
    checked = _run(['ansible-playbook', '--syntax-check', '-i', 'localhost,'] + names, '%s:%s' % (target, BUNDLED))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # without the bundled collections the dependencies are missing: the same check fails naming one
    alone = _run(['ansible-playbook', '--syntax-check', '-i', 'localhost,', 'victor.ops.provision_staging'], str(target))
    assert alone.returncode != 0 and 'community.postgresql' in alone.stdout + alone.stderr, alone.stdout + alone.stderr


def test_install_without_the_dependencies_fails_naming_them(tarball, tmp_path):
    target = tmp_path / 'collections'
    installed = _run(['ansible-galaxy', 'collection', 'install', '--offline', '-p', str(target), str(tarball)],
                     str(target))
    assert installed.returncode != 0
    assert 'community.docker' in installed.stdout + installed.stderr


def test_tarball_holds_the_collection_not_the_checkout(tarball):
    # ansible.cfg points at this checkout's inventory and cache: an installed collection must not carry it
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert 'plugins/modules/victor_backup.py' in names and 'roles/victor_deploy/tasks/main.yml' in names
    assert not {'ansible.cfg', 'Makefile', '.ansible-lint'} & names, sorted(names)[:20]
    assert not [n for n in names if n.startswith(('molecule/', 'scripts/', 'bench/', '.cache/', '.venv'))]
