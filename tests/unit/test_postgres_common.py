"""The one PostgreSQL connection interface (module_utils/postgres_common.py, fragment victor.ops.postgres).

Every module that connects takes the same options with the same defaults, refuses the same bad values
with the same message, and never shows the password (results, errors, environment, argv; the modules
run as Ansible runs them: test_health_redact.py).
The proof against a real server: tests/integration/test_*_postgres.py.
"""
import os
import stat

import pytest

from ansible_collections.victor.ops.plugins.module_utils import postgres_common as pc
from ansible_collections.victor.ops.plugins.module_utils.health import health_argument_spec
from ansible_collections.victor.ops.plugins.module_utils import backup as bk
from ansible_collections.victor.ops.plugins.modules import victor_db_maintenance

SECRET = 'S3CR3T:pw'


# The only ways a connecting module's connection options may differ from postgres_common_argument_spec():
# (module, option) -> the keys that differ. Everything else (type, default, aliases, choices, no_log) is the same.
INTENDED_DIFFERENCES = {
    # login_port is Redis's port too (engine=redis); unset, each driver takes its own default (PostgreSQL 5432,
    # Redis 6379).
    ('victor_db_maintenance', 'login_port'): {'default': None},
    # a health check gives up sooner than maintenance or a backup (also its statement_timeout) ...
    ('victor_health', 'connect_timeout'): {'default': 5},
    # ... and needs no application database: every cluster has the postgres database.
    ('victor_health', 'login_db'): {'default': 'postgres'},
}


def _connecting_specs():
    return {'victor_backup': bk.argument_spec(), 'victor_db_maintenance': victor_db_maintenance.argument_spec(),
            'victor_health': health_argument_spec()['postgres']['options']}


def test_every_connecting_module_takes_the_common_options():
    common = pc.postgres_common_argument_spec()
    for name, spec in _connecting_specs().items():
        for option, definition in common.items():
            assert spec[option]['type'] == definition['type'], (name, option)
            assert spec[option].get('aliases') == definition.get('aliases'), (name, option)
            assert spec[option].get('no_log') == definition.get('no_log'), (name, option)
        assert 'postgres_url' not in spec and 'host' not in spec and 'dbname' not in spec, name
    assert common['login_password']['no_log'] is True
    assert common['login_db']['aliases'] == ['db', 'database'] and common['ca_cert']['aliases'] == ['ssl_rootcert']


def test_connection_options_have_the_common_defaults_but_for_the_intended_differences():
    common = pc.postgres_common_argument_spec()
    for name, spec in _connecting_specs().items():
        for option, definition in common.items():
            assert spec[option] == dict(definition, **INTENDED_DIFFERENCES.get((name, option), {})), (name, option)
    for (name, option), difference in INTENDED_DIFFERENCES.items():  # each is a real difference
        assert any(common[option].get(key) != value for key, value in difference.items()), (name, option)


def _documented_options(module):
    """The module's options as ansible-doc shows them (the fragments merged in)."""
    from ansible.plugins.loader import fragment_loader
    from ansible.utils.plugin_docs import get_docstring
    path = os.path.join(os.path.dirname(victor_db_maintenance.__file__), module + '.py')
    return get_docstring(path, fragment_loader, collection_name='victor.ops', is_module=True)[0]['options']


def test_the_docs_show_each_connecting_modules_own_defaults():
    for name, spec in _connecting_specs().items():
        options = _documented_options(name)
        if name == 'victor_health':
            options = options['postgres']['suboptions']
        for option in pc.postgres_common_argument_spec():
            assert options[option].get('default') == spec[option].get('default'), (name, option)
            assert options[option]['type'] == spec[option]['type'], (name, option)


@pytest.mark.parametrize('params, message', [
    ({'connect_timeout': 0}, 'connect_timeout must be 1-3600 seconds (got 0)'),  # libpq would wait forever
    ({'connect_timeout': 3601}, 'connect_timeout must be 1-3600 seconds'),
    ({'login_port': 0}, 'login_port must be 1-65535 (got 0)'),
    ({'login_port': 65536}, 'login_port must be 1-65535'),
    ({'login_host': 'db', 'login_unix_socket': '/run/postgresql'}, 'login_host and login_unix_socket are mutually exclusive'),
])
def test_connection_problems_name_the_option(params, message):
    assert any(message in p for p in pc.connection_problems(params)), pc.connection_problems(params)
    prefixed = pc.connection_problems(params, 'postgres.')
    assert prefixed and all(p.startswith('postgres.') for p in prefixed), prefixed


def test_good_options_have_no_problems():
    assert pc.connection_problems(pc.with_defaults({'login_host': 'db', 'login_db': 'victor'})) == []


def test_libpq_params_map_only_what_is_set_and_the_socket_is_the_host():
    params = pc.with_defaults({'login_unix_socket': '/run/postgresql', 'login_user': 'victor', 'login_password': SECRET,
                               'login_db': 'victor', 'ssl_mode': 'verify-full', 'ca_cert': '/ca.pem', 'login_host': ''})
    assert pc.libpq_params(params) == {'host': '/run/postgresql', 'port': 5432, 'user': 'victor', 'password': SECRET,
                                       'dbname': 'victor', 'sslmode': 'verify-full', 'sslrootcert': '/ca.pem', 'connect_timeout': 10}


