"""The processes bench/load.py measures: the mock LLM, the two relays and the gateway.

Each runs in its own session (process group) with its output in a file, and is
stopped by the benchmark however it ends: Ctrl-C, SIGTERM, an error (a `finally`
and an atexit hook) and, on Linux, even SIGKILL (PR_SET_PDEATHSIG). CPU time and
resident memory are read from /proc/PID.
"""

import atexit
import contextlib
import ctypes
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from report import LABELS, RELAYS, TWO_PROCESSES

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from tests.support.ports import free_port  # noqa: E402,F401 - below the ephemeral range; bench/soak.py's too

NODE_RELAY = REPO / "bench" / "node_relay"
PY = sys.executable


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft limit on open files towards `wanted` (the servers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- Processes -------------------------------------------------------------------------

LIVE: list = []  # every started process, stopped at exit whatever happens


def _die_with_parent():
    """In the child: receive SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Process:
    """A server subprocess with its output in a file; RSS and CPU read from /proc."""

    def __init__(self, name, command, env, workdir, cwd=REPO):
        self.name = name
        self.log_path = Path(workdir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        LIVE.append(self)

    @property
    def pid(self):
        return self.popen.pid

    def wait_http(self, url, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer {url} in {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def wait_port(self, port, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not listen on {port}:\n{self.output()}")
            time.sleep(0.1)

    def rss(self) -> int:
        """Resident memory in bytes."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system time of the process, all its threads."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self):
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()
        with contextlib.suppress(ValueError):
            LIVE.remove(self)


@atexit.register
def stop_all():
    for proc in list(LIVE):
        with contextlib.suppress(Exception):
            proc.stop()


