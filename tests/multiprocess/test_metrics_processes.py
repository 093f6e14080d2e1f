"""/metrics under deploy/supervise.py: every process shows the sum over all of them.

supervise makes prometheus_client's multiprocess directory and passes it to
its processes; a process that dies leaves its counters in the sum and takes
its gauges out of it.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import MockLLMProcess, gateway_env
from tests.e2e.test_metrics_e2e import scrape, value
from tests.multiprocess.conftest import frames_until, recv
from tests.multiprocess.test_supervise import health, pid_on, wait_until
from tests.support.ports import consecutive_free_ports
from tests.support.daphne import REPO_ROOT, fresh_database_url, server_env
from tests.support.services import require_redis

pytestmark = [pytest.mark.e2e, pytest.mark.services]


class Port:
    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"


def multiproc_dir(pid) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (entry,) = [item for item in environ if item.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(entry.split(b"=", 1)[1].decode())


async def a_turn(port, session_id):
    """An open socket on `port` after one done turn."""
    ws = await connect(f"{port.ws_url}/ws/chat?session_id={session_id}")
    assert (await recv(ws))["type"] == "session_start"
    await ws.send(json.dumps({"type": "message", "content": f"hello from {session_id}"}))
    assert (await frames_until(ws))[-1]["type"] == "done"
    return ws


async def test_two_processes_show_the_sum_and_a_dead_one_leaves_the_gauges(tmp_path):
    redis_url = require_redis()
    mock = MockLLMProcess()
    with fresh_database_url(tmp_path) as database_url:
        base = consecutive_free_ports(2)
        env = server_env(gateway_env(
            mock, DATABASE_URL=database_url, REDIS_URL=redis_url, CONSTRUCT_REQUIRE_PAIRING="false",
            PROMETHEUS_MULTIPROC_DIR=None,
        ))
        log = open(tmp_path / "supervise.log", "wb")
        supervisor = subprocess.Popen(
            [sys.executable, "deploy/supervise.py", "-n", "2", "--base-port", str(base), "--grace", "5"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        sockets = []
        try:
            a, b = Port(base), Port(base + 1)
            await asyncio.to_thread(wait_until, lambda: health(base) == health(base + 1) == "ok", 150)
            directory = multiproc_dir(pid_on(base))
            assert directory == multiproc_dir(pid_on(base + 1)) and directory.is_dir()

            sockets.append(await a_turn(a, "sum-a"))
            sockets.append(await a_turn(b, "sum-b"))
            for port in (a, b):
                samples = await asyncio.to_thread(scrape, port)
                assert value(samples, "construct_turns_total", outcome="done") == 2
                assert value(samples, "construct_turn_duration_seconds_count") == 2
                assert value(samples, "construct_open_sockets") == 2
                assert value(samples, "construct_running_turns") == 0

            first = pid_on(base)
            os.kill(first, signal.SIGKILL)
            await asyncio.to_thread(
                wait_until, lambda: pid_on(base) not in (None, first) and health(base) == "ok", 60)
            # The dead process's socket is gone from the sum; its turn still counts.
            for port in (a, b):
                samples = await asyncio.to_thread(scrape, port)
                assert value(samples, "construct_open_sockets") == 1
                assert value(samples, "construct_turns_total", outcome="done") == 2

            supervisor.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(supervisor.wait, 30) == 0
            assert not directory.exists()  # the directory supervise made is removed
        finally:
            for ws in sockets:
                await ws.close()
            if supervisor.poll() is None:
                os.killpg(supervisor.pid, signal.SIGKILL)
            log.close()
            mock.stop()
            mock.process.stdout.close()
