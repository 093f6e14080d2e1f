"""The built-in tools, by the names the contract gives them.

Imports neither Django nor Channels: the caller passes the configuration
(chat/turns/setup.py reads it from the settings).
"""

import logging

from chat.agent.tools.base import ToolRegistry
from chat.agent.tools.sandbox import INSTALL_HINT, Sandbox, SandboxUnavailable, find

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
    from chat.agent.tools.sandbox import process_limit_note

    note = process_limit_note()
    return (logging.WARNING, f"Shell sandbox: {note}") if note else None


def builtin_tools(*, shell_allowlist, shell_sandbox_mode: str = "bwrap",
                  bwrap: str = "bwrap") -> ToolRegistry:
    """shell (unless its allowlist is empty or it has no sandbox), files, memory and canvas."""
    from chat.agent.tools.canvas import canvas_tools
    from chat.agent.tools.files import file_tools
    from chat.agent.tools.memory import memory_tools
    from chat.agent.tools.shell import shell_tool

    registry = ToolRegistry()
    try:
        sandbox = shell_sandbox(shell_sandbox_mode, bwrap)
    except SandboxUnavailable:
        shell = None  # start-up said why (shell_status)
    else:
        shell = shell_tool(shell_allowlist, sandbox)
    if shell is not None:
        registry.add(shell)
    for tool in (*file_tools(), *memory_tools(), *canvas_tools()):
        registry.add(tool)
    return registry
