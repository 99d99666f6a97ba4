# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one PostgreSQL connection interface of victor.ops (documented by the victor.ops.postgres fragment).

Every module that connects takes postgres_common_argument_spec() (top level, or as the
suboptions of a dict option) and turns the values into libpq keywords with libpq_params():
psycopg gets them as keyword arguments, pg_dump/pg_restore as PG* environment variables
(libpq_environment()) with the password in a 0600 PGPASSFILE (write_pgpass()), never argv.
Defaults live in the argument spec only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

try:
    from urllib.parse import parse_qsl, unquote, urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported by this collection
    from urlparse import parse_qsl, urlsplit  # pylint: disable=import-error
    from urllib import unquote  # pylint: disable=import-error,no-name-in-module

from ansible_collections.victor.ops.plugins.module_utils.redact import url_error

SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']
MAX_CONNECT_TIMEOUT = 3600

# option -> libpq keyword; login_unix_socket comes first: it is the host when given
LIBPQ_KEYWORDS = (
    ('login_unix_socket', 'host'), ('login_host', 'host'), ('login_port', 'port'), ('login_user', 'user'),
    ('login_password', 'password'), ('login_db', 'dbname'), ('ssl_mode', 'sslmode'), ('ca_cert', 'sslrootcert'),
    ('ssl_cert', 'sslcert'), ('ssl_key', 'sslkey'), ('connect_timeout', 'connect_timeout'),
)
LIBPQ_ENV = {
    'host': 'PGHOST', 'port': 'PGPORT', 'user': 'PGUSER', 'dbname': 'PGDATABASE', 'sslmode': 'PGSSLMODE',
    'sslrootcert': 'PGSSLROOTCERT', 'sslcert': 'PGSSLCERT', 'sslkey': 'PGSSLKEY', 'connect_timeout': 'PGCONNECT_TIMEOUT',
}
# URL query parameters postgres_url_options() accepts, and the option each one sets
URL_QUERY_OPTIONS = {
    'sslmode': 'ssl_mode', 'sslrootcert': 'ca_cert', 'sslcert': 'ssl_cert', 'sslkey': 'ssl_key',
    'connect_timeout': 'connect_timeout', 'host': 'login_unix_socket', 'port': 'login_port',
}


def postgres_common_argument_spec():
    """Connection options shared by every module that connects to PostgreSQL; modules .update() their own."""
    return dict(
        login_host=dict(type='str'),
        login_port=dict(type='int', default=5432),
        login_user=dict(type='str'),
        login_password=dict(type='str', no_log=True),
        login_db=dict(type='str', aliases=['db', 'database']),
        login_unix_socket=dict(type='path'),
        ssl_mode=dict(type='str', choices=SSL_MODES),
        ca_cert=dict(type='path', aliases=['ssl_rootcert']),
        ssl_cert=dict(type='path'),
        ssl_key=dict(type='path'),
        connect_timeout=dict(type='int', default=10),
    )


def with_defaults(options):
    """The options with the argument spec's defaults for those not given (for callers without an AnsibleModule)."""
    result = dict((name, spec.get('default')) for name, spec in postgres_common_argument_spec().items())
    result.update((name, value) for name, value in options.items() if value is not None)
    return result


def connection_problems(params, prefix=''):
    """What the argument spec cannot say about the connection options (prefix names a dict option, e.g. 'postgres.')."""
    problems = []
    timeout = params.get('connect_timeout')
    if timeout is not None and not 0 < timeout <= MAX_CONNECT_TIMEOUT:
        # libpq waits forever with 0 (and with negatives)
        problems.append('%sconnect_timeout must be 1-%d seconds (got %s)' % (prefix, MAX_CONNECT_TIMEOUT, timeout))
    port = params.get('login_port')
    if port is not None and not 0 < port < 65536:
        problems.append('%slogin_port must be 1-65535 (got %s)' % (prefix, port))
    if params.get('login_host') and params.get('login_unix_socket'):
        problems.append('%slogin_host and %slogin_unix_socket are mutually exclusive (the socket directory is the host)'
                        % (prefix, prefix))
    return problems


def libpq_params(params):
    """libpq keywords (host, port, user, password, dbname, sslmode, ...) of the options that are set."""
    result = {}
    for option, keyword in LIBPQ_KEYWORDS:
        value = params.get(option)
        if value not in (None, '') and keyword not in result:
            result[keyword] = value
    return result


def libpq_environment(params):
    """PG* environment variables for libpq programs (pg_dump, pg_restore); the password is never among them."""
    return dict((LIBPQ_ENV[k], str(v)) for k, v in libpq_params(params).items() if k in LIBPQ_ENV)


def describe(params):
    """postgresql://user@host:port/dbname of the options, without the password (for messages and manifests)."""
    conn = libpq_params(params)
    user = (conn['user'] + '@') if conn.get('user') else ''
    host = conn.get('host') or ''
    if host.startswith('/'):
        host = '[%s]' % host
    port = (':%s' % conn['port']) if conn.get('port') else ''
    return 'postgresql://%s%s%s/%s' % (user, host, port, conn.get('dbname') or '')


def write_pgpass(directory, password):
    """A PGPASSFILE (0600, created exclusively in a private directory) matching any server with the password."""
    path = os.path.join(directory, 'pgpass')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as handle:
        handle.write('*:*:*:*:%s\n' % password.replace('\\', '\\\\').replace(':', '\\:'))
    return path


def postgres_url_options(url, name='postgres_url'):
    """The connection options of a postgresql:// URL (roles get Victor's VICTOR_CHECKPOINT_DB_URL this way).

    ValueError (never quoting the password) for what the options cannot express.
    """
    try:
        parts = urlsplit(url or '')
        port = parts.port
    except ValueError as exc:
        raise ValueError(url_error(name, url, exc))
    if parts.scheme not in ('postgresql', 'postgres'):
        raise ValueError('%s must start with postgresql:// (e.g. postgresql://victor@127.0.0.1:5432/victor)' % name)
    host = unquote(parts.hostname) if parts.hostname else None
    if host and ',' in host:
        raise ValueError('%s with several hosts is not supported' % name)
    options = {'login_db': unquote(parts.path.lstrip('/')) if parts.path else ''}
    if not options['login_db']:
        raise ValueError('%s must name the database (postgresql://user@host:port/dbname)' % name)
    if host:
        options['login_unix_socket' if host.startswith('/') else 'login_host'] = host
    if port:
        options['login_port'] = port
    if parts.username:
        options['login_user'] = unquote(parts.username)
    if parts.password is not None:
        options['login_password'] = unquote(parts.password)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in URL_QUERY_OPTIONS:
            raise ValueError('%s parameter %r is not supported (supported: %s)' % (name, key, ', '.join(sorted(URL_QUERY_OPTIONS))))
        if key in ('connect_timeout', 'port'):
            if not value.strip().isdigit() or int(value) < 1:
                # libpq waits forever with connect_timeout 0 (and with negatives)
                raise ValueError('%s %s must be a whole number greater than 0' % (name, key))
            value = int(value)
        if key == 'host' and not value.startswith('/'):
            options.pop('login_unix_socket', None)
            options['login_host'] = value
            continue
        if key == 'host':
            options.pop('login_host', None)
        options[URL_QUERY_OPTIONS[key]] = value
    return options
