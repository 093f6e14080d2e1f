"""State kept once per running event loop: one per server process, one per test.

What lives with a loop (a client, a pool, counters read by coroutines) cannot
be shared by two loops, and must go when its loop goes. `per_loop` says that
once, instead of a `WeakKeyDictionary` written out in every module.
"""

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """Call it for the running loop's instance, made by `factory()` on first use.

    The loop is held weakly: a closed and dropped loop takes its instance with it.
    Every method needs a running loop (RuntimeError otherwise).
    """

    def __init__(self, factory: Callable[[], T]):
        self._factory = factory
        self._instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self) -> T:
        loop = asyncio.get_running_loop()
        try:
            return self._instances[loop]
        except KeyError:
            instance = self._instances[loop] = self._factory()
            return instance

    def drop(self) -> T | None:
        """Forget the running loop's instance (the next call makes a new one); returns it."""
        return self._instances.pop(asyncio.get_running_loop(), None)


def per_loop(factory: Callable[[], T]) -> PerLoop[T]:
    """A getter of the running loop's own `factory()` instance: `get_limits = per_loop(Limits)`."""
    return PerLoop(factory)
