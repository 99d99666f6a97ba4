# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only inspection of a Victor API host, for victor_host_info (the runbooks' diagnostics)
and the SQLite lock clearing of victor_db_maintenance (terminate_foreign_holders).

Sections (collect(args) with args.sections):

  service   systemd state of the unit and the processes in its control group
  health    GET /health: status code, JSON answer, latency, error
  port      who listens on the API port (and whether it is the unit)
  errors    recent error lines from the journal of the unit and from victor.log
  memory    memory of the host, of the unit, and the top processes by RSS
  database  the SQLite state database: size, WAL, processes holding it open (in the
            unit or not), and a write probe (BEGIN IMMEDIATE) run as the file's owner
  logs      what Victor wrote in a time window: ERROR/CRITICAL entries of victor.log,
            chat requests, rate-limit entries (429) per provider, slow requests; also
            for the same span before args.since (the last deploy)
  cpu       CPU of the unit's processes, sampled args.cpu_samples times every
            args.cpu_interval seconds (percent of one core)
  redis     Redis INFO (memory vs maxmemory, evictions, clients) of args.redis_url and how
            many keys match args.redis_pattern (SCAN), with db_maintenance_redis (redis-py)

args is any object with the attributes of victor_host_info's options.  What victor_health also
reads is read by its code: the GET and its verdict (health.check_http), the error-line rule
(health.DEFAULT_LOG_PATTERN), the log tail (health.tail_lines), memory (node_facts.memory_usage).
Standard library only, but for the redis section (redis-py, imported by db_maintenance_redis).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse

from ansible_collections.victor.ops.plugins.module_utils import db_maintenance_redis
from ansible_collections.victor.ops.plugins.module_utils import health
from ansible_collections.victor.ops.plugins.module_utils.db_maintenance import MaintenanceError
from ansible_collections.victor.ops.plugins.module_utils.node_facts import memory_usage
from ansible_collections.victor.ops.plugins.module_utils.redact import redact


SECTIONS = ("service", "health", "port", "errors", "memory", "database", "logs", "cpu", "redis")
UNIT_SECTIONS = ("service", "port", "memory", "database", "cpu")
SHOW_PROPERTIES = ("ActiveState", "SubState", "MainPID", "NRestarts", "Result", "ExecMainStatus",
                   "ExecMainCode", "ControlGroup", "ActiveEnterTimestamp", "LoadState", "UnitFileState")
# victor_health's log check's rule: ERROR or CRITICAL as a word (upper case), or a line starting a traceback
ERROR_RE = re.compile(health.DEFAULT_LOG_PATTERN)


