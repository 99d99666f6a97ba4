#!/usr/bin/env python
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Renewal wrapper and certbot deploy hook of the victor_certificates role.

Installed on the load balancer and run with the system python3; the settings come from a
root-only JSON file (no value of the inventory is ever parsed by a shell):

  renew [--force-renewal]   the systemd timer: `certbot renew`, then the textfile metrics
                            victor_ops_certificate_renewal_* (success 1/0, last run, last
                            success) and the expiry of the certificate nginx serves
  deploy                    certbot's --deploy-hook (RENEWED_LINEAGE set by certbot): copy
                            fullchain/privkey to the paths nginx reads when they differ,
                            `nginx -t`, reload; on a failed test the previous files are put
                            back and nothing is reloaded (victor_ops_certificate_deploy_success 0)
"""
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIG = os.environ.get('VICTOR_CERTIFICATES_CONFIG', '/etc/victor-certificates/config.json')


def log(message):
    print('victor-certificates: %s' % message, flush=True)


def read(path):
    try:
        with open(path, 'rb') as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def write_atomic(path, data, mode):
    """Write next to the target and rename over it: nginx never reads half a file.

    Like module_utils/backup_common.write_file_atomic: this file runs outside Ansible and cannot import it.
    """
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.victor-certificates-')
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, 'wb') as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def not_after(pem):
    """Expiry of the first certificate of a PEM chain as a UNIX time (certbot brings python3-cryptography)."""
    if not pem:
        return None
    try:
        from cryptography import x509  # pylint: disable=import-outside-toplevel
        cert = x509.load_pem_x509_certificate(pem)
    except (ImportError, ValueError):
        return None
    expiry = getattr(cert, 'not_valid_after_utc', None) or cert.not_valid_after.replace(tzinfo=__import__('datetime').timezone.utc)
    return int(expiry.timestamp())


def write_metrics(config, name, samples):
    """samples: [(metric, help, value)]; written atomically into node_exporter's textfile directory."""
    directory = config.get('textfile_dir') or ''
    if not directory or not os.path.isdir(directory):
        return
    label = '{cert_name="%s"}' % config['cert_name']
    lines = []
    for metric, help_text, value in samples:
        if value is None:
            continue
        lines += ['# HELP %s %s' % (metric, help_text), '# TYPE %s gauge' % metric, '%s%s %s' % (metric, label, value)]
    write_atomic(os.path.join(directory, name), ('\n'.join(lines) + '\n').encode(), 0o644)


def write_expiry(config):
    write_metrics(config, 'victor_ops_certificate_expiry.prom', [
        ('victor_ops_certificate_not_after_timestamp_seconds', 'Expiry of the certificate file nginx serves.',
         not_after(read(config['certificate'])))])


def previous_value(config, name, metric):
    text = read(os.path.join(config.get('textfile_dir') or '/nonexistent', name)) or b''
    for line in text.decode(errors='replace').splitlines():
        if line.startswith(metric + '{'):
            return line.rsplit(' ', 1)[1]
    return None


def run(argv, env=None):
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def renew(config, extra):
    env = dict(os.environ)
    if config.get('ca_bundle'):
        env['REQUESTS_CA_BUNDLE'] = config['ca_bundle']
    argv = [config['certbot'], 'renew', '--non-interactive', '--no-random-sleep-on-renew', '--cert-name', config['cert_name']] + extra
    started = int(time.time())
    code, output = run(argv, env)
    print(output, flush=True)
    # certbot 2 exits 0 even when the deploy hook failed: a deploy failure since the start counts too
    deploy_ok = previous_value(config, 'victor_ops_certificate_deploy.prom', 'victor_ops_certificate_deploy_success')
    deploy_at = previous_value(config, 'victor_ops_certificate_deploy.prom', 'victor_ops_certificate_deploy_timestamp_seconds')
    deploy_failed = deploy_ok == '0' and deploy_at is not None and float(deploy_at) >= started
    success = code == 0 and not deploy_failed
    last_success = started if success else previous_value(config, 'victor_ops_certificate_renewal.prom',
                                                          'victor_ops_certificate_renewal_last_success_timestamp_seconds')
    write_metrics(config, 'victor_ops_certificate_renewal.prom', [
        ('victor_ops_certificate_renewal_success', 'Last certbot renew run of the load balancer certificate succeeded (1) or failed (0).',
         1 if success else 0),
        ('victor_ops_certificate_renewal_last_run_timestamp_seconds', 'Start of the last certbot renew run.', started),
        ('victor_ops_certificate_renewal_last_success_timestamp_seconds', 'Start of the last successful certbot renew run.', last_success),
    ])
    write_expiry(config)
    if success:
        log('renewal run succeeded (certbot renews only certificates due within 30 days)')
        return 0
    log('renewal FAILED (certbot exit %d%s): nginx still serves the previous certificate; '
        'read the certbot output above and /var/log/letsencrypt/letsencrypt.log' % (code, ', deploy hook failed' if deploy_failed else ''))
    return 1


def deploy(config):
    lineage = os.environ.get('RENEWED_LINEAGE', '')
    if os.path.basename(lineage.rstrip('/')) != config['cert_name']:
        log('lineage %r is not %s: nothing to deploy' % (lineage, config['cert_name']))
        return 0
    new = {'certificate': read(os.path.join(lineage, 'fullchain.pem')), 'certificate_key': read(os.path.join(lineage, 'privkey.pem'))}
    if None in new.values():
        return deploy_result(config, False, 'fullchain.pem or privkey.pem missing in %s' % lineage)
    old = dict((key, read(config[key])) for key in new)
    if old == new:
        log('the certificate at %s is already the renewed one: no reload' % config['certificate'])
        return deploy_result(config, True, None)
    write_atomic(config['certificate_key'], new['certificate_key'], 0o600)
    write_atomic(config['certificate'], new['certificate'], 0o644)
    code, output = run([config['nginx'], '-t'])
    if code != 0:
        for key, data in old.items():
            if data is None:
                os.unlink(config[key])
            else:
                write_atomic(config[key], data, 0o600 if key == 'certificate_key' else 0o644)
        return deploy_result(config, False, 'nginx -t rejected the renewed certificate, the previous one is back and nginx '
                                            'was not reloaded: %s' % output)
    code, output = run(['systemctl', 'reload', config['service']])
    if code != 0:
        return deploy_result(config, False, 'systemctl reload %s failed: %s' % (config['service'], output))
    log('deployed the renewed certificate to %s and reloaded %s' % (config['certificate'], config['service']))
    return deploy_result(config, True, None)


def deploy_result(config, ok, error):
    write_metrics(config, 'victor_ops_certificate_deploy.prom', [
        ('victor_ops_certificate_deploy_success', 'Last deploy of a renewed certificate to nginx succeeded (1) or failed (0).', 1 if ok else 0),
        ('victor_ops_certificate_deploy_timestamp_seconds', 'Time of the last deploy attempt.', int(time.time())),
    ])
    write_expiry(config)
    if error:
        log('deploy FAILED: ' + error)
        return 1
    return 0


def main(argv):
    if not argv or argv[0] not in ('renew', 'deploy') or (argv[0] == 'deploy' and len(argv) > 1) \
            or any(arg != '--force-renewal' for arg in argv[1:]):
        sys.stderr.write('usage: victor-certificates renew [--force-renewal] | deploy\n')
        return 2
    with open(CONFIG, encoding='utf-8') as stream:
        config = json.load(stream)
    return renew(config, argv[1:]) if argv[0] == 'renew' else deploy(config)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
