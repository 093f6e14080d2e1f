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
from construct_core.model_choices import REASONING_OFF, ModelChoice
from sessions_app import catalogue

SYSTEM_PROMPT = (
    "You are Construct, a helpful assistant in a chat gateway. Answer clearly and concisely. "
    "Use the tools you are given when they help; their results come back to you."
)


def provider_config(choice: ModelChoice | None = None) -> ProviderConfig:
    """Where the requests of model `choice` (the default one if None) go, and with which key.

    A model of CONSTRUCT_PROVIDER takes CONSTRUCT_BASE_URL (unless it names its own
    URL) and CONSTRUCT_API_KEY; a model of the other provider takes its own URL and
    that provider's key variable, so no key is ever sent to another vendor.
    """
    choice = choice or catalogue.model_default()
    if choice.provider == settings.CONSTRUCT_PROVIDER:
        base_url = choice.base_url or settings.CONSTRUCT_BASE_URL
        api_key = settings.CONSTRUCT_API_KEY
    else:
        base_url = choice.base_url
        api_key = settings.CONSTRUCT_PROVIDER_KEYS.get(choice.provider)
    return ProviderConfig(
        provider=choice.provider,
        model=choice.id,
        api_key=api_key,
        base_url=base_url,
        timeout=settings.CONSTRUCT_PROVIDER_TIMEOUT,
    )


# One provider (and so one HTTP connection pool) per event loop and model.
_providers = per_loop(dict)


def get_provider(choice: ModelChoice | None = None):
    """The provider of model `choice` (the default one if None) for this loop; raises
    AgentInitFailed when it cannot be configured."""
    choice = choice or catalogue.model_default()
    providers = _providers()
    # Keyed by the whole choice: a model listed anew (another URL) gets a provider of its own.
    provider = providers.get(choice)
    if provider is None:
        provider = providers[choice] = build_provider(provider_config(choice))
    return provider


def check_agent(choice: ModelChoice | None = None) -> None:
    """Raise AgentInitFailed now if a turn of model `choice` (the default one if None) could not
    be run (checked when a socket connects, and when a message chooses a model)."""
    get_provider(choice)
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


def build_agent(extra_tools=(), choice: ModelChoice | None = None) -> Agent:
    return Agent(
        get_provider(choice),
        build_tools(extra_tools),
        max_iterations=settings.CONSTRUCT_MAX_TOOL_ITERATIONS,
        system_prompt=SYSTEM_PROMPT,
        first_delta_timeout=settings.CONSTRUCT_FIRST_DELTA_TIMEOUT,
    )


async def prepare_agent(choice: ModelChoice | None = None) -> Agent:
    """The agent for a turn of model `choice`, with the tools of the MCP servers (started on first use)."""
    servers = mcp_servers()
    extra = await mcp.get_manager(servers).tools() if servers else []
    return build_agent(extra, choice)


def reasoning_for(choice: ModelChoice, asked: str | None) -> str:
    """The reasoning level a turn runs with: the one asked for (else CONSTRUCT_REASONING_DEFAULT),
    and "off" for a model that does not think."""
    if not choice.thinking:
        return REASONING_OFF
    return asked or settings.CONSTRUCT_REASONING_DEFAULT


def tool_context(session_id: str, user_id: int) -> ToolContext:
    return ToolContext(session_id=session_id, workspace=settings.CONSTRUCT_WORKSPACE,
                       memory=DatabaseMemory(user_id))


def history_budget() -> int:
    """Tokens left for the history once the system prompt and tool schemas are counted."""
    reserve = len(SYSTEM_PROMPT) // 4 + 4096
    return max(settings.CONSTRUCT_CONTEXT_TOKENS - reserve, 256)
