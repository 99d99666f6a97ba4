# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place secrets are removed from text: every error message that may hold a secret goes through redact().

redact() masks the secrets it is given (and their stripped, percent-encoded and escaped
forms, as parsers and ``repr`` quote them) plus anything that looks like a secret whatever
its value: ``scheme://user:password@`` (also with unencoded ``/``, ``#``, ``%`` in the
password), conninfo ``password=...``, ``Authorization``/``X-Api-Key`` values, ``Bearer``
and ``Basic`` credentials, and age secret keys. Standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from urllib.parse import quote, unquote

MASK = '********'

# scheme://user:password@ -- the password runs to the last '@' of the token, so an unencoded
# '/', '#', '?' or '%' in it is masked too (a URL parser would have cut it there).
_URL_USERINFO = re.compile(r'''(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@'"]*):[^\s'"]*@''')
_PATTERNS = (
    (_URL_USERINFO, r'\1:' + MASK + '@'),
    # libpq conninfo and URI query: password=secret, password='se cret'
    (re.compile(r'''(?i)\b(password|passwd|pwd)(\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s'"&]+)'''), r'\1\2' + MASK),
    # header lines: "Authorization: Bearer x", "X-Api-Key: x"
    (re.compile(r'''(?i)\b(authorization|proxy-authorization|x-api-key|api[_-]key)(['"]?\s*[:=]\s*['"]?)(bearer\s+|basic\s+|token\s+)?[^\s'",}]+'''),
     r'\1\2\3' + MASK),
    (re.compile(r'''(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+'''), r'\1\2' + MASK),
    (re.compile(r'(?i)\bAGE-SECRET-KEY-1[0-9A-Z]+'), 'AGE-SECRET-KEY-' + MASK),
    (re.compile(r'(?i)\bAGE-PLUGIN-[0-9A-Z]+-1[0-9A-Z]+'), 'AGE-PLUGIN-' + MASK),
)
MIN_SECRET = 3  # shorter "secrets" would garble every message they appear in


def _forms(secret):
    """The forms a secret takes in messages: as given, stripped, percent-encoded/decoded, escaped by repr()."""
    forms = set()
    for value in (secret, secret.strip()):
        forms.update((value, quote(value, safe=''), unquote(value), repr(value)[1:-1],
                      repr(value.encode('utf-8', 'replace'))[2:-1]))
    return [f for f in forms if len(f) >= MIN_SECRET]


def redact(text, secrets=()):
    """text with every known secret (and every secret-looking part) replaced by ********."""
    if text is None:
        return text
    text = text if isinstance(text, str) else str(text)
    forms = set()
    for secret in secrets or ():
        if secret is not None and str(secret):
            forms.update(_forms(str(secret)))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def url_has_credentials(url):
    """Whether a URL carries userinfo (anything before an '@' after the scheme), even unparseable."""
    # '@' anywhere after the scheme: with unencoded '/', '?' or '#' in a password, the '@' lands in the "path"
    return bool(url) and '://' in url and '@' in url.split('://', 1)[1]


def url_secrets(url):
    """The password of scheme://user:password@host, as written and decoded; [] when there is none.

    Read from the raw text, not urlsplit: an unencoded '/' or '#' in the password makes the
    parser cut the URL inside the password (and quote a piece of it in its error).
    """
    if not url or '://' not in url:
        return []
    rest = url.split('://', 1)[1]
    if '@' not in rest:
        return []
    userinfo = rest.rsplit('@', 1)[0]
    if ':' not in userinfo:
        return []
    password = userinfo.split(':', 1)[1]
    return [p for p in (password, unquote(password)) if p]


def url_error(option, url, error):
    """A message for an unparseable URL that never quotes its password (parsers quote pieces of it)."""
    text = redact(str(error), url_secrets(url))
    if url_has_credentials(url):
        # whatever the parser quotes may be a piece of the password: cut at an unencoded '/' or '#'
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "'%s'" % MASK, text) + (
            ' (a password in a URL must be percent-encoded: / as %2F, # as %23, ? as %3F, @ as %40, % as %25)')
    return '%s is not a valid URL: %s' % (option, text)
