"""Tools from stdio MCP servers (CONSTRUCT_MCP_SERVERS), named `<server>__<tool>`.

Each server is started once per event loop, on the first turn that needs it, and
its connection is reused by every later turn. The connection lives in a task of
its own (the SDK's task groups must be entered and left by one task); turns only
send requests through it. A server that dies is noticed when its output ends:
a call it was running becomes a tool error, and the next call starts it again.
"""

import asyncio
import json
import logging
import re
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from construct_core.redaction import sanitize
from construct_core.loops import per_loop
from chat.agent.tools.base import Tool, ToolContext, ToolFailed
from chat.agent.tools.progress import slow_status

logger = logging.getLogger(__name__)

SETTING = "CONSTRUCT_MCP_SERVERS"


class BadServerList(ValueError):
    """CONSTRUCT_MCP_SERVERS does not describe a list of servers; the message names it."""
START_TIMEOUT = 15.0
CALL_TIMEOUT = 300.0
RETRY_AFTER = 60.0  # a server that failed to start is not tried again sooner (turns wait for a start)
_SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
# What OpenAI and Anthropic both accept as a tool name.
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEYS = {"name", "command", "args", "env", "cwd", "timeout"}


@dataclass(frozen=True)
class ServerConfig:
    name: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    timeout: float = CALL_TIMEOUT


def parse_servers(value) -> list[ServerConfig]:
    """The servers a CONSTRUCT_MCP_SERVERS value describes; BadServerList on a bad shape."""

    def bad(index, problem):
        return BadServerList(f"{SETTING}[{index}] {problem}")

    if not isinstance(value, list):
        raise BadServerList(
            f'{SETTING} must be a JSON list such as [{{"name": "tools", "command": "python", "args": ["server.py"]}}]'
        )
    servers, names = [], set()
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise bad(index, "must be an object with at least name and command")
        unknown = set(entry) - _KEYS
        if unknown:
            raise bad(index, f"has unknown keys: {', '.join(sorted(unknown))}")
        name, command = entry.get("name"), entry.get("command")
        if not isinstance(name, str) or not _SERVER_NAME.match(name):
            raise bad(index, "needs a name of 1 to 48 letters, digits, '_' or '-'")
        if name in names:
            raise bad(index, f"repeats the name {name!r}")
        if not isinstance(command, str) or not command.strip():
            raise bad(index, "needs a command (the program that starts the server)")
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise bad(index, "args must be a list of strings")
        env = entry.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise bad(index, "env must be an object of strings")
        cwd = entry.get("cwd")
        if cwd is not None and not isinstance(cwd, str):
            raise bad(index, "cwd must be a string")
        timeout = entry.get("timeout", CALL_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise bad(index, "timeout must be a positive number of seconds")
        names.add(name)
        servers.append(ServerConfig(name, command, tuple(args), tuple(sorted(env.items())), cwd, float(timeout)))
    return servers


class _EndWatch:
    """A transport's read stream that notes when it ends: the server process is gone."""

    def __init__(self, stream, ended: asyncio.Event):
        self._stream = stream
        self._ended = ended

    async def __aenter__(self):
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc):
        self._ended.set()
        return await self._stream.__aexit__(*exc)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            self._ended.set()
            raise

    async def receive(self):
        try:
            return await self._stream.receive()
        except Exception:
            self._ended.set()
            raise

    def __getattr__(self, name):
        return getattr(self._stream, name)


@asynccontextmanager
async def _watched_stdio(params, ended: asyncio.Event):
    from mcp.client.stdio import stdio_client

    async with stdio_client(params, errlog=sys.stderr) as (read_stream, write_stream):
        yield _EndWatch(read_stream, ended), write_stream


