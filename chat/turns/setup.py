"""The agent as this deployment configures it: provider, tools, prompt, limits.

The only place where the Django settings meet the Django-free agent.
"""

from django.conf import settings

from chat.agent import mcp
from chat.agent.loop import Agent
from chat.agent.providers import build_provider
from chat.agent.providers.base import ProviderConfig
from chat.agent.tools import builtin_tools
from chat.agent.tools.base import ToolContext, ToolRegistry
from construct_core.errors import AgentInitFailed
from chat.turns.stores import DatabaseMemory
from construct_core.loops import per_loop

SYSTEM_PROMPT = (
    "You are Construct, a helpful assistant in a chat gateway. Answer clearly and concisely. "
    "Use the tools you are given when they help; their results come back to you."
)


def provider_config() -> ProviderConfig:
    return ProviderConfig(
        provider=settings.CONSTRUCT_PROVIDER,
        model=settings.CONSTRUCT_MODEL,
        api_key=settings.CONSTRUCT_API_KEY,
        base_url=settings.CONSTRUCT_BASE_URL,
        timeout=settings.CONSTRUCT_PROVIDER_TIMEOUT,
    )


# One provider (and so one HTTP connection pool) per event loop.
get_provider = per_loop(lambda: build_provider(provider_config()))
get_provider.__doc__ = "The provider for this loop; raises AgentInitFailed when none is configured."


def check_agent() -> None:
    """Raise AgentInitFailed now if a turn could not be run (checked when a socket connects)."""
    get_provider()
    mcp_servers()


def mcp_servers() -> list[mcp.ServerConfig]:
    try:
        return mcp.parse_servers(settings.CONSTRUCT_MCP_SERVERS)
    except mcp.BadServerList as exc:
        raise AgentInitFailed(str(exc)) from None


def build_tools(extra=()) -> ToolRegistry:
    registry = builtin_tools(
        shell_allowlist=settings.CONSTRUCT_SHELL_ALLOWLIST,
        shell_sandbox_mode=settings.CONSTRUCT_SHELL_SANDBOX,
        bwrap=settings.CONSTRUCT_BWRAP,
    )
    for tool in extra:
        registry.add(tool)
    return registry


def build_agent(extra_tools=()) -> Agent:
    return Agent(
        get_provider(),
        build_tools(extra_tools),
        max_iterations=settings.CONSTRUCT_MAX_TOOL_ITERATIONS,
        system_prompt=SYSTEM_PROMPT,
    )


async def prepare_agent() -> Agent:
    """The agent for a turn, with the tools of the MCP servers (started on first use)."""
    servers = mcp_servers()
    extra = await mcp.get_manager(servers).tools() if servers else []
    return build_agent(extra)


def tool_context(session_id: str, user_id: int) -> ToolContext:
    return ToolContext(session_id=session_id, workspace=settings.CONSTRUCT_WORKSPACE,
                       memory=DatabaseMemory(user_id))


def history_budget() -> int:
    """Tokens left for the history once the system prompt and tool schemas are counted."""
    reserve = len(SYSTEM_PROMPT) // 4 + 4096
    return max(settings.CONSTRUCT_CONTEXT_TOKENS - reserve, 256)
