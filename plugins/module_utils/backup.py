# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The states of victor_backup (create, verify, prune, restore, revert) and the listing of
victor_backup_info, as the modules and the scheduled command line (backup_cli) all run them:
the options (argument_spec, validate), then run() or list_backups().

Each name is imported from the file that defines it; one file per concern:

    backup            options and the states (this file)
    backup_cli        the systemd timers' command line
    backup_create, backup_verify, backup_restore   the three operations on a backup
    backup_retention  which backups prune keeps
    backup_catalogue  manifests: check, list, filter, choose, resolve chains
    backup_store      the local repository; backup_s3: the S3 one
    backup_select     which files of the state directory a backup takes
    backup_sqlite     SQLite snapshots and integrity checks
    backup_postgres   pg_dump / pg_restore
    backup_archive    the tar -> zstd (-> age) pipeline
    backup_extract    safe, hashed extraction of an archive stream
    backup_files      atomic writes, fsync, sha256, confinement of untrusted paths
    backup_lock       the lock every state that writes holds
    backup_common     format constants, BackupError, time

Everything runs on the managed node with the standard library only (plus the zstd, age,
pg_dump and pg_restore executables through pipes, and boto3 for S3 storage).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.victor.ops.plugins.module_utils import backup_postgres
from ansible_collections.victor.ops.plugins.module_utils import backup_retention
from ansible_collections.victor.ops.plugins.module_utils import backup_s3
from ansible_collections.victor.ops.plugins.module_utils.backup_archive import IdentityFile, Tools
from ansible_collections.victor.ops.plugins.module_utils.backup_catalogue import (
    chain_state, filter_manifests, load_manifests, resolve_chain, select_backup, sort_manifests, summary,
)
from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError, refuse_nul
from ansible_collections.victor.ops.plugins.module_utils.backup_create import create_backup, detect_victor_version
from ansible_collections.victor.ops.plugins.module_utils.backup_lock import work_lock
from ansible_collections.victor.ops.plugins.module_utils.backup_restore import check_revert, in_scope, restore_backup, revert
from ansible_collections.victor.ops.plugins.module_utils.backup_select import select_files
from ansible_collections.victor.ops.plugins.module_utils.backup_sqlite import sqlite_version
from ansible_collections.victor.ops.plugins.module_utils.backup_verify import verify_backup
from ansible_collections.victor.ops.plugins.module_utils.postgres_common import connection_problems, postgres_common_argument_spec

STATES = ("create", "verify", "prune", "restore", "revert")
# victor_backup passes these to AnsibleModule too; validate() checks them for the CLI, with AnsibleModule's message
MUTUALLY_EXCLUSIVE = [("backup_id", "before"), ("age_identity", "age_identity_file")]
# Where scratch files and the lock go when work_dir is unset and the repository is not a local directory
S3_WORK_DIR = "/var/tmp/victor-backup"
# Connection options that do nothing without login_db (login_port and connect_timeout have defaults)
LOGIN_OPTIONS = ("login_host", "login_user", "login_password", "login_unix_socket", "ssl_mode", "ca_cert", "ssl_cert", "ssl_key")


def argument_spec():
    """victor_backup's options; the scheduled CLI takes the same names, with the same defaults."""
    spec = backup_s3.storage_argument_spec()
    spec.update(postgres_common_argument_spec())
    spec.update(
        state=dict(type="str", default="create", choices=list(STATES)),
        source=dict(type="path", default="/var/lib/victor/.victor"),
        target=dict(type="path"),
        work_dir=dict(type="path"),
        lock_timeout=dict(type="int", default=600),
        type=dict(type="str", default="full", choices=["full", "incremental"]),
        scope=dict(type="str", default="full", choices=["full", "database", "config"]),
        include=dict(type="list", elements="str", default=[]),
        exclude=dict(type="list", elements="str", default=[]),
        include_cache=dict(type="bool", default=False),
        compression_level=dict(type="int", default=3),
        compression_threads=dict(type="int", default=0),
        age_recipients=dict(type="list", elements="str", default=[], no_log=True),  # a secret key pasted here is never echoed
        age_recipients_file=dict(type="path"),
        age_identity_file=dict(type="path"),
        backup_id=dict(type="str"),
        before=dict(type="str"),
        safety_copy=dict(type="path"),
        keep_last=dict(type="int", default=0),
        keep_hourly=dict(type="int", default=0),
        keep_daily=dict(type="int", default=7),
        keep_weekly=dict(type="int", default=4),
        keep_monthly=dict(type="int", default=12),
        keep_yearly=dict(type="int", default=0),
        record_verification=dict(type="bool", default=True),
        victor_version=dict(type="str"),
        victor_venv=dict(type="path", default="/opt/victor/current"),
        age_identity=dict(type="str", no_log=True),
        missing_ok=dict(type="bool", default=False),
        postgres_restore=dict(type="bool", default=True),
    )
    return spec


