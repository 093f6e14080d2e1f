"""A burst of sockets connecting at once to one real daphne with REDIS_URL.

Each socket used to join channel-layer groups on connect, one Redis command each
from the layer's pool: 200 sockets at once exhausted it (`MaxConnectionsError: Too
many connections`) and some sockets closed before `session_start`. The process now
joins the groups once for all its sockets and relays their messages itself.
"""

import asyncio
import contextlib
import json
import resource
import uuid
from collections import Counter

import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import MockLLMProcess, pair
from tests.multiprocess.conftest import cluster_env, frames_until, post_channel_event, send, ws_url
from tests.support.daphne import DaphneServer, migrated_database_url
from tests.support.services import require_redis

pytestmark = [pytest.mark.e2e, pytest.mark.services]

SOCKETS = 200


@pytest.fixture(scope="module")
def redis_gateway(tmp_path_factory):
    """One daphne with REDIS_URL (the run's Redis), a fresh database, the mock LLM, a token."""
    redis_url = require_redis()
    tmp_path = tmp_path_factory.mktemp("burst")
    # The client's sockets and the server's (it inherits the limit): 2 x SOCKETS and then some.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * SOCKETS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(migrated_database_url(tmp_path))
        mock = MockLLMProcess()
        stack.callback(mock.process.stdout.close)
        stack.callback(mock.stop)
        env = cluster_env(mock, database_url, redis_url, CONSTRUCT_MAX_SOCKETS_PER_TOKEN="0")
        # What this test looks for is sockets dropped by the layer, not a machine too busy to
        # accept 200 within daphne's default 5 s (a 403 then): a longer connect timeout.
        server = DaphneServer(env=env, run_migrate=False, log_path=tmp_path / "daphne.log",
                              extra_args=("--websocket_connect_timeout", "60"))
        stack.callback(server.kill)
        server.start()
        yield server, pair(server)


async def next_event(ws, predicate, timeout=20.0) -> dict:
    """The next `agent_event` whose event satisfies `predicate` (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), max(deadline - loop.time(), 0.01)))
        if frame.get("type") == "agent_event" and predicate(frame["event"]):
            return frame["event"]


async def greeted(server, token, session_id):
    """A socket and why it was not greeted (None: its first frame was session_start)."""
    ws = await connect(ws_url(server, session_id, token), max_size=None, open_timeout=60)
    try:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
    except Exception as exc:  # closed before session_start (the bug), or no answer in time
        return ws, repr(exc)[:120]
    return ws, None if frame.get("type") == "session_start" else str(frame)[:120]


async def test_sockets_connecting_at_once_are_all_greeted_and_hear_operator_events(redis_gateway):
    server, token = redis_gateway
    prefix = "burst-" + uuid.uuid4().hex[:8]
    opened = await asyncio.gather(
        *(greeted(server, token, f"{prefix}-{n}") for n in range(SOCKETS)), return_exceptions=True
    )
    sockets = [item[0] for item in opened if not isinstance(item, BaseException)]
    try:
        failed = Counter(repr(item)[:120] if isinstance(item, BaseException) else item[1]
                         for item in opened if isinstance(item, BaseException) or item[1])
        assert not failed, f"{sum(failed.values())} of {SOCKETS} got no session_start: {failed}"

        # A channel event (POST /api/channel-events/) reaches every one of them.
        nonce = uuid.uuid4().hex
        await asyncio.to_thread(post_channel_event, server, token, {"nonce": nonce})
        heard = await asyncio.gather(*(next_event(ws, lambda e: e.get("nonce") == nonce)
                                       for ws in sockets))
        assert heard == [{"nonce": nonce}] * SOCKETS

        # A turn on one of them: its start and end reach every socket of the user.
        await send(sockets[0], type="message", content="hello")
        done = (await frames_until(sockets[0]))[-1]
        assert done["type"] == "done", done

        def this_turn(kind):
            return lambda e: e.get("turn_id") == done["turn_id"] and e.get("type") == kind

        starts = await asyncio.gather(*(next_event(ws, this_turn("agent_start")) for ws in sockets[1:]))
        ends = await asyncio.gather(*(next_event(ws, this_turn("agent_end")) for ws in sockets[1:]))
        assert {e["session_id"] for e in starts + ends} == {f"{prefix}-0"}
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    assert "MaxConnectionsError" not in server.log_path.read_text(errors="replace")
