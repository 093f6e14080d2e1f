"""memory_store / memory_recall in the database; render_canvas / clear_canvas checks."""

import json

import pytest
from channels.db import database_sync_to_async

from chat.agent.tools.base import ToolContext, ToolRegistry
from chat.agent.tools.canvas import canvas_tools
from chat.agent.tools.memory import memory_tools
from chat.turns.stores import DatabaseMemory
from sessions_app.services import default_owner
from sessions_app.models import ChatSession, MemoryNote


async def owner_id():
    return (await database_sync_to_async(default_owner)()).pk


def caller(tools, session_id="s1", user_id=None):
    registry = ToolRegistry(tools)
    ctx = ToolContext(session_id=session_id, memory=DatabaseMemory(user_id))

    async def call(name, **args):
        return await registry.call(name, json.dumps(args), ctx)

    return call


@pytest.mark.django_db(transaction=True)
async def test_notes_are_stored_and_recalled_by_words_and_tags():
    owner = await owner_id()
    await database_sync_to_async(ChatSession.objects.create)(pk="s1", user_id=owner)
    call = caller(memory_tools(), user_id=owner)
    output, is_error = await call("memory_store", content="The user's cat is called Miso", tags=["pets"])
    assert not is_error and output.startswith("Stored memory note") and "pets" in output
    await call("memory_store", content="Deploys happen on Fridays", tags=["work", "schedule"])
    await call("memory_store", content="Another cat fact: Miso likes boxes")

    output, is_error = await call("memory_recall", query="Miso boxes")
    assert not is_error
    lines = output.splitlines()
    assert lines[0] == "2 memory note(s) match 'Miso boxes':"
    assert "likes boxes" in lines[1]  # both words match: first
    assert "called Miso" in lines[2] and "[pets]" in lines[2]

    output, _ = await call("memory_recall", query="schedule")
    assert "Deploys happen on Fridays" in output  # found by its tag
    assert await call("memory_recall", query="giraffe") == ("No memory notes match 'giraffe'.", False)

    notes = await database_sync_to_async(lambda: list(MemoryNote.objects.values_list("session_id", flat=True)))()
    assert notes == ["s1", "s1", "s1"]


@pytest.mark.django_db(transaction=True)
async def test_a_note_outside_any_session_and_bad_input():
    call = caller(memory_tools(), session_id="no-such-session", user_id=await owner_id())
    assert (await call("memory_store", content="kept anyway"))[1] is False
    assert await database_sync_to_async(MemoryNote.objects.filter(session__isnull=True).count)() == 1
    output, is_error = await call("memory_store", content="  ")
    assert is_error and "non-empty" in output
    output, is_error = await call("memory_store", content="x", tags=[1, 2])
    assert is_error and "tags must be a list of strings" in output
    output, is_error = await call("memory_recall", query="")
    assert is_error


async def test_canvas_tools_check_their_arguments():
    call = caller(canvas_tools())
    assert await call("render_canvas", canvas_id="default", content_type="svg", content="<svg/>") == (
        "Rendered 6 characters of svg on canvas 'default'.", False)
    assert await call("clear_canvas", canvas_id="charts") == ("Cleared canvas 'charts'.", False)
    output, is_error = await call("render_canvas", canvas_id="default", content_type="pdf", content="x")
    assert is_error and "html, svg, markdown, text" in output
    output, is_error = await call("render_canvas", canvas_id="../x", content_type="html", content="x")
    assert is_error and "canvas_id" in output
    output, is_error = await call("render_canvas", canvas_id="a", content_type="text", content="x" * 300_000)
    assert is_error and "at most" in output
