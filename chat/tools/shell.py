"""The `shell` tool: one allowlisted program, run without a shell, inside the workspace.

The command is split like a shell would split it (shlex) and run directly, so
pipes, redirections, `;` and `$(...)` are plain text. The program runs in its own
process group with a scrubbed environment (no key the gateway holds); on timeout
or when the turn is stopped, the whole group is killed and reaped.
"""

import asyncio
import logging
import os
import shlex
import shutil
import signal
from pathlib import Path

from chat.tools.base import Tool, ToolContext, ToolFailed
from chat.tools.files import inside, workspace_root
from chat.tools.progress import slow_status

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


def shell_tool(allowlist) -> Tool | None:
    """The tool for these programs; None when the allowlist is empty (the tool is not offered)."""
    programs = tuple(dict.fromkeys(name for name in allowlist if name))
    if not programs:
        return None

    async def run(args: dict, ctx: ToolContext) -> str:
        return await run_command(args.get("command"), ctx, programs)

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
    for arg in argv[1:]:
        _check_argument(arg, root)
    return argv


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


def _environment(root: Path) -> dict:
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(HOME=str(root), PWD=str(root), TERM="dumb")
    return env


async def run_command(command, ctx: ToolContext, programs) -> str:
    root = workspace_root(ctx)
    argv = parse_command(command, programs, root)
    env = _environment(root)
    executable = shutil.which(argv[0], path=env["PATH"])
    if executable is None:
        raise ToolFailed(f"program {argv[0]!r} is not installed")
    timeout = float(ctx.extra.get("shell_timeout", TIMEOUT))
    process = await asyncio.create_subprocess_exec(
        executable, *argv[1:],
        cwd=root, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, so one kill ends all it started
    )
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
        with slow_status(ctx, f"running: {argv[0]}"):
            await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        timed_out = True
    finally:
        # On timeout, on stop (CancelledError) and after a normal exit alike:
        # nothing the command started outlives the call.
        await _kill_group(process)

    text = output.decode("utf-8", errors="replace")
    if dropped:
        text += f"\n[output cut at {MAX_OUTPUT_BYTES} bytes; {dropped} more bytes dropped]"
    if timed_out:
        raise ToolFailed(f"{argv[0]} did not finish within {timeout:g} s and was killed.\n{text}".rstrip())
    if process.returncode:
        return f"{text}\n[exit status {process.returncode}]".lstrip("\n")
    return text or "[no output]"


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group and reap the leader, even when the caller is being cancelled."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already
    if process.returncode is None:
        waiter = asyncio.ensure_future(process.wait())
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            await waiter  # a second stop must not leave a zombie behind
            raise
