# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Raw figures of the node that a verdict is made of: memory from /proc/meminfo, disk use as df computes it.

One definition each, for victor_host_info (which reports the figures) and victor_health (which grades the
percentage through health.memory_usage_percent and health.disk_usage_percent).
Standard library only; imports no other module_utils, so any of them may import it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os


def read_meminfo(path):
    """{field: number} of the numeric fields of /proc/meminfo (kB for the memory fields); OSError when unreadable."""
    values = {}
    with open(path) as stream:
        for line in stream:
            key, _sep, rest = line.partition(':')
            fields = rest.split()
            if fields and fields[0].isdigit():
                values[key.strip()] = int(fields[0])
    return values


def memory_usage(path):
    """{total_kb, available_kb, used_percent} of /proc/meminfo at path: used is MemTotal - MemAvailable.

    Without MemAvailable (kernels before 3.14) available is MemFree + Buffers + Cached.
    ValueError when there is no MemTotal, OSError when the file cannot be read.
    """
    values = read_meminfo(path)
    total = values.get('MemTotal')
    available = values.get('MemAvailable')
    if available is None and total is not None:
        available = values.get('MemFree', 0) + values.get('Buffers', 0) + values.get('Cached', 0)
    if not total:
        raise ValueError('no MemTotal in %s' % path)
    return {'total_kb': total, 'available_kb': available, 'used_percent': round((total - available) * 100.0 / total, 1)}


def disk_usage(path):
    """{total_bytes, used_bytes, free_bytes, used_pct} of the file system holding path; OSError when path is not there.

    used_pct is df's Use%: used / (used + available to non-root), so blocks reserved for root count as
    neither (used / total would understate a nearly full disk); 0.0 for a file system without blocks.
    """
    vfs = os.statvfs(path)
    total = vfs.f_blocks * vfs.f_frsize
    used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    free = vfs.f_bavail * vfs.f_frsize
    percent = round(used * 100.0 / (used + free), 1) if used + free else 0.0
    return {'total_bytes': total, 'used_bytes': used, 'free_bytes': free, 'used_pct': percent}
