"""The backup operations as tests call them: every option a test leaves out takes victor_backup's
argument spec default (backup.with_defaults), the one place defaults live, as the module passes them."""
from ansible_collections.victor.ops.plugins.module_utils import backup, backup_archive, backup_create, backup_restore, backup_verify

DEFAULTS = backup.with_defaults({})


def Tools(**kwargs):  # pylint: disable=invalid-name
    kwargs.setdefault('compression_level', DEFAULTS['compression_level'])
    kwargs.setdefault('threads', DEFAULTS['compression_threads'])
    return backup_archive.Tools(**kwargs)


def create_backup(store, source, work_dir, tools, **kwargs):
    for name, option in (('backup_type', 'type'), ('scope', 'scope'), ('include', 'include'), ('exclude', 'exclude'),
                         ('include_cache', 'include_cache')):
        kwargs.setdefault(name, DEFAULTS[option])
    return backup_create.create_backup(store, source, work_dir, tools, **kwargs)


def restore_backup(store, manifests, manifest, tools, target, **kwargs):
    kwargs.setdefault('scope', DEFAULTS['scope'])
    kwargs.setdefault('restore_postgres', DEFAULTS['postgres_restore'])
    return backup_restore.restore_backup(store, manifests, manifest, tools, target, **kwargs)


def verify_backup(store, manifests, manifest, tools, work_dir, **kwargs):
    kwargs.setdefault('record', DEFAULTS['record_verification'])
    return backup_verify.verify_backup(store, manifests, manifest, tools, work_dir, **kwargs)
