"""The built-in tools, by the names the contract gives them.

Importing this package imports neither Django nor Channels (the agent loop
imports `chat.tools.base`); `default_registry` reads the settings when called.
"""

from chat.tools.base import ToolRegistry


def default_registry() -> ToolRegistry:
    """shell (unless its allowlist is empty), files, memory and canvas."""
    from django.conf import settings

    from chat.tools.canvas import canvas_tools
    from chat.tools.files import file_tools
    from chat.tools.memory import memory_tools
    from chat.tools.shell import shell_tool

    registry = ToolRegistry()
    shell = shell_tool(settings.CONSTRUCT_SHELL_ALLOWLIST)
    if shell is not None:
        registry.add(shell)
    for tool in (*file_tools(), *memory_tools(), *canvas_tools()):
        registry.add(tool)
    return registry
