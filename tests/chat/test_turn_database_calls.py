"""A turn's database work comes in two calls: one as it takes the session, one as it ends.

Each call is a hop to the one thread Channels runs database work on; under
load the hops of a hundred turns queue there (bench/load.py). These tests
count the hops of a real turn over the socket, and check that what the two
calls store is what the step-by-step calls stored: the question, the answer
with the turn's usage and cost, the usage rows, the session freed.
"""

import pytest
from channels.db import DatabaseSyncToAsync, database_sync_to_async

from sessions_app.models import ChatSession, Message, UsageRecord
from tests.chat.conftest import frames_until, nothing_more, open_socket, send

pytestmark = pytest.mark.django_db(transaction=True)

PRICES = {"mock-model": {"input": 2.0, "output": 10.0}}  # USD per million tokens

# The step-by-step calls a turn made before they were folded into turn_open and turn_save.
FOLDED = {"budget_check", "turn_try_start", "_turn_model", "turn_model", "message_append",
          "history_for_provider", "usage_record", "turn_finish", "session_open", "client_id_claim"}


@pytest.fixture
def hops(monkeypatch):
    """The names of the functions run on the database thread, in order."""
    names = []
    original = DatabaseSyncToAsync.thread_handler

    def counting(self, loop, *args, **kwargs):
        names.append(getattr(self.func, "__name__", repr(self.func)))
        return original(self, loop, *args, **kwargs)

    monkeypatch.setattr(DatabaseSyncToAsync, "thread_handler", counting)
    return names


@database_sync_to_async
def stored(session_id):
    session = ChatSession.objects.get(pk=session_id)
    messages = list(Message.objects.filter(session_id=session_id).order_by("seq")
                    .values_list("role", "content", "data"))
    usage = list(UsageRecord.objects.filter(session_id=session_id).order_by("id")
                 .values_list("input_tokens", "output_tokens", "cost_usd"))
    return session, messages, usage


async def test_a_plain_turn_makes_two_database_calls(gateway, token, hops):
    gateway.CONSTRUCT_PRICES = PRICES
    comm, _ = await open_socket(token, query="session_id=hops")
    await send(comm, type="message", content="first")  # stores the session: not what is counted
    await frames_until(comm)

    hops.clear()
    await send(comm, type="message", content="second")
    frames = await frames_until(comm)
    await comm.disconnect()

    done = frames[-1]
    assert done["type"] == "done" and done["full_response"] == "Echo: second"
    # The turn's start and end events are kept by a task of their own, in batches
    # (sessions_app.events): not the turn's calls.
    turn_hops = [name for name in hops if name != "operator_events_record"]
    assert turn_hops.count("turn_open") == 1 and turn_hops.count("turn_save") == 1, hops
    assert not FOLDED & set(turn_hops), hops
    assert len(turn_hops) <= 3, hops  # turn_open, turn_save and at most one more

    session, messages, usage = await stored("hops")
    assert session.state == ChatSession.State.IDLE and session.turn_id is None
    assert [(role, content) for role, content, _ in messages] == [
        ("user", "first"), ("assistant", "Echo: first"), ("user", "second"), ("assistant", "Echo: second")]
    answer = messages[-1][2]
    # The answer keeps the turn's whole usage and cost, the same as `done` says.
    assert answer["usage"] == done["usage"]
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["cost_usd"] > 0
    assert len(usage) == 2
    input_tokens, output_tokens, cost = usage[-1]
    assert (input_tokens, output_tokens) == (done["usage"]["input_tokens"], done["usage"]["output_tokens"])
    assert float(cost) == pytest.approx(done["usage"]["cost_usd"])
    assert float(cost) == pytest.approx((input_tokens * 2.0 + output_tokens * 10.0) / 1_000_000)


