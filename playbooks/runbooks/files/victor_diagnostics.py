# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Diagnostics (and the one remediation that needs care) for the victor.ops runbooks.

Run on a Victor API host by ansible.builtin.script (python3, standard library only).
Prints one JSON document. Sections, chosen with --sections:

  service   systemd state of the unit and the processes in its control group
  health    GET /health: status code, JSON answer, latency, error
  port      who listens on the API port (and whether it is the unit)
  errors    recent error lines from the journal of the unit and from victor.log
  memory    memory of the host, of the unit, and the top processes by RSS
  database  the SQLite state database: size, WAL, processes holding it open (in the
            unit or not), and a write probe (BEGIN IMMEDIATE) run as the file's owner

--terminate-foreign-holders ends the processes outside the unit that hold the database
open (SIGTERM, then SIGKILL after --grace seconds), re-checking each before signalling.
Everything else only reads.
"""
import argparse
import datetime
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

SHOW_PROPERTIES = ("ActiveState", "SubState", "MainPID", "NRestarts", "Result", "ExecMainStatus",
                   "ExecMainCode", "ControlGroup", "ActiveEnterTimestamp", "LoadState", "UnitFileState")
ERROR_RE = re.compile(r"\b(error|exception|traceback|critical|fatal)\b", re.IGNORECASE)


def run(argv, timeout=20):
    """Run a command; return (rc, stdout, stderr) without raising."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def systemctl_show(service):
    argv = ["systemctl", "show", service]
    for prop in SHOW_PROPERTIES:
        argv += ["-p", prop]
    rc, out, err = run(argv)
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
    url = "http://%s:%d%s" % (args.host, args.port, args.health_path)
    result = {"url": url, "ok": False, "status_code": None, "body": None, "error": None, "latency_ms": None}
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310 - http to the host's own API
            raw = response.read(65536).decode("utf-8", "replace")
            result["status_code"] = response.status
    except urllib.error.HTTPError as exc:
        result["status_code"] = exc.code
        raw = exc.read(65536).decode("utf-8", "replace")
        result["error"] = "HTTP %d" % exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        result["error"] = str(getattr(exc, "reason", exc))
        raw = None
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    if raw is not None:
        try:
            result["body"] = json.loads(raw)
        except ValueError:
            result["body"] = raw[:500]
    body = result["body"] if isinstance(result["body"], dict) else {}
    result["ok"] = result["status_code"] == 200 and body.get("status") == "healthy"
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
    lines = [line for line in text.splitlines() if ERROR_RE.search(line)]
    return lines[-limit:]


def section_errors(args):
    rc, out, err = run(["journalctl", "-u", args.service, "-n", str(args.journal_lines), "--no-pager", "-o", "short-iso"])
    journal = error_lines(out, args.error_limit) if rc == 0 else []
    log_path = os.path.join(args.state_dir, ".victor", "logs", "victor.log")
    log = []
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * 1024))
            log = error_lines(handle.read().decode("utf-8", "replace"), args.error_limit)
    except OSError:
        pass
    return {"journal": journal, "journal_error": err.strip() if rc != 0 else None,
            "victor_log": log, "victor_log_path": log_path,
            "count": len(journal) + len(log)}


def meminfo():
    values = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                key, _sep, rest = line.partition(":")
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


def section_memory(args, unit_pids):
    info = meminfo()
    processes = [proc_info(pid) for pid in all_pids()]
    processes = [p for p in processes if p["rss_kb"]]
    processes.sort(key=lambda p: p["rss_kb"], reverse=True)
    unit_rss = sum(p["rss_kb"] for p in processes if p["pid"] in unit_pids)
    total = info.get("MemTotal", 0)
    return {"mem_total_kb": total, "mem_available_kb": info.get("MemAvailable", 0),
            "used_percent": round(100.0 * (total - info.get("MemAvailable", 0)) / total, 1) if total else None,
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
        conn = sqlite3.connect("file:%s?mode=rw" % path, uri=True, timeout=timeout, isolation_level=None)
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


def terminate_foreign_holders(path, unit_pids, grace):
    """SIGTERM, then SIGKILL after `grace` seconds, each process outside the unit holding the database."""
    targets = [h for h in db_holders(path, unit_pids) if not h["in_unit"] and h["pid"] not in (1, os.getpid())]
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


def collect(args):
    report = {"collected_at": datetime.datetime.now(datetime.timezone.utc).isoformat(), "hostname": socket.gethostname(),
              "sections": args.sections}
    service = section_service(args)
    unit_pids = set(service.get("pids", []))
    if "service" in args.sections:
        report["service"] = service
    if "health" in args.sections:
        report["health"] = section_health(args)
    if "port" in args.sections:
        report["port"] = section_port(args, unit_pids)
    if "errors" in args.sections:
        report["errors"] = section_errors(args)
    if "memory" in args.sections:
        report["memory"] = section_memory(args, unit_pids)
    if "database" in args.sections:
        report["database"] = section_database(args, unit_pids)
    if args.terminate_foreign_holders:
        report["cleared"] = terminate_foreign_holders(args.db, unit_pids, args.grace)
        report["changed"] = report["cleared"]["changed"]
    return report


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="victor-api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--health-path", default="/health")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--state-dir", default="/var/lib/victor")
    parser.add_argument("--db", default="")
    parser.add_argument("--db-timeout", type=float, default=2.0)
    parser.add_argument("--journal-lines", type=int, default=200)
    parser.add_argument("--error-limit", type=int, default=50)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--sections", default="service,health")
    parser.add_argument("--terminate-foreign-holders", action="store_true")
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - {"service", "health", "port", "errors", "memory", "database"}
    if unknown:
        parser.error("unknown sections: %s" % ", ".join(sorted(unknown)))
    if not args.db:
        args.db = os.path.join(args.state_dir, ".victor", "victor.db")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print(json.dumps(collect(args), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
