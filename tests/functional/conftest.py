"""The functional tier: tests that run real tools and services on this host (ansible-playbook,
ansible-builder, promtool, amtool, mtail, nginx -t, logrotate, systemd-analyze, redis-server, the
SIGKILL harness), no docker. Some reuse the renderers and argument builders of the unit tests
next to whose pure checks they used to live: tests/unit is importable here."""
import sys
from pathlib import Path

_UNIT = str(Path(__file__).resolve().parents[1] / 'unit')
if _UNIT not in sys.path:
    sys.path.append(_UNIT)
