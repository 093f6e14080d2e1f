"""construct_site.daphne_tuning.Inbox: what daphne and an ASGI application use of an
asyncio.Queue, holding nothing while empty."""

import asyncio

import pytest

from construct_site.daphne_tuning import Inbox


async def test_messages_come_out_in_order_and_an_empty_inbox_holds_nothing():
    inbox = Inbox()
    assert inbox.empty() and inbox.qsize() == 0
    for n in range(3):
        inbox.put_nowait(n)
    assert inbox.qsize() == 3 and not inbox.empty()
    assert [await inbox.get() for _ in range(3)] == [0, 1, 2]
    assert inbox._items is None and inbox._getters is None
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()


async def test_a_waiting_reader_is_woken_by_the_next_message():
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait({"type": "websocket.connect"})
    assert await asyncio.wait_for(reader, 1) == {"type": "websocket.connect"}
    assert inbox._items is None and inbox._getters is None


async def test_readers_are_served_in_turn():
    inbox = Inbox()
    readers = [asyncio.ensure_future(inbox.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for n in range(3):
        inbox.put_nowait(n)
    assert await asyncio.gather(*readers) == [0, 1, 2]


async def test_a_cancelled_reader_loses_no_message():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    first.cancel()
    inbox.put_nowait("kept")
    assert await asyncio.wait_for(second, 1) == "kept"
    with pytest.raises(asyncio.CancelledError):
        await first
    # Woken, then cancelled before it ran: the message waits for the next reader.
    third = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("next")
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert await asyncio.wait_for(inbox.get(), 1) == "next"


def test_an_inbox_is_true_even_when_empty():
    # daphne's HTTP request tests `if self.application_queue:` before it puts a message.
    assert Inbox()
