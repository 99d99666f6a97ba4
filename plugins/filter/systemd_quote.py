# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One quoting helper for values written into systemd unit files."""
from __future__ import annotations

DOCUMENTATION = r"""
name: systemd_quote
short_description: Quote a value as one word of a systemd unit file line
version_added: 1.0.0
description:
  - >-
    Returns the value unchanged when it only holds letters, digits and C(_ @ + = : , . / -); otherwise
    returns it in double quotes with C-style escapes, so a line break, quote or control character stays inside
    the word and can never start another directive.
  - 'C(%) is doubled (systemd specifiers); in O(context=exec) C($) is doubled too (no variable expansion).'
  - A NUL character cannot be written into a unit file and is refused.
options:
  _input:
    description: Value to quote (converted to a string).
    type: raw
    required: true
  context:
    description:
      - V(exec) for a word of C(ExecStart=) and the other command lines, V(environment) for one
        C(VAR=value) assignment of C(Environment=).
    type: str
    default: exec
    choices: [exec, environment]
"""

EXAMPLES = r"""
- name: A command line whose arguments come from variables
  ansible.builtin.copy:
    content: "ExecStart=/usr/bin/victor serve --host {{ victor_deploy_host | victor.ops.systemd_quote }}\n"
    dest: /tmp/example.conf
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The value, quoted for systemd only when needed.
  type: str
"""

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

_SAFE = re.compile(r'[A-Za-z0-9_@+=:,./-]+\Z')
_ESCAPES = {'\\': '\\\\', '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t'}


def _escape(char, context):
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char == '%':
        return '%%'
    if char == '$' and context == 'exec':
        return '$$'
    if not char.isprintable():
        # control characters and unicode line/paragraph separators
        return '\\x%02x' % ord(char) if ord(char) < 0x100 else '\\u%04x' % ord(char) if ord(char) < 0x10000 else '\\U%08x' % ord(char)
    return char


def systemd_quote(value, context='exec'):
    if context not in ('exec', 'environment'):
        raise AnsibleFilterError("systemd_quote: context must be 'exec' or 'environment', got %r" % (context,))
    text = to_text(value, errors='surrogate_or_strict')
    if '\0' in text:
        raise AnsibleFilterError('systemd_quote: a NUL character cannot be written into a systemd unit file')
    if _SAFE.match(text):
        return text
    return '"%s"' % ''.join(_escape(char, context) for char in text)


class FilterModule(object):
    def filters(self):
        return {'systemd_quote': systemd_quote}
