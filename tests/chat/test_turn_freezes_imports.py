"""A turn that imported modules (an SDK's first call imports hundreds) leaves them frozen
at its end in a serving process (construct_core.heap), through a real turn on the socket."""

import asyncio
import gc
import sys
import types

import pytest

from construct_core import heap
from tests.chat.conftest import frames_until, open_socket, send
from tests.core.test_heap import garbage_grown_old

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def serving_heap():
    assert gc.get_freeze_count() == 0
    heap.freeze_enable()  # as construct_site.serving does at start-up
    try:
        yield
    finally:
        heap.freeze_disable()
        sys.modules.pop("construct_turn_import_probe", None)


async def frozen_within(thing, *, seconds: float) -> bool:
    """Whether `thing` left the collector's walk within `seconds` (the engine's own end of the turn)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while id(thing) in {id(o) for o in gc.get_objects()}:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_turn_that_imported_something_freezes_it_at_its_end(gateway, token, serving_heap):
    comm, _ = await open_socket(token, query="session_id=heap")
    module = sys.modules["construct_turn_import_probe"] = types.ModuleType("construct_turn_import_probe")
    assert id(module) in {id(o) for o in gc.get_objects()}  # walked by a full collection
    await send(comm, type="message", content="hello")
    frames = await frames_until(comm)
    assert frames[-1]["type"] == "done"
    # The turn ends after its `done` has gone out (with REDIS_URL, after the fan-out's flush).
    assert await frozen_within(module, seconds=5), "not frozen at the turn's end"
    assert heap.freeze_if_imported() is False  # the turn's end froze it already

    # A turn that imported nothing leaves the collector alone.
    before = gc.get_freeze_count()
    await send(comm, type="message", content="again")
    assert (await frames_until(comm))[-1]["type"] == "done"
    assert gc.get_freeze_count() <= before  # frozen objects only ever leave (freed), none added
    await comm.disconnect()


async def test_a_turn_s_end_runs_a_full_collection_when_one_is_due(gateway, token, serving_heap,
                                                                  monkeypatch):
    """Garbage that grew old (a closed socket's objects) is freed at a turn's end once
    heap.FULL_EVERY seconds have passed, not when the collector's own count gets there."""
    comm, _ = await open_socket(token, query="session_id=heap-full")
    await send(comm, type="message", content="hello")  # its end may freeze what it imported
    assert (await frames_until(comm))[-1]["type"] == "done"
    gone = garbage_grown_old(10)
    monkeypatch.setattr(heap, "FULL_EVERY", 0.0)  # due at once
    await send(comm, type="message", content="again")
    assert (await frames_until(comm))[-1]["type"] == "done"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while gone() is not None and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert gone() is None, "no full collection at the turn's end"
    await comm.disconnect()
