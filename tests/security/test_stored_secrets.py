"""No stored field holds the provider key, whatever a provider, a tool or a client sends.

The hostile session below has the mock provider leak its key everywhere it
can (reply, reasoning split in two, tool call arguments, an error, a reply cut
by a dropped connection), has tools store it and echo it, and has a client
put it in a message, a client id, a session name, an origin, a device name
and an admin edit. Then every text and JSON field of every row of every
model is read back and searched for the key, and so are the messages API,
both exports and the admin pages.
"""

import json
from urllib.parse import quote

import pytest
from channels.db import database_sync_to_async
from django.apps import apps
from django.db import models
from django.test import Client

from chat.turns.stores import DatabaseMemory
from chat.agent.tools.base import MAX_TOOL_OUTPUT_CHARS, Tool, ToolContext, ToolRegistry
from chat.agent.tools.memory import MAX_TAG_CHARS, memory_tools
from construct_core.redaction import REDACTED, register_secret
from sessions_app.services import default_owner
from sessions_app.models import (
    AuditEvent, ChatSession, ClientMessageId, MemoryNote, Message, PairedDevice,
)
from tests.chat.conftest import communicator, frames_until, open_socket, send
from tests.security.test_secrets import admin_pages

pytestmark = pytest.mark.django_db(transaction=True)

CUT_KEY = "sk-cut-STRADDLE-Hq8Vn2Lr5T"
# Distinctive, and not hex: no hash or uuid in the database can hold a piece of it by chance.
HOSTILE_KEY = "sk-hostile-QXZJ-WVUT-Key-Rmnp"
# Stored text is cut to its column after scrubbing; a cut before it would leave a piece.
PIECE = 12
TEXT_FIELDS = (models.CharField, models.TextField, models.JSONField)


def leaks(value, key=HOSTILE_KEY) -> bool:
    """Whether `value` (a stored field, or an answer) holds the key or a PIECE-character piece of it.

    Dicts and lists are walked, keys included; a string that is a JSON document
    (tool call arguments, an API answer) is decoded and walked too, so the key
    cannot hide behind escapes such as \\u002d.
    """
    if isinstance(value, dict):
        return any(leaks(k, key) or leaks(v, key) for k, v in value.items())
    if isinstance(value, list):
        return any(leaks(item, key) for item in value)
    if not isinstance(value, str):
        return False
    if any(key[i : i + PIECE] in value for i in range(len(key) - PIECE + 1)):
        return True
    if value.startswith(("{", "[")):
        try:
            return leaks(json.loads(value), key)
        except ValueError:
            return False
    return False


def database_leaks() -> list[str]:
    """Every (model, field, row) whose stored text holds the key, across every installed model."""
    found, walked = [], set()
    for model in apps.get_models():
        fields = [f.attname for f in model._meta.concrete_fields if isinstance(f, TEXT_FIELDS)]
        if not fields:
            continue
        walked.add(model)
        for row in model.objects.values_list("pk", *fields):
            for name, value in zip(fields, row[1:]):
                if leaks(value):
                    found.append(f"{model._meta.label}.{name} of row {row[0]!r}: {value!r}"[:300])
    assert {AuditEvent, ChatSession, ClientMessageId, MemoryNote, Message, PairedDevice} <= walked
    return found


# --- A cut never leaves part of a key ------------------------------------------------


async def test_a_tool_output_cut_at_its_limit_keeps_no_piece_of_a_key():
    register_secret(CUT_KEY)

    async def loud(args, ctx):
        return "x" * (MAX_TOOL_OUTPUT_CHARS - 10) + CUT_KEY + " and more"

    registry = ToolRegistry([Tool("loud", "says a lot", {"type": "object"}, loud)])
    output, is_error = await registry.call("loud", "{}", ToolContext())

    assert not is_error and "[output cut at" in output
    assert CUT_KEY[:10] not in output
    assert output.startswith("x" * (MAX_TOOL_OUTPUT_CHARS - 10) + REDACTED[:10])


