"""The shell tool's sandbox: every command runs inside bubblewrap, never on the host.

A command gets its own user, PID, network, IPC, UTS and cgroup namespaces (the
network one holds only a loopback), an unprivileged user, the system folders
read-only, a private /tmp and /dev, its own /proc (so no host process is
visible), and the workspace as the only writable host folder. bubblewrap itself
starts with an empty environment, so nothing in the sandbox, its PID 1
included, holds the gateway's.

Limits: memory (address space), CPU time, file size, open files and the number
of processes, set with `prlimit` inside the sandbox, so the command cannot raise
them. A process-count rlimit does not bind a process whose real user is root,
and a gateway running as root maps the sandbox's user to root outside; for that
case each command also gets a pids cgroup of its own when one can be made.

Imports neither Django nor Channels: the caller passes the configuration.
"""

import functools
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SANDBOX_UID = 65534  # "nobody"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
INSTALL_HINT = (
    "install bubblewrap (apt-get install bubblewrap) to let the agent run commands in a sandbox"
)
# System folders seen read-only; a merged-/usr system has the top-level ones as symlinks.
_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What of /etc a program may need: the dynamic linker's cache, the time zone, alternatives.
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")
_PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Limits:
    """What one command may use; every process of the sandbox shares the process count."""

    memory_bytes: int = 512 * 1024 * 1024
    cpu_seconds: int = 30
    file_bytes: int = 64 * 1024 * 1024
    open_files: int = 256
    processes: int = 64
    tmp_bytes: int = 64 * 1024 * 1024


class SandboxUnavailable(Exception):
    """bubblewrap is missing or cannot create its namespaces here."""


@dataclass(frozen=True)
class Sandbox:
    """How to wrap one command: the bubblewrap and prlimit binaries, and the limits."""

    bwrap: str
    prlimit: str
    limits: Limits = Limits()

    def argv(self, program: str, args: list[str], workspace: Path,
             env: dict[str, str]) -> list[str]:
        """The command line that runs `program args` in the sandbox, in `workspace`."""
        limits = self.limits
        argv = [
            self.bwrap,
            "--unshare-all", "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--hostname", "sandbox",
            "--clearenv",
        ]
        for name, value in env.items():
            argv += ["--setenv", name, value]
        for name in _SYSTEM_DIRS:
            path = Path("/") / name
            if path.is_symlink():
                argv += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                argv += ["--ro-bind", str(path), str(path)]
        argv += ["--dir", "/etc"]
        for name in _ETC_FILES:
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        argv += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
            "--bind", str(workspace), str(workspace),
            "--chdir", str(workspace),
            "--cap-drop", "ALL",
            "--",
            self.prlimit,
            f"--as={limits.memory_bytes}",
            f"--cpu={limits.cpu_seconds}",
            f"--fsize={limits.file_bytes}",
            f"--nofile={limits.open_files}",
            f"--nproc={limits.processes}",
            "--core=0",
            "--",
            program, *args,
        ]
        return argv


def sandbox_env(workspace: Path) -> dict[str, str]:
    """The whole environment a sandboxed command sees: nothing of the gateway's."""
    env = {"PATH": SANDBOX_PATH, "HOME": str(workspace), "PWD": str(workspace),
           "TERM": "dumb", "LANG": "C.UTF-8"}
    tz = os.environ.get("TZ")
    if tz:
        env["TZ"] = tz
    return env


def find(bwrap: str = "bwrap") -> Sandbox:
    """The sandbox this host can give, checked by running one command in it.

    Raises SandboxUnavailable with a one-line reason. The check runs once per
    process and binary (a few milliseconds); later calls reuse its answer.
    """
    return _probe(bwrap)


