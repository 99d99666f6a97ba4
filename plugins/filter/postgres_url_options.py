# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: postgres_url_options
short_description: The victor.ops PostgreSQL connection options of a postgresql:// URL
version_added: 0.1.0
description:
  - Turns a URL such as Victor's C(VICTOR_CHECKPOINT_DB_URL) into the connection options every victor.ops module
    that connects to PostgreSQL takes (C(login_host), C(login_port), C(login_user), C(login_password), C(login_db),
    C(login_unix_socket), C(ssl_mode), C(ca_cert), C(ssl_cert), C(ssl_key), C(connect_timeout)).
  - Query parameters C(sslmode), C(sslrootcert), C(sslcert), C(sslkey), C(connect_timeout), C(host) (a socket
    directory) and C(port) are understood; others are refused. An empty URL gives an empty dictionary.
  - Errors never quote the password.
options:
  _input:
    description: The URL, C(postgresql://user:password@host:port/dbname?sslmode=require).
    type: str
    required: true
author:
  - victor.ops maintainers (@victor-ops)
"""

EXAMPLES = r"""
- name: Back up Victor's checkpoint database given as a URL
  vars:
    pg: "{{ victor_checkpoint_db_url | victor.ops.postgres_url_options }}"
  victor.ops.victor_backup:
    state: create
    login_host: "{{ pg.login_host | default(omit) }}"
    login_port: "{{ pg.login_port | default(omit) }}"
    login_user: "{{ pg.login_user | default(omit) }}"
    login_password: "{{ pg.login_password | default(omit) }}"
    login_db: "{{ pg.login_db | default(omit) }}"
"""

RETURN = r"""
_value:
  description: The options the URL sets (only those), for example C({login_host, login_port, login_user, login_password, login_db}).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.victor.ops.plugins.module_utils.postgres_common import postgres_url_options as _options


def postgres_url_options(url):
    if not url:
        return {}
    try:
        return _options(str(url))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):
    def filters(self):
        return {'postgres_url_options': postgres_url_options}