async def test_a_memory_tag_cut_at_its_limit_keeps_no_piece_of_a_key():
    register_secret(CUT_KEY)
    registry = ToolRegistry(memory_tools())
    tag = "t" * (MAX_TAG_CHARS - 12) + CUT_KEY

    output, is_error = await registry.call(
        "memory_store", json.dumps({"content": "a note", "tags": [tag]}), ToolContext(session_id="none", memory=DatabaseMemory(await database_sync_to_async(lambda: default_owner().pk)()))
    )

    assert not is_error
    tags = await database_sync_to_async(lambda: MemoryNote.objects.get().tags)()
    assert tags == [("t" * (MAX_TAG_CHARS - 12) + REDACTED)[:MAX_TAG_CHARS]]
    assert CUT_KEY[:10] not in output


# --- The hostile session --------------------------------------------------------------

TOOLS = (
    '[[tool:memory_store {"content": "the key is [[key]]", '
    '"tags": ["[[key]]", "' + "t" * (MAX_TAG_CHARS - 20) + '[[key]]"]}]] '
    '[[tool:memory_recall {"query": "[[key]]"}]] '
    '[[tool:render_canvas {"canvas_id": "default", "content_type": "html", "content": "<p>[[key]]</p>"}]] '
    '[[tool:file_write {"path": "leak.txt", "content": "KEY=[[key]]"}]] '
    '[[tool:file_read {"path": "leak.txt"}]] [[think_key]]'
)


async def hostile_session(token, session_id):
    """Every way into storage we know of, each carrying the key. Returns every frame sent."""
    comm, _ = await open_socket(token, query=f"session_id={session_id}")
    frames = []
    for content, last in (
        ("[[echo_key]] [[think_key]]", "done"),  # the reply, and reasoning split in two
        (TOOLS, "done"),  # tool call arguments, a note, a canvas, a file, tool results
        ("[[fail=401]]", "error"),  # an error body quoting the key
        ("[[echo_key]] [[reset_after=2]]", "error"),  # a reply cut short, kept in history
    ):
        await send(comm, type="message", content=content)
        frames += await frames_until(comm)
        assert frames[-1]["type"] == last, frames[-1]
    # The client: the key in its message and in its client id.
    await send(comm, type="message", content=f"my key is {HOSTILE_KEY}", client_id=f"cid-{HOSTILE_KEY}")
    frames += await frames_until(comm)
    assert frames[-1]["type"] == "done"
    await comm.disconnect()

    # The key in a session name, a session id, and a (refused) origin cut for the audit trail.
    named, _ = await open_socket(token, query=f"session_id={session_id}&name={quote('Keys ' + HOSTILE_KEY)}")
    await named.disconnect()
    refused = communicator(token=token, query=f"session_id=s-{HOSTILE_KEY}")
    assert (await refused.connect(timeout=10))[0] is False
    origin = "https://" + "o" * 185 + HOSTILE_KEY + ".example"
    foreign = communicator(token=token, query="session_id=other", headers=[("origin", origin)])
    assert (await foreign.connect(timeout=10))[0] is False
    return frames


