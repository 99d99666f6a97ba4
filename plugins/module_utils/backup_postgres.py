# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL databases in victor_backup: pg_dump custom format, pg_restore --list, pg_restore.

The connection comes as the common connection options (postgres_common: login_host, login_db ...).
It is never put on a command line: pg_dump and pg_restore get PGHOST, PGPORT, PGUSER,
PGDATABASE and friends in their environment, and the password in a PGPASSFILE written
0600 in a private (0700) temporary directory that is removed when the program exits.
Error messages name the database as ``postgresql://user@host:port/dbname`` and go through
redact.redact(), whatever libpq prints.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import subprocess
import tempfile

from ansible_collections.victor.ops.plugins.module_utils import postgres_common
from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError
from ansible_collections.victor.ops.plugins.module_utils.redact import redact

# Never inherited from the caller: the options alone say where to connect.
SCRUBBED_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGPASSFILE", "PGSERVICE",
                "PGSERVICEFILE", "PGOPTIONS", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGCONNECT_TIMEOUT")
DUMP_DIR = ".victor-backup-postgres"
DUMP_SUFFIX = ".pgdump"


class PostgresSource:
    """One PostgreSQL database given by the common connection options; runs pg_dump / pg_restore against it."""

    def __init__(self, options, pg_dump="pg_dump", pg_restore="pg_restore", timeout=None):
        options = postgres_common.with_defaults(options)
        problems = postgres_common.connection_problems(options)
        if not options.get("login_db"):
            problems.insert(0, "login_db must name the database to dump or restore")
        if problems:
            raise BackupError("; ".join(problems))
        self.pg_dump = pg_dump
        self.pg_restore = pg_restore
        self.timeout = timeout
        self.password = options.get("login_password")
        self.database = options["login_db"]
        self.env_vars = postgres_common.libpq_environment(options)
        self._description = postgres_common.describe(options)

    def describe(self):
        """postgresql://user@host:port/dbname, without the password, for manifests and messages."""
        return self._description

    def mask(self, text):
        return redact(text, [self.password])

    def run(self, argv, private_dir):
        """Run a libpq program with the connection in its environment and the password in a PGPASSFILE."""
        env = dict((k, v) for k, v in os.environ.items() if k not in SCRUBBED_ENV)
        env.update(self.env_vars)
        secret_dir = tempfile.mkdtemp(prefix=".victor-backup-pg-", dir=private_dir)
        try:
            if self.password is not None:
                env["PGPASSFILE"] = postgres_common.write_pgpass(secret_dir, self.password)
            # without login_password libpq uses ~/.pgpass, peer or certificate authentication as usual
            try:
                proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      timeout=self.timeout, check=False)
            except OSError as exc:
                raise BackupError("cannot run %s: %s" % (argv[0], exc))
            except subprocess.TimeoutExpired:
                raise BackupError("%s against %s timed out after %s s" % (os.path.basename(argv[0]), self.describe(), self.timeout))
        finally:
            shutil.rmtree(secret_dir, ignore_errors=True)
        return proc.returncode, self.mask(proc.stdout.decode("utf-8", "replace")), self.mask(proc.stderr.decode("utf-8", "replace"))

    def dump(self, dest, private_dir):
        """pg_dump --format=custom into dest (pg_dump streams it to disk); returns manifest details."""
        argv = [self.pg_dump, "--format=custom", "--no-password", "--file=%s" % dest]
        rc, _out, err = self.run(argv, private_dir)
        if rc != 0 or not os.path.exists(dest) or os.path.getsize(dest) == 0:
            raise BackupError("pg_dump of %s failed (exit %s): %s" % (self.describe(), rc, _first_lines(err)))
        os.chmod(dest, 0o600)
        details = dump_details(dest, self.pg_restore)
        details.update({"engine": "postgresql", "database": self.database, "url": self.describe(), "format": "custom"})
        return details

    def restore(self, path, private_dir):
        """pg_restore --clean --if-exists in one transaction: on any error the database is left unchanged."""
        argv = [self.pg_restore, "--clean", "--if-exists", "--single-transaction", "--no-password",
                "--dbname=dbname=%s" % _conninfo_quote(self.database), path]
        rc, _out, err = self.run(argv, private_dir)
        if rc != 0:
            raise BackupError("pg_restore into %s failed (exit %s; it ran in one transaction, so the database is unchanged): %s"
                              % (self.describe(), rc, _first_lines(err)))


def _first_lines(text, count=5):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " ".join(lines[:count])[:1000] or "no output"


def _conninfo_quote(value):
    return "'%s'" % value.replace("\\", "\\\\").replace("'", "\\'")


def _run_restore_tool(argv):
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as exc:
        raise BackupError("cannot run %s: %s" % (argv[0], exc))
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def dump_details(path, pg_restore="pg_restore"):
    """Read a custom-format dump's table of contents (pg_restore --list); raise when it is not a valid dump."""
    rc, out, err = _run_restore_tool([pg_restore, "--list", path])
    if rc != 0:
        raise BackupError("pg_restore --list rejects %s: %s" % (os.path.basename(path), _first_lines(err)))
    details = {"entries": len([line for line in out.splitlines() if line and not line.startswith(";")])}
    for key, label in (("server_version", "Dumped from database version"), ("pg_dump_version", "Dumped by pg_dump version"),
                       ("dump_database", "dbname")):
        match = re.search(r"^;\s+%s:\s*(.+)$" % re.escape(label), out, re.MULTILINE)
        if match:
            details[key] = match.group(1).strip()
    return details


def check_dump(path, pg_restore="pg_restore"):
    """Problems of a dump file: pg_restore --list (its catalogue) and a full read to /dev/null (every data block)."""
    try:
        dump_details(path, pg_restore)
    except BackupError as exc:
        return [str(exc)]
    rc, _out, err = _run_restore_tool([pg_restore, "--file=%s" % os.devnull, path])
    if rc != 0:
        return ["pg_restore cannot read every block of %s: %s" % (os.path.basename(path), _first_lines(err))]
    return []


def dump_relpath(database, taken):
    """Archive path of a dump: under .victor-backup-postgres/, which never collides with a state file."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", database) or "database"
    name = "%s/%s%s" % (DUMP_DIR, base, DUMP_SUFFIX)
    index = 1
    while name in taken:
        index += 1
        name = "%s/%s-%d%s" % (DUMP_DIR, base, index, DUMP_SUFFIX)
    return name


def is_postgres(record):
    return record.get("engine") == "postgresql"