@functools.lru_cache(maxsize=8)
def _probe(bwrap: str) -> Sandbox:
    path = shutil.which(bwrap)
    if path is None:
        raise SandboxUnavailable(f"bubblewrap ({bwrap}) is not installed")
    prlimit = shutil.which("prlimit", path=SANDBOX_PATH)
    if prlimit is None:
        raise SandboxUnavailable("prlimit (util-linux) is not installed")
    sandbox = Sandbox(bwrap=path, prlimit=prlimit)
    probe_dir = Path("/tmp")
    argv = sandbox.argv("true", [], probe_dir, sandbox_env(probe_dir))
    try:
        result = subprocess.run(argv, env={}, stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=_PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap could not start: {exc}") from None
    if result.returncode != 0:
        reason = (result.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise SandboxUnavailable(f"bubblewrap cannot create its namespaces here: {reason[:200]}")
    return sandbox


# --- A pids cgroup per command, for a gateway running as root ------------------------------


def _pids_hierarchy() -> Path | None:
    """Where this process's pids cgroup is, if the pids controller can be used (v1 or v2)."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own_v1 = own_v2 = None
    for line in memberships:
        _id, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            own_v1 = path
        elif controllers == "":
            own_v2 = path
    for line in mounts:
        fields = line.split()
        separator = fields.index("-")
        fstype, options = fields[separator + 1], fields[separator + 3]
        mount_point = Path(fields[4])
        if fstype == "cgroup" and own_v1 is not None and "pids" in options.split(","):
            return mount_point / own_v1.lstrip("/")
        if fstype == "cgroup2" and own_v1 is None and own_v2 is not None:
            base = mount_point / own_v2.lstrip("/")
            try:
                if "pids" in (base / "cgroup.subtree_control").read_text().split():
                    return base
            except OSError:
                return None
    return None


class PidsCgroup:
    """A cgroup of the pids controller that holds one sandboxed command and all it starts."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, max_processes: int) -> "PidsCgroup | None":
        """A fresh cgroup capped at `max_processes`; None where none can be made."""
        base = _pids_parent()
        if base is None:
            return None
        # Named after this process: another gateway process on the host sweeps only its own
        # dead ones, never this one's (empty for a moment after mkdir, so removable).
        path = base / f"cmd-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_processes))
        except OSError as exc:
            logger.warning("could not make a pids cgroup for a sandboxed command: %s", exc)
            _remove(path)
            return None
        return cls(path)

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv`, entering this cgroup before it starts (so its first fork is counted)."""
        procs = str(self.path / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def busy(self) -> bool:
        """Whether a process is still in the cgroup."""
        try:
            return bool((self.path / "cgroup.procs").read_text().strip())
        except OSError:
            return False

    def remove(self) -> None:
        _remove(self.path)


def _remove(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:  # still busy for a moment after a kill; swept at the next start
        logger.debug("pids cgroup %s not removed yet: %s", path, exc)


@functools.lru_cache(maxsize=1)
def _pids_parent() -> Path | None:
    """The folder under which each command's pids cgroup is made, emptied of old ones."""
    hierarchy = _pids_hierarchy()
    if hierarchy is None:
        return None
    parent = hierarchy / "construct-sandbox"
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return None
    for stale in parent.glob("cmd-*"):
        if not _owner_alive(stale.name):  # left by a gateway process that died mid-command
            _remove(stale)
    return parent


def _owner_alive(name: str) -> bool:
    """Whether the gateway process that made the cgroup `name` ("cmd-PID-ID") still runs.

    Several gateway processes share the folder (deploy/supervise.py runs N on one host): a
    process starting must not remove another's cgroup in the moment between its mkdir and
    its command entering it. Its own pid's are from a process of the same pid that died.
    """
    parts = name.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # an older release's name: no owner to ask
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists (another user's): leave it
        return True
    return True


def needs_pids_cgroup() -> bool:
    """Whether the process-count rlimit does not bind here (the gateway runs as root)."""
    return os.geteuid() == 0


def process_limit_note() -> str | None:
    """A warning when the process count of a command cannot be limited on this host."""
    if needs_pids_cgroup() and _pids_parent() is None:
        return ("the gateway runs as root and no pids cgroup can be made, so the number of "
                "processes a sandboxed command starts is not limited; run the gateway as an "
                "unprivileged user")
    return None
