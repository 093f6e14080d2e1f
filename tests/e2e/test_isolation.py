"""Two users on one gateway, over the wire: B gets nothing of A's, by any path.

Real daphne, real tokens (A signs in with a password, B pairs with a code made
for B), the mock provider. Every path answers B about A's session exactly as
it answers about a session that does not exist. Runs on SQLite and, in the
second pass, on PostgreSQL with Redis.
"""

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import gateway_env, pair
from tests.e2e.test_chat_e2e import frames_until, is_operator_event, session_start, ws_url
from tests.security.live import db_rows
from tests.support.daphne import REPO_ROOT, server_env

A_SECRET_TEXT = "alice's plan for the hidden garden"


def manage(server, *args):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=server_env(server.env),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=True,
    ).stdout


def create_user(server, username, password=None, staff=False):
    manage(server, "shell", "-c",
           "from django.contrib.auth import get_user_model; "
           f"get_user_model().objects.create_user({username!r}, password={password!r}, is_staff={staff})")


def http(server, method, path, token=None, body=None, headers=None):
    """(status, parsed JSON or text) of one request."""
    data = json.dumps(body).encode() if body is not None else (b"" if method != "GET" else None)
    request = urllib.request.Request(server.url + path, method=method, data=data,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def sign_in(server, username, password):
    status, body = http(server, "POST", "/login", body={"username": username, "password": password})
    assert status == 200, body
    return body["token"]


def pair_for(server, username):
    code = manage(server, "pairing_code", "--user", username).strip().splitlines()[-1]
    status, body = http(server, "POST", "/pair", headers={"X-Pairing-Code": code})
    assert status == 200, body
    return body["token"]


async def next_frames(ws, seconds):
    """Every frame that arrives within `seconds`."""
    frames = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except asyncio.TimeoutError:
            break
    return frames


@pytest.fixture
def two_users(daphne_factory, mock_llm_process):
    server = daphne_factory(env=gateway_env(mock_llm_process))
    create_user(server, "alice", password="alice-pass-1")
    create_user(server, "bob")
    owner_token = pair(server)  # no user named: the default owner, a staff user
    return server, sign_in(server, "alice", "alice-pass-1"), pair_for(server, "bob"), owner_token


async def test_b_gets_nothing_of_a_by_any_path(two_users):
    server, a_token, b_token, staff_token = two_users
    # B's socket, open on B's own session, to see what reaches it while A works.
    async with connect(ws_url(server, "b-own", token=b_token)) as b_ws, \
            connect(ws_url(server, "a-1", token=a_token)) as a_ws:
        await session_start(b_ws)
        await session_start(a_ws)
        await a_ws.send(json.dumps({"type": "message", "content": A_SECRET_TEXT}))
        assert (await frames_until(a_ws))[-1]["type"] == "done"
        # A turn of A's still running while B tries everything.
        await a_ws.send(json.dumps({"type": "message", "content": "[[chunks=200]] [[delay_ms=30]] long"}))
        await asyncio.sleep(0.5)

        # The socket: A's session is refused before accept, with or without resume parameters.
        for params in ({}, {"last_seq": "3"}, {"turn_id": "x", "last_seq": "0"}):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(server, "a-1", token=b_token, **params)):
                    pass
            assert refused.value.response.status_code == 403

        # REST: A's session answers exactly as one that does not exist.
        for path in ("/api/sessions/{}/", "/api/sessions/{}/messages/",
                     "/api/sessions/{}/export/?format=md", "/api/sessions/{}/export/?format=json",
                     "/api/sessions/{}/?user=all"):
            theirs = http(server, "GET", path.format("a-1"), b_token)
            missing = http(server, "GET", path.format("no-such-session-9f3"), b_token)
            assert theirs == missing and theirs[0] == 404, path
        for method, body in (("PATCH", {"name": "mine now"}), ("DELETE", None)):
            assert http(server, method, "/api/sessions/a-1/", b_token, body) == \
                http(server, method, "/api/sessions/no-such-session-9f3/", b_token, body)
        status, listing = http(server, "GET", "/api/sessions/?user=all", b_token)
        # B's own session is not listed either: nothing was sent in it, so it is not stored.
        assert status == 200 and listing["results"] == [], listing
        status, found = http(server, "GET", "/api/sessions/?search=hidden+garden", b_token)
        assert status == 200 and found["results"] == []
        status, cost = http(server, "GET", "/api/cost/?user=all", b_token)
        assert status == 200 and cost["request_count"] == 0 and cost["by_session"] == {}

        # B's channel event reaches B's sockets only; A's turn events never reach B.
        assert http(server, "POST", "/api/channel-events/", b_token, {"from": "bob"})[0] == 202
        b_frames = await next_frames(b_ws, 1.5)
        assert {"type": "agent_event", "event": {"from": "bob"}} in b_frames
        assert not any(is_operator_event(frame) for frame in b_frames)
        assert A_SECRET_TEXT not in json.dumps(b_frames)
        a_frames = await frames_until(a_ws, types=("done",))
        assert {"type": "agent_event", "event": {"from": "bob"}} not in a_frames

    # A still has everything; staff reads all with ?user=all.
    status, mine = http(server, "GET", "/api/sessions/a-1/messages/", a_token)
    assert status == 200 and mine["messages"][0]["content"] == A_SECRET_TEXT
    assert http(server, "GET", "/api/sessions/a-1/", staff_token)[0] == 404
    status, everything = http(server, "GET", "/api/sessions/?user=all", staff_token)
    assert "a-1" in {s["id"] for s in everything["results"]}
    assert http(server, "GET", "/api/sessions/a-1/messages/?user=all", staff_token)[0] == 200
    refusals = db_rows(server.env["DATABASE_URL"],
                       "SELECT detail FROM sessions_app_auditevent WHERE kind = 'socket_refused'")
    assert sum("session of another user" in str(row[0]) for row in refusals) == 3


async def test_operator_events_reach_the_user_and_staff_only(two_users):
    server, a_token, b_token, staff_token = two_users
    async with connect(ws_url(server, "a-watch", token=a_token)) as a_other, \
            connect(ws_url(server, "b-watch", token=b_token)) as b_ws, \
            connect(ws_url(server, "staff-watch", token=staff_token)) as staff_ws, \
            connect(ws_url(server, "a-2", token=a_token)) as a_ws:
        for ws in (a_other, b_ws, staff_ws, a_ws):
            await session_start(ws)
        await a_ws.send(json.dumps({"type": "message", "content": "hello"}))
        done = (await frames_until(a_ws))[-1]
        seen = {name: [f["event"] for f in await next_frames(ws, 1.5) if is_operator_event(f)]
                for name, ws in (("a", a_other), ("b", b_ws), ("staff", staff_ws))}
        for name in ("a", "staff"):
            kinds = [(e["type"], e["session_id"]) for e in seen[name] if e["turn_id"] == done["turn_id"]]
            assert kinds == [("agent_start", "a-2"), ("agent_end", "a-2")], name
        assert seen["b"] == []
        # A staff operator's channel event reaches every socket.
        assert http(server, "POST", "/api/channel-events/", staff_token, {"to": "all"})[0] == 202
        for ws in (a_other, b_ws, a_ws):
            assert {"type": "agent_event", "event": {"to": "all"}} in await next_frames(ws, 1.5)
