# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One quoting helper for values written into nginx configuration files."""
from __future__ import annotations

DOCUMENTATION = r"""
name: nginx_quote
short_description: Quote a value as one argument of an nginx directive
version_added: 1.0.0
description:
  - >-
    Returns the value unchanged when it only holds letters, digits and C(_ . : / @ + = , [ ] -); otherwise returns
    it in double quotes with C(\\) and C(") escaped, so C(;), C({), C(}), C(#), spaces and line breaks stay inside one
    argument and can never end the directive or open a block.
  - nginx expands C($name) even inside quotes and has no escape for it, and a NUL cannot be written into the file,
    so a value holding C($) or NUL is refused with an error.
options:
  _input:
    description: Value to quote (converted to a string).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: One directive from a variable
  ansible.builtin.copy:
    content: "client_max_body_size {{ victor_nginx_lb_client_max_body_size | victor.ops.nginx_quote }};\n"
    dest: /tmp/example.conf
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The value, quoted for nginx only when needed.
  type: str
"""

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

_SAFE = re.compile(r'[A-Za-z0-9_.:/@+=,\[\]-]+\Z')


def nginx_quote(value):
    text = to_text(value, errors='surrogate_or_strict')
    if '$' in text or '\0' in text:
        raise AnsibleFilterError('nginx_quote: a value written into nginx.conf cannot hold $ (nginx expands '
                                 'variables even in quotes) or NUL; got %r' % (text,))
    if _SAFE.match(text):
        return text
    return '"%s"' % text.replace('\\', '\\\\').replace('"', '\\"')


class FilterModule(object):
    def filters(self):
        return {'nginx_quote': nginx_quote}