class MCPServer:
    """One stdio server: started on demand, restarted after it died."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.client = None
        self.tools: list = []
        self.starts = 0
        self._owner: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._ended = asyncio.Event()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._failure = ""

    @property
    def alive(self) -> bool:
        """Starting or running, and its process has not gone away."""
        return self._owner is not None and not self._owner.done() and not self._ended.is_set()

    async def ensure_started(self) -> list:
        """The server's tools, starting it first if it is not running."""
        async with self._lock:
            if not self.alive:
                await self.close()  # what is left of a server that died
                if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER:
                    raise ToolFailed(f"MCP server {self.config.name!r} is unavailable: {self._failure}")
                self._spawn()
            try:
                # Shielded: a turn stopped while the server starts leaves it starting for the next one.
                await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed_at = time.monotonic()
                self._failure = (
                    f"it did not start within {START_TIMEOUT:g} s" if isinstance(exc, TimeoutError)
                    else _describe(exc)
                )
                logger.warning("MCP server %s did not start: %s", self.config.name, self._failure)
                await self.close()
                raise ToolFailed(f"MCP server {self.config.name!r} is unavailable: {self._failure}") from None
            self._failed_at = None
            return self.tools

    def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        # A start nobody waits for any more must not log "exception never retrieved".
        self._ready.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._ended, self._stop = asyncio.Event(), asyncio.Event()
        self._owner = loop.create_task(self._own(self._ready, self._ended, self._stop),
                                       name=f"mcp-{self.config.name}")
        self.starts += 1

    async def _own(self, ready: asyncio.Future, ended: asyncio.Event, stop: asyncio.Event) -> None:
        """Hold the connection open until the server ends or `close` is called."""
        from mcp import Client, StdioServerParameters

        config = self.config
        params = StdioServerParameters(command=config.command, args=list(config.args),
                                       env=dict(config.env) or None, cwd=config.cwd)
        try:
            async with Client(_watched_stdio(params, ended)) as client:
                tools, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self.client, self.tools = client, tools
                ready.set_result(tools)
                logger.info("MCP server %s started with %d tools", config.name, len(tools))
                waits = [asyncio.ensure_future(ended.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waits:
                        waiter.cancel()
                if not stop.is_set():
                    logger.warning("MCP server %s stopped; it starts again on its next call", config.name)
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif not ended.is_set():
                logger.warning("MCP server %s failed: %s", config.name, _describe(exc))
        finally:
            ended.set()
            self.client = None
            if not ready.done():
                ready.set_exception(RuntimeError("the server was stopped while starting"))

    async def call(self, tool: str, args: dict, ctx: ToolContext) -> str:
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        await self.ensure_started()
        client = self.client
        if client is None or not self.alive:  # died since it started
            raise ToolFailed(f"MCP server {self.config.name!r} stopped; it will be restarted on the next call")
        try:
            with slow_status(ctx, f"running: {self.config.name}__{tool}"):
                result = await client.call_tool(tool, args, read_timeout_seconds=self.config.timeout)
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED or not self.alive:
                raise ToolFailed(
                    f"MCP server {self.config.name!r} stopped while running {tool}; "
                    "it will be restarted on the next call"
                ) from None
            raise ToolFailed(f"{self.config.name}__{tool}: {sanitize(str(exc))}") from None
        text = _result_text(result)
        if result.is_error:
            raise ToolFailed(text or f"{self.config.name}__{tool} failed")
        return text

    async def close(self) -> None:
        """Stop the server: its stdin closes, and it is killed if it lingers."""
        self._stop.set()
        owner = self._owner
        if owner is not None and not owner.done():
            await asyncio.wait({owner}, timeout=10)
            owner.cancel()  # only a server that ignored its closed stdin and the kill is left
        self.client = None


def _describe(exc: BaseException) -> str:
    # The SDK's task groups wrap a single failure in an exception group.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return sanitize(str(exc)) or type(exc).__name__


def _result_text(result) -> str:
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {getattr(block, 'mime_type', '')}]")
        elif kind == "resource_link":
            parts.append(f"[resource: {block.uri}]")
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource: {resource.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class MCPManager:
    """The configured servers of one event loop, and the tools they offer."""

    def __init__(self, configs: list[ServerConfig]):
        self.servers = {config.name: MCPServer(config) for config in configs}

    async def tools(self) -> list[Tool]:
        """Every tool of every server that runs or can be started; a server that cannot is left out."""
        servers = list(self.servers.values())
        results = await asyncio.gather(*(server.ensure_started() for server in servers), return_exceptions=True)
        tools = []
        for server, listed in zip(servers, results):
            if isinstance(listed, BaseException):
                if not isinstance(listed, Exception):
                    raise listed
                continue  # logged when it failed
            for item in listed:
                tool = _as_tool(server, item)
                if tool is not None:
                    tools.append(tool)
        return tools

    async def aclose(self) -> None:
        await asyncio.gather(*(server.close() for server in self.servers.values()))


def _as_tool(server: MCPServer, item) -> Tool | None:
    name = f"{server.config.name}__{item.name}"
    if not _TOOL_NAME.match(name):
        logger.warning("MCP tool %r of server %s skipped: its name is not usable", item.name, server.config.name)
        return None
    schema = item.input_schema if isinstance(item.input_schema, dict) else {}
    schema = {"type": "object", "properties": {}, **schema}

    async def call(args: dict, ctx: ToolContext, _tool=item.name) -> str:
        return await server.call(_tool, args, ctx)

    description = item.description or item.title or f"{item.name} (MCP server {server.config.name})"
    return Tool(name, description, schema, call)


class _Slot:
    """This loop's manager, replaced when the configured servers change."""

    manager: "MCPManager | None" = None


_slot = per_loop(_Slot)
_closing: set[asyncio.Task] = set()  # the loop keeps only weak references to its tasks


def get_manager(configs: list[ServerConfig]) -> MCPManager:
    """This loop's manager; a new one when the configured servers changed."""
    slot = _slot()
    manager = slot.manager
    if manager is None or [s.config for s in manager.servers.values()] != configs:
        if manager is not None:
            task = asyncio.get_running_loop().create_task(manager.aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        manager = slot.manager = MCPManager(configs)
    return manager


async def close_all() -> None:
    """Stop this loop's servers (tests; a server process also ends when our process does)."""
    slot = _slot.drop()
    if slot is not None and slot.manager is not None:
        await slot.manager.aclose()
