"""One object per running event loop, made on first use.

A server process runs one loop; tests run one per test. What holds
connections or tasks (an HTTP pool, a Redis client, the turn engine) cannot
move between loops, so each loop gets its own, forgotten with the loop.
"""

import asyncio
import weakref
from typing import Callable, TypeVar

T = TypeVar("T")


def per_loop(factory: Callable[[], T]) -> Callable[[], T]:
    """A getter for the running loop's instance of `factory()`, made on its first call."""
    instances: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T]" = weakref.WeakKeyDictionary()

    def get() -> T:
        loop = asyncio.get_running_loop()
        instance = instances.get(loop)
        if instance is None:
            instance = instances[loop] = factory()
        return instance

    def forget() -> T | None:
        """Drop the running loop's instance (and return it), so the next call makes a new one."""
        return instances.pop(asyncio.get_running_loop(), None)

    get.forget = forget
    return get