def with_defaults(config):
    """The argument spec's defaults for every option config leaves out or sets to null (the CLI's JSON config)."""
    params = dict((name, option.get("default")) for name, option in argument_spec().items())
    params.update((key, value) for key, value in config.items() if value is not None)
    return params


def work_dir(params):
    """Where locks and scratch copies go: work_dir, else the local repository, else S3_WORK_DIR."""
    if params.get("work_dir"):
        return params["work_dir"]
    return params["repository"] if params["storage"] == "local" else S3_WORK_DIR


def validate(params):
    """Raise BackupError for option values the argument spec cannot express, or that the CLI's config
    (which no AnsibleModule checks) breaks: victor_backup and backup_cli refuse them with one message."""
    refuse_nul(params)
    for names in MUTUALLY_EXCLUSIVE:
        if len([name for name in names if params.get(name) is not None]) > 1:
            raise BackupError("parameters are mutually exclusive: %s" % "|".join(names))
    for key in ("lock_timeout", "compression_threads"):
        if params[key] < 0:
            raise BackupError("%s must be 0 or more, got %d" % (key, params[key]))
    if not 1 <= params["compression_level"] <= 22:
        raise BackupError("compression_level must be 1-22, got %d" % params["compression_level"])
    backup_s3.check_storage(params)
    if params["state"] == "revert" and not params["safety_copy"]:
        raise BackupError("state=revert needs safety_copy (the path a restore returned)")
    for recipient in params["age_recipients"]:
        if not recipient.startswith(("age1", "ssh-")):
            raise BackupError("age_recipients take public keys (age1... or ssh-...); never put a secret key here")
    for path_key in ("age_identity_file", "age_recipients_file"):
        path = params[path_key]
        if path and not os.path.isfile(path):
            raise BackupError("%s %s does not exist" % (path_key, path))
    identity = params["age_identity_file"]
    if identity and os.stat(identity).st_mode & 0o077:
        raise BackupError("age_identity_file %s must not be readable by group or others (chmod 0600)" % identity)
    problems = connection_problems(params)
    given = [name for name in LOGIN_OPTIONS if params.get(name) not in (None, "")]
    if given and not params["login_db"]:
        problems.insert(0, "%s given without login_db: set login_db to the PostgreSQL database to back up "
                           "(without it no database is dumped or restored)" % ", ".join(given))
    if problems:
        raise BackupError("; ".join(problems))


def list_backups(params, backup_type, scope, since):
    """victor_backup_info's listing and the CLI's list: (summaries oldest first, problems), filtered by type, scope and time."""
    refuse_nul(params)
    backup_s3.check_storage(params)
    manifests, problems = load_manifests(backup_s3.make_store(params, work_dir(params)), params["missing_ok"])
    return [summary(m) for m in filter_manifests(manifests, backup_type, scope, since)], problems


def run(params, find_tool, check_mode):
    """Validate params, then run params["state"]; returns the result (failed=True with msg when a verify finds a problem).

    find_tool(name) returns the path of an executable (zstd, age, pg_dump, pg_restore) or
    raises.  params are complete: the argument spec's names and defaults (with_defaults).
    """
    validate(params)
    params = dict(params)
    params["work_dir"] = work_dir(params)
    if params["age_identity"]:
        # a private temporary directory, not work_dir: that may be the repository, which must not be created here
        with IdentityFile(params["age_identity"]) as identity:
            params["age_identity_file"] = identity
            return _run(params, find_tool, check_mode)
    return _run(params, find_tool, check_mode)


def _tools(params, find_tool, need_age):
    return Tools(params["compression_level"], params["compression_threads"], zstd=find_tool("zstd"),
                 age=find_tool("age") if need_age else "age",
                 age_recipients=params["age_recipients"], age_recipients_file=params["age_recipients_file"],
                 age_identity_file=params["age_identity_file"],
                 age_identity_label="given in age_identity" if params["age_identity"] else None)


def _postgres(params, find_tool, tools=None):
    """The PostgresSource of the connection options (None without login_db)."""
    if not params["login_db"]:
        return None
    source = backup_postgres.PostgresSource(params, pg_dump=find_tool("pg_dump"), pg_restore=find_tool("pg_restore"))
    if tools is not None:
        tools.pg_restore = source.pg_restore
    return source


def _lock(params):
    return work_lock(params["work_dir"], params["lock_timeout"])


