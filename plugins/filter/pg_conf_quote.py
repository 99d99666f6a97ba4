# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One quoting helper for string values written into postgresql.conf files."""
from __future__ import annotations

DOCUMENTATION = r"""
name: pg_conf_quote
short_description: Quote a value as a postgresql.conf string
version_added: 1.0.0
description:
  - Returns the value in single quotes, with C(') doubled and C(\\) escaped, as PostgreSQL's configuration
    file parser reads it; the result is always exactly one value.
  - A line break, NUL or other control character cannot be part of a postgresql.conf string and is refused
    with an error instead of starting another setting.
options:
  _input:
    description: Value to quote (converted to a string).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: One setting from a variable
  ansible.builtin.copy:
    content: "listen_addresses = {{ victor_postgresql_listen_addresses | victor.ops.pg_conf_quote }}\n"
    dest: /tmp/example.conf
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The quoted value, for example C('localhost, 10.0.0.5').
  type: str
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text


def pg_conf_quote(value):
    text = to_text(value, errors='surrogate_or_strict')
    bad = [char for char in text if not char.isprintable() and char != ' ']
    if bad:
        raise AnsibleFilterError('pg_conf_quote: a postgresql.conf value cannot hold a line break or control '
                                 'character (found %r)' % bad[0])
    return "'%s'" % text.replace('\\', '\\\\').replace("'", "''")


class FilterModule(object):
    def filters(self):
        return {'pg_conf_quote': pg_conf_quote}