def operator_leaks(session_id, token):
    """Pair a device and edit the session in the admin (the key in both); then read every view."""
    from django.contrib.auth import get_user_model

    from sessions_app.pairing import pairing_code_issue

    pairing = Client().post("/pair", HTTP_X_PAIRING_CODE=pairing_code_issue(),
                            HTTP_X_DEVICE_NAME=f"phone {HOSTILE_KEY}")
    assert pairing.status_code == 200

    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-not-secret")
    admin = Client()
    admin.force_login(staff)
    edit = admin.post(f"/admin/sessions_app/chatsession/{session_id}/change/", {
        "name": f"Edited {HOSTILE_KEY}",
        "messages-TOTAL_FORMS": "0", "messages-INITIAL_FORMS": "0",
        "messages-MIN_NUM_FORMS": "0", "messages-MAX_NUM_FORMS": "1000",
    })
    assert edit.status_code == 302

    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    answers = {}
    for name, url in (("messages", f"/api/sessions/{session_id}/messages/"),
                      ("export md", f"/api/sessions/{session_id}/export/?format=md"),
                      ("export json", f"/api/sessions/{session_id}/export/?format=json"),
                      ("session", f"/api/sessions/{session_id}/")):
        response = api.get(url)
        assert response.status_code == 200, name
        answers[name] = response.content.decode()
    answers["admin"] = "\n".join(admin_pages(admin))
    return answers, database_leaks()


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_hostile_session_stores_the_key_nowhere(gateway, token, mock_llm, wire):
    gateway.CONSTRUCT_API_KEY = HOSTILE_KEY
    gateway.CONSTRUCT_MAX_TOOL_ITERATIONS = 10
    if wire == "anthropic":
        gateway.CONSTRUCT_PROVIDER = "anthropic"
        gateway.CONSTRUCT_BASE_URL = mock_llm.anthropic_url
    # What chat.apps registers at start-up from CONSTRUCT_API_KEY, set here after start-up.
    register_secret(HOSTILE_KEY)
    session_id = f"hostile-{wire}"

    frames = await hostile_session(token, session_id)
    answers, found = await database_sync_to_async(operator_leaks)(session_id, token)

    assert found == []
    for name, text in answers.items():
        assert not leaks(text), name
    # No frame holds the whole key (a client sees the split reasoning only in pieces),
    # bar the ack that hands the client its own client id back unchanged.
    assert [f for f in frames if HOSTILE_KEY in json.dumps(f)] == [
        {"type": "ack", "client_id": f"cid-{HOSTILE_KEY}", "duplicate": False}]

    # And the key did reach every one of those places, as [REDACTED]: the test saw the leaks.
    stored = await database_sync_to_async(stored_markers)(session_id)
    assert stored["thinking"] == f"Let me think about the key {REDACTED} step by step."
    assert stored["replies"][:1] == [f"Echo: {REDACTED}"]
    assert f"Echo: {REDACTED}" in stored["partial"]
    assert stored["arguments"]["memory_store"] == {
        "content": f"the key is {REDACTED}",
        "tags": [REDACTED, ("t" * (MAX_TAG_CHARS - 20) + REDACTED)]}
    assert stored["arguments"]["render_canvas"]["content"] == f"<p>{REDACTED}</p>"
    assert stored["arguments"]["file_write"]["content"] == f"KEY={REDACTED}"
    assert f"KEY={REDACTED}" in stored["results"]["file_read"]
    assert REDACTED in stored["results"]["memory_recall"]
    assert stored["user"] == f"my key is {REDACTED}"
    assert stored["client_ids"] == [f"cid-{REDACTED}"]
    assert stored["name"] == f"Edited {REDACTED}"
    assert stored["note"] == (f"the key is {REDACTED}", [REDACTED, "t" * (MAX_TAG_CHARS - 20) + REDACTED])
    assert stored["device"] == f"phone {REDACTED}"
    assert stored["origin"].startswith("https://" + "o" * 185 + REDACTED[:7])
    assert stored["admin_log"] == f"Edited {REDACTED}"


def stored_markers(session_id):
    from django.contrib.admin.models import LogEntry

    messages = list(Message.objects.filter(session_id=session_id).order_by("seq"))
    assistant = [m for m in messages if m.role == "assistant"]
    arguments, results = {}, {}
    for message in assistant:
        for call in message.data.get("tool_calls") or ():
            arguments[call["name"]] = json.loads(call["arguments"])
    for message in messages:
        if message.role == "tool":
            results[message.data["name"]] = message.content
    note = MemoryNote.objects.get()
    refused = AuditEvent.objects.filter(kind="socket_refused", detail__has_key="origin").get()
    return {
        "thinking": next(m.data["thinking"] for m in assistant if m.data.get("thinking")),
        "replies": [m.content for m in assistant if m.content],
        "partial": [m.content for m in assistant if m.data.get("error")],
        "arguments": arguments,
        "results": results,
        "user": messages[-2].content,
        "client_ids": list(ClientMessageId.objects.filter(session_id=session_id)
                           .values_list("client_id", flat=True)),
        "name": ChatSession.objects.get(pk=session_id).name,
        "note": (note.content, note.tags),
        "device": PairedDevice.objects.get(name__startswith="phone ").name,
        "origin": refused.detail["origin"],
        "admin_log": LogEntry.objects.get().object_repr,
    }


def test_the_search_finds_the_key_however_it_is_stored():
    escaped = HOSTILE_KEY.replace("-", "\\u002d")
    arguments = '{"content": "' + escaped + '"}'
    assert leaks({"tool_calls": [{"arguments": arguments}]})
    assert leaks(json.dumps({"messages": [{"data": {"tool_calls": [{"arguments": arguments}]}}]}))
    assert leaks({HOSTILE_KEY: 1}) and leaks(["x" + HOSTILE_KEY[5:5 + PIECE] + "y"])
    assert not leaks({"content": f"Echo: {REDACTED}", "n": 3, "tags": [REDACTED]})
