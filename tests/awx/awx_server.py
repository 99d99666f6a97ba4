"""Build (once per machine) and start a real AWX API server for the tests in tests/awx.

The vendored AWX sources (../shared/vendor/awx, see its README) are installed into AWX's
own venv and migrated into a PostgreSQL data directory; both are cached under
${VICTOR_OPS_AWX_CACHE:-${XDG_CACHE_HOME:-~/.cache}/victor-ops}/awx-<key>, the key being the
archives' names and sha256 and this file's build recipe. Every start copies the migrated
data directory into a fresh run directory and starts its own PostgreSQL (unix socket only,
as the postgres user when run as root), Redis (unix socket only) and
`awx-manage runserver 127.0.0.1:<free port>`; stop() ends them by pid.

    python3 tests/awx/awx_server.py build    # cold build (also done by the first start)
    python3 tests/awx/awx_server.py serve    # start, print URL and credentials, wait for ^C
"""

import fcntl
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Bump when the recipe below changes: the cache key includes it.
RECIPE = "3"
AWX_VERSION = "24.6.1"
# AWX's git-only requirements and the packages its development settings import, pinned.
EXTRA_PACKAGES = ["ansible-runner==2.4.0", "drf-yasg==1.21.7", "django-debug-toolbar==4.3.0"]
# requirements.txt lines not installed: git-only (from the archives instead), build tooling
# pins and the uwsgi server (runserver is used).
SKIPPED_REQUIREMENTS = ("pip==", "setuptools==", "uwsgi==", "uwsgitop==", "awx-plugins.interfaces")
# archive prefix -> (distribution name for setuptools-scm, pretend version)
DEPENDENCIES = {
    "awx_plugins.interfaces-": ("AWX_PLUGINS_INTERFACES", "0.0.1"),
    "awx-plugins-": ("AWX_PLUGINS_CORE", "0.0.1"),
    "django-ansible-base-": ("DJANGO_ANSIBLE_BASE", "2024.10.17"),
}
DAB_EXTRAS = "[rest_filters,jwt_consumer,resource_registry,rbac]"
PG_BIN = Path(os.environ.get("VICTOR_OPS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_PORT = "5432"  # only names the unix socket file; PostgreSQL listens on no TCP address
ADMIN_USER = "admin"

LOCAL_SETTINGS = '''\
# Written by victor.ops tests/awx/awx_server.py; per-run values come from the environment.
import logging.handlers  # noqa: F401  awx/main/utils/handlers.py uses it without importing it
import os

_RUN = os.environ["VICTOR_AWX_RUN_DIR"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "awx",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": _RUN + "/pg-socket",
        "PORT": "%(port)s",
        "ATOMIC_REQUESTS": True,
    }
}
BROKER_URL = "unix://" + _RUN + "/redis.sock"
CACHES = {"default": {"BACKEND": "awx.main.cache.AWXRedisCache", "LOCATION": BROKER_URL + "?db=1"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [BROKER_URL], "capacity": 10000}}}
SECRET_KEY = os.environ["VICTOR_AWX_SECRET_KEY"]
PROJECTS_ROOT = _RUN + "/projects"
JOBOUTPUT_ROOT = _RUN + "/job_status"
STATIC_ROOT = _RUN + "/static"
LOG_ROOT = _RUN + "/log"
COLOR_LOGS = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# A test server, not a development one: no query recording, no debug toolbar (several
# times faster on a busy machine).
DEBUG = SQL_DEBUG = False
MIDDLEWARE = [m for m in MIDDLEWARE if "debug_toolbar" not in m]  # noqa: F821  (the including scope's)
'''


def log(msg):
    print("awx_server: " + msg, file=sys.stderr, flush=True)


def vendor_dir():
    """The vendored archives: ../shared/vendor/awx next to the clone, else /work/shared."""
    for candidate in (os.environ.get("VICTOR_OPS_AWX_VENDOR"), REPO.parent / "shared/vendor/awx", "/work/shared/vendor/awx"):
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    raise RuntimeError(
        "AWX sources not found: set VICTOR_OPS_AWX_VENDOR to a folder holding the archives listed in "
        "docs/awx.md (../shared/vendor/awx next to the clone, or /work/shared/vendor/awx)"
    )


def archives(vendor):
    found = {}
    for path in sorted(vendor.glob("*.tar.gz")):
        if path.name.startswith("awx-") and not path.name.startswith("awx-plugins-"):
            found["awx"] = path
        for prefix in DEPENDENCIES:
            if path.name.startswith(prefix):
                found[prefix] = path
    missing = {"awx", *DEPENDENCIES} - set(found)
    if missing:
        raise RuntimeError("missing AWX archives in %s: %s" % (vendor, ", ".join(sorted(missing))))
    return found


def cache_key(found):
    digest = hashlib.sha256(("%s %s %s" % (RECIPE, sys.version_info[:2], EXTRA_PACKAGES)).encode())
    for name in sorted(found):
        digest.update(found[name].name.encode())
        digest.update(hashlib.sha256(found[name].read_bytes()).digest())
    return digest.hexdigest()[:16]


def cache_root():
    base = os.environ.get("VICTOR_OPS_AWX_CACHE")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "victor-ops")
    return Path(base)


def as_postgres():
    """Prefix that runs PostgreSQL tools as postgres: it refuses to run as root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def own_for_postgres(path):
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for root, dirs, files in os.walk(path):
            os.chown(root, pw.pw_uid, pw.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def run(cmd, logfile, **kwargs):
    with open(logfile, "a") as out:
        out.write("\n$ %s\n" % " ".join(map(str, cmd)))
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs)
    if result.returncode:
        raise RuntimeError("%s failed (exit %d); see %s" % (cmd[0], result.returncode, logfile))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Build:
    """The cached venv + migrated data directory for one key."""

    def __init__(self):
        self.found = archives(vendor_dir())
        self.key = cache_key(self.found)
        self.dir = cache_root() / ("awx-" + self.key)
        self.venv = self.dir / "venv"
        self.src = self.dir / "src"
        self.pgdata = self.dir / "pgdata"
        self.ready = self.dir / "ready"
        self.log = self.dir / "build.log"
        self.awx_src = self.src / self.found["awx"].name[: -len(".tar.gz")]

    def write_settings(self):
        """(Re)write AWX's local settings: part of this file, not of the cached build."""
        path = self.awx_src / "awx/settings/local_settings.py"
        text = LOCAL_SETTINGS % {"port": PG_PORT}
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp%d" % os.getpid())
            tmp.write_text(text)
            os.replace(tmp, path)

    def ensure(self):
        """Build unless ready; a lock keeps two concurrent runs from building twice."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dir.parent / ("awx-" + self.key + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.ready.exists():
                return False
            if self.dir.exists():
                shutil.rmtree(self.dir)  # an interrupted build
            self.dir.mkdir()
            started = time.monotonic()
            log("cold build into %s (log: %s)" % (self.dir, self.log))
            self._venv()
            self._database()
            self.ready.write_text(json.dumps({"seconds": round(time.monotonic() - started)}))
            log("cold build done in %.0f s" % (time.monotonic() - started))
            return True

    def _venv(self):
        self.src.mkdir()
        for archive in self.found.values():
            with tarfile.open(archive) as tar:
                # filter= exists from 3.11.4 (Debian 12 has 3.11.2); the archives are the vendored,
                # hashed ones (cache key)
                tar.extractall(self.src, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        awx_src = self.awx_src
        (awx_src / "VERSION").write_text(AWX_VERSION + "\n")
        self.write_settings()
        reqs = self.dir / "requirements.txt"
        lines = (awx_src / "requirements/requirements.txt").read_text().splitlines()
        reqs.write_text("\n".join(line for line in lines if not line.startswith(SKIPPED_REQUIREMENTS)) + "\n")
        run([sys.executable, "-m", "venv", self.venv], self.log)
        pip = [self.venv / "bin/pip", "install", "--no-input", "--disable-pip-version-check"]
        run(pip + ["-r", reqs] + EXTRA_PACKAGES, self.log)
        env = dict(os.environ)
        local = []
        for prefix, (name, version) in DEPENDENCIES.items():
            env["SETUPTOOLS_SCM_PRETEND_VERSION_FOR_" + name] = version
            folder = self.src / self.found[prefix].name[: -len(".tar.gz")]
            local.append(str(folder) + (DAB_EXTRAS if prefix.startswith("django-ansible-base") else ""))
        # The archives' pins only: --no-deps would miss their extras' libraries, the
        # requirements above already hold every one of them.
        run(pip + local, self.log, env=env)
        run(pip + ["--no-deps", "-e", awx_src], self.log)

    def _database(self):
        """initdb + migrate + admin user, into the template data directory."""
        # The cache may sit in a home postgres cannot enter: initdb and migrate in a
        # temporary folder, then keep a copy.
        work = Path(tempfile.mkdtemp(prefix="victor-awx-build-"))
        try:
            server = Server(self, work, template=None)
            server.init_database()
            server.start_services()
            try:
                run(as_postgres() + [PG_BIN / "createdb", "-h", work / "pg-socket", "-p", PG_PORT, "-U", "postgres", "awx"], self.log)
                server.manage(["migrate", "--noinput"])
                server.manage(["createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "admin@example.com"])
            finally:
                server.stop()
            shutil.copytree(work / "pgdata", self.pgdata, symlinks=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


class Server:
    """One run: copies of the template database, own PostgreSQL, Redis and API server."""

    def __init__(self, build, run_dir, template=True):
        self.build = build
        self.run_dir = Path(run_dir)
        self.pgdata = self.run_dir / "pgdata"
        self.procs = {}
        self.url = None
        self.password = secrets.token_urlsafe(18)
        self.env = dict(os.environ)
        self.env.update(
            VICTOR_AWX_RUN_DIR=str(self.run_dir),
            VICTOR_AWX_SECRET_KEY=secrets.token_urlsafe(32),
            AWX_LOGGING_MODE="stdout",
            DJANGO_SETTINGS_MODULE="awx.settings.development",
            DJANGO_SUPERUSER_PASSWORD=self.password,
            PATH=str(build.venv / "bin") + os.pathsep + os.environ.get("PATH", ""),
        )
        build.write_settings()
        self.env.pop("VIRTUAL_ENV", None)
        self.env.pop("PYTHONPATH", None)
        for sub in ("projects", "job_status", "static", "log", "pg-socket"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)  # postgres must reach pgdata and the socket folder
        own_for_postgres(self.run_dir / "pg-socket")
        if template:
            shutil.copytree(build.pgdata, self.pgdata, symlinks=True)
            own_for_postgres(self.pgdata)

    def init_database(self):
        self.pgdata.mkdir(mode=0o700)
        own_for_postgres(self.pgdata)
        run(as_postgres() + [PG_BIN / "initdb", "-D", self.pgdata, "--auth=trust", "-U", "postgres", "-E", "UTF8"], self.build.log)

    def _spawn(self, name, cmd):
        out = open(self.run_dir / "log" / (name + ".log"), "ab")
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        out.close()

    def _wait_for(self, name, ready, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError("%s exited (%s); see %s" % (name, self.procs[name].returncode, self.run_dir / "log" / (name + ".log")))
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError("%s not ready within %d s; see %s" % (name, timeout, self.run_dir / "log" / (name + ".log")))

    def start_services(self):
        self._spawn("postgres", as_postgres() + [
            PG_BIN / "postgres", "-D", self.pgdata, "-k", self.run_dir / "pg-socket", "-p", PG_PORT,
            "-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=100"])
        socket_file = self.run_dir / "pg-socket" / (".s.PGSQL." + PG_PORT)
        self._wait_for("postgres", lambda: socket_file.exists() and self._pg_ready(), 60)
        redis_sock = self.run_dir / "redis.sock"
        self._spawn("redis", ["redis-server", "--port", "0", "--unixsocket", str(redis_sock), "--unixsocketperm", "700",
                              "--save", "", "--appendonly", "no", "--dir", str(self.run_dir)])
        self._wait_for("redis", redis_sock.exists, 30)

    def _pg_ready(self):
        return subprocess.run([PG_BIN / "pg_isready", "-q", "-U", "postgres", "-h", self.run_dir / "pg-socket", "-p", PG_PORT],
                              check=False).returncode == 0

    def manage(self, args):
        run([self.build.venv / "bin/awx-manage"] + args, self.build.log, env=self.env, cwd=self.run_dir)

    def start(self):
        """Start everything and set a fresh admin password; returns self."""
        started = time.monotonic()
        try:
            self.start_services()
            # A fresh password per run, set through AWX's own tooling, never in argv.
            self.manage(["shell", "-c",
                         "import os; from django.contrib.auth.models import User; u = User.objects.get(username='%s'); "
                         "u.set_password(os.environ['DJANGO_SUPERUSER_PASSWORD']); u.save()" % ADMIN_USER])
            port = free_port()
            self._spawn("awx", [self.build.venv / "bin/awx-manage", "runserver", "127.0.0.1:%d" % port, "--noreload"])
            self.url = "http://127.0.0.1:%d" % port
            self._wait_for("awx", self._ping, 120)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _ping(self):
        try:
            with urllib.request.urlopen(self.url + "/api/v2/ping/", timeout=5) as resp:
                return json.load(resp).get("version") == AWX_VERSION
        except (OSError, ValueError):
            return False

    def stop(self):
        """End the processes this run started, by pid, newest first."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                # postgres runs as another user under runuser: signal its session by pid.
                try:
                    os.killpg(proc.pid, signal.SIGTERM if name != "postgres" else signal.SIGINT)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        self.procs.clear()


def start(run_dir):
    build = Build()
    build.ensure()
    return Server(build, run_dir).start()


def main(argv):
    if argv[1:] == ["build"]:
        build = Build()
        build.ensure()
        print(build.dir)
        return 0
    if argv[1:] == ["serve"]:
        def interrupt(*_args):
            raise KeyboardInterrupt

        # Also when started in the background, where SIGINT is ignored: stop cleanly.
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
        run_dir = tempfile.mkdtemp(prefix="victor-awx-")
        server = start(run_dir)
        try:
            print("AWX %s at %s (user %s, password %s, run dir %s); ^C stops it"
                  % (AWX_VERSION, server.url, ADMIN_USER, server.password, run_dir), flush=True)
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