def run(argv, timeout=20):
    """Run a command; return (rc, stdout, stderr) without raising."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def systemctl_show(service):
    if not health.UNIT_NAME.match(service or ""):
        return {"error": "%r is not a systemd unit name" % (service or "")[:80]}
    argv = ["systemctl", "show"]
    for prop in SHOW_PROPERTIES:
        argv += ["-p", prop]
    rc, out, err = run(argv + ["--", service])  # '--': a name is never read as an option
    props = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    if rc != 0:
        props["error"] = err.strip()
    for key in ("MainPID", "NRestarts", "ExecMainStatus"):
        if props.get(key, "").isdigit():
            props[key] = int(props[key])
    return props


def all_pids():
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def pids_in_cgroup(control_group):
    """PIDs whose /proc/<pid>/cgroup names the unit's control group (cgroup v1 or v2)."""
    if not control_group:
        return []
    found = []
    for pid in all_pids():
        try:
            with open("/proc/%d/cgroup" % pid, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        if any(line.split(":", 2)[-1] == control_group for line in lines):
            found.append(pid)
    return found


def proc_info(pid):
    info = {"pid": pid, "comm": "", "cmdline": "", "rss_kb": 0, "uid": None, "gid": None}
    try:
        with open("/proc/%d/status" % pid, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Name:"):
                    info["comm"] = line.split(None, 1)[1].strip() if len(line.split()) > 1 else ""
                elif line.startswith("VmRSS:"):
                    info["rss_kb"] = int(line.split()[1])
                elif line.startswith("Uid:"):
                    info["uid"] = int(line.split()[1])
                elif line.startswith("Gid:"):
                    info["gid"] = int(line.split()[1])
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            info["cmdline"] = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:300]
    except (OSError, ValueError):
        pass
    return info


def section_service(args):
    props = systemctl_show(args.service)
    pids = pids_in_cgroup(props.get("ControlGroup", ""))
    props["pids"] = pids
    props["processes"] = [proc_info(pid) for pid in pids]
    props["active"] = props.get("ActiveState") == "active"
    return props


def section_health(args):
    """GET the health path with victor_health's check_http: ok when its checks of the answer (status code 200, the JSON
    status word, the components) are all ok; latency is reported, not graded. error: why it is not ok."""
    host = "[%s]" % args.host if ":" in args.host else args.host
    base = "http://%s:%d" % (host, args.port)
    answers = []

    def fetch(url, headers, timeout, validate_certs, ca_path, use_proxy):
        answers.append(health.http_get(url, headers=headers, timeout=timeout, validate_certs=validate_certs, ca_path=ca_path,
                                       use_proxy=use_proxy))
        return answers[-1]

    # the host's own API, never through a proxy
    checks = health.check_http(base, args.health_path, headers={}, timeout=args.timeout, validate_certs=True, ca_path=None,
                               use_proxy=False, expected_status=[200], expected_version=None, latency_warn_ms=None,
                               latency_crit_ms=None, fetch=fetch)
    failed = [c for c in checks if c["status"] != health.OK and not c["name"].startswith("latency:")]
    result = {"url": health.join_url(base, args.health_path), "ok": not failed, "status_code": None, "body": None,
              "error": failed[0]["message"] if failed else None, "latency_ms": None}
    if answers and not answers[0].error:
        document, problem = health.parse_json(answers[0].body)
        result.update(status_code=answers[0].code, body=answers[0].body[:500] if problem else document,
                      latency_ms=round(answers[0].elapsed_ms, 1))
    return result


def _socket_inodes_listening(port):
    """Inodes of TCP sockets in LISTEN state on the port (IPv4 and IPv6)."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="utf-8") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != "0A":
                continue
            address, _sep, port_hex = fields[1].rpartition(":")
            if int(port_hex, 16) == port:
                inodes[fields[9]] = address
    return inodes


def _fd_targets(pid):
    """Targets of the process's open files; None when /proc/<pid>/fd cannot be read."""
    base = "/proc/%d/fd" % pid
    try:
        names = os.listdir(base)
    except OSError:
        return None
    targets = []
    for name in names:
        try:
            targets.append(os.readlink(os.path.join(base, name)))
        except PermissionError:
            return None
        except OSError:
            continue
    return targets


def _in_child_as(uid, gid, func):
    """Run func() in a child process with the given uid/gid; return its JSON-able result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 0
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            payload = {"result": func()}
        except Exception as exc:  # pylint: disable=broad-except
            payload = {"error": str(exc)}
            code = 1
        try:
            os.write(write_fd, json.dumps(payload).encode("utf-8"))
        finally:
            os.close(write_fd)
            os._exit(code)  # pylint: disable=protected-access
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        return {"error": "no answer from the child process"}


def fd_map(pids):
    """{pid: [open file targets]} for every pid whose descriptors can be read.

    Without CAP_SYS_PTRACE (containers) root cannot read another user's /proc/<pid>/fd,
    but that user can: unreadable processes are read again by a child running as their uid and
    gid (the kernel's ptrace check wants both to match; a user's gid is often not its uid).
    """
    result, by_owner = {}, {}
    for pid in pids:
        targets = _fd_targets(pid)
        if targets is not None:
            result[pid] = targets
        elif os.geteuid() == 0:
            info = proc_info(pid)
            if info["uid"] is not None and info["gid"] is not None:
                by_owner.setdefault((info["uid"], info["gid"]), []).append(pid)
    for (uid, gid), owner_pids in by_owner.items():
        answer = _in_child_as(uid, gid, lambda p=owner_pids: {str(x): _fd_targets(x) for x in p})
        for pid, targets in (answer.get("result") or {}).items():
            if targets is not None:
                result[int(pid)] = targets
    return result


def listeners(port, unit_pids=()):
    inodes = _socket_inodes_listening(port)
    owners = []
    if inodes:
        wanted = {"socket:[%s]" % inode for inode in inodes}
        for pid, targets in sorted(fd_map(all_pids()).items()):
            if wanted & set(targets):
                info = proc_info(pid)
                info["in_unit"] = pid in unit_pids
                owners.append(info)
    return {"port": port, "listening": bool(inodes), "owners": owners,
            "foreign_owner": any(not owner["in_unit"] for owner in owners)}


def section_port(args, unit_pids):
    return listeners(args.port, unit_pids)


def error_lines(text, limit):
    """The last limit lines of text (a string or a list of lines) that victor_health's log check counts as errors."""
    lines = [line for line in (text.splitlines() if isinstance(text, str) else text) if ERROR_RE.search(line)]
    return lines[-limit:]


def section_errors(args):
    rc, out, err = run(["journalctl", "-u", args.service, "-n", str(args.journal_lines), "--no-pager", "-o", "short-iso"])
    journal = error_lines(out, args.error_limit) if rc == 0 else []
    log_path = os.path.join(args.state_dir, ".victor", "logs", "victor.log")
    log = error_lines(tail_lines(log_path, 256 * 1024), args.error_limit)
    return {"journal": journal, "journal_error": err.strip() if rc != 0 else None,
            "victor_log": log, "victor_log_path": log_path,
            "count": len(journal) + len(log)}


def section_memory(args, unit_pids, meminfo="/proc/meminfo"):
    """Host memory as victor_health's memory check reads it (without MemAvailable: MemFree + Buffers + Cached)."""
    try:
        host = memory_usage(meminfo)
    except (OSError, ValueError):
        host = {"total_kb": 0, "available_kb": 0, "used_percent": None}
    processes = [proc_info(pid) for pid in all_pids()]
    processes = [p for p in processes if p["rss_kb"]]
    processes.sort(key=lambda p: p["rss_kb"], reverse=True)
    unit_rss = sum(p["rss_kb"] for p in processes if p["pid"] in unit_pids)
    return {"mem_total_kb": host["total_kb"], "mem_available_kb": host["available_kb"], "used_percent": host["used_percent"],
            "unit_rss_kb": unit_rss, "unit_rss_mb": round(unit_rss / 1024.0, 1),
            "top": [dict(p, in_unit=p["pid"] in unit_pids) for p in processes[:args.top]]}


def db_holders(path, unit_pids=()):
    """Processes with the database, its WAL or its shared-memory file open."""
    names = {path, path + "-wal", path + "-shm", path + "-journal"}
    holders = []
    for pid, targets in sorted(fd_map([p for p in all_pids() if p != os.getpid()]).items()):
        files = sorted(set(targets) & names)
        if files:
            info = proc_info(pid)
            info["files"] = files
            info["in_unit"] = pid in unit_pids
            holders.append(info)
    return holders


def _probe(path, timeout):
    try:
        uri = "file:%s?mode=rw" % urllib.parse.quote(os.path.abspath(path))  # a '?' or '#' in the path is not a URI's
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            started = time.monotonic()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
            return {"writable": True, "error": None, "journal_mode": journal,
                    "wait_ms": round((time.monotonic() - started) * 1000, 1)}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"writable": False, "error": str(exc), "journal_mode": None, "wait_ms": None}


