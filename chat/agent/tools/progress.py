"""A status line for tools that take a while."""

import asyncio
import contextlib

from chat.agent.tools.base import ToolContext

SLOW_AFTER = 1.0


@contextlib.contextmanager
def slow_status(ctx: ToolContext, detail: str, *, after: float = SLOW_AFTER):
    """Report `detail` as an operator_status if the block is still running after `after` seconds.

    Quick tools stay silent; a client waiting on a slow one learns what it waits for.
    """
    handle = asyncio.get_running_loop().call_later(after, ctx.status, "tool", detail)
    try:
        yield
    finally:
        handle.cancel()