async def test_a_first_message_is_accepted_in_one_database_call(gateway, token, hops):
    """A new session's first message, with a client id: the session is stored and the id
    recorded in one call before the turn takes the session (each call waits its turn on the
    database thread, and under load each wait is the message's time to its first delta)."""
    comm, _ = await open_socket(token, query="session_id=accept-once&name=Trip+plans")
    hops.clear()  # the socket's own, as it opened
    await send(comm, type="message", content="first", client_id="c-1")
    frames = await frames_until(comm)
    # Audit entries are kept by a task of their own, in batches (sessions_app.audit._append).
    before_turn = [name for name in hops[:hops.index("turn_open")] if name != "_append"]
    # The device's token checked again (a revoked one acts at once), then the acceptance.
    assert before_turn == ["device_active", "message_accept"], hops
    assert frames[0] == {"type": "ack", "client_id": "c-1", "duplicate": False}
    assert frames[-1]["type"] == "done" and frames[-1]["full_response"] == "Echo: first"
    # Sent again: known, nothing run; the session is not opened a second time.
    hops.clear()
    await send(comm, type="message", content="first", client_id="c-1")
    assert await comm.receive_json_from(timeout=10) == {"type": "ack", "client_id": "c-1",
                                                         "duplicate": True}
    assert [name for name in hops if name not in ("operator_events_record", "_append")] == \
        ["device_active", "message_accept"]
    await comm.disconnect()
    session, messages, _usage = await stored("accept-once")
    assert session.name == "Trip plans" and not session.auto_named
    assert [(role, content) for role, content, _ in messages] == [
        ("user", "first"), ("assistant", "Echo: first")]


async def test_a_tool_turn_keeps_its_messages_in_order(gateway, token, hops):
    """The answer held back for the turn's end still comes after the tool call and its result."""
    gateway.CONSTRUCT_PRICES = PRICES
    comm, _ = await open_socket(token, query="session_id=hops-tools")
    await send(comm, type="message", content='[[tool:memory_store {"content": "a note"}]] keep it')
    frames = await frames_until(comm)
    await comm.disconnect()
    assert frames[-1]["type"] == "done"
    assert [f["type"] for f in frames if f["type"].startswith("tool")] == ["tool_call", "tool_result"]

    session, messages, usage = await stored("hops-tools")
    assert [role for role, _, _ in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1][2].get("tool_calls") and "usage" not in messages[1][2]
    # Two provider calls, each recorded; the last message has the sum of both.
    assert len(usage) == 2
    assert messages[-1][2]["usage"]["input_tokens"] == sum(row[0] for row in usage)
    assert messages[-1][2]["usage"] == frames[-1]["usage"]
    assert session.state == ChatSession.State.IDLE


def _running_session(session_id):
    from sessions_app import services
    session = ChatSession.objects.create(pk=session_id, user_id=_owner_id())
    started, _ = services.turn_try_start(session_id=session_id, user_id=session.user_id,
                                         turn_id="t1", owner="p1", lease_seconds=60)
    assert started
    return session


def test_a_save_that_fails_frees_the_session_in_error_and_raises():
    from sessions_app import turn_db
    _running_session("save-fails")
    with pytest.raises(Exception):
        turn_db.turn_save(session_id="save-fails", user_id=None, turn_id="t1", model="m", usages=[],
                          messages=[{"role": "assistant", "content": "x", "data": {"bad": object()}}],
                          finish_state=ChatSession.State.IDLE)
    session = ChatSession.objects.get(pk="save-fails")
    assert session.state == ChatSession.State.ERROR and session.lease_expires_at is None


def test_opening_a_taken_session_does_nothing_more():
    from sessions_app import turn_db
    session = _running_session("taken")
    opened = turn_db.turn_open(session_id="taken", user_id=session.user_id, turn_id="t2", owner="p2",
                               lease_seconds=60, question={"content": "hello"}, token_budget=1000)
    assert not opened.started and not opened.message_saved and opened.history is None
    assert not Message.objects.filter(session_id="taken").exists()


def test_a_step_after_taking_the_session_that_fails_is_handed_back():
    from construct_core.errors import ModelNotFound
    from sessions_app import turn_db
    session = ChatSession.objects.create(pk="bad-model", user_id=_owner_id())
    opened = turn_db.turn_open(session_id="bad-model", user_id=session.user_id, turn_id="t1",
                               owner="p1", lease_seconds=60, model="no-such-model",
                               question={"content": "hello"}, token_budget=1000)
    assert opened.started and isinstance(opened.failure, ModelNotFound)
    assert not opened.message_saved
    # The session is the turn's now: the turn ends with the failure and frees it.
    assert ChatSession.objects.get(pk="bad-model").state == ChatSession.State.RUNNING


