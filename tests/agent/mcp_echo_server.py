"""A tiny stdio MCP server for the tests, written with the official SDK.

Tools: `shout` (upper-cases its text), `fail` (an error result), `pid` (this
process's id) and `die` (the process exits mid-call, as a crashing server would).
"""

import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("echo")


@server.tool()
def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper() + "!"


@server.tool()
def fail(reason: str = "it went wrong") -> str:
    """Always fails, with the given reason."""
    raise ToolError(reason)


@server.tool()
def pid() -> str:
    """The server process's id."""
    return str(os.getpid())


@server.tool()
def die() -> str:
    """Exit at once, without answering."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