def _run(params, find_tool, check_mode):
    result = dict(changed=False, problems=[], sqlite_version=sqlite_version())
    state = params["state"]
    if state == "revert":
        return _revert(params, find_tool, check_mode, result)
    store = backup_s3.make_store(params, params["work_dir"])
    need_age = bool(params["age_recipients"] or params["age_recipients_file"] or params["age_identity_file"] or params["age_identity"])
    if state == "create":
        return _create(params, find_tool, check_mode, result, store, need_age)
    manifests, problems = load_manifests(store, params["missing_ok"])
    result["problems"] = problems
    if state == "prune":
        return _prune(params, check_mode, result, store, manifests)
    try:
        chosen = select_backup(manifests, params["backup_id"], params["before"], params["scope"] if state == "restore" else None)
    except BackupError as exc:
        raise BackupError("; ".join([str(exc)] + problems[:5]))
    chain = resolve_chain(manifests, chosen)
    tools = _tools(params, find_tool, need_age or any(m.get("encrypted") for m in chain))
    postgres = _postgres(params, find_tool, tools)
    if postgres is None and any(d.get("engine") == "postgresql" for m in chain for d in m.get("databases", [])):
        tools.pg_restore = find_tool("pg_restore")
    result["backup"] = summary(chosen)
    if state == "verify":
        return _verify(params, check_mode, result, store, manifests, chosen, tools)
    return _restore(params, check_mode, result, store, manifests, chosen, chain, tools, postgres)


def _revert(params, find_tool, check_mode, result):
    target = params["target"] or params["source"]
    check_revert(target, params["safety_copy"])  # in check mode too: refused is not "changed"
    if not check_mode:
        postgres = _postgres(params, find_tool)
        if os.path.isdir(params["work_dir"]):
            with _lock(params):  # no backup may read the target while it is put back
                revert(target, params["safety_copy"], postgres=postgres, private_dir=params["work_dir"])
        else:
            # no run holds a lock in a work_dir that does not exist (e.g. the default local repository on a host
            # whose backups are in S3); a revert, which needs no repository, must not create one
            revert(target, params["safety_copy"], postgres=postgres, private_dir=params["work_dir"])
    result.update(changed=True, safety_copy=params["safety_copy"])
    return result


def _create(params, find_tool, check_mode, result, store, need_age):
    tools = _tools(params, find_tool, need_age)
    postgres = _postgres(params, find_tool, tools)
    if check_mode:
        entries = select_files(params["source"], params["scope"], params["include"], params["exclude"], params["include_cache"])
        paths = [e["path"] for e in entries]
        if postgres is not None and params["scope"] != "config":
            paths.append(backup_postgres.dump_relpath(postgres.database, set(paths)))
        result.update(changed=True, files=paths, backup={"type": params["type"], "scope": params["scope"], "encrypted": tools.encrypt})
        return result
    store.ensure()  # before the lock: a local repository is the default work_dir, and made 0700 here
    with _lock(params):
        manifest = create_backup(
            store, params["source"], params["work_dir"], tools, params["type"], params["scope"], params["include"],
            params["exclude"], params["include_cache"],
            victor_version=params["victor_version"] or detect_victor_version([params["victor_venv"]]),
            postgres=[postgres] if postgres else [])
    cleaned = manifest.pop("cleaned", [])
    result.update(changed=True, backup=summary(manifest), manifest=manifest, cleaned=cleaned,
                  files=[f["path"] for f in manifest["files"] if f.get("stored", True)])
    return result


def _prune(params, check_mode, result, store, manifests):
    keep = dict((rule, params["keep_" + rule]) for rule in backup_retention.RULES)
    plan = backup_retention.plan(manifests, keep)
    by_id = dict((m["id"], m) for m in manifests)
    result.update(keep=plan["keep"], forget=plan["forget"], forget_reasons=plan["forget_reasons"],
                  backups=[summary(m) for m in sort_manifests(manifests)])
    if plan["forget"] and not check_mode:
        with _lock(params):
            for ident in plan["forget"]:
                store.delete(by_id[ident])
    result["changed"] = bool(plan["forget"])
    return result


def _verify(params, check_mode, result, store, manifests, chosen, tools):
    record = params["record_verification"] and not check_mode
    with _lock(params):
        verification = verify_backup(store, manifests, chosen, tools, params["work_dir"], record=record)
    result.update(verification=verification, problems=result["problems"] + verification["problems"], changed=record)
    if not verification["ok"]:
        result.update(failed=True, msg="backup %s failed verification: %s" % (chosen["id"], "; ".join(verification["problems"][:5])))
    return result


def _restore(params, check_mode, result, store, manifests, chosen, chain, tools, postgres):
    result["chain"] = [m["id"] for m in chain]
    if check_mode:
        files = chain_state(chain)
        result.update(changed=True, files=sorted(p for p, r in files.items() if in_scope(r, params["scope"])))
        return result
    with _lock(params):
        restored = restore_backup(store, manifests, chosen, tools, params["target"] or params["source"], params["scope"],
                                  params["postgres_restore"], safety_dir=params["safety_copy"], postgres=postgres)
    result.update(changed=True, files=restored["files"], safety_copy=restored["safety_copy"], postgres=restored["postgres"])
    return result
