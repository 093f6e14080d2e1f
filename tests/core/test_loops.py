"""construct_core.loops: one instance per running event loop."""

import asyncio
import gc
import weakref

import pytest

from construct_core.loops import per_loop


class Thing:
    pass


def test_one_instance_per_loop_made_on_first_use():
    made = []
    get = per_loop(lambda: made.append(Thing()) or made[-1])

    async def twice():
        return get(), get()

    first = asyncio.run(twice())
    second = asyncio.run(twice())

    assert first[0] is first[1]
    assert second[0] is second[1]
    assert first[0] is not second[0]
    assert len(made) == 2


def test_drop_forgets_the_instance():
    get = per_loop(Thing)

    async def scenario():
        assert get.drop() is None
        thing = get()
        assert get.drop() is thing
        assert get.drop() is None
        fresh = get()
        assert fresh is not thing and get() is fresh

    asyncio.run(scenario())


def test_a_gone_loop_takes_its_instance_with_it():
    get = per_loop(Thing)
    loop = asyncio.new_event_loop()
    instance = weakref.ref(loop.run_until_complete(_get(get)))
    assert instance() is not None
    loop.close()
    del loop
    gc.collect()

    assert instance() is None


async def _get(get):
    return get()


def test_outside_a_loop_is_an_error():
    get = per_loop(Thing)

    with pytest.raises(RuntimeError):
        get()