def test_the_sessions_model_is_read_with_the_lock_not_after_it(settings):
    from construct_core.model_choices import ModelChoice
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sessions_app import turn_db
    settings.CONSTRUCT_MODELS = [
        ModelChoice(id="first", provider="openai", label="First", base_url="http://127.0.0.1:9/v1"),
        ModelChoice(id="second", provider="openai", label="Second", base_url="http://127.0.0.1:9/v1"),
    ]
    ChatSession.objects.create(pk="chose", user_id=_owner_id(), model="second")
    ChatSession.objects.create(pk="unlisted", user_id=_owner_id(), model="gone")
    for session_id, expected in (("chose", "second"), ("unlisted", "first")):
        with CaptureQueriesContext(connection) as queries:
            opened = turn_db.turn_open(session_id=session_id, user_id=_owner_id(), turn_id="t1",
                                       owner="p1", lease_seconds=60, question={"content": "hi"})
        assert opened.started and opened.failure is None and opened.choice.id == expected
        reads_of_the_row = [q["sql"] for q in queries.captured_queries
                            if q["sql"].startswith("SELECT") and 'FROM "sessions_app_chatsession"' in q["sql"]]
        # One, with the lock: none for the model, none as the question is numbered.
        assert len(reads_of_the_row) == 1, reads_of_the_row
        assert Message.objects.get(session_id=session_id).seq == 1


def test_the_lock_and_the_question_share_one_transaction(settings):
    """The lock's transaction stores the question too, behind one savepoint (not a second
    transaction with a second locking read of the session's row)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sessions_app import turn_db
    ChatSession.objects.create(pk="one-tx", user_id=_owner_id())
    Message.objects.create(session_id="one-tx", seq=1, role="user", content="before")
    ChatSession.objects.filter(pk="one-tx").update(last_seq=1, message_count=1)
    with CaptureQueriesContext(connection) as queries:
        opened = turn_db.turn_open(session_id="one-tx", user_id=_owner_id(), turn_id="t1",
                                   owner="p1", lease_seconds=60, question={"content": "hi"},
                                   token_budget=1000)
    assert opened.started and opened.failure is None and not opened.first_question
    sql = [q["sql"] for q in queries.captured_queries]
    assert sum(s.startswith("SAVEPOINT") for s in sql) == 1, sql
    assert sum(s.startswith("RELEASE SAVEPOINT") for s in sql) == 1, sql
    assert [m.content for m in Message.objects.filter(session_id="one-tx").order_by("seq")] == \
        ["before", "hi"]
    assert [m["content"] for m in opened.history] == ["before", "hi"]


def test_a_question_the_database_refuses_leaves_the_session_taken_for_the_turn_to_end():
    """A database error storing the question (here: its number is taken, the session's count
    having fallen behind) is handed back; the lock, taken in the same transaction, stays."""
    from django.db import IntegrityError

    from sessions_app import turn_db
    session = ChatSession.objects.create(pk="refused", user_id=_owner_id())
    Message.objects.create(session_id="refused", seq=1, role="user", content="numbered behind its back")
    opened = turn_db.turn_open(session_id="refused", user_id=session.user_id, turn_id="t1",
                               owner="p1", lease_seconds=60, question={"content": "hello"},
                               token_budget=1000)
    assert opened.started and isinstance(opened.failure, IntegrityError)
    assert not opened.message_saved and opened.history is None
    session = ChatSession.objects.get(pk="refused")
    assert session.state == ChatSession.State.RUNNING and session.turn_id == "t1"
    assert session.turn_owner == "p1" and session.lease_expires_at is not None
    assert list(Message.objects.filter(session_id="refused").values_list("content", flat=True)) == \
        ["numbered behind its back"]


def _owner_id():
    from sessions_app import services
    return services.default_owner().pk


async def test_the_turns_events_are_kept_in_batches_under_load(hops, settings):
    """Fifty events published at once: kept whole and in order, in far fewer than fifty calls.

    Relayed through the in-process layer: with Redis each publish waits for its round
    trip, and the keeper's calls would race the publishes instead of the events piling up.
    """
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    from sessions_app import events, services
    from sessions_app.models import OperatorEvent

    owner = await database_sync_to_async(services.default_owner)()
    for n in range(50):
        await events.publish_operator_event({"type": "agent_start", "session_id": f"s{n}", "n": n},
                                            user_id=owner.pk)
    await events.operator_events_kept()
    kept = await database_sync_to_async(lambda: list(
        OperatorEvent.objects.order_by("id").values_list("event", flat=True)))()
    assert [event["n"] for event in kept] == list(range(50))
    assert 1 <= hops.count("operator_events_record") < 10, hops


@pytest.mark.parametrize("content, end", [
    ("plain", "done"),
    ("[[chunks=200]] [[delay_ms=20]]", "stopped"),
    ("[[fail=400]]", "error"),
])
async def test_nothing_of_a_turn_reaches_the_database_after_its_end_frame(gateway, token, hops,
                                                                          content, end):
    """Once a client has a turn's done, stopped or error frame, the turn makes no database
    call: its operator events (its start, its end or error) are kept before that frame.
    A write after it raced the next request, or a test's teardown, for the database."""
    comm, _ = await open_socket(token, query="session_id=after")
    await send(comm, type="message", content="first")  # stores the session: not what is counted
    await frames_until(comm)
    await send(comm, type="message", content=content)
    if end == "stopped":
        await frames_until(comm, types=("chunk",))
        await send(comm, type="stop")
    frames = await frames_until(comm)
    at_end = list(hops)
    assert frames[-1]["type"] == end, frames[-1]
    assert "operator_events_record" in at_end  # its events were kept, before the frame
    assert await nothing_more(comm, timeout=0.5)
    assert hops == at_end, hops[len(at_end):]
    await comm.disconnect()


