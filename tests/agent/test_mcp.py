"""MCP servers: their tools reach the model as server__tool, over a real stdio server."""

import asyncio
import os
import signal

import pytest
from channels.db import database_sync_to_async

from chat.agent import mcp
from chat.agent.mcp import BadServerList as ImproperlyConfigured
from chat.agent.tools.base import ToolContext
from sessions_app.models import Message
from tests.agent.conftest import echo_server_config, tool
from tests.chat.conftest import communicator, frames_until, open_socket, send

pytestmark = pytest.mark.django_db(transaction=True)


def tool_frames(frames, kind):
    return [f for f in frames if f["type"] == kind]


async def test_the_agent_calls_an_mcp_tool_over_the_socket(gateway, token, mock_llm):
    gateway.CONSTRUCT_MCP_SERVERS = [echo_server_config()]
    mock_llm.clear()
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("echo__shout", text="hi"))
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    calls, results = tool_frames(frames, "tool_call"), tool_frames(frames, "tool_result")
    assert [(c["name"], c["args"]) for c in calls] == [("echo__shout", {"text": "hi"})]
    assert [(r["name"], r["output"], r["is_error"]) for r in results] == [("echo__shout", "HI!", False)]
    assert frames[-1]["full_response"] == "Tool said: HI!"
    # The model was offered the server's tools with the server's own schemas.
    offered = {t["function"]["name"]: t["function"] for t in mock_llm.requests()[0]["tools"]}
    assert offered["echo__shout"]["parameters"]["required"] == ["text"]
    assert {"echo__fail", "echo__pid", "echo__die", "shell", "file_read"} <= set(offered)

    # A second message reuses the running server: same process.
    manager = mcp.get_manager(mcp.parse_servers(gateway.CONSTRUCT_MCP_SERVERS))
    await send(comm, type="message", content=tool("echo__pid"))
    first_pid = tool_frames(await frames_until(comm), "tool_result")[0]["output"]
    await send(comm, type="message", content=tool("echo__pid"))
    assert tool_frames(await frames_until(comm), "tool_result")[0]["output"] == first_pid
    assert manager.servers["echo"].starts == 1
    await comm.disconnect()


async def test_an_mcp_error_result_is_a_tool_error(gateway, token):
    gateway.CONSTRUCT_MCP_SERVERS = [echo_server_config()]
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("echo__fail", reason="no disk"))
    frames = await frames_until(comm)
    result = tool_frames(frames, "tool_result")[0]
    assert result["is_error"] is True
    assert result["output"] == "Error: Error executing tool fail: no disk"  # the server's own words
    assert frames[-1]["type"] == "done"
    await comm.disconnect()


async def test_a_server_that_dies_is_a_tool_error_then_restarts(gateway, token):
    gateway.CONSTRUCT_MCP_SERVERS = [echo_server_config()]
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("echo__pid"))
    first_pid = int(tool_frames(await frames_until(comm), "tool_result")[0]["output"])

    # Dies in the middle of a call: the call is a tool error, the turn goes on.
    await send(comm, type="message", content=tool("echo__die"))
    frames = await frames_until(comm)
    result = tool_frames(frames, "tool_result")[0]
    assert result["is_error"] is True
    assert "MCP server 'echo' stopped while running die" in result["output"]
    assert frames[-1]["type"] == "done"

    # The next call starts it again.
    await send(comm, type="message", content=tool("echo__shout", text="back"))
    assert tool_frames(await frames_until(comm), "tool_result")[0]["output"] == "BACK!"
    await send(comm, type="message", content=tool("echo__pid"))
    second_pid = int(tool_frames(await frames_until(comm), "tool_result")[0]["output"])
    assert second_pid != first_pid

    # Killed while idle: the next call finds it gone and starts a new one.
    os.kill(second_pid, signal.SIGKILL)
    await asyncio.sleep(0.3)
    await send(comm, type="message", content=tool("echo__pid"))
    result = tool_frames(await frames_until(comm), "tool_result")[0]
    assert result["is_error"] is False and int(result["output"]) not in (first_pid, second_pid)
    await comm.disconnect()


async def test_mcp_tool_calls_are_kept_in_history(gateway, token):
    gateway.CONSTRUCT_MCP_SERVERS = [echo_server_config()]
    comm, _ = await open_socket(token)
    await send(comm, type="message", content=tool("echo__shout", text="saved"))
    await frames_until(comm)
    rows = await database_sync_to_async(
        lambda: list(Message.objects.filter(session_id="s1").order_by("seq").values_list("role", "content", "data"))
    )()
    assert [r[0] for r in rows] == ["user", "assistant", "tool", "assistant"]
    assert rows[1][2]["tool_calls"][0]["name"] == "echo__shout"
    assert rows[2][1] == "SAVED!" and rows[2][2]["name"] == "echo__shout"
    await comm.disconnect()


async def test_a_server_that_cannot_start_leaves_its_tools_out(gateway, token, mock_llm):
    gateway.CONSTRUCT_MCP_SERVERS = [{"name": "broken", "command": "no-such-program-here"}]
    mock_llm.clear()
    comm, _ = await open_socket(token)
    await send(comm, type="message", content="hello")
    assert (await frames_until(comm))[-1]["type"] == "done"
    names = {t["function"]["name"] for t in mock_llm.requests()[-1]["tools"]}
    assert "file_read" in names and not any(name.startswith("broken__") for name in names)
    await comm.disconnect()


async def test_a_bad_setting_fails_the_socket_naming_the_variable(gateway, token):
    gateway.CONSTRUCT_MCP_SERVERS = [{"name": "x"}]
    comm = communicator(token=token, query="session_id=s1")
    assert (await comm.connect(timeout=10))[0]
    frame = await comm.receive_json_from()
    assert frame["code"] == "AGENT_INIT_FAILED"
    assert "CONSTRUCT_MCP_SERVERS[0] needs a command" in frame["message"]
    await comm.disconnect()


@pytest.mark.parametrize("value, message", [
    ({"name": "x"}, "must be a JSON list"),
    (["server"], "[0] must be an object"),
    ([{"name": "a b", "command": "x"}], "[0] needs a name"),
    ([{"name": "a", "command": "x"}, {"name": "a", "command": "y"}], "[1] repeats the name 'a'"),
    ([{"name": "a", "command": "x", "args": "server.py"}], "args must be a list of strings"),
    ([{"name": "a", "command": "x", "env": {"K": 1}}], "env must be an object of strings"),
    ([{"name": "a", "command": "x", "port": 1}], "unknown keys: port"),
])
def test_server_entries_are_checked(value, message):
    with pytest.raises(ImproperlyConfigured) as caught:
        mcp.parse_servers(value)
    assert "CONSTRUCT_MCP_SERVERS" in str(caught.value) and message in str(caught.value)


async def test_a_server_is_started_once_by_concurrent_first_calls():
    manager = mcp.MCPManager(mcp.parse_servers([echo_server_config()]))
    try:
        tools = {t.name: t for t in await manager.tools()}
        results = await asyncio.gather(*(tools["echo__pid"].func({}, ToolContext()) for _ in range(5)))
        assert len(set(results)) == 1
        assert manager.servers["echo"].starts == 1
    finally:
        await manager.aclose()
