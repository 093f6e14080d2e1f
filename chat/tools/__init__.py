"""The built-in tools, by the names the contract gives them.

Importing this package imports neither Django nor Channels (the agent loop
imports `chat.tools.base`); `default_registry` reads the settings when called.
"""

import logging

from chat.tools.base import ToolRegistry
from chat.tools.sandbox import INSTALL_HINT, Sandbox, SandboxUnavailable, find

logger = logging.getLogger(__name__)


def shell_sandbox(mode: str, bwrap: str = "bwrap") -> Sandbox | None:
    """The sandbox shell commands run in; None when the operator switched it off by name.

    Raises SandboxUnavailable when bubblewrap is wanted but cannot run here:
    the shell tool is then not offered at all.
    """
    if mode == "off":
        return None
    return find(bwrap)


def shell_status(mode: str, allowlist, bwrap: str = "bwrap") -> tuple[int, str] | None:
    """What start-up says about the shell tool: (log level, one line), or None when all is well."""
    if not allowlist:
        return None
    if mode == "off":
        return logging.WARNING, (
            "CONSTRUCT_SHELL_SANDBOX=off: the shell tool runs commands directly on this host, "
            "as this user, with only the program allowlist between the model and the machine"
        )
    try:
        shell_sandbox(mode, bwrap)
    except SandboxUnavailable as exc:
        return logging.WARNING, (
            f"The shell tool is not offered to the model: {exc}; {INSTALL_HINT} "
            "(or set CONSTRUCT_SHELL_SANDBOX=off to run commands unsandboxed, which is unsafe)"
        )
    from chat.tools.sandbox import process_limit_note

    note = process_limit_note()
    return (logging.WARNING, f"Shell sandbox: {note}") if note else None


def default_registry() -> ToolRegistry:
    """shell (unless its allowlist is empty or it has no sandbox), files, memory and canvas."""
    from django.conf import settings

    from chat.tools.canvas import canvas_tools
    from chat.tools.files import file_tools
    from chat.tools.memory import memory_tools
    from chat.tools.shell import shell_tool

    registry = ToolRegistry()
    try:
        sandbox = shell_sandbox(settings.CONSTRUCT_SHELL_SANDBOX, settings.CONSTRUCT_BWRAP)
    except SandboxUnavailable:
        shell = None  # start-up said why (shell_status)
    else:
        shell = shell_tool(settings.CONSTRUCT_SHELL_ALLOWLIST, sandbox)
    if shell is not None:
        registry.add(shell)
    for tool in (*file_tools(), *memory_tools(), *canvas_tools()):
        registry.add(tool)
    return registry
