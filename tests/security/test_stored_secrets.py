"""No stored field holds the provider key, whatever a provider, a tool or a client sends."""

import json

import pytest
from channels.db import database_sync_to_async

from chat.tools.base import MAX_TOOL_OUTPUT_CHARS, Tool, ToolContext, ToolRegistry
from chat.tools.memory import MAX_TAG_CHARS, memory_tools
from construct_core.redaction import REDACTED, register_secret
from sessions_app.models import MemoryNote

pytestmark = pytest.mark.django_db(transaction=True)

CUT_KEY = "sk-cut-STRADDLE-Hq8Vn2Lr5T"


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
        "memory_store", json.dumps({"content": "a note", "tags": [tag]}), ToolContext(session_id="none")
    )

    assert not is_error
    tags = await database_sync_to_async(lambda: MemoryNote.objects.get().tags)()
    assert tags == [("t" * (MAX_TAG_CHARS - 12) + REDACTED)[:MAX_TAG_CHARS]]
    assert CUT_KEY[:10] not in output
