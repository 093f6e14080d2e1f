"""The `shell` tool: one allowlisted program, run without a shell, in a sandbox.

The command is split like a shell would split it (shlex) and run directly, so
pipes, redirections, `;` and `$(...)` are plain text. Three layers stand between
the model and the host, each enough on its own for what it covers:

1. the allowlist of programs, and a refusal of the options that make an allowed
   program run another one or read and write files its arguments do not name
   (`sort --compress-program`, `--files0-from`, `-o`, `-T`, ...);
2. arguments that name paths must stay in the workspace;
3. the sandbox (chat/agent/tools/sandbox.py): whatever runs sees the workspace as the
   only writable host folder, no host process, no network and no secret.

On timeout or when the turn is stopped, the sandbox is killed with everything in
it. With the sandbox switched off by the operator (`CONSTRUCT_SHELL_SANDBOX=off`),
the program runs on the host in its own process group with a scrubbed
environment, and only layers 1 and 2 remain.
"""

import asyncio
import logging
import os
import shlex
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from chat.agent.tools.base import Tool, ToolContext, ToolFailed
from chat.agent.tools.files import inside, workspace_root
from chat.agent.tools.progress import slow_status
from chat.agent.tools.sandbox import PidsCgroup, Sandbox, needs_pids_cgroup, sandbox_env
from construct_core.redaction import scrub_cut

logger = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds; ToolContext.extra["shell_timeout"] overrides it
MAX_OUTPUT_BYTES = 64 * 1024
_READ_SIZE = 8192
# What the program may see of our environment: enough to run, nothing secret.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")

DESCRIPTION = (
    "Run one program in the workspace folder and return its output (stdout and stderr). "
    "The command is split like a shell would, but no shell runs it: no pipes, redirections, "
    "globs or variables. Allowed programs: {programs}."
)


def shell_tool(allowlist, sandbox: Sandbox | None) -> Tool | None:
    """The tool for these programs; None when the allowlist is empty (the tool is not offered).

    `sandbox` None runs commands on the host: only when the operator asked for it by name.
    """
    programs = tuple(dict.fromkeys(name for name in allowlist if name))
    if not programs:
        return None

    async def run(args: dict, ctx: ToolContext) -> str:
        return await run_command(args.get("command"), ctx, programs, sandbox)

    return Tool(
        name="shell",
        description=DESCRIPTION.format(programs=", ".join(programs)),
        parameters={
            "type": "object",
            "properties": {"command": {"type": "string", "description": "e.g. ls -la notes"}},
            "required": ["command"],
        },
        func=run,
    )


def parse_command(command, programs, root: Path) -> list[str]:
    """The argv of an allowed command; raises ToolFailed saying what is refused."""
    if not isinstance(command, str) or not command.strip():
        raise ToolFailed("command must be a non-empty string")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ToolFailed(f"cannot split the command: {exc}") from None
    if not argv:
        raise ToolFailed("command must name a program")
    program = argv[0]
    if program not in programs:
        raise ToolFailed(f"program {program!r} is not allowed; allowed programs: {', '.join(programs)}")
    _check_options(program, argv[1:])
    for arg in argv[1:]:
        _check_argument(arg, root)
    return argv


@dataclass(frozen=True)
class _Options:
    """A program's options that are refused, and its short options that take a value."""

    refused_long: tuple[str, ...] = ()
    refused_short: str = ""
    short_with_value: str = ""


# Options that make an allowed program run another program, or read or write files
# that its arguments do not name (so the path check below never sees them), for the
# default programs and a few that operators often add. The sandbox contains what
# slips past this list; the list keeps such calls from running at all.
_REFUSED_OPTIONS = {
    "sort": _Options(("compress-program", "files0-from", "output", "temporary-directory",
                      "random-source"), "oT", "koStT"),
    "wc": _Options(("files0-from",)),
    "du": _Options(("files0-from", "exclude-from"), "X", "BdtX"),
    "grep": _Options(("file", "exclude-from", "dereference-recursive"), "fR", "ABCDdefm"),
    "date": _Options(("file", "reference", "set"), "frs", "dfrsI"),
    "find": _Options(()),
    "tar": _Options(("to-command", "use-compress-program", "info-script", "new-volume-script",
                     "checkpoint-action", "rsh-command", "files-from", "exclude-from",
                     "index-file"), "IFTX", "bCfFgHIKLNTVX"),
}
# find takes its actions as words, not options; these run programs or write files.
_FIND_REFUSED = frozenset({"-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprint0",
                           "-fprintf", "-fls", "-delete"})


def _check_options(program: str, args: list[str]) -> None:
    """Refuse the options of `program` listed in _REFUSED_OPTIONS, however they are spelled.

    GNU tools take options anywhere before `--`, long ones abbreviated to any
    unambiguous prefix (`--comp=sh`) and short ones clustered (`-rTo/tmp`).
    """
    options = _REFUSED_OPTIONS.get(program)
    if options is None:
        return
    value_next = False
    for arg in args:
        if value_next:  # the value of a short option, as in `grep -e -f`: not an option
            value_next = False
            continue
        if arg == "--":
            return
        if program == "find" and arg in _FIND_REFUSED:
            raise ToolFailed(f"find {arg} is not allowed: it runs programs or writes files")
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if name and any(refused.startswith(name) for refused in options.refused_long):
                raise ToolFailed(
                    f"option {arg.split('=', 1)[0]!r} of {program} is not allowed: it runs "
                    "programs or reads or writes files that the command does not name"
                )
        elif arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter in options.refused_short:
                    raise ToolFailed(
                        f"option '-{letter}' of {program} is not allowed: it runs programs or "
                        "reads or writes files that the command does not name"
                    )
                if letter in options.short_with_value:
                    # The rest of the cluster is this option's value, or else the next argument.
                    value_next = arg.endswith(letter) and arg.index(letter) == len(arg) - 1
                    break


