"""What the server does as it starts serving, under daphne and under `manage.py runserver`.

Importing construct_site.asgi does nothing; construct_site.serving does the
start-up once the server runs: the daphne patches, the Redis check, the
pairing code.
"""

import asyncio
import json
import re
import socket
import subprocess
import sys
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.daphne import REPO_ROOT, server_env
from tests.support.services import free_port

CODE_LINE = re.compile(r"One-time pairing code:\s+(\d{6})\s")
NO_PROVIDER = {"CONSTRUCT_BASE_URL": None, "CONSTRUCT_API_KEY": None, "OPENAI_API_KEY": None,
               "ANTHROPIC_API_KEY": None, "CONSTRUCT_PROVIDER": "openai"}


def runserver(port):
    return [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]


def daphne(port):
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
            "construct_site.asgi:application"]


def pair(server, code) -> str:
    request = urllib.request.Request(server.url + "/pair", method="POST",
                                     headers={"X-Pairing-Code": code}, data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["token"]


@pytest.mark.parametrize("command", [daphne, runserver], ids=["daphne", "runserver"])
async def test_one_pairing_code_at_start_and_the_close_codes_patched(daphne_factory, command):
    server = daphne_factory(env={"CONSTRUCT_REQUIRE_PAIRING": "true", **NO_PROVIDER},
                            command=command)

    codes = CODE_LINE.findall(server.output())
    assert len(codes) == 1, server.output()
    token = pair(server, codes[0])
    # The agent cannot start (no provider): an error frame, then 1011, which
    # unpatched daphne refuses with a traceback and a late close.
    async with connect(f"{server.ws_url}/ws/chat?session_id=start&token={token}") as ws:
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert frames[-1]["code"] == "AGENT_INIT_FAILED"
    assert closed.value.rcvd.code == 1011
    assert "Exception inside application" not in server.output()
    assert len(CODE_LINE.findall(server.output())) == 1


@pytest.mark.parametrize("command", [daphne, runserver], ids=["daphne", "runserver"])
def test_an_unreachable_redis_url_stops_the_server_at_start(tmp_path, command):
    dead = free_port()
    env = server_env({"REDIS_URL": f"redis://:hunter2secret@127.0.0.1:{dead}/0",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"})

    result = subprocess.run(command(free_port()), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert f"REDIS_URL redis://:***@127.0.0.1:{dead}/0 is unreachable: " in result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr


def test_run_py_serve_on_a_taken_port_says_so_in_one_line_and_prints_no_code():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = subprocess.run([sys.executable, "run.py", "serve", "--port", str(port)],
                                cwd=REPO_ROOT, env=server_env(), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"run.py: port {port} on 127.0.0.1 is already in use; stop what runs there or pick another --port"
    ]
