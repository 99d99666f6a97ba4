# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Command line entry point used by the scheduled (systemd timer) backups.

The role victor.ops.victor_backup copies the backup*.py module_utils to the node and runs::

    python3 -m ansible_collections.victor.ops.plugins.module_utils.backup_cli \\
        --config /etc/victor/backup.json create --type incremental --scope full

The JSON config (mode 0600, may hold S3 credentials) uses the module's option names and
defaults (backup.argument_spec); each command runs the module's state through backup.run.
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
from ansible_collections.victor.ops.plugins.module_utils import backup_s3


def find_tool(name):
    path = shutil.which(name)
    if not path:
        raise bk.BackupError("%s is not installed (not found in PATH)" % name)
    return path


def load_config(path):
    """The module's options from the JSON config; the PostgreSQL connection options sit under "postgres"."""
    with open(path, "rb") as handle:
        cfg = json.loads(handle.read().decode("utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError("%s does not hold a JSON object" % path)
    cfg.update(cfg.pop("postgres", None) or {})
    params = bk.with_defaults(cfg)
    bk.validate(dict(params, state="create"))
    return params


def main(argv=None):
    parser = argparse.ArgumentParser(prog="victor-backup", description="Victor state backups (victor.ops)")
    parser.add_argument("--config", default="/etc/victor/backup.json")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create")
    create.add_argument("--type", choices=["full", "incremental"], default="full")
    create.add_argument("--scope", choices=["full", "database", "config"], default="full")
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
            result = bk.run(dict(params, state="create", type=args.type, scope=args.scope), find_tool)
            sys.stdout.write(json.dumps(result["backup"]) + "\n")
            if args.prune:
                prune(params)
        elif args.command == "list":
            manifests, problems = bk.load_manifests(backup_s3.make_store(params, bk.work_dir(params)), params["missing_ok"])
            for problem in problems:
                sys.stderr.write("victor-backup list: %s\n" % problem)
            for manifest in bk.sort_manifests(manifests):
                sys.stdout.write(json.dumps(bk.summary(manifest)) + "\n")
        elif args.command == "verify":
            result = bk.run(dict(params, state="verify", backup_id=args.backup_id), find_tool)
            sys.stdout.write(json.dumps(result["verification"]) + "\n")
            if result.get("failed"):
                return 1
        elif args.command == "restore":
            result = bk.run(dict(params, state="restore", backup_id=args.backup_id), find_tool)
            sys.stdout.write(json.dumps({"restored": result["backup"]["id"], "chain": result["chain"],
                                         "safety_copy": result["safety_copy"]}) + "\n")
        else:
            prune(params)
    except (bk.BackupError, OSError, ValueError, KeyError) as exc:
        sys.stderr.write("victor-backup %s failed: %s\n" % (args.command, exc))
        return 1
    return 0


def prune(params):
    result = bk.run(dict(params, state="prune"), find_tool)
    sys.stdout.write(json.dumps({"forgot": result["forget"], "kept": result["keep"]}) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
