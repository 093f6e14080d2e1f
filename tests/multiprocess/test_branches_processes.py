"""Branches across two processes: the `history` frame reaches sockets on the other process,
ahead of the turn it precedes, whether a socket edited or regenerated, or REST switched."""

import asyncio
import json
import urllib.request

import pytest

from tests.multiprocess.conftest import frames_until, new_session_id, open_socket, recv, send

pytestmark = [pytest.mark.e2e, pytest.mark.services]


def put_active(server, token, session_id, message_id) -> dict:
    request = urllib.request.Request(
        f"{server.url}/api/sessions/{session_id}/active/", method="PUT",
        data=json.dumps({"message_id": message_id}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def test_history_frames_reach_the_other_process_in_order(cluster):
    session = new_session_id()
    on_a, _ = await open_socket(cluster.a, session, cluster.token)
    on_b, _ = await open_socket(cluster.b, session, cluster.token)
    await send(on_a, type="message", content="first version")
    await frames_until(on_a)
    await frames_until(on_b)

    # A regenerate on A: B sees the same frames, the history frame first, then the turn.
    await send(on_a, type="regenerate")
    sent = await frames_until(on_a)
    watched = await frames_until(on_b)
    assert watched == sent
    assert watched[0]["type"] == "history" and watched[-1]["type"] == "done"
    assert all("turn_id" in frame for frame in watched[1:])
    question = watched[0]["messages"][0]["id"]
    assert [m["content"] for m in watched[0]["messages"]] == ["first version"]

    # An edit on A: a new version of the question, drawn on B before its answer.
    await send(on_a, type="edit", message_id=question, content="second version")
    sent = await frames_until(on_a)
    watched = await frames_until(on_b)
    assert watched == sent and watched[0]["type"] == "history"
    edited = watched[0]["messages"][-1]
    assert edited["content"] == "second version" and edited["sibling_ids"] == [question, edited["id"]]

    # A switch through REST on B: both sockets hear it, A's through the engines' group.
    body = await asyncio.to_thread(put_active, cluster.b, cluster.token, session, question)
    for ws in (on_a, on_b):
        frame = await recv(ws)
        assert frame["type"] == "history" and frame["leaf_id"] == body["leaf_id"]
        assert [m["content"] for m in frame["messages"]] == ["first version", "Echo: first version"]
        assert len(frame["messages"][1]["sibling_ids"]) == 2  # the regenerated answer, newest
    # And over a socket on B: A hears it through Redis.
    await send(on_b, type="switch_branch", message_id=edited["id"])
    for ws in (on_a, on_b):
        frame = await recv(ws)
        assert frame["type"] == "history"
        assert [m["content"] for m in frame["messages"]] == ["second version", "Echo: second version"]
    await on_a.close()
    await on_b.close()
