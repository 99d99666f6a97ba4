# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Command line entry point used by the scheduled (systemd timer) backups.

The role victor.ops.victor_backup copies the backup*.py module_utils to the node and runs::

    python3 -m ansible_collections.victor.ops.plugins.module_utils.backup_cli \\
        --config /etc/victor/backup.json create --type incremental --scope full

The JSON config (mode 0600, may hold S3 credentials) uses the module's option names.
Exit status 0 on success; on failure a one-line reason on stderr and status 1, so the
systemd unit fails visibly (OnFailure=, journal) and no partial backup is registered.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import sys

from ansible_collections.victor.ops.plugins.module_utils import backup as bk
from ansible_collections.victor.ops.plugins.module_utils import backup_retention


def make_store(cfg):
    from ansible_collections.victor.ops.plugins.module_utils import backup_s3
    return backup_s3.make_store(cfg, work_dir(cfg))


def work_dir(cfg):
    if cfg.get("work_dir"):
        return cfg["work_dir"]
    if cfg.get("storage", "local") == "local":
        return cfg.get("repository", "/var/backups/victor")
    return "/var/tmp/victor-backup"


def tools(cfg):
    return bk.Tools(compression_level=cfg.get("compression_level", 3), threads=cfg.get("compression_threads", 0),
                    age_recipients=cfg.get("age_recipients") or [], age_recipients_file=cfg.get("age_recipients_file"),
                    age_identity_file=cfg.get("age_identity_file"))


def victor_version(cfg):
    return cfg.get("victor_version") or bk.detect_victor_version([cfg.get("victor_venv", "/opt/victor/current")])


def postgres(cfg):
    """PostgreSQL databases to dump: the connection options under "postgres" in the (0600) config file."""
    given = cfg.get("postgres") or {}
    if not given.get("login_db"):
        return []
    from ansible_collections.victor.ops.plugins.module_utils import backup_postgres
    return [backup_postgres.PostgresSource(given)]  # the argument spec's defaults for what the role did not set


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
    sub.add_parser("prune")
    args = parser.parse_args(argv)
    try:
        with open(args.config, "rb") as handle:
            cfg = json.loads(handle.read().decode("utf-8"))
        store = make_store(cfg)
        if args.command == "create":
            manifest = bk.create_backup(
                store, cfg.get("source", "/var/lib/victor/.victor"), work_dir(cfg), tools(cfg), backup_type=args.type,
                scope=args.scope, include=cfg.get("include"), exclude=cfg.get("exclude"),
                include_cache=cfg.get("include_cache", False), victor_version=victor_version(cfg),
                lock_timeout=cfg.get("lock_timeout", 600), postgres=postgres(cfg))
            sys.stdout.write(json.dumps(bk.summary(manifest)) + "\n")
            if args.prune:
                prune(store, cfg)
        elif args.command == "list":
            manifests, problems = bk.load_manifests(store, cfg.get("missing_ok", False))
            for problem in problems:
                sys.stderr.write("victor-backup list: %s\n" % problem)
            for manifest in bk.sort_manifests(manifests):
                sys.stdout.write(json.dumps(bk.summary(manifest)) + "\n")
        elif args.command == "verify":
            manifests, _problems = bk.load_manifests(store, cfg.get("missing_ok", False))
            chosen = bk.select_backup(manifests, args.backup_id)
            with bk.Lock(os.path.join(work_dir(cfg), ".victor-backup.lock"), cfg.get("lock_timeout", 600)):
                result = bk.verify_backup(store, manifests, chosen, tools(cfg), work_dir(cfg))
            sys.stdout.write(json.dumps(result) + "\n")
            if not result["ok"]:
                return 1
        else:
            prune(store, cfg)
    except (bk.BackupError, OSError, ValueError, KeyError) as exc:
        sys.stderr.write("victor-backup %s failed: %s\n" % (args.command, exc))
        return 1
    return 0


def prune(store, cfg):
    manifests, _problems = bk.load_manifests(store, cfg.get("missing_ok", False))
    keep = dict((rule, cfg.get("keep_" + rule, 0)) for rule in backup_retention.RULES)
    plan = backup_retention.plan(manifests, keep)
    by_id = dict((m["id"], m) for m in manifests)
    with bk.Lock(os.path.join(work_dir(cfg), ".victor-backup.lock"), cfg.get("lock_timeout", 600)):
        for ident in plan["forget"]:
            store.delete(by_id[ident])
    sys.stdout.write(json.dumps({"forgot": plan["forget"], "kept": plan["keep"]}) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
