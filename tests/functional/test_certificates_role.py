"""victor_certificates: values certbot, systemd or nginx would see are refused before anything changes."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOOD = dict(victor_certificates_domains=['victor.example.com', 'api.victor.example.com'], victor_certificates_email='ops@example.com')


def _play(tmp_path, variables):
    playbook = tmp_path / 'play.yml'
    playbook.write_text(textwrap.dedent('''\
        - name: Certificates
          hosts: localhost
          gather_facts: false
          tasks:
            - name: Role
              ansible.builtin.include_role:
                name: victor.ops.victor_certificates
        '''))
    (tmp_path / 'vars.json').write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false', ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    return subprocess.run(['ansible-playbook', '--check', '-i', 'localhost,', '-c', 'local', str(playbook), '-e', '@' + str(tmp_path / 'vars.json')],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT, check=False)


@pytest.mark.parametrize('bad, message', [
    ({'victor_certificates_domains': ['victor.example.com; rm -rf /']}, 'victor_certificates_domains must be a non-empty list of distinct DNS names'),
    ({'victor_certificates_domains': ['*.example.com']}, 'no wildcards'),
    ({'victor_certificates_domains': []}, 'victor_certificates_domains must be a non-empty list'),
    ({'victor_certificates_email': 'ops@example.com --server http://evil'}, 'victor_certificates_email empty'),
    ({'victor_certificates_server': 'http://acme.example.com/directory'}, 'victor_certificates_server must be an https:// URL'),
    ({'victor_certificates_server': 'https://acme.example.com/dir\nx'}, 'victor_certificates_server must be an https:// URL'),
    ({'victor_certificates_renew_on_calendar': 'daily\nExecStart=/bin/sh'}, 'victor_certificates_renew_on_calendar must be a systemd calendar'),
    ({'victor_certificates_deploy_key': '/etc/nginx/tls/victor-lb.crt'}, 'two different files'),
    ({'victor_nginx_lb_tls_certificate': '/etc/ssl/other.pem'}, 'must equal victor_certificates_deploy_certificate'),
])
def test_bad_input_fails_before_anything_changes(tmp_path, bad, message):
    run = _play(tmp_path, dict(GOOD, **bad))
    assert run.returncode == 2, run.stdout[-3000:]
    assert message in run.stdout, run.stdout[-3000:]
    assert 'changed=0' in run.stdout
    assert 'Traceback' not in run.stdout + run.stderr


def test_missing_domains_names_the_variable(tmp_path):
    run = _play(tmp_path, {})
    assert run.returncode == 2
    assert 'victor_certificates_domains' in run.stdout and 'Validation of arguments failed' in run.stdout