def write_probe(path, timeout):
    """BEGIN IMMEDIATE as the owner of the file, so no WAL or SHM file ever belongs to root."""
    stat = os.stat(path)
    if os.geteuid() != 0 or stat.st_uid == 0:
        return _probe(path, timeout)
    answer = _in_child_as(stat.st_uid, stat.st_gid, lambda: _probe(path, timeout))
    return answer.get("result") or {"writable": False, "error": answer.get("error"), "journal_mode": None, "wait_ms": None}


def section_database(args, unit_pids):
    path = args.db
    result = {"path": path, "exists": os.path.isfile(path), "size_bytes": None, "wal_bytes": None,
              "holders": [], "foreign_holders": [], "probe": None, "locked": False}
    if not result["exists"]:
        return result
    result["size_bytes"] = os.path.getsize(path)
    if os.path.exists(path + "-wal"):
        result["wal_bytes"] = os.path.getsize(path + "-wal")
    result["holders"] = db_holders(path, unit_pids)
    result["foreign_holders"] = [h["pid"] for h in result["holders"] if not h["in_unit"]]
    result["probe"] = write_probe(path, args.db_timeout)
    result["locked"] = not result["probe"]["writable"] and "locked" in (result["probe"]["error"] or "")
    return result


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie has exited
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def foreign_holders(path, unit_pids):
    """The holders of the database that may be signalled: outside the unit, never pid 1 or this process."""
    return [h for h in db_holders(path, unit_pids) if not h["in_unit"] and h["pid"] not in (1, os.getpid())]


