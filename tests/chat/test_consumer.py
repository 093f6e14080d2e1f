"""The chat socket, through WebsocketCommunicator, against the loopback mock LLM."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from sessions_app import events
from sessions_app.services import default_owner
from sessions_app.models import ChatSession, Message
from tests.chat.conftest import next_frame, nothing_more, FAKE_KEY, communicator, frames_until, open_socket, send, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def saved(session_id):
    return list(Message.objects.filter(session_id=session_id).order_by("seq").values_list("role", "content", "data"))


@database_sync_to_async
def session_row(session_id):
    return ChatSession.objects.get(pk=session_id)


# --- Authentication and the handshake ----------------------------------------


async def test_refused_before_accept_without_a_token(gateway):
    comm = communicator(query="session_id=s1")
    connected, _ = await comm.connect(timeout=10)
    assert connected is False


async def test_refused_with_a_wrong_token(gateway, token):
    comm = communicator(token="zc_not-a-real-token-at-all", query="session_id=s1")
    connected, _ = await comm.connect(timeout=10)
    assert connected is False


@pytest.mark.parametrize("source", ["header", "subprotocol", "query"])
async def test_each_token_source_is_accepted(gateway, token, source):
    kwargs = {}
    if source == "header":
        kwargs["headers"] = [("authorization", f"Bearer {token}")]
    elif source == "subprotocol":
        kwargs["subprotocols"] = [f"bearer.{token}"]
    comm = communicator(token=token if source == "query" else None, query="session_id=s1", **kwargs)
    connected, subprotocol = await comm.connect(timeout=10)
    assert connected
    assert subprotocol is None  # bearer.* is never selected
    assert (await comm.receive_json_from())["type"] == "session_start"
    await comm.disconnect()


async def test_header_wins_over_a_bad_query_token(gateway, token):
    comm = communicator(token="zc_wrong-token-value", query="session_id=s1",
                        headers=[("authorization", f"Bearer {token}")])
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.disconnect()


async def test_empty_header_falls_back_to_the_query_token(gateway, token):
    comm = communicator(token=token, query="session_id=s1", headers=[("authorization", "Bearer ")])
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.disconnect()


async def test_construct_subprotocol_is_selected_when_offered(gateway, token):
    comm = communicator(query="session_id=s1", subprotocols=["construct.v1", f"bearer.{token}"])
    connected, subprotocol = await comm.connect(timeout=10)
    assert connected and subprotocol == "construct.v1"
    await comm.disconnect()


async def test_pairing_off_lets_anyone_in(gateway):
    gateway.CONSTRUCT_REQUIRE_PAIRING = False
    comm, start = await open_socket(None)
    assert start["session_id"] == "s1"
    await comm.disconnect()


async def test_new_session_gets_an_id_and_keeps_its_name(gateway, token):
    comm, start = await open_socket(token, query="name=My+Session")
    assert start["resumed"] is False and start["message_count"] == 0
    assert start["name"] == "My Session"
    assert len(start["session_id"]) == 36
    # Nothing is stored until the first message is: a page opened and left leaves no session.
    assert await database_sync_to_async(ChatSession.objects.filter(pk=start["session_id"]).exists)() is False
    await send(comm, type="message", content="hello there")
    await frames_until(comm)
    await comm.disconnect()
    # Reconnect without a name: the stored one comes back.
    comm, again = await open_socket(token, query=f"session_id={start['session_id']}")
    assert again["name"] == "My Session" and again["resumed"] is True
    await comm.disconnect()


async def test_a_session_is_stored_with_its_first_message_only(gateway, token):
    for _ in range(3):
        comm, start = await open_socket(token, query="session_id=never-used")
        assert start == {"type": "session_start", "session_id": "never-used", "resumed": False,
                         "message_count": 0, "state": "idle", "model": start["model"]}
        await comm.disconnect()
    assert await database_sync_to_async(ChatSession.objects.filter(pk="never-used").exists)() is False
    comm, _ = await open_socket(token, query="session_id=never-used")
    await send(comm, type="message", content="hello there", client_id="c1")
    assert (await next_frame(comm))["type"] == "ack"
    await frames_until(comm)
    await comm.disconnect()
    row = await session_row("never-used")
    assert row.message_count == 2


async def test_resume_reports_the_message_count(gateway, token):
    comm, start = await open_socket(token)
    await send(comm, type="message", content="hello there")
    await frames_until(comm)
    await comm.disconnect()
    comm, again = await open_socket(token)
    assert again["resumed"] is True
    assert again["message_count"] == 2
    assert again["state"] == "idle"
    await comm.disconnect()


async def test_invalid_session_id_is_refused(gateway, token):
    comm = communicator(token=token, query="session_id=" + "x" * 300)
    connected, _ = await comm.connect(timeout=10)
    assert connected is False


async def test_connect_frame_is_acknowledged(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="connect", session_id="s1", device_name="laptop", capabilities=["x"])
    assert await comm.receive_json_from() == {"type": "connected", "message": "Connection established"}
    # The socket then takes messages as usual.
    await send(comm, type="message", content="hi")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


async def test_connect_frame_later_is_an_unknown_type(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="first")
    await frames_until(comm)
    await send(comm, type="connect")
    frame = await next_frame(comm)  # the turn's agent_end may come first
    assert frame["type"] == "error" and frame["code"] == "UNKNOWN_MESSAGE_TYPE"
    await comm.disconnect()


async def test_connect_frame_after_the_window_is_an_unknown_type(gateway, token):
    gateway.CONSTRUCT_CONNECT_FRAME_TIMEOUT = 0.2
    comm, _ = await open_socket(token)
    await asyncio.sleep(0.4)
    await send(comm, type="connect")
    assert (await comm.receive_json_from())["code"] == "UNKNOWN_MESSAGE_TYPE"
    await comm.disconnect()


# --- Bad frames ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{not json", "INVALID_JSON"),
        ('{"type": "dance"}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"content": "no type"}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"type": 7}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"type": "message"}', "EMPTY_CONTENT"),
        ('{"type": "message", "content": ""}', "EMPTY_CONTENT"),
        ('{"type": "message", "content": "   "}', "EMPTY_CONTENT"),
        ('{"type": "message", "content": 42}', "EMPTY_CONTENT"),
        ('{"type": "message", "content": "x", "client_id": 5}', "BAD_FRAME"),
        ("[1, 2, 3]", "BAD_FRAME"),
        ('"just a string"', "BAD_FRAME"),
        ("null", "BAD_FRAME"),
        ("[" * 100_000, "INVALID_JSON"),
    ],
)
async def test_every_bad_frame_gets_its_code_and_the_socket_stays_usable(gateway, token, raw, code):
    comm, _ = await open_socket(token)
    await comm.send_to(text_data=raw)
    frame = await comm.receive_json_from()
    assert frame["type"] == "error"
    assert frame["code"] == code
    assert frame["message"]
    await send(comm, type="message", content="still there?")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    assert "still there?" in frames[-1]["full_response"]
    await comm.disconnect()


async def test_binary_frame_is_a_bad_frame(gateway, token):
    comm, _ = await open_socket(token)
    await comm.send_to(bytes_data=b"\x00\xff\xfe")
    frame = await comm.receive_json_from()
    assert frame["code"] == "BAD_FRAME"
    await comm.disconnect()


async def test_too_large_frame(gateway, token):
    gateway.CONSTRUCT_MAX_FRAME_BYTES = 4096
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="é" * 3000)  # 6,000 bytes of UTF-8
    frame = await comm.receive_json_from()
    assert frame["code"] == "MESSAGE_TOO_LARGE"
    await send(comm, type="message", content="small")
    assert (await frames_until(comm))[-1]["type"] == "done"
    assert [role for role, *_ in await saved("s1")] == ["user", "assistant"]
    await comm.disconnect()


# --- A turn -------------------------------------------------------------------


async def test_a_turn_streams_and_is_saved(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="hello world [[think]]")
    frames = await frames_until(comm)
    types = [f["type"] for f in frames]
    assert "thinking" in types
    assert "chunk" in types
    assert "".join(f["content"] for f in frames if f["type"] == "chunk") == frames[-1]["full_response"]
    assert types[-2:] == ["chunk_reset", "done"]
    turn_ids = {f["turn_id"] for f in frames}
    assert len(turn_ids) == 1
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    streamed = "".join(f["content"] for f in frames if f["type"] == "chunk")
    assert frames[-1]["full_response"] == streamed
    assert streamed.startswith("Echo: hello world")
    rows = await saved("s1")
    assert [(r[0], r[1]) for r in rows] == [("user", "hello world [[think]]"), ("assistant", streamed)]
    assert rows[1][2]["thinking"]
    session = await session_row("s1")
    assert session.state == "idle" and session.turn_id is None and session.message_count == 2
    await comm.disconnect()


async def test_history_is_sent_to_the_provider(gateway, token, mock_llm):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="first message")
    await frames_until(comm)
    await send(comm, type="message", content="second message")
    await frames_until(comm)
    body = mock_llm.requests()[-1]
    contents = [m.get("content") for m in body["messages"] if m["role"] != "system"]
    assert contents[0] == "first message"
    assert contents[1].startswith("Echo: first message")
    assert contents[2] == "second message"
    await comm.disconnect()


@pytest.mark.parametrize("page", ["agent_pool", "agent_teams", "skills", "workflows", "canvas"])
async def test_page_context_hint_goes_to_the_provider_not_to_history(gateway, token, page):
    from chat.agent.prompts import page_context_hint

    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[echo_prompt]] make it", page_context=page)
    done = (await frames_until(comm))[-1]
    assert done["full_response"] == page_context_hint(page) + "[[echo_prompt]] make it"
    user = (await saved("s1"))[0]
    assert user[1] == "[[echo_prompt]] make it"
    assert user[2]["page_context"] == page
    await comm.disconnect()


async def test_unknown_page_context_adds_no_hint(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[echo_prompt]] plain", page_context="chat")
    assert (await frames_until(comm))[-1]["full_response"] == "[[echo_prompt]] plain"
    await comm.disconnect()


async def test_two_sockets_on_one_session_both_receive_the_turn(gateway, token):
    first, _ = await open_socket(token)
    second, _ = await open_socket(token)
    await send(first, type="message", content="[[chunks=20]]")
    a = await frames_until(first)
    b = await frames_until(second)
    assert a == b
    # Deltas read together leave as one chunk: the text counts, not the frames.
    assert "".join(f["content"] for f in a if f["type"] == "chunk") == "".join(
        f"tok{i} " for i in range(1, 21))
    await first.disconnect()
    await second.disconnect()


async def test_a_late_socket_gets_the_turn_so_far_then_the_rest(gateway, token):
    first, _ = await open_socket(token)
    await send(first, type="message", content="[[chunks=30]] [[delay_ms=30]]")
    early = [await next_frame(first) for _ in range(5)]
    late, start = await open_socket(token)
    assert start["state"] == "running" and start["turn_id"] == early[0]["turn_id"]
    frames = await frames_until(late)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["full_response"] == "".join(f["content"] for f in frames if f["type"] == "chunk")
    await frames_until(first)
    await first.disconnect()
    await late.disconnect()


async def test_last_seq_skips_what_the_client_has(gateway, token):
    first, _ = await open_socket(token)
    await send(first, type="message", content="[[chunks=30]] [[delay_ms=30]]")
    early = [await next_frame(first) for _ in range(6)]
    late, _ = await open_socket(token, query="session_id=s1&last_seq=4")
    frames = await frames_until(late)
    assert frames[0]["seq"] == 5
    assert [f["seq"] for f in frames] == list(range(5, 5 + len(frames)))
    assert early[4]["seq"] == 5
    await frames_until(first)
    await first.disconnect()
    await late.disconnect()


async def test_a_dropped_socket_does_not_stop_the_turn(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=20]] [[delay_ms=20]]")
    await comm.receive_json_from(timeout=10)
    await comm.disconnect()

    async def answered():
        return len(await saved("s1")) == 2

    await wait_for(answered)
    rows = await saved("s1")
    assert rows[1][0] == "assistant"
    assert rows[1][1] == "".join(f"tok{i} " for i in range(1, 21))
    assert (await session_row("s1")).state == "idle"


# --- The session lock -----------------------------------------------------------


async def test_a_second_message_waits_its_turn(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=10]] [[delay_ms=30]]")
    await send(comm, type="message", content="second")
    frames = await frames_until(comm, types=("done",))
    queued = [f for f in frames if f["type"] == "operator_status" and f.get("phase") == "queued"]
    assert queued, frames
    second = await frames_until(comm, types=("done",))
    assert second[-1]["full_response"].startswith("Echo: second")
    assert [r[1] for r in await saved("s1")][2] == "second"
    await comm.disconnect()


async def test_queue_timeout_gives_session_busy(gateway, token):
    gateway.CONSTRUCT_SESSION_QUEUE_TIMEOUT = 0.5
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=40]] [[delay_ms=50]]")
    await send(comm, type="message", content="too late")
    frames = await frames_until(comm, types=("error",))
    assert any(f["type"] == "operator_status" and f["phase"] == "queued" for f in frames)
    error = frames[-1]
    assert error["code"] == "SESSION_BUSY"
    assert "turn_id" not in error  # it is this socket's answer, not an event of the turn
    assert (await frames_until(comm, types=("done",)))[-1]["type"] == "done"
    assert "too late" not in [r[1] for r in await saved("s1")]
    await comm.disconnect()


async def test_full_queue_gives_session_busy_at_once(gateway, token):
    gateway.CONSTRUCT_SESSION_QUEUE_DEPTH = 1
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=40]] [[delay_ms=50]]")
    await send(comm, type="message", content="waits")
    await send(comm, type="message", content="refused")
    loop = asyncio.get_running_loop()
    started = loop.time()
    frames = await frames_until(comm, types=("error",))
    assert frames[-1]["code"] == "SESSION_BUSY"
    assert loop.time() - started < 1.5
    await frames_until(comm, types=("done",))
    await frames_until(comm, types=("done",))
    assert [r[1] for r in await saved("s1") if r[0] == "user"] == ["[[chunks=40]] [[delay_ms=50]]", "waits"]
    await comm.disconnect()


async def test_a_dead_processs_turn_is_taken_over(gateway, token):
    from datetime import timedelta

    from django.utils import timezone

    @database_sync_to_async
    def stuck():
        ChatSession.objects.create(
            pk="s1", user=default_owner(), state="running", turn_id="old-turn", turn_owner="gone",
            lease_expires_at=timezone.now() - timedelta(seconds=1),
        )

    await stuck()
    comm, start = await open_socket(token)
    # Its lease ran out: the socket finds the turn ended as interrupted, not running.
    assert start["state"] == "interrupted" and "turn_id" not in start
    await send(comm, type="message", content="after the crash")
    assert (await frames_until(comm))[-1]["type"] == "done"
    assert (await session_row("s1")).state == "idle"
    await comm.disconnect()


# --- Duplicates -------------------------------------------------------------------


async def test_a_resent_client_id_runs_one_turn(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="once", client_id="c-1")
    assert await next_frame(comm) == {"type": "ack", "client_id": "c-1", "duplicate": False}
    await send(comm, type="message", content="once", client_id="c-1")
    frames = await frames_until(comm, types=("done",))
    acks = [f for f in frames if f["type"] == "ack"]
    assert acks == [{"type": "ack", "client_id": "c-1", "duplicate": True}]
    await asyncio.sleep(0.3)
    assert await nothing_more(comm, timeout=0.3)
    assert [r[1] for r in await saved("s1")].count("once") == 1
    await comm.disconnect()


async def test_a_client_id_refused_as_busy_may_be_sent_again(gateway, token):
    gateway.CONSTRUCT_SESSION_QUEUE_DEPTH = 0
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=10]] [[delay_ms=30]]")
    await send(comm, type="message", content="retry me", client_id="c-2")
    frames = await frames_until(comm, types=("error",))
    assert frames[-1]["code"] == "SESSION_BUSY"
    await frames_until(comm, types=("done",))
    await send(comm, type="message", content="retry me", client_id="c-2")
    frames = await frames_until(comm, types=("done",))
    assert {"type": "ack", "client_id": "c-2", "duplicate": False} in frames
    await comm.disconnect()


# --- Stop ---------------------------------------------------------------------------


async def test_stop_mid_stream_keeps_the_partial_reply(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[chunks=200]] [[delay_ms=20]]")
    first = [await comm.receive_json_from(timeout=10) for _ in range(3)]
    await send(comm, type="stop")
    frames = await frames_until(comm, types=("stopped",))
    streamed = "".join(f["content"] for f in first + frames if f["type"] == "chunk")
    assert frames[-1]["full_response"] == streamed
    rows = await saved("s1")
    assert rows[-1][0] == "assistant" and rows[-1][1] == streamed and rows[-1][2]["stopped"] is True
    assert (await session_row("s1")).state == "idle"
    await send(comm, type="message", content="next one")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


async def test_stop_with_nothing_running(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="stop")
    assert (await comm.receive_json_from())["type"] == "stopped"
    await comm.disconnect()


# --- Errors from the provider -------------------------------------------------------


async def test_no_provider_gives_agent_init_failed_and_1011(gateway, token):
    gateway.CONSTRUCT_BASE_URL = None
    gateway.CONSTRUCT_API_KEY = None
    comm = communicator(token=token, query="session_id=s1")
    connected, _ = await comm.connect(timeout=10)
    assert connected
    frame = await comm.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "AGENT_INIT_FAILED"
    assert "CONSTRUCT_API_KEY" in frame["message"] or "CONSTRUCT_BASE_URL" in frame["message"]
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 1011}


async def test_provider_401_gives_auth_error_without_the_key(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[fail=401]]")
    frames = await frames_until(comm)
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "AUTH_ERROR"
    assert FAKE_KEY not in json.dumps(frames)
    assert FAKE_KEY[8:20] not in json.dumps(frames)
    session = await session_row("s1")
    assert session.state == "error" and session.turn_id == error["turn_id"]
    assert [r[0] for r in await saved("s1")] == ["user"]
    await send(comm, type="message", content="works again")
    assert (await frames_until(comm))[-1]["type"] == "done"
    await comm.disconnect()


async def test_provider_500_gives_provider_error(gateway, token):
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[fail=500]]")
    error = (await frames_until(comm))[-1]
    assert error["code"] == "PROVIDER_ERROR"
    assert len(error["message"]) <= 500
    await comm.disconnect()


async def test_a_provider_that_sends_nothing_ends_the_turn_after_first_delta_timeout(gateway, token):
    gateway.CONSTRUCT_FIRST_DELTA_TIMEOUT = 0.5
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[silent]] anyone there?")
    frames = await asyncio.wait_for(frames_until(comm), 10)
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "PROVIDER_ERROR"
    assert error["message"] == "The model sent nothing for 0.5 seconds"
    assert not [f for f in frames if f["type"] in ("chunk", "done")]
    assert (await session_row("s1")).state == "error"
    # The session is free: the next message runs at once, not queued behind a hung call.
    await send(comm, type="message", content="works again")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    assert not [f for f in frames if f.get("phase") == "queued"]
    await comm.disconnect()


async def test_a_broken_stream_then_a_regenerate_answers_the_question_again(gateway, token):
    # What the page's Retry sends after a failed turn: the question is saved, so it is answered again.
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="[[reset_once=2]] [[chunks=4]] again please")
    error = (await frames_until(comm))[-1]
    assert error["type"] == "error" and error["code"] == "PROVIDER_ERROR"
    assert "broke off" in error["message"]
    await send(comm, type="regenerate", client_id="retry-1")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    assert frames[-1]["full_response"].split() == ["tok1", "tok2", "tok3", "tok4"]
    await comm.disconnect()


# --- Operator events ------------------------------------------------------------------


async def test_channel_events_reach_every_socket_even_mid_turn(gateway, token):
    first, _ = await open_socket(token)
    other, _ = await open_socket(token, query="session_id=s2")
    await send(first, type="message", content="[[chunks=30]] [[delay_ms=20]]")
    await next_frame(first)
    await events.publish_channel_event({"type": "agent.started", "name": "researcher"})
    frames = await frames_until(first, types=("done",))
    relayed = [f for f in frames if f["type"] == "agent_event"]
    assert relayed == [{"type": "agent_event", "event": {"type": "agent.started", "name": "researcher"}}]
    assert await next_frame(other, timeout=5) == relayed[0]
    await first.disconnect()
    await other.disconnect()


async def test_channel_events_reach_a_socket_before_its_first_frame(gateway, token):
    comm, _ = await open_socket(token)
    await events.publish_channel_event({"n": 1})
    assert await comm.receive_json_from(timeout=5) == {"type": "agent_event", "event": {"n": 1}}
    await comm.disconnect()


async def test_operator_group_gets_agent_start_and_end(gateway, token):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.OPERATORS_GROUP, channel)
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="count me")
    done = (await frames_until(comm))[-1]

    async def next_of_this_turn():
        # A shared Redis may carry other runs' operator events: keep this turn's.
        while True:
            message = await asyncio.wait_for(layer.receive(channel), 5)
            if message["event"].get("turn_id") == done["turn_id"]:
                return message

    start = await next_of_this_turn()
    end = await next_of_this_turn()
    assert start["event"]["type"] == "agent_start" and start["event"]["model"] == "mock-model"
    assert start["event"]["session_id"] == "s1"
    assert end["event"]["type"] == "agent_end"
    assert end["event"]["duration_ms"] >= 0
    assert end["event"]["output_tokens"] == done["usage"]["output_tokens"] > 0
    await comm.disconnect()


async def test_a_session_deleted_under_an_open_socket_starts_afresh(gateway, token):
    from sessions_app.services import session_delete

    comm, _ = await open_socket(token)
    await send(comm, type="message", content="before")
    await frames_until(comm)
    await database_sync_to_async(session_delete)(session_id="s1")
    await send(comm, type="message", content="after the delete")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done", frames
    assert [r[1] for r in await saved("s1")] == ["after the delete", "Echo: after the delete"]
    await comm.disconnect()


# --- The log ------------------------------------------------------------------------


async def test_the_log_names_the_real_client_behind_a_trusted_proxy(gateway, token, caplog, settings):
    """daphne's access line shows the proxy; the socket's own line shows whom it forwards for."""
    settings.CONSTRUCT_TRUSTED_PROXIES = ["10.0.0.9"]
    caplog.set_level("INFO", logger="chat.consumers")
    comm = communicator(token=token, query="session_id=s-log",
                        headers=[("x-forwarded-for", "203.0.113.7")])
    comm.scope["client"] = ("10.0.0.9", 40000)
    assert (await comm.connect(timeout=10))[0]
    await comm.receive_json_from(timeout=10)
    await comm.disconnect()
    lines = [r.getMessage() for r in caplog.records if r.name == "chat.consumers"]
    assert any(line.startswith("chat socket opened: session s-log") and line.endswith("from 203.0.113.7")
               for line in lines), lines
    assert any(line.startswith("chat socket closed: session s-log") and "from 203.0.113.7" in line
               for line in lines), lines
    assert token not in "\n".join(lines)


# --- The socket's loop -------------------------------------------------------

async def test_an_open_socket_waits_on_its_queue_with_no_task_of_its_own(gateway, token):
    """The consumer awaits each message itself (ChatConsumer.__call__), not through a task per
    wait and asyncio.wait as Channels' await_many_dispatch does: none is left while it idles."""
    def queue_waits():
        return [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "Queue.get"]

    comm, _ = await open_socket(token, query="session_id=loop")
    assert queue_waits() == []
    await send(comm, type="message", content="hello")
    assert (await frames_until(comm))[-1]["type"] == "done"
    assert queue_waits() == []
    await comm.disconnect()


async def test_a_session_s_history_window_goes_with_its_last_socket_here(gateway, token):
    from sessions_app import windows

    async def held(session_id):
        return session_id in windows._windows

    async def gone(session_id):
        return not await held(session_id)

    first, _ = await open_socket(token, query="session_id=window")
    second, _ = await open_socket(token, query="session_id=window")
    await send(first, type="message", content="hello")
    assert (await frames_until(first))[-1]["type"] == "done"
    assert (await frames_until(second))[-1]["type"] == "done"
    await wait_for(lambda: held("window"))  # the turn kept its window
    await second.disconnect()
    await asyncio.sleep(0.2)
    assert await held("window")  # another socket of the session is still here
    await first.disconnect()
    await wait_for(lambda: gone("window"))  # it went with the session's last socket here