def test_a_save_with_its_usage_messages_and_end_commits_once(monkeypatch):
    """Two usage rows, two messages and freeing the session: one transaction, one commit (the
    step-by-step save committed each message on its own)."""
    from django.db import connection

    from sessions_app import turn_db
    _running_session("save-once")
    commits = []
    original = connection.commit
    monkeypatch.setattr(connection, "commit", lambda: (commits.append(1), original())[1])
    saved = turn_db.turn_save(
        session_id="save-once", user_id=None, turn_id="t1", model="m", usages=[(10, 2), (5, 1)],
        messages=[{"role": "tool", "content": "result", "data": {"tool_call_id": "c1"}},
                  {"role": "assistant", "content": "answer", "with_usage": True}],
        usage_so_far=(1, 1, 0.0), finish_state=ChatSession.State.IDLE)
    assert len(commits) == 1
    assert len(saved.usage_costs) == 2
    session = ChatSession.objects.get(pk="save-once")
    assert session.state == ChatSession.State.IDLE and session.turn_id is None
    rows = list(Message.objects.filter(session_id="save-once").order_by("seq"))
    assert [(m.role, m.content) for m in rows] == [("tool", "result"), ("assistant", "answer")]
    assert rows[1].parent_id == rows[0].pk and session.active_leaf_id == rows[1].pk
    assert rows[1].data["usage"]["input_tokens"] == 16 and rows[1].data["usage"]["output_tokens"] == 4
    assert UsageRecord.objects.filter(session_id="save-once").count() == 2


def test_a_save_whose_messages_fail_keeps_its_usage_and_frees_the_session():
    """Budgets count what the provider was paid for, whether or not the answer could be stored."""
    from sessions_app import turn_db
    _running_session("usage-kept")
    with pytest.raises(Exception):
        turn_db.turn_save(session_id="usage-kept", user_id=None, turn_id="t1", model="m",
                          usages=[(7, 3)], finish_state=ChatSession.State.IDLE,
                          messages=[{"role": "assistant", "content": "x", "data": {"bad": object()}}])
    assert list(UsageRecord.objects.filter(session_id="usage-kept")
                .values_list("input_tokens", "output_tokens")) == [(7, 3)]
    assert not Message.objects.filter(session_id="usage-kept").exists()
    assert ChatSession.objects.get(pk="usage-kept").state == ChatSession.State.ERROR
