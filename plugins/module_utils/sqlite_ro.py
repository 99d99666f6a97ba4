# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Open a live SQLite database for reading without writing to it, in any journal mode.

A plain ``mode=ro`` connection is not enough for Victor's WAL database: it writes read
marks into ``-shm`` and creates ``-wal``/``-shm`` when they are missing, and a read-write
connection that closes last checkpoints the WAL into the main file.  What is safe
(measured on SQLite 3.40, see tests/unit/test_db_maintenance_sqlite.py):

* rollback journal: ``mode=ro``;
* WAL with both ``-wal`` and ``-shm`` present (Victor running, or crashed):
  ``mode=ro&readonly_shm=1`` sees every committed frame and writes nothing;
* WAL without ``-wal``: every committed page is in the main file and nobody has the
  database open in WAL mode, so ``immutable=1`` reads it without locks or side files;
* WAL with ``-wal`` but no ``-shm``: the frames cannot be read without creating ``-shm``;
  ``immutable=1`` reads the main file and ``wal_ignored`` says the WAL's frames were not seen.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sqlite3

try:
    from urllib.parse import quote as _url_quote
except ImportError:  # Python 2: the collection targets Python 3 nodes
    from urllib import quote as _url_quote

SQLITE_HEADER = b"SQLite format 3\x00"


def is_wal(path):
    """True when the database file's header says WAL mode (file format versions 2)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except (IOError, OSError):
        return False
    return len(header) == 20 and header[:16] == SQLITE_HEADER and header[18:20] == b"\x02\x02"


def readonly_uri(path):
    """(URI, how, wal_ignored) that opens path for reading without writing or creating any file."""
    base = "file:%s?" % _url_quote(os.path.abspath(path))
    if not is_wal(path):
        return base + "mode=ro", "ro", False
    wal = path + "-wal"
    if os.path.exists(wal) and os.path.exists(path + "-shm"):
        return base + "mode=ro&readonly_shm=1", "readonly_shm", False
    ignored = os.path.exists(wal) and os.path.getsize(wal) > 0
    return base + "mode=ro&immutable=1", "immutable", ignored


def connect_readonly(path, timeout=5.0, **kwargs):
    """A read-only sqlite3 connection to an existing database; returns (conn, info).

    info: {"read_mode": "ro"|"readonly_shm"|"immutable", "wal_ignored": bool}.  Raises
    sqlite3.Error like sqlite3.connect (the caller words the message).
    """
    uri, how, ignored = readonly_uri(path)
    conn = sqlite3.connect(uri, uri=True, timeout=float(timeout), **kwargs)
    return conn, {"read_mode": how, "wal_ignored": ignored}
