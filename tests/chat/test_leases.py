"""The pieces of cross-process safety that need no second process: leases and interrupted turns."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat.turns.remote import unsaved_text as _unsaved_text
from sessions_app import services
from sessions_app.models import ChatSession
from tests.factories import make_session

pytestmark = pytest.mark.django_db


def running(turn_id, *, lease_in):
    return make_session(state="running", turn_id=turn_id, turn_owner="p1",
                        lease_expires_at=timezone.now() + timedelta(seconds=lease_in))


def test_turns_renew_extends_every_held_lease_in_one_go_and_names_the_lost():
    a, b = running("turn-a", lease_in=1), running("turn-b", lease_in=1)
    gone = running("turn-new", lease_in=1)  # taken over: the session now runs another turn
    lost = services.turns_renew(
        turns=[(a.pk, "turn-a"), (b.pk, "turn-b"), (gone.pk, "turn-old")], lease_seconds=30
    )
    assert lost == {"turn-old"}
    for session in (a, b):
        session.refresh_from_db()
        assert session.lease_expires_at > timezone.now() + timedelta(seconds=25)
    gone.refresh_from_db()
    assert gone.lease_expires_at < timezone.now() + timedelta(seconds=5)
    assert services.turns_renew(turns=[], lease_seconds=30) == set()


def test_turn_interrupt_only_ends_a_turn_whose_lease_ran_out_and_only_once():
    alive = running("turn-alive", lease_in=10)
    assert services.turn_interrupt(session_id=alive.pk, turn_id="turn-alive") is False
    dead = running("turn-dead", lease_in=-1)
    assert services.turn_interrupt(session_id=dead.pk, turn_id="other-turn") is False
    assert services.turn_interrupt(session_id=dead.pk, turn_id="turn-dead") is True
    assert services.turn_interrupt(session_id=dead.pk, turn_id="turn-dead") is False
    dead.refresh_from_db()
    assert (dead.state, dead.turn_id, dead.turn_owner, dead.lease_expires_at) == (
        ChatSession.State.INTERRUPTED, "turn-dead", "", None)
    # The next message may start: an interrupted session is not running.
    started, taken_over = services.turn_try_start(
        session_id=dead.pk, user_id=dead.user_id, turn_id="turn-next", owner="p2", lease_seconds=10)
    assert (started, taken_over) == (True, None)


def test_the_text_kept_from_a_dead_turn_is_what_followed_its_last_saved_message():
    def chunk(text):
        return {"type": "chunk", "content": text}

    logged = [chunk("Let me look. "), {"type": "tool_call", "name": "shell"},
              {"type": "tool_result", "output": "ok"}, {"type": "thinking", "content": "hmm"},
              chunk("It says "), chunk("ok")]
    # Text before a tool call was saved with the call (the agent saves, then announces it).
    assert _unsaved_text(logged) == "It says ok"
    assert _unsaved_text([chunk("a"), chunk("b")]) == "ab"
    assert _unsaved_text([]) == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize("freed", [True, False])
async def test_a_turn_that_freed_its_session_is_not_renewed_nor_said_to_have_lost_it(
        settings, caplog, freed):
    """Between freeing its session and leaving (its last events still going to other
    processes), a turn is not the session's any more: renewing its lease would report it
    lost. One that did not free it, and whose session ended, is reported."""
    import asyncio
    import logging

    from channels.db import database_sync_to_async

    from chat.turns.lock import RunningTurn, SessionLock

    settings.CONSTRUCT_TURN_LEASE_SECONDS = 0.3
    session = await database_sync_to_async(running)("turn-f", lease_in=10)
    await database_sync_to_async(services.turn_finish)(
        session_id=session.pk, turn_id="turn-f", state=ChatSession.State.IDLE)
    lock = SessionLock("p1")
    lock._running[session.pk] = RunningTurn("turn-f", freed=freed)
    with caplog.at_level(logging.WARNING, logger="chat.turns.lock"):
        renewer = asyncio.ensure_future(lock._renew_loop())
        await asyncio.sleep(0.45)  # one round of renewals (every lease/3), and some
        lock._running.clear()
        await asyncio.wait_for(renewer, 2)
    said = [r.getMessage() for r in caplog.records if "lost its hold" in r.getMessage()]
    assert (said == []) if freed else (said and "turn-f" in said[0])