def terminate_foreign_holders(path, unit_pids, grace, targets=None):
    """SIGTERM, then SIGKILL after `grace` seconds, each process outside the unit holding the database.

    targets: foreign_holders(path, unit_pids) when the caller has just listed them (else listed here).
    """
    if targets is None:
        targets = foreign_holders(path, unit_pids)
    terminated, killed = [], []
    for holder in targets:
        try:
            os.kill(holder["pid"], signal.SIGTERM)
            terminated.append(holder)
        except OSError:
            continue
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(h["pid"]) for h in terminated):
        time.sleep(0.2)
    current = {h["pid"] for h in db_holders(path, unit_pids)}
    for holder in terminated:
        if _alive(holder["pid"]) and holder["pid"] in current:
            try:
                os.kill(holder["pid"], signal.SIGKILL)
                killed.append(holder["pid"])
            except OSError:
                continue
    return {"terminated": terminated, "killed": killed, "changed": bool(terminated)}


# ---------------------------------------------------------------- logs
# victor.log (Python logging): "2026-12-02 16:02:49,674 - victor-<session> - <logger> - ERROR - <message>";
# lines not starting with a timestamp (tracebacks, "Recovery hint: ...") continue the entry.
LOG_ENTRY_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ - (?:victor-\S+ - )?(\S+) - ([A-Z]+) - (.*)$")
RATE_LIMIT_RE = re.compile(r"rate.limit|\b429\b|too many requests", re.IGNORECASE)
AGENTIC_LOOP_LOGGER = "victor.framework.agentic_loop"
PROVIDER_RE = re.compile(r"""provider["']?\s*[=:]\s*["']?([A-Za-z0-9_.-]+)""")


def tail_lines(path, max_bytes):
    """The lines of the last max_bytes of a regular file, read as victor_health's log check reads them (the cut first
    line dropped); [] when it is missing, not a regular file or cannot be read."""
    if not os.path.isfile(path):
        return []
    try:
        return health.tail_lines(path, max_bytes)
    except OSError:
        return []


def log_entries(path, not_before, max_bytes=8 * 1024 * 1024):
    """(epoch, level, logger, text) of victor.log entries at or after not_before (local time)."""
    entries = []
    current = None
    for line in tail_lines(path, max_bytes):
        match = LOG_ENTRY_RE.match(line)
        if match:
            try:
                when = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
            except ValueError:
                continue
            current = [when, match.group(3), match.group(2), match.group(4)] if when >= not_before else None
            if current:
                entries.append(current)
        elif current is not None and len(current[3]) < 4000:
            current[3] += "\n" + line
    return entries


