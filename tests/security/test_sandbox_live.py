"""Hostile tool calls over the wire: a scripted provider asks for what an attacker would.

The real server (daphne) runs the real shell tool against the mock provider,
whose `[[tool:NAME {json}]]` directives make it call tools exactly as written.
Each finding of the sandbox issue is replayed here and must be contained.
"""

import asyncio
import json
import os
import signal
import stat
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import FAKE_KEY, gateway_env, pair
from tests.security.test_live import until, ws_url
from tests.support.services import require_bubblewrap
from tests.tools.test_shell import processes_running

pytestmark = pytest.mark.e2e


def tool(name, **args):
    return f"[[tool:{name} {json.dumps(args)}]]"


@pytest.fixture
def workspace(tmp_path):
    path = tmp_path / "workspace"
    path.mkdir()
    return path.resolve()


@pytest.fixture
def start(daphne_factory, mock_llm_process, workspace):
    """start(**env) -> (server, token): a paired gateway whose tools work in `workspace`."""
    require_bubblewrap()

    def start(**env):
        server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_WORKSPACE=str(workspace),
                                                **env))
        return server, pair(server)

    return start


async def turn(server, token, content, session_id="hostile"):
    async with connect(ws_url(server, session_id, token=token)) as ws:
        json.loads(await ws.recv())  # session_start
        await ws.send(json.dumps({"type": "message", "content": content}))
        return await until(ws, timeout=60)


def results(frames):
    return [frame for frame in frames if frame["type"] == "tool_result"]


def assert_no_key(frames):
    for frame in frames:
        text = json.dumps(frame)
        assert FAKE_KEY not in text
        assert FAKE_KEY[:12] not in text and FAKE_KEY[12:] not in text  # nor in pieces


async def wait_for_sleep(marker):
    """Until the sandboxed `sleep` itself runs (not only the bwrap whose arguments name it)."""
    deadline = time.monotonic() + 10
    while True:
        for pid in processes_running(f"sleep {marker}"):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                    return
            except OSError:
                pass
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.05)


async def wait_gone(marker, timeout):
    deadline = time.monotonic() + timeout
    while processes_running(f"sleep {marker}") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return processes_running(f"sleep {marker}")


def get_json(server, token, path):
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


async def test_the_sort_compress_program_turn_is_refused(start, workspace):
    server, token = start()
    payload = "id > id.txt; cat /proc/$PPID/environ > env.txt"
    content = "\n".join([payload] + [f"filler {i:04d} " + "x" * 40 for i in range(300)]) + "\n"
    frames = await turn(server, token, tool("file_write", path="x.txt", content=content)
                        + tool("shell", command="sort -S 1K -T . --compress-program=sh x.txt"))
    written, refused = results(frames)
    assert not written["is_error"]
    assert refused["is_error"] and "is not allowed" in refused["output"]
    assert frames[-1]["type"] == "done"
    assert not (workspace / "id.txt").exists() and not (workspace / "env.txt").exists()


async def test_files0_from_and_its_kin_are_refused(start, workspace):
    server, token = start()
    listing = f"/etc/passwd\0/proc/{server.process.pid}/environ\0/dev/zero\0"
    commands = ["sort --files0-from=list", "wc --files0-from=list", "sort --files0=list",
                "sort -o saved.txt list", "sort -T . list", "sort --random-source=list -R list",
                "grep -R root ."]
    frames = await turn(server, token, tool("file_write", path="list", content=listing)
                        + "".join(tool("shell", command=command) for command in commands))
    refused = results(frames)[1:]
    assert len(refused) == len(commands)
    for command, result in zip(commands, refused):
        assert result["is_error"] and "is not allowed" in result["output"], command
        assert "root:x" not in result["output"]
    assert not (workspace / "saved.txt").exists()
    assert_no_key(frames)


async def test_a_hostile_script_runs_unprivileged_and_finds_nothing_of_the_host(start, workspace):
    """With `sh` allowed (an operator's choice), what it runs is still boxed in."""
    server, token = start(CONSTRUCT_SHELL_ALLOWLIST="sh,cat,grep,sort,ls,id")
    gateway_pid = server.process.pid
    script = "\n".join([
        "id",
        "echo SHADOW; cat /etc/shadow",
        "echo PASSWD; cat /etc/passwd",
        f"echo GATEWAY; cat /proc/{gateway_pid}/environ",
        "echo PARENT; cat /proc/$PPID/environ; cat /proc/1/environ",
        "echo PROCS; ls /proc | grep '^[0-9]' | tr '\\n' ' '; echo",
        "echo HUNT; grep -raoP 'sk-e2e.{0,12}' /proc /tmp . 2>/dev/null | head -c 400",
        "echo WRITE; touch /usr/pwned /etc/pwned; echo x > /tmp/outside",
        "echo END",
    ]) + "\n"
    frames = await turn(server, token, tool("file_write", path="x.sh", content=script)
                        + tool("shell", command="sh x.sh"))
    output = results(frames)[1]["output"]
    assert "uid=65534 gid=65534" in output and "END" in output
    section = lambda name, after: output.split(name, 1)[1].split(after, 1)[0]  # noqa: E731
    assert "No such file" in section("SHADOW", "PASSWD")
    assert "No such file" in section("PASSWD", "GATEWAY")
    assert "No such file" in section("GATEWAY", "PARENT")
    pids = [int(pid) for pid in section("PROCS", "HUNT").split()]
    assert pids and max(pids) < 50 and gateway_pid not in pids
    assert "sk-e2e" not in section("HUNT", "WRITE")
    assert "Read-only file system" in section("WRITE", "END")
    assert not os.path.exists("/usr/pwned") and not os.path.exists("/etc/pwned")
    assert_no_key(frames)
    for path in ("/api/sessions/hostile/messages/", "/api/sessions/hostile/export/?format=json",
                 "/api/sessions/hostile/export/?format=md"):
        assert FAKE_KEY not in get_json(server, token, path)


