"""deploy/supervise.py: N processes on consecutive ports, restarted when they die, stopped together."""

import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import MockLLMProcess
from tests.multiprocess.conftest import (
    assert_contiguous, cluster_env, frames_until, open_socket, recv, send, turn_text,
)
from tests.support.daphne import REPO_ROOT, fresh_database_url, server_env
from tests.support.ports import consecutive_free_ports
from tests.support.services import require_postgres, require_redis

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return json.loads(response.read())["status"]
    except (OSError, http.client.HTTPException, ValueError):
        return None


def wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def pid_on(port):
    """The pid of the process listening on `port` (from /proc/net/tcp and the fd tables)."""
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
                inode = fields[9]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    return None


def test_supervise_runs_n_processes_restarts_a_dead_one_and_stops_them_all(tmp_path):
    redis_url = require_redis()
    with fresh_database_url(tmp_path) as database_url:
        base = consecutive_free_ports(2)
        env = server_env({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                          "CONSTRUCT_REQUIRE_PAIRING": "false"})
        log = open(tmp_path / "supervise.log", "wb")
        supervisor = subprocess.Popen(
            [sys.executable, "deploy/supervise.py", "-n", "2", "--base-port", str(base), "--grace", "5"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            ports = (base, base + 1)
            # Migrate, collectstatic, then two servers: on a busy machine that takes a while.
            wait_until(lambda: all(health(port) == "ok" for port in ports), timeout=150)
            first = pid_on(base)
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: pid_on(base) not in (None, first) and health(base) == "ok", timeout=60)
            supervisor.send_signal(signal.SIGTERM)
            assert supervisor.wait(30) == 0
            assert all(health(port) is None for port in ports)
        finally:
            if supervisor.poll() is None:
                os.killpg(supervisor.pid, signal.SIGKILL)
            log.close()
        output = (tmp_path / "supervise.log").read_text()
        assert f"port {base}: exited with" in output and "stopped" in output


def test_supervise_refuses_several_processes_without_redis(tmp_path):
    env = server_env({"REDIS_URL": None})
    result = subprocess.run([sys.executable, "deploy/supervise.py", "-n", "2", "--no-migrate"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr


# --- Rolling restart ---------------------------------------------------------------


async def test_sighup_replaces_every_process_one_at_a_time_and_a_streaming_turn_ends_whole(tmp_path):
    """Run with the interpreter outside the virtualenv, as `python deploy/supervise.py` is."""
    redis_url = require_redis()
    base_url = require_postgres()
    mock = MockLLMProcess()
    try:
        with fresh_database_url(tmp_path, base_url=base_url) as database_url:
            await _rolling_restart(tmp_path, cluster_env(mock, database_url, redis_url))
    finally:
        mock.process.stdout.close()
        mock.stop()


async def _rolling_restart(tmp_path, env):
    base = consecutive_free_ports(2)
    ports = (base, base + 1)
    system_python = str(Path(sys.base_prefix) / "bin" / "python3")
    log_path = tmp_path / "supervise.log"
    log = open(log_path, "wb")
    supervisor = subprocess.Popen(
        [system_python, "deploy/supervise.py", "-n", "2", "--base-port", str(base), "--grace", "5"],
        cwd=REPO_ROOT, env=server_env(env), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        await asyncio.to_thread(wait_until, lambda: all(ready(port) for port in ports), 150)
        output = log_path.read_text()
        # One banner, from supervise, with a code that pairs.
        assert output.count("pairing required") == 1, output
        code = re.search(r"One-time pairing code:\s+(\d{6})", output).group(1)
        token = pair_with(base, code)
        first_pids = [pid_on(port) for port in ports]
        assert f"[{base}] " in output and f"[{base + 1}] " in output  # each line says its process

        # The turn runs on the second process; a socket on the first watches it.
        session_id = "roll-" + uuid.uuid4().hex[:8]
        runner, _ = await open_socket(FakeServer(base + 1), session_id, token)
        watcher, _ = await open_socket(FakeServer(base), session_id, token)
        await send(runner, type="message", content="[[chunks=80]] [[delay_ms=50]]")
        seen = await frames_until(watcher, ("chunk",))
        turn_id = seen[-1]["turn_id"]
        supervisor.send_signal(signal.SIGHUP)

        # The first process drains at once (no turn of its own): 1012, reconnect, resume.
        code_seen = None
        try:
            while True:
                seen.append(await recv(watcher, timeout=20))
        except ConnectionClosed as exc:
            code_seen = exc.rcvd.code
        assert code_seen == 1012
        last_seq = max(f["seq"] for f in seen if f.get("turn_id") == turn_id)
        resumed, start = await open_socket(FakeServer(base + 1), session_id, token,
                                           turn_id=turn_id, last_seq=last_seq)
        rest = await frames_until(resumed) if start["state"] == "running" else []
        frames = [f for f in seen if f.get("turn_id") == turn_id] + rest
        assert_contiguous(frames)
        assert turn_text(frames) == "".join(f"tok{i} " for i in range(1, 81))
        assert frames[-1]["type"] == "done"

        # The second process drained once its turn ended: its runner got all of it, then 1012.
        whole = await frames_until(runner, timeout=30)
        assert whole[-1]["type"] == "done" and whole[-1]["full_response"] == turn_text(frames)
        with pytest.raises(ConnectionClosed) as closed:
            await recv(runner, timeout=30)
        assert closed.value.rcvd.code == 1012
        for ws in (resumed,):
            await ws.close()

        await asyncio.to_thread(wait_until, lambda: "rolling restart done" in log_path.read_text(), 90)
        new_pids = [pid_on(port) for port in ports]
        assert all(new not in (None, old) for new, old in zip(new_pids, first_pids)), (first_pids, new_pids)
        assert all(ready(port) for port in ports)
        # One at a time: the second drained only once the first's successor was ready.
        lines = [line for line in log_path.read_text().splitlines() if line.startswith("supervise:")]
        steps = [f"port {base}: draining", f"port {base}: pid", f"port {base + 1}: draining",
                 f"port {base + 1}: pid"]
        order = [next(i for i, line in enumerate(lines) if step in line
                      and ("draining" in line or "ready" in line)) for step in steps]
        assert order == sorted(order) and len(set(order)) == 4, lines

        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, 30) == 0
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
        log.close()


class FakeServer:
    """What open_socket needs of a server: its ws_url."""

    def __init__(self, port):
        self.ws_url = f"ws://127.0.0.1:{port}"


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def pair_with(port, code):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/pair", method="POST",
                                     headers={"X-Pairing-Code": code}, data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["token"]
