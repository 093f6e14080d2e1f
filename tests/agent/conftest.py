"""The agent behind the chat socket: tools, both provider formats, MCP, stop, cost, budget."""

import json
import sys
from pathlib import Path

import pytest

from chat.agent import mcp
from tests.chat.conftest import fresh_channel_layer, gateway, token  # noqa: F401  (fixtures)
from tests.support.fixtures_mock import mock_llm  # noqa: F401  (a fixture)

ECHO_SERVER = Path(__file__).with_name("mcp_echo_server.py")


def echo_server_config(name="echo", **extra):
    return {"name": name, "command": sys.executable, "args": [str(ECHO_SERVER)], **extra}


@pytest.fixture(autouse=True)
async def stop_mcp_servers():
    """Each test's loop starts its own MCP servers; stop them before the loop closes."""
    yield
    await mcp.close_all()


@pytest.fixture(params=["openai", "anthropic"])
def provider(request, gateway, mock_llm):  # noqa: F811
    """The gateway on each provider's wire format, both served by the loopback mock."""
    gateway.CONSTRUCT_PROVIDER = request.param
    gateway.CONSTRUCT_BASE_URL = mock_llm.openai_url if request.param == "openai" else mock_llm.anthropic_url
    return request.param


def tool(name, **args) -> str:
    """A mock LLM directive that makes the model call `name` with `args`."""
    return f"[[tool:{name} {json.dumps(args)}]]"