def _check_argument(arg: str, root: Path) -> None:
    """Refuse an argument that names a path outside the workspace.

    The shell tool may touch the workspace only, so `cat /etc/passwd`, `ls ..`
    and a symlink leading out are refused, whatever the program.
    """
    if "\x00" in arg:
        raise ToolFailed("an argument contains a NUL byte")
    if arg.startswith("-"):
        # An option: only its value may be a path, as in --file=../x or -f/etc/x
        # (from the first slash on: stricter than the program, never looser).
        if "=" in arg:
            value = arg.split("=", 1)[1]
        else:
            value = arg[arg.index("/"):] if "/" in arg else ""
    else:
        value = arg
    if value:
        path = root / value
        looks_like_path = "/" in value or value in (".", "..")
        if (looks_like_path or path.is_symlink()) and not inside(path.resolve(strict=False), root):
            raise ToolFailed(f"argument {value!r} points outside the workspace")


def _host_environment(root: Path) -> dict:
    """The environment of an unsandboxed command: enough to run, nothing secret."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(HOME=str(root), PWD=str(root), TERM="dumb")
    return env


async def run_command(command, ctx: ToolContext, programs, sandbox: Sandbox | None) -> str:
    """Check `command` against the allowlist and the workspace, then run it (in the sandbox)."""
    root = workspace_root(ctx)
    argv = parse_command(command, programs, root)
    timeout = float(ctx.extra.get("shell_timeout", TIMEOUT))
    with slow_status(ctx, f"running: {argv[0]}"):
        text, returncode, timed_out = await execute(argv, root, sandbox, timeout)
    if timed_out:
        raise ToolFailed(f"{argv[0]} did not finish within {timeout:g} s and was killed.\n{text}".rstrip())
    if returncode:
        return f"{text}\n[exit status {returncode}]".lstrip("\n")
    return text or "[no output]"


async def execute(argv: list[str], root: Path, sandbox: Sandbox | None,
                  timeout: float) -> tuple[str, int | None, bool]:
    """Run `argv` as given, in the sandbox unless it is None: (output, exit status, timed out).

    No policy here: `parse_command` decides what may run; this only runs it,
    caps its output, and kills all it started when it ends, times out or is cancelled.
    """
    env = sandbox_env(root) if sandbox is not None else _host_environment(root)
    executable = shutil.which(argv[0], path=env["PATH"])
    if executable is None:
        raise ToolFailed(f"program {argv[0]!r} is not installed")
    cgroup = None
    if sandbox is None:
        command_line, process_env = [executable, *argv[1:]], env
    else:
        command_line = sandbox.argv(argv[0], argv[1:], root, env)
        if needs_pids_cgroup():
            cgroup = PidsCgroup.create(sandbox.limits.processes)
            if cgroup is not None:
                command_line = cgroup.wrap(command_line)
        # bubblewrap itself (the sandbox's PID 1 included) starts with nothing of ours.
        process_env = {}
    try:
        process = await asyncio.create_subprocess_exec(
            *command_line,
            cwd=root, env=process_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so one kill ends all it started
        )
    except BaseException:
        if cgroup is not None:
            cgroup.remove()
        raise
    output = bytearray()
    dropped = 0
    timed_out = False

    async def collect() -> None:
        nonlocal dropped
        while chunk := await process.stdout.read(_READ_SIZE):
            room = MAX_OUTPUT_BYTES - len(output)
            output.extend(chunk[:room])
            dropped += max(len(chunk) - room, 0)  # keep draining so the program never blocks
        await process.wait()

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        timed_out = True
    finally:
        # On timeout, on stop (CancelledError) and after a normal exit alike:
        # nothing the command started outlives the call. Killing bubblewrap
        # ends its PID namespace, and with it every process in the sandbox.
        await _kill_group(process)
        if cgroup is not None:
            await _remove_when_empty(cgroup)

    text = output.decode("utf-8", errors="replace")
    if dropped:
        # No key can be read in the sandbox, but one a provider had written into
        # the workspace must not leave its start behind at the cut either.
        text = scrub_cut(text) + f"\n[output cut at {MAX_OUTPUT_BYTES} bytes; {dropped} more bytes dropped]"
    return text, process.returncode, timed_out


async def _remove_when_empty(cgroup: PidsCgroup) -> None:
    """Remove a command's cgroup once the kernel has finished tearing its processes down."""
    try:
        for _ in range(50):
            if not cgroup.busy():
                break
            await asyncio.sleep(0.02)
    finally:  # even on a second stop; one still busy is swept at the next start
        cgroup.remove()


# How long a SIGKILLed command may take to be reaped before the call goes on without it.
# It dies at once; what can take longer is the event loop learning of it (a child watcher
# that misses its exit): a stop must never wait on that forever.
REAP_SECONDS = 10.0


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group and reap the leader, even when the caller is being cancelled."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already
    if process.returncode is None:
        waiter = asyncio.ensure_future(process.wait())
        try:
            await _reaped(waiter, process.pid)
        except asyncio.CancelledError:
            await _reaped(waiter, process.pid)  # a second stop must not leave a zombie behind
            raise


async def _reaped(waiter: asyncio.Future, pid: int) -> None:
    """Wait for the killed leader's exit, for at most REAP_SECONDS (then reap it directly)."""
    try:
        await asyncio.wait_for(asyncio.shield(waiter), REAP_SECONDS)
    except TimeoutError:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # reaped by someone else already
        logger.warning("a killed command (pid %s) was not reported ended within %g s", pid, REAP_SECONDS)
