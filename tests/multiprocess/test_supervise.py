"""deploy/supervise.py: N processes on consecutive ports, restarted when they die, stopped together."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.daphne import REPO_ROOT, fresh_database_url, server_env
from tests.support.services import free_port, require_redis

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return json.loads(response.read())["status"]
    except OSError:
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


def consecutive_free_ports(count):
    for _ in range(50):
        base = free_port()
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no consecutive free ports")


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
            wait_until(lambda: all(health(port) == "ok" for port in ports), timeout=60)
            first = pid_on(base)
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: pid_on(base) not in (None, first) and health(base) == "ok", timeout=30)
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
