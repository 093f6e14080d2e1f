"""Two real servers acting as one gateway: one PostgreSQL database, one Redis, one mock LLM.

The servers are module-scoped (starting them is most of a test's time); each
test uses its own session ids. A test that kills a server starts its own pair
with `pair_of_servers`.
"""

import asyncio
import contextlib
import json
import urllib.request
import uuid
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import MockLLMProcess, gateway_env, pair
from tests.support.daphne import DaphneServer, migrated_database_url
from tests.support.services import require_postgres, require_redis

TERMINAL = ("done", "error", "stopped")


@dataclass
class Cluster:
    a: DaphneServer
    b: DaphneServer
    token: str
    database_url: str


def cluster_env(mock, database_url, redis_url, **extra):
    return gateway_env(
        mock,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        # Many sockets from one device and address in a few seconds: that is the test, not a flood.
        CONSTRUCT_SOCKET_RATE="off",
        CONSTRUCT_MESSAGE_RATE="off",
        **extra,
    )


@contextlib.contextmanager
def pair_of_servers(tmp_path, **extra_env):
    """Two daphne processes on one fresh (migrated) PostgreSQL database and the run's Redis."""
    redis_url = require_redis()
    base_url = require_postgres()
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(migrated_database_url(tmp_path, base_url=base_url))
        mock = MockLLMProcess()
        stack.callback(mock.process.stdout.close)
        stack.callback(mock.stop)
        env = cluster_env(mock, database_url, redis_url, **extra_env)
        a = DaphneServer(env=env, run_migrate=False, log_path=tmp_path / "daphne-a.log")
        stack.callback(a.kill)
        a.start()
        b = DaphneServer(env=env, run_migrate=False, log_path=tmp_path / "daphne-b.log")
        stack.callback(b.kill)
        b.start()
        yield Cluster(a, b, pair(a), database_url)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with pair_of_servers(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


# --- Client helpers ------------------------------------------------------------------


def new_session_id() -> str:
    return "mp-" + uuid.uuid4().hex[:12]


def ws_url(server, session_id, token, **params):
    query = "&".join(f"{k}={v}" for k, v in {"session_id": session_id, "token": token, **params}.items())
    return f"{server.ws_url}/ws/chat?{query}"


async def open_socket(server, session_id, token, **params):
    """A connected socket and its session_start frame."""
    ws = await connect(ws_url(server, session_id, token, **params), max_size=None)
    start = await recv(ws)
    assert start["type"] == "session_start", start
    return ws, start


async def recv(ws, timeout=15.0, skip_agent_events=True) -> dict:
    """The next frame; operator events of other gateways on the shared Redis are skipped."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if not (skip_agent_events and frame.get("type") == "agent_event"):
            return frame


async def frames_until(ws, types=TERMINAL, timeout=15.0) -> list[dict]:
    frames = []
    while True:
        frame = await recv(ws, timeout)
        frames.append(frame)
        if frame["type"] in types:
            return frames


async def send(ws, **frame):
    await ws.send(json.dumps(frame))


def post_channel_event(server, token, body: dict) -> None:
    request = urllib.request.Request(
        server.url + "/api/channel-events/", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def saved_messages(database_url, session_id) -> list[tuple[str, str, dict]]:
    """(role, content, data) of a session's messages, in order, read straight from PostgreSQL."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT role, content, data FROM sessions_app_message WHERE session_id = %s ORDER BY seq",
            (session_id,),
        ).fetchall()
    return [(role, content, data if isinstance(data, dict) else json.loads(data))
            for role, content, data in rows]


def session_state(database_url, session_id) -> str:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT state FROM sessions_app_chatsession WHERE id = %s", (session_id,)
        ).fetchone()
    return row[0] if row else None


def turn_text(frames) -> str:
    return "".join(f["content"] for f in frames if f["type"] == "chunk")


def assert_contiguous(frames, first=1):
    seqs = [f["seq"] for f in frames if "seq" in f]
    assert seqs == list(range(first, first + len(seqs))), seqs