def test_environment_and_description_never_hold_the_password():
    params = pc.with_defaults({'login_host': 'db', 'login_user': 'victor', 'login_password': SECRET, 'login_db': 'victor'})
    env = pc.libpq_environment(params)
    assert env == {'PGHOST': 'db', 'PGPORT': '5432', 'PGUSER': 'victor', 'PGDATABASE': 'victor', 'PGCONNECT_TIMEOUT': '10'}
    assert pc.describe(params) == 'postgresql://victor@db:5432/victor'
    assert pc.describe(dict(params, login_host=None, login_unix_socket='/run/pg')) == 'postgresql://victor@[/run/pg]:5432/victor'


def test_pgpass_is_0600_and_escapes_the_password(tmp_path):
    path = pc.write_pgpass(str(tmp_path), 'a:b\\c')
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path).read() == '*:*:*:*:a\\:b\\\\c\n'
    with pytest.raises(OSError):  # never reuses a file someone else created
        pc.write_pgpass(str(tmp_path), 'x')


@pytest.mark.parametrize('url, options', [
    ('postgresql://victor:p%40ss%3Aw@db.internal:5433/checkpoints',
     {'login_host': 'db.internal', 'login_port': 5433, 'login_user': 'victor', 'login_password': 'p@ss:w', 'login_db': 'checkpoints'}),
    ('postgres://victor@%2Frun%2Fpostgresql/victor', {'login_unix_socket': '/run/postgresql', 'login_user': 'victor', 'login_db': 'victor'}),
    ('postgresql:///victor?host=/run/postgresql&port=5433&sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3',
     {'login_unix_socket': '/run/postgresql', 'login_port': 5433, 'ssl_mode': 'verify-full', 'ca_cert': '/ca.pem',
      'connect_timeout': 3, 'login_db': 'victor'}),
])
def test_url_options(url, options):
    assert pc.postgres_url_options(url) == options


@pytest.mark.parametrize('url, message', [
    ('mysql://victor:S3CR3T@db/victor', 'must start with postgresql://'),
    ('postgresql://victor:S3CR3T@db:5432', 'must name the database'),
    ('postgresql://victor:S3CR3T@db/victor?sslfoo=1', "parameter 'sslfoo' is not supported"),
    ('postgresql://victor:S3CR3T@db/victor?connect_timeout=0', 'connect_timeout must be a whole number greater than 0'),
    ('postgresql://victor:S3CR3T@a,b/victor', 'several hosts'),
])
def test_url_errors_are_clear_and_never_quote_the_password(url, message):
    with pytest.raises(ValueError) as info:
        pc.postgres_url_options(url)
    assert message in str(info.value) and 'S3CR3T' not in str(info.value)


def test_filter_gives_the_options_and_an_ansible_error():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.victor.ops.plugins.filter.postgres_url_options import FilterModule
    url_options = FilterModule().filters()['postgres_url_options']
    assert url_options('') == {}
    assert url_options('postgresql://v@db/victor') == {'login_host': 'db', 'login_user': 'v', 'login_db': 'victor'}
    with pytest.raises(AnsibleFilterError, match='must name the database'):
        url_options('postgresql://v:S3CR3T@db')


def test_doc_fragment_documents_the_spec_once_for_both_shapes():
    """victor.ops.postgres holds the options twice (sanity wants plain strings): top level and as victor_health's
    postgres suboptions. Both must say the same, and match the argument spec."""
    import re
    import yaml
    from ansible_collections.victor.ops.plugins.doc_fragments.postgres import ModuleDocFragment
    top = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options']
    nested = dict(yaml.safe_load(ModuleDocFragment.HEALTH)['options']['postgres']['suboptions'])
    assert set(nested) - set(top) == {'warn_percent', 'crit_percent'}
    spec = pc.postgres_common_argument_spec()
    assert set(top) == set(spec)
    for name, doc in top.items():
        health_doc = dict(nested[name])
        assert health_doc.pop('default', None) == {'login_db': 'postgres', 'connect_timeout': 5}.get(name, doc.get('default'))
        unprefixed = yaml.safe_load(re.sub(r'O\(postgres\.', 'O(', yaml.safe_dump(health_doc)))
        unprefixed['description'] = [line.replace(" Also the C(statement_timeout) of the check's queries.", '')
                                     for line in (unprefixed['description'] if isinstance(unprefixed['description'], list)
                                                  else [unprefixed['description']])]
        expected = dict(doc, description=doc['description'] if isinstance(doc['description'], list) else [doc['description']])
        if name == 'login_password':  # the health check runs no pg_dump or pg_restore: no PGPASSFILE to tell of
            assert 'pg_dump' in expected['description'][0] and 'PGPASSFILE' in expected['description'][0]
            assert 'pg_dump' not in unprefixed['description'][0] and 'PGPASSFILE' not in unprefixed['description'][0]
            assert 'never on a command line' in unprefixed['description'][0]
            unprefixed['description'][0] = expected['description'][0]
        expected.pop('default', None)
        assert unprefixed == expected, name
        assert doc['type'] == spec[name]['type'] and doc.get('default') == spec[name].get('default'), name
        assert doc.get('aliases') == spec[name].get('aliases') and doc.get('choices') == spec[name].get('choices'), name
