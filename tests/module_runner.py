"""Run a module's main() in-process, as Ansible would with these arguments (shared by unit and integration tests)."""
import json

import pytest
from ansible.module_utils.testing import patch_module_args


def run_module(module, args, capsys, check_mode=False):
    """Returns (failed, result): failed when the module exits non-zero or says failed."""
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            module.main()
    result = json.loads(capsys.readouterr().out)
    return exc.value.code != 0 or bool(result.get('failed')), result