def usage_events(path, not_before, max_bytes=8 * 1024 * 1024):
    """(epoch, session, event_type) of usage.jsonl events at or after not_before."""
    events = []
    for line in tail_lines(path, max_bytes):
        try:
            event = json.loads(line)
            when = datetime.datetime.fromisoformat(event["timestamp"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if when >= not_before:
            events.append((when, event.get("session_id"), event.get("event_type")))
    return events


def _span(entries, events, start, end, slow_seconds):
    entries = [e for e in entries if start <= e[0] < end]
    events = sorted(e for e in events if start <= e[0] < end)
    errors = [e for e in entries if e[1] in ("ERROR", "CRITICAL")]
    prompts = [e for e in events if e[2] == "user_prompt"]
    # Victor 0.9.5 writes a user_prompt only for some turns (not for a chat that fails
    # fast, e.g. "circuit open"); every turn logs one "[Topology]" line when its loop starts.
    turns = [e for e in entries if e[2] == AGENTIC_LOOP_LOGGER and e[3].startswith("[Topology]")]
    requests = max(len(prompts), len(turns))
    limited = [e for e in entries if e[1] in ("WARNING", "ERROR", "CRITICAL") and RATE_LIMIT_RE.search(e[3])]
    providers = {}
    for entry in limited:
        match = PROVIDER_RE.search(entry[3])
        name = match.group(1) if match else "unknown"
        providers[name] = providers.get(name, 0) + 1
    # A request is slow when its response came more than slow_seconds after the prompt.
    slow, pending = [], {}
    for when, session, kind in events:
        if kind == "user_prompt":
            pending[session] = when
        elif kind == "assistant_response" and session in pending:
            took = when - pending.pop(session)
            if took > slow_seconds:
                slow.append(round(took, 1))
    minutes = max((end - start) / 60.0, 1 / 60.0)
    return {"start": datetime.datetime.fromtimestamp(start, datetime.timezone.utc).isoformat(),
            "end": datetime.datetime.fromtimestamp(end, datetime.timezone.utc).isoformat(),
            "errors": len(errors), "requests": requests,
            "errors_per_minute": round(len(errors) / minutes, 3),
            "error_rate_percent": round(100.0 * min(len(errors), requests) / requests, 1) if requests else None,
            "rate_limited": len(limited), "rate_limited_providers": providers,
            "slow_requests": len(slow), "slow_request_seconds": slow[-10:],
            "samples": [e[3].splitlines()[0][:300] for e in errors[-5:]],
            "rate_limit_samples": [e[3].replace("\n", " | ")[:400] for e in limited[-3:]]}


def section_logs(args):
    """The window [now - window, now] and the span of the same length before it (or before --since)."""
    now = time.time()
    window = args.window_minutes * 60.0
    since = now - window
    if args.since:
        try:
            since = max(datetime.datetime.fromisoformat(args.since.replace("Z", "+00:00")).timestamp(), now - window)
        except ValueError:
            pass
    before_start = since - (now - since)
    logs_dir = os.path.join(args.state_dir, ".victor", "logs")
    entries = log_entries(os.path.join(logs_dir, "victor.log"), before_start)
    events = usage_events(os.path.join(logs_dir, "usage.jsonl"), before_start)
    return {"victor_log": os.path.join(logs_dir, "victor.log"), "usage_log": os.path.join(logs_dir, "usage.jsonl"),
            "window_minutes": args.window_minutes, "since": args.since or None,
            "after": _span(entries, events, since, now + 1, args.slow_seconds),
            "before": _span(entries, events, before_start, since, args.slow_seconds)}


# ---------------------------------------------------------------- cpu
def _cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def section_cpu(args, service):
    """Percent of one core used by the unit's processes in each sampling interval."""
    hertz = os.sysconf("SC_CLK_TCK")
    group = service.get("ControlGroup", "")
    samples, per_pid = [], {}
    previous = {pid: _cpu_ticks(pid) for pid in pids_in_cgroup(group)}
    for _sample in range(args.cpu_samples):
        started = time.monotonic()
        time.sleep(args.cpu_interval)
        elapsed = time.monotonic() - started
        current = {pid: _cpu_ticks(pid) for pid in pids_in_cgroup(group)}
        total = 0.0
        for pid, ticks in current.items():
            if ticks is None or previous.get(pid) is None:
                continue
            used = 100.0 * (ticks - previous[pid]) / hertz / elapsed
            per_pid[pid] = per_pid.get(pid, 0.0) + used / args.cpu_samples
            total += used
        samples.append(round(total, 1))
        previous = current
    top = sorted(per_pid.items(), key=lambda item: item[1], reverse=True)[:args.top]
    return {"interval_seconds": args.cpu_interval, "samples_percent": samples,
            "min_percent": min(samples) if samples else None, "max_percent": max(samples) if samples else None,
            "avg_percent": round(sum(samples) / len(samples), 1) if samples else None, "cores": os.cpu_count(),
            "top": [dict(proc_info(pid), cpu_percent=round(used, 1)) for pid, used in top]}


# ---------------------------------------------------------------- redis
def redis_connection(url, timeout):
    """The keyword arguments of db_maintenance_redis.connect for a redis:// or rediss:// URL; ValueError saying what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("the Redis URL must start with redis:// or rediss://")
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise ValueError("the path of the Redis URL must be a database number such as /0")
    return {"host": parts.hostname or "127.0.0.1", "port": parts.port or 6379, "db": int(database),
            "user": urllib.parse.unquote(parts.username) if parts.username else None,
            "password": urllib.parse.unquote(parts.password) if parts.password else None,
            "tls": parts.scheme == "rediss", "connect_timeout": timeout}


def section_redis(args):
    """db_maintenance_redis's stats (what victor_db_maintenance reports) and INFO's limits, clients and rejections."""
    url = args.redis_url or ""
    result = {"target": None, "ok": False, "error": None, "pattern": args.redis_pattern, "matching_keys": None}
    try:
        connection = redis_connection(url, args.timeout) if url else None
    except ValueError as exc:
        result["error"] = str(exc)
        return result
    if connection is None:
        result["error"] = "no Redis URL configured"
        return result
    result["target"] = "%s:%s" % (connection["host"], connection["port"])
    if not db_maintenance_redis.HAS_REDIS:
        result["error"] = "the redis section needs the Python library redis (redis-py, python3-redis) on the host: %s" % (
            db_maintenance_redis.REDIS_IMPORT_ERROR)
        return result
    try:
        client = db_maintenance_redis.connect(**connection)
        try:
            result["ping"] = "PONG"  # connect() pinged
            result.update(db_maintenance_redis.stats(client))
            info = client.info()
            used, limit = result["used_memory"], result["maxmemory"]
            result.update(used_percent_of_max=round(100.0 * used / limit, 1) if limit else None,
                          rejected_connections=int(info.get("rejected_connections", 0)),
                          blocked_clients=int(info.get("blocked_clients", 0)))
            if args.redis_pattern:
                result["matching_keys"] = sum(1 for _key in client.scan_iter(match=args.redis_pattern, count=args.redis_batch))
        finally:
            client.close()
        result["ok"] = True
    except (MaintenanceError, db_maintenance_redis.redis.RedisError, OSError, ValueError) as exc:
        result["error"] = redact(str(exc), [connection["password"]])
    return result


def collect(args):
    report = {"collected_at": datetime.datetime.now(datetime.timezone.utc).isoformat(), "hostname": socket.gethostname(),
              "sections": args.sections}
    # the unit's processes matter to these sections only (systemctl is not run for the others)
    service = section_service(args) if set(args.sections) & set(UNIT_SECTIONS) else {}
    unit_pids = set(service.get("pids", []))
    sections = {"service": lambda: service, "health": lambda: section_health(args),
                "port": lambda: section_port(args, unit_pids), "errors": lambda: section_errors(args),
                "memory": lambda: section_memory(args, unit_pids), "database": lambda: section_database(args, unit_pids),
                "logs": lambda: section_logs(args), "cpu": lambda: section_cpu(args, service),
                "redis": lambda: section_redis(args)}
    for name, section in sections.items():
        if name in args.sections:
            report[name] = section()
    return report