def base_env(extra=None) -> dict:
    env = dict(os.environ)
    env.update({"DJANGO_SETTINGS_MODULE": "construct_site.settings", "PYTHONUNBUFFERED": "1"})
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def manage(env, *args, timeout=300) -> str:
    result = subprocess.run([PY, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


class Unavailable(Exception):
    """A server that cannot run on this machine; the message says why."""


def node_ready() -> str:
    """The `node` to run the Node relay with, after `npm ci` if `ws` is not installed yet."""
    node = shutil.which("node")
    if node is None:
        raise Unavailable("no `node` on PATH (the Node relay needs Node.js 18 or later)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < 18:
        raise Unavailable(f"Node.js {version} has no built-in fetch; the Node relay needs 18 or later")
    installed = NODE_RELAY / "node_modules" / ".package-lock.json"
    lock = NODE_RELAY / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            raise Unavailable("`ws` is not installed and there is no `npm` to install it")
        log("node: installing ws with `npm ci` (first use)")
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_RELAY,
                                capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise Unavailable(f"`npm ci` failed:\n{result.stdout}{result.stderr}")
    return node


# --- Servers ---------------------------------------------------------------------------


@dataclass
class Target:
    """A server under test: where to connect and with which headers."""

    kind: str
    server: Process
    ws_base: str
    headers: dict
    # The paired tokens the sockets take in turn (--users): socket i is user i % len's.
    tokens: list = field(default_factory=list)

    @property
    def label(self):
        return LABELS[self.kind]

    def headers_for(self, count) -> list[dict]:
        """The headers of `count` sockets, one user per socket in turn (all one user's by default)."""
        if self.kind in RELAYS or len(self.tokens) < 2:
            return [self.headers] * count
        return [{"Authorization": f"Bearer {self.tokens[i % len(self.tokens)]}"} for i in range(count)]

    def url(self, prefix, index):
        if self.kind in RELAYS:
            return self.ws_base
        return f"{self.ws_base}?session_id=bench-{prefix}-{index}"


class Lab:
    """The mock LLM and the servers under test, started on demand, with one database and token."""

    def __init__(self, args, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.database_url = args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
        self.redis_url = args.redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        self.mock = None
        self.mock_url = None
        self.token = None
        self.tokens: list[str] = []
        self.node = None
        self.migrated = False
        self.count = 0
        self.skipped: list[str] = []

    def start_mock(self):
        port = free_port()
        self.mock = Process("mock_llm", [PY, "manage.py", "mock_llm", "--port", str(port)], base_env(),
                            self.workdir)
        self.mock.wait_port(port)
        self.mock_url = f"http://127.0.0.1:{port}/v1"

    def gateway_env(self, redis: bool) -> dict:
        return base_env({
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url if redis else None,
            "CONSTRUCT_PROVIDER": "openai",
            "CONSTRUCT_BASE_URL": self.mock_url,
            "CONSTRUCT_API_KEY": "sk-bench-" + secrets.token_hex(8),
            "CONSTRUCT_MODEL": "mock-model",
            "CONSTRUCT_REQUIRE_PAIRING": "true",
            "CONSTRUCT_WORKSPACE": str(self.workdir / "workspace"),
            # One client address opens thousands of sockets here: that is the load, not an attack.
            "CONSTRUCT_MESSAGE_RATE": "off",
            "CONSTRUCT_SOCKET_RATE": "off",
            "CONSTRUCT_MAX_SOCKETS_PER_TOKEN": "0",
            # Stopping a server between phases need not wait for turns to drain.
            "CONSTRUCT_DRAIN_SECONDS": "2",
            "OPENAI_API_KEY": None,
            "ANTHROPIC_API_KEY": None,
            **dict(item.split("=", 1) for item in self.args.server_env),
        })

    def start(self, kind) -> Target | None:
        """A fresh server of `kind`, or None (said why) when it cannot run here."""
        self.count += 1
        name = f"{kind}-{self.count}"
        port = free_port()
        if kind == "relay":
            proc = Process(name, [PY, str(REPO / "bench" / "baseline_relay.py"), "--port", str(port),
                                  "--base-url", self.mock_url], base_env(), self.workdir)
            proc.wait_port(port)
            return Target(kind, proc, f"ws://127.0.0.1:{port}/", {})
        if kind == "node":
            if self.node is None:
                try:
                    self.node = node_ready()
                except Unavailable as exc:
                    self.node = ""
                    self.skip(kind, str(exc))
            if not self.node:
                return None
            proc = Process(name, [self.node, "relay.js", "--port", str(port), "--base-url", self.mock_url],
                           base_env(), self.workdir, cwd=NODE_RELAY)
            proc.wait_port(port)
            return Target(kind, proc, f"ws://127.0.0.1:{port}/", {})
        behind_redis = kind == "redis" or kind in TWO_PROCESSES
        env = self.gateway_env(redis=behind_redis)
        if not self.migrated:
            log("migrating the benchmark database")
            manage(env, "migrate", "--noinput")
            self.migrated = True
        proc = Process(name, [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                              "construct_site.asgi:application"], env, self.workdir)
        try:
            proc.wait_http(f"http://127.0.0.1:{port}/health")
        except RuntimeError as exc:
            proc.stop()
            if behind_redis:
                self.skip(kind, f"the gateway did not start with REDIS_URL: {exc}")
                return None
            raise
        if self.token is None:
            self.token = self.pair(env, f"http://127.0.0.1:{port}")
            self.tokens = [self.token]
            if self.args.users > 1:
                log(f"making {self.args.users - 1} more users, a paired device each")
                printed = manage(env, "shell", "-c", MORE_USERS.format(count=self.args.users - 1))
                self.tokens += [line.split()[1] for line in printed.splitlines()
                                if line.startswith("TOKEN ")]
        log(f"{name}: pid {proc.pid}, port {port}")
        return Target(kind, proc, f"ws://127.0.0.1:{port}/ws/chat", {"Authorization": f"Bearer {self.token}"},
                      tokens=self.tokens)

    def skip(self, kind, why):
        line = f"{LABELS[kind]}: skipped: {why}"
        if line not in self.skipped:
            self.skipped.append(line)
            log(line)

    @staticmethod
    def pair(env, http_url) -> str:
        code = manage(env, "pairing_code").strip().splitlines()[-1]
        request = urllib.request.Request(http_url + "/pair", method="POST", data=b"",
                                         headers={"X-Pairing-Code": code})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["token"]


# Users bench-user-2..N+1 with a device each; prints their tokens. The first user is the
# default owner, paired through /pair like any device.
MORE_USERS = """
from django.contrib.auth import get_user_model
from sessions_app.pairing import device_create
User = get_user_model()
for index in range(2, {count} + 2):
    user, _ = User.objects.get_or_create(username=f"bench-user-{{index}}")
    print("TOKEN", device_create(user_id=user.pk, name="bench")[1])
"""


SEED_HISTORY = """
import django
django.setup()
from sessions_app.models import ChatSession, Message
from sessions_app.services import default_owner
session_id, count = {session_id!r}, {count}
ChatSession.objects.filter(pk=session_id).delete()
# The default owner's: the bench pairs its device with no user named, so its sockets are that user's.
session = ChatSession.objects.create(pk=session_id, name="long history", user=default_owner())
text = "A message of a long conversation, long enough to look like one. " * 3
batch = []
for seq in range(1, count + 1):
    role = "user" if seq % 2 else "assistant"
    batch.append(Message(session=session, seq=seq, role=role, content=f"{{seq}}: {{text}}"))
    if len(batch) == 1000:
        Message.objects.bulk_create(batch)
        batch = []
Message.objects.bulk_create(batch)
ChatSession.objects.filter(pk=session_id).update(message_count=count)
"""


def seed_history(env, session_id, count):
    subprocess.run([PY, "-c", SEED_HISTORY.format(session_id=session_id, count=count)], cwd=REPO,
                   env=env, check=True, timeout=300, stdin=subprocess.DEVNULL)