async def test_dev_zero_ends_at_the_memory_limit_and_the_gateway_is_unhurt(start):
    server, token = start(CONSTRUCT_SHELL_ALLOWLIST="sh,sort,head")
    frames = await turn(server, token, tool("shell", command="sh -c 'head -c 4000000000 /dev/zero | sort'"))
    result = results(frames)[0]
    assert "memory exhausted" in result["output"]
    assert frames[-1]["type"] == "done"
    with urllib.request.urlopen(server.url + "/health", timeout=5) as response:
        assert response.status == 200
    with open(f"/proc/{server.process.pid}/status") as handle:
        status = handle.read()
    rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    assert rss_kib < 400_000


async def test_grep_over_a_symlink_to_etc_finds_nothing_outside(start, workspace):
    server, token = start()
    (workspace / "notes.txt").write_text("root of all\n")
    os.symlink("/etc", workspace / "etc-link")
    frames = await turn(server, token, tool("shell", command="grep -r root .")
                        + tool("shell", command="grep -R root .")
                        + tool("shell", command="grep -r root etc-link"))
    found, deref, through_link = results(frames)
    assert found["output"] == "./notes.txt:root of all\n"
    assert deref["is_error"] and "is not allowed" in deref["output"]
    assert through_link["is_error"] and "outside the workspace" in through_link["output"]


async def test_stop_kills_the_sandbox(start):
    server, token = start()
    marker = f"{time.time() % 1000 + 3000:.4f}"
    async with connect(ws_url(server, "stopper", token=token)) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "message", "content": tool("shell", command=f"sleep {marker}")}))
        await wait_for_sleep(marker)
        await ws.send(json.dumps({"type": "stop"}))
        frames = await until(ws)
        assert frames[-1]["type"] == "stopped"
    assert await wait_gone(marker, 3) == []


async def test_the_sandbox_dies_with_the_gateway(start):
    server, token = start()
    marker = f"{time.time() % 1000 + 4000:.4f}"
    async with connect(ws_url(server, "killed", token=token)) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "message", "content": tool("shell", command=f"sleep {marker}")}))
        await wait_for_sleep(marker)
        os.kill(server.process.pid, signal.SIGKILL)  # the gateway only, not its process group
    assert await wait_gone(marker, 5) == []


# --- Where bubblewrap cannot run ----------------------------------------------------------


def offered_tools(mock, marker):
    with urllib.request.urlopen(f"http://127.0.0.1:{mock.port}/_mock/requests", timeout=5) as response:
        requests = json.loads(response.read())
    for body in reversed(requests):
        if marker in json.dumps(body.get("messages", [])):
            return [spec["function"]["name"] for spec in body.get("tools", [])]
    raise AssertionError(f"no request carried {marker!r}")


@pytest.fixture
def failing_bwrap(tmp_path):
    """A bwrap that cannot create namespaces, as in a container that forbids them."""
    path = tmp_path / "bwrap"
    path.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.parametrize("case", ["missing", "no-namespaces"])
async def test_without_bubblewrap_the_shell_is_not_offered_and_start_up_says_why(
        case, start, mock_llm_process, failing_bwrap):
    bwrap = "/nonexistent/bwrap" if case == "missing" else str(failing_bwrap)
    server, token = start(CONSTRUCT_BWRAP=bwrap)
    lines = [line for line in server.output().splitlines() if "shell tool is not offered" in line]
    assert len(lines) == 1
    assert "apt-get install bubblewrap" in lines[0]
    assert ("not installed" if case == "missing" else "cannot create its namespaces") in lines[0]
    marker = f"no-shell-{case}-{time.time_ns()}"
    frames = await turn(server, token, marker, session_id=f"noshell-{case}")
    assert frames[-1]["type"] == "done"
    tools = offered_tools(mock_llm_process, marker)
    assert "shell" not in tools and "file_read" in tools


async def test_sandbox_off_by_name_warns_at_start_and_runs_on_the_host(start, mock_llm_process,
                                                                       workspace):
    server, token = start(CONSTRUCT_SHELL_SANDBOX="off")
    assert "CONSTRUCT_SHELL_SANDBOX=off" in server.output()
    marker = f"unsandboxed-{time.time_ns()}"
    frames = await turn(server, token, marker + tool("shell", command="pwd"), session_id="off")
    assert "shell" in offered_tools(mock_llm_process, marker)
    assert results(frames)[0]["output"] == f"{workspace}\n"
