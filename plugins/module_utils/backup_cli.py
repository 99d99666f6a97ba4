# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Command line entry point used by the scheduled (systemd timer) backups.

The role victor.ops.victor_backup copies the backup*.py module_utils to the node and runs::

    python3 -m ansible_collections.victor.ops.plugins.module_utils.backup_cli \\
        --config /etc/victor/backup.json create --type incremental --scope full

The JSON config (mode 0600, may hold S3 credentials) uses the module's option names and
defaults (backup.argument_spec; a key that is none of them is refused); each command runs
victor_backup's state through backup.run, and list runs victor_backup_info's backup.list_backups.
Exit status 0 on success; on failure a one-line reason on stderr and status 1, so the
systemd unit fails visibly (OnFailure=, journal) and no partial backup is registered.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import shutil
import sys

from ansible_collections.victor.ops.plugins.module_utils import backup as bk
from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError

# Keys the config once had, and what replaced them
REPLACED_KEYS = {"postgres_url": "the PostgreSQL connection options login_host, login_port, login_user, login_password and "
                                 "login_db (under \"postgres\"; the victor.ops.postgres_url_options filter makes them from a URL)"}


def find_tool(name):
    path = shutil.which(name)
    if not path:
        raise BackupError("%s is not installed (not found in PATH)" % name)
    return path


def load_config(path):
    """The module's options from the JSON config; the PostgreSQL connection options sit under "postgres".

    A key that is no option is refused by name: a stale or misspelt key must not silently change what is backed up.
    """
    with open(path, "rb") as handle:
        cfg = json.loads(handle.read().decode("utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError("%s does not hold a JSON object" % path)
    postgres = cfg.pop("postgres", None) or {}
    if not isinstance(postgres, dict):
        raise ValueError("%s: postgres must be a JSON object of connection options" % path)
    spec = bk.argument_spec()
    for where, options in (("", cfg), ("postgres.", postgres)):
        for key in sorted(options):
            if key in REPLACED_KEYS:
                raise BackupError("%s: %s%s is no longer an option; it became %s" % (path, where, key, REPLACED_KEYS[key]))
            if key not in spec:
                aliased = [name for name, option in spec.items() if key in option.get("aliases", [])]
                raise BackupError("%s: unknown key %s%s%s" % (path, where, key, " (use %s)" % aliased[0] if aliased else ""))
    cfg.update(postgres)
    params = bk.with_defaults(cfg)
    bk.validate(dict(params, state="create"))
    return params


def main(argv=None):
    spec = bk.argument_spec()
    parser = argparse.ArgumentParser(prog="victor-backup", description="Victor state backups (victor.ops)")
    parser.add_argument("--config", default="/etc/victor/backup.json")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create")
    create.add_argument("--type", choices=spec["type"]["choices"], default=spec["type"]["default"])
    create.add_argument("--scope", choices=spec["scope"]["choices"], default=spec["scope"]["default"])
    create.add_argument("--prune", action="store_true", help="apply retention after a successful backup")
    sub.add_parser("list")
    verify = sub.add_parser("verify")
    verify.add_argument("backup_id", nargs="?", default="latest")
    restore = sub.add_parser("restore", help="restore into the source directory (the service must be stopped)")
    restore.add_argument("backup_id")
    sub.add_parser("prune")
    args = parser.parse_args(argv)
    try:
        params = load_config(args.config)
        if args.command == "create":
            result = bk.run(dict(params, state="create", type=args.type, scope=args.scope), find_tool, False)
            sys.stdout.write(json.dumps(result["backup"]) + "\n")
            if args.prune:
                prune(params)
        elif args.command == "list":
            backups, problems = bk.list_backups(params, None, None, None)
            for problem in problems:
                sys.stderr.write("victor-backup list: %s\n" % problem)
            for backup in backups:
                sys.stdout.write(json.dumps(backup) + "\n")
        elif args.command == "verify":
            result = bk.run(dict(params, state="verify", backup_id=args.backup_id), find_tool, False)
            sys.stdout.write(json.dumps(result["verification"]) + "\n")
            if result.get("failed"):
                return 1
        elif args.command == "restore":
            result = bk.run(dict(params, state="restore", backup_id=args.backup_id), find_tool, False)
            sys.stdout.write(json.dumps({"restored": result["backup"]["id"], "chain": result["chain"],
                                         "safety_copy": result["safety_copy"]}) + "\n")
        else:
            prune(params)
    except (BackupError, OSError, ValueError, KeyError) as exc:
        sys.stderr.write("victor-backup %s failed: %s\n" % (args.command, exc))
        return 1
    return 0


def prune(params):
    result = bk.run(dict(params, state="prune"), find_tool, False)
    sys.stdout.write(json.dumps({"forgot": result["forget"], "kept": result["keep"]}) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
