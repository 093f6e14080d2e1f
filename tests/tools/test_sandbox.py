"""The shell tool's sandbox: what a command can reach, and what it cannot, whatever it is.

Two layers are tested apart. `parse_command` is the policy (the allowlist, the
refused options, paths in the workspace); `execute` runs whatever argv it is
given in the sandbox. The hostile commands below go straight to `execute`, as
if the policy had let them through, so they show what the sandbox alone contains.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chat.agent.tools import shell
from chat.agent.tools.base import ToolContext, ToolFailed, ToolRegistry
from chat.agent.tools.sandbox import SANDBOX_UID, Limits, Sandbox
from tests.support.services import require_bubblewrap
from tests.tools.test_shell import processes_left

KEY = "sk-sandbox-DISTINCTIVE-0123456789abcdef"


@pytest.fixture
def sandbox():
    return require_bubblewrap()


@pytest.fixture
def workspace(tmp_path):
    path = tmp_path / "workspace"
    path.mkdir()
    return path.resolve()


@pytest.fixture
def run_in(sandbox, workspace):
    """Run an argv in the sandbox with no policy in front: (output, exit status, timed out)."""

    async def run_in(*argv, timeout=20.0, box=None):
        return await shell.execute(list(argv), workspace, box or sandbox, timeout)

    return run_in


# --- Layer 1: options that run programs or name files are refused ------------------------


@pytest.mark.parametrize("command", [
    "sort -S 1K -T . --compress-program=sh x.txt",
    "sort --compress-program sh x.txt",
    "sort --comp=sh x.txt",
    "sort --files0-from=list",
    "sort --files0=list",
    "sort -o out.txt x.txt",
    "sort -ro out.txt x.txt",
    "sort -oout.txt x.txt",
    "sort --output=out.txt x.txt",
    "sort --out out.txt x.txt",
    "sort -T . x.txt",
    "sort -rT. x.txt",
    "sort --temporary-directory=. x.txt",
    "sort --random-source=x.txt -R x.txt",
    "sort x.txt --compress-program=sh",
    "wc --files0-from=list",
    "wc --files0=list",
    "grep -R root .",
    "grep -rR root .",
    "grep --dereference-recursive root .",
    "grep -f patterns.txt x.txt",
    "grep --file=patterns.txt x.txt",
    "grep --exclude-from=list -r root .",
    "date -f dates.txt",
    "date --reference=x.txt",
    "date -r x.txt",
    "du --files0-from=list",
    "find . -exec id ;",
    "find . -fprint out.txt",
    "tar --to-command=sh -xf a.tar",
    "tar -I sh -xf a.tar",
])
def test_options_that_run_programs_or_name_files_are_refused(command, workspace):
    programs = ["sort", "wc", "grep", "date", "du", "find", "tar"]
    with pytest.raises(ToolFailed, match="is not allowed"):
        shell.parse_command(command, programs, workspace)


@pytest.mark.parametrize("command", [
    "sort -r x.txt", "sort -k2 -t, x.txt", "sort -to x.txt", "sort -S 1K x.txt",
    "sort -- -o", "grep -rn root .", "grep -e -f x.txt", "date -Iseconds", "date -d @0",
    "wc -l x.txt", "find . -name x.txt", "tar -tvf a.tar",
])
def test_harmless_options_still_run(command, workspace):
    programs = ["sort", "wc", "grep", "date", "find", "tar"]
    assert shell.parse_command(command, programs, workspace)[0] == command.split()[0]


# --- Layer 3: the sandbox itself ------------------------------------------------------------


async def test_a_command_runs_as_an_unprivileged_user_with_nothing_of_ours(run_in, workspace,
                                                                           monkeypatch):
    monkeypatch.setenv("CONSTRUCT_API_KEY", KEY)
    output, status, _ = await run_in("sh", "-c", "id; env; cat /proc/1/environ; echo; hostname")
    assert status == 0
    assert f"uid={SANDBOX_UID} gid={SANDBOX_UID}" in output
    assert KEY not in output and "CONSTRUCT" not in output and "DJANGO" not in output
    assert "sandbox" in output.splitlines()[-1]
    assert f"HOME={workspace}" in output


async def test_the_sort_compress_program_escape_runs_inside_the_sandbox(run_in, workspace,
                                                                        monkeypatch):
    """The issue's exploit, let through on purpose: what it runs cannot reach the host.

    sort hands each chunk it spills to `sh` as a script, and dies soon after
    (`sh -d` cannot decompress); the sandbox then kills whatever is left, so the
    payload may not get far: it is retried until its first command has run.
    What the rest would have found is shown step by step in the tests below.
    """
    monkeypatch.setenv("CONSTRUCT_API_KEY", KEY)
    payload = [
        "id > id.txt",
        "cat /etc/shadow /proc/$PPID/environ /proc/1/environ >> loot.txt 2>&1",
        f"cat /proc/{os.getpid()}/environ >> loot.txt 2>&1",
        "touch /usr/pwned /etc/pwned /root/pwned",
    ]
    filler = [f"filler line {i:04d} " + "x" * 40 for i in range(300)]
    # One line, so one `sh` runs it all.
    (workspace / "x.txt").write_text("\n".join(["; ".join(payload), *filler]) + "\n")
    for _attempt in range(10):
        _output, _status, timed_out = await run_in(
            "sort", "-S", "1K", "-T", ".", "--compress-program=sh", "x.txt", timeout=30
        )
        assert not timed_out
        if (workspace / "id.txt").exists() and (workspace / "id.txt").read_text():
            break
    assert (workspace / "id.txt").read_text().startswith(f"uid={SANDBOX_UID} gid={SANDBOX_UID}")
    loot = (workspace / "loot.txt").read_text() if (workspace / "loot.txt").exists() else ""
    assert "root:" not in loot and KEY not in loot and "CONSTRUCT" not in loot
    for path in ("/usr/pwned", "/etc/pwned", "/root/pwned"):
        assert not Path(path).exists()


async def test_no_host_process_and_no_host_secret_file_is_visible(run_in, monkeypatch):
    monkeypatch.setenv("CONSTRUCT_API_KEY", KEY)
    output, _status, _ = await run_in(
        "sh", "-c", "ls /proc | grep -c '^[0-9]'; cat /etc/passwd /etc/shadow /root/.bashrc; "
                    "grep -ra sk-sandbox /proc 2>/dev/null | head -c 300"
    )
    lines = output.splitlines()
    assert int(lines[0]) <= 6  # bwrap's init, sh, ls, grep: the sandbox's own processes
    assert "No such file" in output and "root:x:0:0" not in output
    assert KEY not in output


async def test_no_network(run_in):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        output, status, _ = await run_in(
            "/usr/bin/python3", "-c",
            f"import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            " print('CONNECTED')\nexcept OSError as exc:\n print('refused', exc)\n"
            "try:\n socket.getaddrinfo('example.com', 80)\n print('RESOLVED')\n"
            "except OSError as exc:\n print('no dns', exc)",
        )
    finally:
        listener.close()
    assert "CONNECTED" not in output and "refused" in output
    assert "RESOLVED" not in output


async def test_only_the_workspace_is_writable_and_tmp_is_private(run_in, workspace, tmp_path):
    marker = f"construct-sandbox-{time.time_ns()}"
    output, _status, _ = await run_in(
        "sh", "-c", f"echo inside > kept.txt; echo t > /tmp/{marker}; ls /tmp; "
                    f"echo x > {tmp_path}/outside.txt 2>&1; echo x > /usr/lib/x 2>&1"
    )
    assert (workspace / "kept.txt").read_text() == "inside\n"
    assert marker in output  # the sandbox's own /tmp
    assert not Path(f"/tmp/{marker}").exists()  # not the host's
    assert not (tmp_path / "outside.txt").exists()
    assert "Read-only file system" in output


async def test_dev_zero_ends_at_the_memory_limit(run_in):
    rss_before = _rss_kib()
    started = time.monotonic()
    output, status, timed_out = await run_in("sh", "-c", "head -c 4000000000 /dev/zero | sort")
    assert not timed_out and time.monotonic() - started < 15
    assert "memory exhausted" in output and status != 0
    assert _rss_kib() - rss_before < 50_000  # the gateway's own memory did not grow


async def test_the_process_count_is_limited(run_in):
    output, status, _ = await run_in(
        "sh", "-c", "for i in $(seq 200); do sleep 37 & done; wait", timeout=20
    )
    assert status != 0 and ("fork" in output.lower() or "resource" in output.lower())
    # The kernel kills what is left in the sandbox's PID namespace as its init ends, but
    # not in the same instant: give it two seconds (the sleeps themselves would last 37).
    assert await processes_left("sleep 37", 2) == []


async def test_the_file_size_is_limited(run_in, workspace):
    box = Sandbox(bwrap=require_bubblewrap().bwrap, prlimit=require_bubblewrap().prlimit,
                  limits=Limits(file_bytes=1024 * 1024))
    _output, status, _ = await run_in("sh", "-c", "head -c 5000000 /dev/zero > big.bin", box=box)
    assert status != 0
    assert (workspace / "big.bin").stat().st_size <= 1024 * 1024


async def test_cpu_time_is_limited(run_in):
    box = Sandbox(bwrap=require_bubblewrap().bwrap, prlimit=require_bubblewrap().prlimit,
                  limits=Limits(cpu_seconds=1))
    started = time.monotonic()
    _output, status, timed_out = await run_in("sh", "-c", "while :; do :; done", box=box, timeout=20)
    assert not timed_out and status != 0
    assert time.monotonic() - started < 10


async def test_grep_r_over_a_symlink_to_etc_finds_nothing_outside(sandbox, workspace, run_in):
    (workspace / "notes.txt").write_text("root of the matter\n")
    os.symlink("/etc", workspace / "etc-link")
    registry = ToolRegistry([shell.shell_tool(["grep"], sandbox)])
    ctx = ToolContext(session_id="s", workspace=workspace)
    output, is_error = await registry.call("shell", json.dumps({"command": "grep -r root ."}), ctx)
    assert not is_error and output == "./notes.txt:root of the matter\n"
    output, is_error = await registry.call("shell", json.dumps({"command": "grep -R root ."}), ctx)
    assert is_error and "is not allowed" in output
    # Even let through, -R follows the link into the sandbox's /etc, not the host's.
    output, _status, _ = await run_in("grep", "-R", "root:x", ".")
    assert "root:x:0:0" not in output


async def test_a_timeout_kills_the_whole_sandbox(run_in):
    marker = f"{time.time() % 1000 + 2000:.4f}"
    started = time.monotonic()
    _output, _status, timed_out = await run_in(
        "sh", "-c", f"sleep {marker} & sleep {marker} & wait", timeout=0.5
    )
    assert timed_out and time.monotonic() - started < 3
    assert await processes_left(f"sleep {marker}", 3) == []


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_starting_gateway_process_sweeps_dead_processes_cgroups_not_a_live_ones():
    # Several gateway processes on one host share the folder of the commands' pids cgroups.
    # One starting used to remove every empty one, so a command of another process, between
    # its cgroup's mkdir and entering it, found it gone ("cgroup.procs: Directory nonexistent").
    from chat.agent.tools.sandbox import PidsCgroup, _pids_parent, needs_pids_cgroup

    if not needs_pids_cgroup():
        pytest.skip("the gateway makes a pids cgroup per command only when it runs as root")
    parent = _pids_parent()
    if parent is None:
        pytest.fail("running as root, yet no pids cgroup can be made here")
    mine = PidsCgroup.create(10)  # this process's, still empty: removable by rmdir
    dead = subprocess.Popen(["true"])
    dead.wait()
    left_by_the_dead = parent / f"cmd-{dead.pid}-0123456789ab"
    left_by_the_dead.mkdir()
    older_name = parent / "cmd-ba9876543210"
    older_name.mkdir()
    try:
        started = subprocess.run(
            [sys.executable, "-c", "from chat.agent.tools.sandbox import _pids_parent; "
             "print(_pids_parent())"],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
        assert started.returncode == 0, started.stderr
        assert Path(started.stdout.strip()) == parent
        assert mine.path.is_dir()
        assert not left_by_the_dead.exists() and not older_name.exists()
        # The live one still works: a command enters it and runs.
        result = subprocess.run(mine.wrap(["sh", "-c", "cat /proc/self/cgroup"]),
                                capture_output=True, text=True, timeout=10)
        assert result.returncode == 0 and mine.path.name in result.stdout, result.stderr
    finally:
        mine.remove()
        for path in (left_by_the_dead, older_name):
            if path.exists():
                path.rmdir()
