"""A session's next turn sends the window its last turn kept in memory (sessions_app.windows).

What a turn sends must be exactly what reading the branch from the database
gives, whatever happened to the session between two turns; and a turn of a
long session must not read its history again.
"""

import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sessions_app import selectors, services, turn_db, windows
from sessions_app.models import ChatSession, Message
from tests.factories import make_session

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_windows():
    windows.windows_clear()
    yield
    windows.windows_clear()


def read(session_id, budget):
    """What a turn sends, read from the database (the way every turn did before)."""
    return selectors.history_for_provider(session_id=session_id, token_budget=budget)[0]


def turn(session_id, question, answers, budget, turn_id="t"):
    """One turn as the engine runs it: open (the question stored, the history read), save
    what it answers, free the session. Returns the history it was sent."""
    user_id = ChatSession.objects.get(pk=session_id).user_id
    opened = turn_db.turn_open(session_id=session_id, user_id=user_id, turn_id=turn_id, owner="p",
                               lease_seconds=60, question={"content": question}, token_budget=budget)
    assert opened.started and opened.failure is None, opened.failure
    turn_db.turn_save(session_id=session_id, user_id=user_id, turn_id=turn_id, model="mock-model",
                      usages=[], messages=answers, finish_state=ChatSession.State.IDLE)
    return opened.history


def answers_of(rng, n):
    """A turn's stored messages: maybe a tool round (call, result), then the answer."""
    messages = []
    if rng.random() < 0.4:
        call = {"id": f"call_{n}", "name": "shell", "arguments": '{"command": "ls"}'}
        messages += [
            {"role": "assistant", "content": "Looking." if rng.random() < 0.5 else "",
             "data": {"tool_calls": [call]}},
            {"role": "tool", "content": "x" * rng.randrange(0, 400),
             "data": {"tool_call_id": call["id"], "name": "shell"}},
        ]
    messages.append({"role": "assistant", "content": f"answer {n} " + "y" * rng.randrange(0, 600)})
    return messages


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_turn_sends_what_reading_the_branch_sends(seed):
    """Turns with tool rounds, under a budget the history soon outgrows (so the window slides),
    with things that happen between turns: another process's message (its turn, a dead
    turn's text kept), an edit that makes another branch active, a message deleted in the admin."""
    rng = random.Random(seed)
    make_session(session_id="w")
    budget = 900
    for n in range(40):
        question = f"question {n} " + "q" * rng.randrange(0, 300)
        sent = turn("w", question, answers_of(rng, n), budget, turn_id=f"t{n}")
        assert sent == _sent_at_question_budget("w", n, budget)
        happening = rng.random()
        if happening < 0.15:  # another process appends (its turn, or a dead turn's text kept)
            services.message_append(session_id="w", role="assistant", content=f"elsewhere {n}")
        elif happening < 0.25:  # an edit elsewhere: a question beside the last one, now active
            last_question = Message.objects.filter(session_id="w", role="user").order_by("-seq").first()
            services.message_append(session_id="w", role="user", content=f"edited {n}",
                                    parent_id=last_question.parent_id)
            services.message_append(session_id="w", role="assistant", content=f"edited answer {n}")
        elif happening < 0.3:  # a message deleted (in the admin): what follows it goes too
            last = Message.objects.filter(session_id="w").order_by("-seq").first()
            last.delete()


def test_a_turn_sends_exactly_the_window_read_at_its_question():
    """The plain check, turn by turn: the history sent equals the branch read up to the question."""
    rng = random.Random(7)
    make_session(session_id="plain")
    for n in range(30):
        sent = turn("plain", f"question {n} " + "q" * rng.randrange(0, 300), answers_of(rng, n), 700,
                    turn_id=f"t{n}")
        assert sent == _sent_at_question_budget("plain", n, 700)
    assert len(sent) < 30  # the budget cut the window


def _sent_at_question_budget(session_id, n, budget):
    question = Message.objects.get(session_id=session_id, role="user", turn_id=f"t{n}")
    return selectors.history_for_provider(session_id=session_id, token_budget=budget,
                                          leaf_id=question.pk)[0]


def test_a_long_session_s_turn_reads_only_its_question():
    make_session(session_id="long")
    for n in range(150):
        turn("long", f"question {n}", [{"role": "assistant", "content": f"answer {n}"}], 100_000,
             turn_id=f"t{n}")
    with CaptureQueriesContext(connection) as queries:
        sent = turn("long", "one more", [{"role": "assistant", "content": "fine"}], 100_000)
    assert len(sent) == 301 and sent[-1] == {"role": "user", "content": "one more"}
    reads = [q["sql"] for q in queries.captured_queries
             if q["sql"].lstrip().upper().startswith(("SELECT", "WITH")) and "sessions_app_message" in q["sql"]]
    # No read of the branch: at most the look-ups a stored message always makes.
    assert not any("RECURSIVE" in sql.upper() for sql in reads), reads
    assert len(queries.captured_queries) < 25, [q["sql"] for q in queries.captured_queries]

    windows.windows_clear()  # the same turn without the kept window reads the branch
    with CaptureQueriesContext(connection) as queries:
        turn("long", "and again", [{"role": "assistant", "content": "ok"}], 100_000, turn_id="t2")
    assert any("RECURSIVE" in q["sql"].upper() for q in queries.captured_queries)


def test_what_a_turn_does_to_its_history_never_reaches_the_kept_window():
    make_session(session_id="mut")
    turn("mut", "first", [{"role": "assistant", "content": "one"}], 10_000)
    user_id = ChatSession.objects.get(pk="mut").user_id
    opened = turn_db.turn_open(session_id="mut", user_id=user_id, turn_id="t2", owner="p",
                               lease_seconds=60, question={"content": "second"}, token_budget=10_000)
    opened.history[0]["content"] = "changed"
    opened.history.append({"role": "assistant", "content": "injected"})
    turn_db.turn_save(session_id="mut", user_id=user_id, turn_id="t2", model="m", usages=[],
                      messages=[{"role": "assistant", "content": "two"}], finish_state="idle")
    assert turn("mut", "third", [], 10_000, turn_id="t3") == read("mut", 10_000)
    assert turn("mut", "fourth", [], 10_000, turn_id="t4")[0] == {"role": "user", "content": "first"}


def test_a_new_budget_or_another_session_reads_again():
    make_session(session_id="a")
    make_session(session_id="b")
    turn("a", "a1", [{"role": "assistant", "content": "x" * 400}], 10_000)
    turn("b", "b1", [{"role": "assistant", "content": "y" * 400}], 10_000)
    assert turn("a", "a2", [], 60, turn_id="t2") == read("a", 60)
    assert turn("b", "b2", [], 10_000, turn_id="t2") == read("b", 10_000)


def test_the_windows_held_stay_under_their_bound(monkeypatch):
    monkeypatch.setattr(windows, "MAX_BYTES", 20_000)
    for n in range(20):
        make_session(session_id=f"s{n}")
        turn(f"s{n}", "q" * 2_000, [{"role": "assistant", "content": "a" * 2_000}], 100_000)
    assert windows._held <= 20_000 and 1 < len(windows._windows) < 20
    assert windows._held == sum(window.size() for window in windows._windows.values())
    # A dropped window is read again, right.
    assert turn("s0", "again", [], 100_000, turn_id="t2") == read("s0", 100_000)
