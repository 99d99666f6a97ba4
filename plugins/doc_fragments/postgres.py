# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """PostgreSQL connection options (module_utils/postgres_common.py postgres_common_argument_spec()).

    DOCUMENTATION has them at the top level (victor_db_maintenance, victor_backup); HEALTH is
    victor_health's postgres option, the same options as its suboptions (a quicker timeout, the
    postgres database by default) plus its thresholds. Sanity wants both as plain strings, so the
    options are written twice here; tests/unit/test_postgres_common.py keeps the two copies equal
    but for what differs on purpose (those defaults, login_password's means, connect_timeout's
    statement_timeout).
    """

    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or address of the server. Unset (and without O(login_unix_socket)), libpq's default, the local socket.
      - Mutually exclusive with O(login_unix_socket).
    type: str
  login_port:
    description: Port of the server, 1 to 65535.
    type: int
    default: 5432
  login_user:
    description: Role to connect as; libpq's default (the operating system user) when unset.
    type: str
  login_password:
    description:
      - Password of O(login_user). Never logged and never on a command line (the driver gets it as a parameter;
        C(pg_dump) and C(pg_restore) in a PGPASSFILE of mode 0600 that is removed after the run).
      - Unset, libpq's own ways apply (C(~/.pgpass), peer or certificate authentication).
    type: str
  login_db:
    description: Database to connect to.
    type: str
    aliases: [db, database]
  login_unix_socket:
    description: Directory of the server's Unix socket (for example C(/var/run/postgresql)), instead of O(login_host).
    type: path
  ssl_mode:
    description: libpq C(sslmode); unset, libpq's default C(prefer).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description: CA certificate file that verifies the server (libpq C(sslrootcert)), for O(ssl_mode=verify-ca) or C(verify-full).
    type: path
    aliases: [ssl_rootcert]
  ssl_cert:
    description: Client certificate file (libpq C(sslcert)).
    type: path
  ssl_key:
    description: Private key file of O(ssl_cert) (libpq C(sslkey)).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the connection, 1 to 3600 (libpq would wait forever at 0).
    type: int
    default: 10
"""

    HEALTH = r"""
options:
  postgres:
    suboptions:
      login_host:
        description:
          - Host name or address of the server. Unset (and without O(postgres.login_unix_socket)), libpq's default, the local socket.
          - Mutually exclusive with O(postgres.login_unix_socket).
        type: str
      login_port:
        description: Port of the server, 1 to 65535.
        type: int
        default: 5432
      login_user:
        description: Role to connect as; libpq's default (the operating system user) when unset.
        type: str
      login_password:
        description:
          - Password of O(postgres.login_user). Never logged and never on a command line (the driver, psycopg, gets it as a
            parameter; the check runs no program).
          - Unset, libpq's own ways apply (C(~/.pgpass), peer or certificate authentication).
        type: str
      login_db:
        description: Database to connect to.
        default: postgres
        type: str
        aliases: [db, database]
      login_unix_socket:
        description: Directory of the server's Unix socket (for example C(/var/run/postgresql)), instead of O(postgres.login_host).
        type: path
      ssl_mode:
        description: libpq C(sslmode); unset, libpq's default C(prefer).
        type: str
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      ca_cert:
        description: CA certificate file that verifies the server (libpq C(sslrootcert)), for O(postgres.ssl_mode=verify-ca) or C(verify-full).
        type: path
        aliases: [ssl_rootcert]
      ssl_cert:
        description: Client certificate file (libpq C(sslcert)).
        type: path
      ssl_key:
        description: Private key file of O(postgres.ssl_cert) (libpq C(sslkey)).
        type: path
      connect_timeout:
        description:
          - Seconds to wait for the connection, 1 to 3600 (libpq would wait forever at 0). Also the C(statement_timeout) of the check's queries.
        type: int
        default: 5

      warn_percent:
        description: Warn above this share of max_connections.
        type: float
        default: 80
      crit_percent:
        description: Critical above this share of max_connections.
        type: float
        default: 90
"""
