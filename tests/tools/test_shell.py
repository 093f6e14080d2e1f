"""The shell tool: allowlisted programs, no shell, the workspace, a timeout, a killed group.

Each test runs twice: in the bubblewrap sandbox (the default) and on the host
(`CONSTRUCT_SHELL_SANDBOX=off`): the allowlist and the workspace rules hold in both.
What only the sandbox gives is in test_sandbox.py.
"""

import asyncio
import functools
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from chat.agent.tools import shell
from chat.agent.tools.base import ToolContext, ToolRegistry
from chat.agent.tools.progress import slow_status
from chat.turns.setup import build_tools as default_registry
from tests.support.services import require_bubblewrap

ALLOWED = ["echo", "ls", "cat", "pwd", "sleep", "env", "timeout"]


@pytest.fixture
def workspace(tmp_path):
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def statuses():
    return []


@pytest.fixture(params=["bwrap", "off"])
def sandbox(request):
    return require_bubblewrap() if request.param == "bwrap" else None


@pytest.fixture
def run(workspace, statuses, sandbox):
    registry = ToolRegistry([shell.shell_tool(ALLOWED, sandbox)])

    async def run(command, **extra):
        ctx = ToolContext(session_id="s1", workspace=workspace,
                          status=lambda phase, detail: statuses.append((phase, detail)), extra=extra)
        return await registry.call("shell", json.dumps({"command": command}), ctx)

    return run


def processes_running(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def processes_left(marker: str, seconds: float) -> list[int]:
    """`processes_running(marker)` once none are left, or after `seconds`. A killed sandbox's
    processes end when the kernel ends its PID namespace, not in the instant of the kill."""
    deadline = time.monotonic() + seconds
    while (pids := processes_running(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return pids


async def test_echo_runs_in_the_workspace(run, workspace):
    assert await run("echo hello world") == ("hello world\n", False)
    assert await run("pwd") == (f"{workspace.resolve()}\n", False)


async def test_no_shell_interprets_the_command(run, workspace):
    output, is_error = await run("echo $HOME; ls | cat > x && `id` 'quoted  words'")
    assert not is_error
    assert output == "$HOME; ls | cat > x && `id` quoted  words\n"
    assert not (workspace / "x").exists()


@pytest.mark.parametrize("command", ["rm -rf notes", "/bin/echo hi", "bash -c 'echo hi'", "python3 -V"])
async def test_a_program_off_the_allowlist_is_refused(run, command):
    output, is_error = await run(command)
    assert is_error
    assert "is not allowed" in output and "allowed programs: echo, ls" in output


@pytest.mark.parametrize("command", ["cat /etc/passwd", "ls ..", "cat ../../etc/passwd", "cat --x=/etc/hosts",
                                     "cat -x/etc/hosts"])
async def test_arguments_outside_the_workspace_are_refused(run, command):
    output, is_error = await run(command)
    assert is_error and "outside the workspace" in output


async def test_a_symlink_argument_leading_out_is_refused(run, workspace, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", workspace / "innocent")
    output, is_error = await run("cat innocent")
    assert is_error and "outside the workspace" in output
    assert "secret\n" not in output


async def test_the_program_gets_no_secrets_from_our_environment(run, workspace, monkeypatch):
    monkeypatch.setenv("CONSTRUCT_API_KEY", "sk-test-do-not-leak-0123456789")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "also-secret")
    output, is_error = await run("env")
    assert not is_error
    assert "sk-test" not in output and "also-secret" not in output
    assert f"HOME={workspace.resolve()}" in output.splitlines()


async def test_exit_status_and_errors_are_reported(run):
    output, is_error = await run("ls no-such-file")
    assert not is_error
    assert "No such file" in output and output.endswith("[exit status 2]")
    output, is_error = await run("echo 'unbalanced")
    assert is_error and "cannot split" in output


async def test_output_is_capped(run, workspace, monkeypatch):
    monkeypatch.setattr(shell, "MAX_OUTPUT_BYTES", 1000)
    (workspace / "big.txt").write_text("x" * 5000)
    output, is_error = await run("cat big.txt")
    assert not is_error
    assert output.startswith("x" * 1000 + "\n[output cut at 1000 bytes; 4000 more bytes dropped]")


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils timeout")
async def test_a_command_that_outlives_its_timeout_is_killed_with_its_children(run):
    marker = f"{time.time() % 1000:.4f}"  # a sleep length no other test uses
    started = time.monotonic()
    # `timeout` runs `sleep` as its child: the whole process group must go.
    output, is_error = await run(f"timeout 100 sleep {marker}", shell_timeout=0.5)
    assert is_error
    assert "did not finish within 0.5 s and was killed" in output
    assert time.monotonic() - started < 3
    assert processes_running(f"sleep {marker}") == []


async def test_a_cancelled_call_kills_the_process(run):
    marker = f"{time.time() % 1000 + 1000:.4f}"
    task = asyncio.ensure_future(run(f"sleep {marker}"))
    for _ in range(100):
        if processes_running(f"sleep {marker}"):
            break
        await asyncio.sleep(0.02)
    assert processes_running(f"sleep {marker}")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # In the sandbox the kill ends bubblewrap, and the kernel then kills what is left in its
    # PID namespace, but not in the same instant (a full run's load once caught the sleep in
    # between): give it two seconds, as tests/tools/test_sandbox.py does; it would last 1,000.
    assert await processes_left(f"sleep {marker}", 2) == []


async def test_a_slow_command_reports_what_it_runs(run, statuses, monkeypatch):
    monkeypatch.setattr(shell, "slow_status", functools.partial(slow_status, after=0.2))
    assert await run("sleep 0.5") == ("[no output]", False)
    assert statuses == [("tool", "running: sleep")]
    statuses.clear()
    await run("echo quick")
    assert statuses == []


def test_an_empty_allowlist_offers_no_shell_tool(settings, sandbox):
    assert shell.shell_tool([], sandbox) is None
    settings.CONSTRUCT_SHELL_ALLOWLIST = []
    names = default_registry().names()
    assert "shell" not in names
    assert names == ["file_read", "file_write", "file_list", "memory_store", "memory_recall",
                     "render_canvas", "clear_canvas"]
    settings.CONSTRUCT_SHELL_ALLOWLIST = ["echo"]
    assert default_registry().names()[0] == "shell"
